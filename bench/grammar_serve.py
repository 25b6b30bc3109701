"""Grammar cost end to end: starts `lmtk serve-model MODEL` on 127.0.0.1 and alternates
/completion requests without and with llama.cpp's JSON grammar (tests/data/grammars/json.gbnf),
same prompt, seeds and token count; prints the medians of generated tokens/s and the median of
the paired ratios constrained / free (below 1: the grammar costs that share of decode).

  python3 bench/grammar_serve.py build-rel/bin/lmtk build-rel/models/medium-q4_0.gguf [--rounds 8] [-t 2]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lmtk")
    ap.add_argument("model")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-n", type=int, default=128)
    a = ap.parse_args()
    with open(os.path.join(ROOT, "tests", "data", "grammars", "json.gbnf"), encoding="utf-8") as f:
        grammar = f.read()
    proc = subprocess.Popen([a.lmtk, "serve-model", a.model, "--host", "127.0.0.1", "--port", "0", "-t", str(a.t)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.time() + 60
        while port is None and time.time() < deadline:
            m = re.search(r"OpenAI\s+http://127\.0\.0\.1:(\d+)/v1", proc.stderr.readline())
            port = int(m.group(1)) if m else None
        if port is None:
            raise SystemExit("the server did not report its port")

        def post(body):
            req = urllib.request.Request(f"http://127.0.0.1:{port}/completion", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            return json.loads(urllib.request.urlopen(req, timeout=600).read())

        free, constrained, ratios = [], [], []
        for _ in range(a.rounds):
            for seed in (1, 2, 3):
                base = {"prompt": "Once upon a time", "n_predict": a.n, "seed": seed, "temperature": 1.0}
                x = post(dict(base, ignore_eos=True))["timings"]["predicted_per_second"]
                y = post(dict(base, grammar=grammar))["timings"]["predicted_per_second"]
                free.append(x)
                constrained.append(y)
                ratios.append(y / x)
        print(f"free median {statistics.median(free):.1f} t/s, json grammar median {statistics.median(constrained):.1f} t/s, "
              f"median of paired ratios {statistics.median(ratios):.3f} over {len(ratios)} pairs")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
