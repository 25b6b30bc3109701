"""`lmtk perplexity -c 128` against a numpy (float64) perplexity with llama.cpp's method.

Method (as llama.cpp's perplexity tool): tokens = tokenize(text) with BOS;
n_chunk = len(tokens) // ctx; chunk i is tokens[i*ctx:(i+1)*ctx] with its first token replaced
by BOS; only the second half of each chunk is scored: for j in [ctx//2, ctx-2], the NLL of
token j+1 under softmax(logits[j]). PPL = exp(mean NLL over all chunks).
The text, tests/data/tinystories_sample.txt, is original TinyStories-style prose.
"""

import math
import os
import re
import sys
import unittest

# Single-threaded OpenBLAS (numpy's BLAS): the matrices are tiny and test machines are shared;
# BLAS worker threads only spin against the CLI and other jobs. Set before numpy is imported.
# (Only OpenBLAS reads this variable, so it does not change how the lmtk CLI runs.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from llama_ref import softmax_nll  # noqa: E402

CTX = 128
REL_TOL = 1e-3
DATA = os.path.join(common.REPO_ROOT, "tests", "data", "tinystories_sample.txt")

_FINAL_RE = re.compile(r"Final estimate:\s*PPL\s*=\s*([-+0-9.eEnaif]+)(?:\s*\+/-\s*([-+0-9.eE]+))?")


def reference_perplexity(ref, tokens, ctx):
    n_chunk = len(tokens) // ctx
    first = ctx // 2
    nll = []
    for i in range(n_chunk):
        toks = list(tokens[i * ctx:(i + 1) * ctx])
        toks[0] = ref.bos
        logits = ref.forward(toks)  # the whole chunk in one batch
        for j in range(first, ctx - 1):
            nll.append(softmax_nll(logits[j], toks[j + 1]))
    nll = np.asarray(nll)
    return math.exp(nll.mean()), n_chunk, len(nll)


class PerplexityTest(unittest.TestCase):
    def test_perplexity_matches_reference(self):
        model = common.model_path()
        ref = common.reference_model(model)
        with open(DATA, "rb") as f:
            text = f.read().decode("utf-8")

        tokens = common.cli_tokenize(model, text)
        self.assertEqual(tokens[0], ref.bos, "tokenize did not prepend BOS")
        self.assertEqual(ref.decode(tokens[1:]).lstrip(" "), text,
                         "tokenize ids do not decode back to the sample text")
        self.assertGreaterEqual(len(tokens), 2 * CTX, "sample text too short for two chunks")

        ref_ppl, n_chunk, n_scored = reference_perplexity(ref, tokens, CTX)
        print(f"reference: {len(tokens)} tokens, {n_chunk} chunks, {n_scored} scored, "
              f"PPL = {ref_ppl:.6f}")
        self.assertTrue(1.0 < ref_ppl < 100.0, f"implausible reference PPL {ref_ppl}")

        res = common.run_cli(["perplexity", "-m", model, "-f", DATA, "-c", CTX], timeout=120)
        out = res.text() + "\n" + res.err()
        matches = _FINAL_RE.findall(out)
        self.assertTrue(matches, "no 'Final estimate: PPL = ...' line in the output of "
                                 f"`lmtk perplexity`:\n{out[-2000:]}")
        ours = float(matches[-1][0])
        err = matches[-1][1]
        print(f"lmtk:      PPL = {ours}" + (f" +/- {err}" if err else ""))
        rel = abs(ours - ref_ppl) / ref_ppl
        self.assertLessEqual(rel, REL_TOL,
                             f"perplexity differs: lmtk {ours} vs reference {ref_ppl:.6f} "
                             f"(rel {rel:.3e} > {REL_TOL}); reference used {n_chunk} chunks of "
                             f"{CTX}, {n_scored} scored tokens")


if __name__ == "__main__":
    unittest.main(verbosity=2)
