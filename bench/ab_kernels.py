#!/usr/bin/env python3
"""A/B of two bench_quant_kernels builds (say, before and after a kernel change) on a noisy
machine: runs them in alternation for several rounds and keeps each benchmark's best time, so a
neighbour's burst hits both builds alike and the minima compare the kernels.

  bench/ab_kernels.py OLD_BINARY NEW_BINARY 'matmul_interleaved<q::q8_0>' [ROUNDS=6]
"""
import collections
import re
import subprocess
import sys


def main() -> int:
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    binaries, pattern = sys.argv[1:3], sys.argv[3]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 6
    best = collections.defaultdict(lambda: [float("inf"), float("inf")])
    for _ in range(rounds):
        for i, binary in enumerate(binaries):
            out = subprocess.run([binary, f"--benchmark_filter={pattern}", "--benchmark_min_time=0.1"],
                                 capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                m = re.match(r"^(bm\S+)\s+([\d.]+) (ms|us|ns)", line)
                if m:
                    us = float(m.group(2)) * {"ms": 1000.0, "us": 1.0, "ns": 0.001}[m.group(3)]
                    best[m.group(1)][i] = min(best[m.group(1)][i], us)
    for name, (old, new) in best.items():
        print(f"{name:50s} old {old:10.1f} us  new {new:10.1f} us  old/new {old / new:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
