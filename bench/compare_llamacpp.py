"""lmtk bench vs llama.cpp (llama-cpp-python) on the same GGUF, run in alternation.

Run through bench/compare_llamacpp, which provides the venv with llama_cpp. llama.cpp is timed
the way llama-bench times it: random tokens, an empty KV cache per run, one warm-up run, pp = one
batched evaluation of the prompt, tg = tokens evaluated one at a time; the same thread count for
both phases. lmtk is timed by `lmtk bench -o json` with the same settings.
"""
import argparse
import json
import random
import statistics
import subprocess
import sys
import time


def llamacpp_runs(llm, n_vocab, n_prompt, n_gen, reps):
    rng = random.Random(42)
    tokens = [rng.randrange(n_vocab) for _ in range(max(n_prompt, n_gen))]
    samples = []
    for r in range(reps + 1):  # the first run warms up
        llm.reset()  # n_tokens = 0: eval() drops every cached position before it runs
        t0 = time.perf_counter()
        if n_prompt:
            llm.eval(tokens[:n_prompt])
        else:
            for i in range(n_gen):
                llm.eval(tokens[i:i + 1])
        dt = time.perf_counter() - t0
        if r:
            samples.append((n_prompt + n_gen) / dt)
    return samples


def lmtk_runs(lmtk, model, threads, n_prompt, n_gen, reps):
    cmd = [lmtk, "bench", "-m", model, "-t", str(threads), "-r", str(reps), "-o", "json",
           "-p", str(n_prompt), "-n", str(n_gen)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    for rec in json.loads(out):
        if rec["n_prompt"] == n_prompt and rec["n_gen"] == n_gen:
            return rec["samples_ts"], rec
    raise RuntimeError("lmtk bench did not report the test")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmtk", required=True)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-p", default="128,512")
    ap.add_argument("-n", default="64")
    ap.add_argument("-r", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2, help="alternations of lmtk and llama.cpp per test")
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()

    import llama_cpp
    tests = [(int(p), 0) for p in a.p.split(",") if p] + [(0, int(n)) for n in a.n.split(",") if n]
    rows = []
    for model in a.models:
        n_ctx = max(max(p, n) for p, n in tests) + 16
        llm = llama_cpp.Llama(model_path=model, n_threads=a.t, n_threads_batch=a.t, n_ctx=n_ctx, n_batch=512,
                              n_ubatch=512, verbose=False)
        n_vocab = llm.n_vocab()
        for n_prompt, n_gen in tests:
            ours, theirs, rec = [], [], None
            for _ in range(a.rounds):
                s, rec = lmtk_runs(a.lmtk, model, a.t, n_prompt, n_gen, a.r)
                ours += s
                theirs += llamacpp_runs(llm, n_vocab, n_prompt, n_gen, a.r)
            test = f"pp{n_prompt}" if n_prompt else f"tg{n_gen}"
            rows.append((rec["model_type"], test, ours, theirs, rec))
            m, t = statistics.mean(ours), statistics.mean(theirs)
            print(f"{rec['model_type']:24s} {test:6s} lmtk {m:9.2f} t/s   llama.cpp {t:9.2f} t/s   ratio {m / t:5.2f}",
                  file=sys.stderr, flush=True)
        del llm

    print(f"| model | test | lmtk t/s | llama.cpp t/s | lmtk / llama.cpp | lmtk share of read BW |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for model_type, test, ours, theirs, rec in rows:
        m, t = statistics.mean(ours), statistics.mean(theirs)
        sm = statistics.stdev(ours) if len(ours) > 1 else 0.0
        st = statistics.stdev(theirs) if len(theirs) > 1 else 0.0
        share = f"{100 * rec['bw_share']:.0f}%" if "bw_share" in rec else ""
        print(f"| {model_type} | {test} | {m:.2f} ± {sm:.2f} | {t:.2f} ± {st:.2f} | {m / t:.2f} | {share} |")
    print(f"\n{a.t} threads, {a.rounds} alternating rounds of {a.r} runs each")


if __name__ == "__main__":
    main()
