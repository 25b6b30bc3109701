"""Tokenizer speed: `lmtk tokenize` against llama.cpp's `llama-tokenize` on the same GGUF vocab
and the same 1 MiB text, whole processes (load + encode + print ids), alternating, median of N.

  python3 bench/tokenize_speed.py LMTK LLAMA_TOKENIZE VOCAB.gguf [VOCAB.gguf ...] [--reps 5]

The text: llama.cpp's tokenizer test inputs next to each vocab (VOCAB.gguf.inp: Unicode-heavy,
whitespace runs, digits, code) and this repository's README.md and C++ headers, concatenated and
repeated to 1 MiB, written to a temporary file. Both programs read it from a file (lmtk from
stdin) and print their ids; both are checked to print the same ids first (no BOS, special-token
text not parsed, on both sides), so that neither is timed on a different task. Prints one markdown row per vocab: seconds for each
and the ratio llama-tokenize / lmtk (above 1: lmtk is faster).
"""

import argparse
import glob
import os
import statistics
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SIZE = 1 << 20


def sample_text(vocab):
    parts = []
    inp = vocab + ".inp"
    if os.path.exists(inp):
        with open(inp, encoding="utf-8") as f:
            parts.append(f.read().replace("\n__ggml_vocab_test__\n", "\n"))
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        parts.append(f.read())
    for h in sorted(glob.glob(os.path.join(ROOT, "include", "lmtk", "tokenize", "*.hpp"))):
        with open(h, encoding="utf-8") as f:
            parts.append(f.read())
    text = "\n".join(parts)
    text = (text * (SIZE // len(text.encode("utf-8")) + 1)).encode("utf-8")[:SIZE]
    return text.decode("utf-8", "ignore")  # cut on a character boundary


def run_lmtk(lmtk, vocab, path):
    with open(path, "rb") as f:
        out = subprocess.run([lmtk, "tokenize", "-m", vocab, "--no-bos"], stdin=f, capture_output=True, check=True)
    return out.stdout


def run_llama(llama, vocab, path):
    # llama-tokenize parses special-token text and adds BOS by default; lmtk tokenize does
    # neither unless asked, so both are told the same.
    out = subprocess.run([llama, "-m", vocab, "-f", path, "--ids", "--log-disable", "--no-escape", "--no-bos",
                          "--no-parse-special"], capture_output=True, check=True)
    return out.stdout


def ids_of(raw):
    s = raw.decode().strip().strip("[]")
    return [int(x) for x in s.replace(",", " ").split() if x]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lmtk")
    ap.add_argument("llama_tokenize")
    ap.add_argument("vocabs", nargs="+")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    print("| vocab | ids | lmtk s | llama-tokenize s | llama-tokenize / lmtk |")
    print("|---|---|---|---|---|")
    for vocab in a.vocabs:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
            f.write(sample_text(vocab))
            path = f.name
        try:
            ours = ids_of(run_lmtk(a.lmtk, vocab, path))
            theirs = ids_of(run_llama(a.llama_tokenize, vocab, path))
            if ours != theirs:
                print(f"| {os.path.basename(vocab)} | lmtk {len(ours)} ids vs llama.cpp {len(theirs)}: different output, not timed | | | |")
                continue
            n_lmtk = len(ours)
            t_lmtk, t_llama = [], []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                run_lmtk(a.lmtk, vocab, path)
                t_lmtk.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                run_llama(a.llama_tokenize, vocab, path)
                t_llama.append(time.perf_counter() - t0)
            ml, mc = statistics.median(t_lmtk), statistics.median(t_llama)
            print(f"| {os.path.basename(vocab)} | {n_lmtk} | {ml:.3f} | {mc:.3f} | {mc / ml:.2f} |", flush=True)
        finally:
            os.unlink(path)


if __name__ == "__main__":
    main()
