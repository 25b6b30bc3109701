#!/usr/bin/env python3
"""Aggregate generation throughput of `lmtk serve-model` for 1 and for N concurrent clients.

Starts `lmtk serve-model MODEL --port 0 --parallel P -t T -c CTX` (the server prints the port it
bound), waits for /health, then for each case sends `/v1/completions` requests (fixed prompt,
temperature 0, `ignore_eos`, `max_tokens` N) from C client threads released together, and takes

    throughput = sum of usage.completion_tokens / wall time (first send .. last reply)

over --reps repetitions (median reported; one warm-up request first). The cases:

    --parallel P, 1 client        the single-client baseline
    --parallel P, C clients       what --parallel is for
    --parallel 1, C clients       contrast: requests queue, throughput should stay ~1x

ratio = (P, C clients) / (P, 1 client). With --require-ratio R the script exits 1 when the ratio
is below R. /props `batching` (forward passes, rows) is read around every case to show how many
rows each forward pass carried on average (prompt rows included).

Only the Python standard library is used; only 127.0.0.1 is contacted. The server is always
stopped (SIGTERM, then SIGKILL) at the end and on failure.

Example:
    python3 bench/serve_throughput.py build-perf/models/medium-q4_0.gguf -t 2 --require-ratio 2.0
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time
import urllib.request

os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"
for _v in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_v, None)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PROMPT = "Once upon a time, in a small village by the sea, there lived a girl who"

sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
import serve_common  # noqa: E402

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def default_cli():
    env = os.environ.get("LMTK_CLI")
    if env:
        return env
    for sub in ("build-perf/bin/lmtk", "build-hf/bin/lmtk", "build/bin/lmtk"):
        p = os.path.join(REPO, sub)
        if os.access(p, os.X_OK):
            return p
    raise SystemExit("lmtk CLI not found: pass --cli or set LMTK_CLI")


class Server(serve_common.Server):
    """The tests' server harness (start on a free port, wait for /health, always stop), plus JSON
    helpers through a proxy-free opener."""

    def __init__(self, cli, model, parallel, threads, ctx, timeout=120):
        super().__init__(["--parallel", parallel, "-c", ctx], start_timeout=timeout, cli=cli, model=model,
                         threads=threads)

    def get_json(self, path, timeout=10):
        with _opener.open(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
            return json.loads(r.read())

    def post(self, path, body, timeout=600):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with _opener.open(req, timeout=timeout) as r:
            return json.loads(r.read())

    def batching(self):
        b = self.get_json("/props").get("batching", {})
        return b.get("forward_passes", 0), b.get("rows", 0)


def one_round(srv, clients, max_tokens):
    """C threads released together; returns (completion tokens, wall seconds)."""
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    results, errors = [None] * clients, []
    start = threading.Barrier(clients + 1)

    def worker(i):
        try:
            start.wait()
            results[i] = srv.post("/v1/completions", body)["usage"]["completion_tokens"]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError("request failed: " + "; ".join(errors))
    return sum(results), wall


def measure(srv, client_counts, max_tokens, reps):
    """Rounds of each client count, interleaved rep by rep (so a change in machine load hits
    every case alike); per case the median over reps and the forward passes it took."""
    out = {c: {"clients": c, "all": [], "toks": [], "walls": [], "passes": 0, "rows": 0} for c in client_counts}
    for _ in range(reps):
        for c in client_counts:
            p0, r0 = srv.batching()
            n, w = one_round(srv, c, max_tokens)
            p1, r1 = srv.batching()
            o = out[c]
            o["toks"].append(n)
            o["walls"].append(w)
            o["all"].append(n / w)
            o["passes"] += p1 - p0
            o["rows"] += r1 - r0
    res = []
    for c in client_counts:
        o = out[c]
        res.append({"clients": c, "tps": statistics.median(o["all"]), "all": o["all"],
                    "tokens": statistics.median(o["toks"]), "wall": statistics.median(o["walls"]),
                    "passes": o["passes"] / reps,
                    "rows_per_pass": o["rows"] / o["passes"] if o["passes"] else float("nan")})
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--cli", default=None, help="lmtk binary (default: LMTK_CLI, build-perf, build-hf, build)")
    ap.add_argument("--parallel", type=int, default=4, help="server slots of the main case (default 4)")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-c", "--ctx", type=int, default=512, help="context per slot (default 512)")
    ap.add_argument("-n", "--max-tokens", type=int, default=64)
    ap.add_argument("-r", "--reps", type=int, default=3)
    ap.add_argument("--no-contrast", action="store_true", help="skip the --parallel 1 contrast")
    ap.add_argument("--require-ratio", type=float, default=None)
    ap.add_argument("--json", default=None, help="also write the results to this file")
    a = ap.parse_args()
    cli = a.cli or default_cli()

    rows = []
    with Server(cli, a.model, a.parallel, a.threads, a.ctx) as srv:
        srv.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "ignore_eos": True})
        base, multi = measure(srv, [1, a.clients], a.max_tokens, a.reps)
        rows += [(a.parallel, base), (a.parallel, multi)]
    if not a.no_contrast and a.parallel != 1:
        with Server(cli, a.model, 1, a.threads, a.ctx) as srv:
            srv.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "ignore_eos": True})
            c1, cn = measure(srv, [1, a.clients], a.max_tokens, a.reps)
            rows += [(1, c1), (1, cn)]

    print(f"model {os.path.basename(a.model)}, -t {a.threads}, -c {a.ctx}, max_tokens {a.max_tokens}, "
          f"{a.reps} reps interleaved (median), prompt {len(PROMPT)} chars")
    print("| --parallel | clients | tokens/round | wall s | gen tok/s (median) | all reps | forward passes/round | rows/pass |")
    print("| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for p, r in rows:
        print(f"| {p} | {r['clients']} | {r['tokens']} | {r['wall']:.2f} | {r['tps']:.1f} | "
              f"{', '.join(f'{x:.1f}' for x in r['all'])} | {r['passes']:.1f} | {r['rows_per_pass']:.2f} |")
    ratio = multi["tps"] / base["tps"]
    print(f"ratio --parallel {a.parallel}, {a.clients} clients / 1 client: {ratio:.2f}x")
    if len(rows) == 4:
        print(f"contrast --parallel 1, {a.clients} clients / 1 client: {rows[3][1]['tps'] / rows[2][1]['tps']:.2f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": [{"parallel": p, **r} for p, r in rows], "ratio": ratio}, f, indent=1)
    if a.require_ratio is not None and ratio < a.require_ratio:
        print(f"FAIL: ratio {ratio:.2f} < required {a.require_ratio:.2f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
