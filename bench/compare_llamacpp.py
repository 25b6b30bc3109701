"""Alternates llama.cpp's llama-bench and `lmtk bench --cpu LEVEL` on each model and test; prints
a markdown table of medians and the ratio lmtk / llama.cpp. Run through bench/compare_llamacpp,
which builds llama-bench for the level."""
import argparse
import json
import platform
import statistics
import subprocess


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def samples(records, n_prompt, n_gen):
    for rec in records:
        if rec["n_prompt"] == n_prompt and rec["n_gen"] == n_gen:
            return rec["samples_ts"], rec
    raise RuntimeError(f"no record for pp{n_prompt} tg{n_gen}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmtk", required=True)
    ap.add_argument("--llama-bench", required=True)
    ap.add_argument("--level", required=True)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-p", default="128,512")
    ap.add_argument("-n", default="64")
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("models", nargs="+")
    a = ap.parse_args()
    tests = [(int(p), 0) for p in a.p.split(",") if p] + [(0, int(n)) for n in a.n.split(",") if n]
    print(f"CPU: {cpu_model()}; threads {a.t}; level {a.level} (llama-bench built for it, lmtk --cpu {a.level}); "
          f"{a.rounds} alternating rounds of {a.r} repetitions")
    print("\n| model | test | llama.cpp t/s | lmtk t/s | lmtk / llama.cpp | lmtk GB/s | lmtk share of read BW |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for model in a.models:
        for n_prompt, n_gen in tests:
            ours, theirs, last = [], [], None
            for _ in range(a.rounds):
                lb = run_json([a.llama_bench, "-m", model, "-t", str(a.t), "-r", str(a.r), "-o", "json",
                               "-p", str(n_prompt), "-n", str(n_gen)])
                theirs += samples(lb, n_prompt, n_gen)[0]
                lm = run_json([a.lmtk, "bench", "-m", model, "-t", str(a.t), "-r", str(a.r), "-o", "json",
                               "-p", str(n_prompt), "-n", str(n_gen), "--cpu", a.level])
                s, last = samples(lm, n_prompt, n_gen)
                ours += s
            mo, mt = statistics.median(ours), statistics.median(theirs)
            test = f"tg{n_gen}" if n_gen else f"pp{n_prompt}"
            gbs = share = "-"
            if n_gen and last.get("bytes_per_token"):
                gbs = f"{last['bytes_per_token'] * mo / 1e9:.1f}"
                if last.get("read_bw_gbs"):
                    share = f"{100 * last['bytes_per_token'] * mo / 1e9 / last['read_bw_gbs']:.0f}%"
            name = model.rsplit("/", 1)[-1]
            print(f"| {name} | {test} | {mt:.1f} | {mo:.1f} | {mo / mt:.2f} | {gbs} | {share} |", flush=True)


if __name__ == "__main__":
    main()
