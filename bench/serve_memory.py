"""RSS of `lmtk serve-model` across large request bodies: 4 rounds of 8 POSTs of ~10 MB JSON
(145,000 small strings) on 4 concurrent connections, RSS from /proc after each round.

  python3 bench/serve_memory.py build/bin/lmtk ../shared/models/stories260K.gguf

Figures quoted in tools/lmtk/cmd_serve.cpp and the session notes came from this script (release
build, Intel Xeon with AVX-512, 2 cores, 2026-12-04): 17.4 MB at start and 180 MB after the
fourth round before serve-model made its two mallopt calls; 17.5 MB and 22.0 MB with them.
Only 127.0.0.1."""

import concurrent.futures
import json
import re
import subprocess
import sys
import time
import urllib.request


def main(cli, model):
    p = subprocess.Popen([cli, "serve-model", model, "--port", "0", "-t", "1", "--parallel", "4"],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        port = None
        for raw in p.stderr:
            m = re.search(rb"OpenAI\s+http://127\.0\.0\.1:(\d+)/v1", raw)
            if m:
                port = int(m.group(1))
                break

        def rss():
            with open(f"/proc/{p.pid}/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

        body = json.dumps({"prompt": "Once", "max_tokens": 1, "pad": ["x" * 64] * 145000}).encode()

        def post(_):
            r = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                       headers={"Content-Type": "application/json"})
            return urllib.request.urlopen(r, timeout=60).status

        print(f"start {rss()} KiB")
        for rnd in range(4):
            with concurrent.futures.ThreadPoolExecutor(4) as ex:
                assert all(s == 200 for s in ex.map(post, range(8)))
            time.sleep(0.5)
            print(f"after round {rnd}: {rss()} KiB")
    finally:
        p.terminate()
        p.wait(10)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
