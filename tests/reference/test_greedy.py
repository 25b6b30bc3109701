"""Greedy generation of `lmtk run` against the reference text and the numpy reference,
plus sampling determinism and CLI error reporting.

stories260K.greedy200.txt holds the greedy continuation from BOS alone, decoded, without the
leading space of the first piece ("\u2581Once") and without a trailing newline (the file ends
in the middle of a sentence, "... so she"). It is 200 generated tokens: the numpy reference
reproduces it byte for byte with 200 greedy tokens (test_reference_reproduces_file), so
`lmtk run -n 200` must print it, give or take leading whitespace and anything printed after.
"""

import os
import sys
import unittest

# Single-threaded OpenBLAS (numpy's BLAS): the matrices are tiny and test machines are shared;
# BLAS worker threads only spin against the CLI and other jobs. Set before numpy is imported.
# (Only OpenBLAS reads this variable, so it does not change how the lmtk CLI runs.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

GREEDY_FILE = "stories260K.greedy200.txt"


def read_expected():
    with open(common.model_path(GREEDY_FILE), "rb") as f:
        data = f.read()
    # Used as is: the file's last byte is the 'e' of "she" (no trailing newline to strip),
    # and every newline inside it is a generated "<0x0A>" token.
    return data.decode("utf-8")


class GreedyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model = common.model_path()
        cls.ref = common.reference_model(cls.model)

    # -- reference self-check (does not need the CLI) --------------------------------------
    def test_reference_reproduces_file(self):
        expected = read_expected()
        ids = self.ref.greedy(200)
        text = self.ref.decode(ids)
        self.assertEqual(text.lstrip(), expected,
                         "the numpy reference does not reproduce the greedy200 file: the "
                         "reference itself is wrong, fix it before trusting other tests")

    # -- CLI -------------------------------------------------------------------------------
    def test_cli_greedy_matches_file(self):
        expected = read_expected()
        res = common.run_cli(["run", "-m", self.model, "-p", "", "-n", "200", "--temp", "0"])
        got = res.text().lstrip()
        if not got.startswith(expected):
            n = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b),
                     min(len(got), len(expected)))
            self.fail(f"`lmtk run` greedy output differs from {GREEDY_FILE} at char {n}:\n"
                      f"  expected ...{expected[max(0, n - 40):n + 40]!r}\n"
                      f"  got      ...{got[max(0, n - 40):n + 40]!r}\n"
                      f"(got {len(got)} chars, expected at least {len(expected)})")

    def test_cli_greedy_matches_reference(self):
        ids = self.ref.greedy(30)
        ref_text = self.ref.decode(ids).lstrip()
        res = common.run_cli(["run", "-m", self.model, "-p", "", "-n", "30", "--temp", "0"])
        got = res.text().lstrip()
        self.assertTrue(got.startswith(ref_text),
                        f"greedy 30 tokens differ from the numpy reference:\n"
                        f"  reference: {ref_text!r}\n  lmtk:      {got!r}")

    def test_cli_seeded_sampling_is_deterministic(self):
        args = ["run", "-m", self.model, "-p", "Once upon a time", "-n", "60",
                "--seed", "42", "--temp", "0.8"]
        a = common.run_cli(args).text()
        b = common.run_cli(args).text()
        self.assertTrue(a.strip(), "seeded run printed nothing")
        self.assertEqual(a, b, "two runs with --seed 42 --temp 0.8 printed different text")

    # -- every kernel level (one binary; LMTK_CPU / --cpu forces a lower one) --------------
    def runnable_levels(self):
        """The kernel levels this build compiled and this CPU runs, lowest first."""
        levels = []
        for level in ("generic", "sse4.2", "avx2", "avx512-vnni", "neon-dotprod"):
            res = common.run_cli(["run", "-m", self.model, "-p", "", "-n", "1", "--temp", "0",
                                  "--cpu", level], check=False)
            if res.rc == 0:
                levels.append(level)
            else:
                self.assertTrue("this CPU runs at most" in res.err()
                                or "is not a kernel level of this build" in res.err(),
                                res.describe())
        self.assertTrue(levels, "no kernel level runs on this CPU")
        return levels

    def test_cli_greedy_matches_file_at_every_kernel_level(self):
        expected = read_expected()
        for level in self.runnable_levels():
            with self.subTest(level=level):
                got = common.run_cli(["run", "-m", self.model, "-p", "", "-n", "200", "--temp", "0",
                                      "--cpu", level]).text().lstrip()
                self.assertTrue(got.startswith(expected), f"--cpu {level}: {got[:120]!r}...")

    def test_cli_quantized_greedy_agrees_across_kernel_levels(self):
        # Q4_0 and Q8_0 take the int8 kernels of each level (AVX-512 VNNI, AVX2, NEON SDOT)
        # over the interleaved layouts, and the float kernels at SSE4.2 and generic: the integer sums are exact and
        # the float steps alike, so the int8 levels give one greedy text. The float path's
        # (int8 activations cost a little precision) must agree on the first tokens.
        import tempfile
        levels = self.runnable_levels()
        with tempfile.TemporaryDirectory() as tmp:
            for qtype in ("Q4_0", "Q8_0"):
                path = os.path.join(tmp, f"stories260K-{qtype}.gguf")
                common.run_cli(["quantize", self.model, path, qtype])
                texts = {level: common.run_cli(["run", "-m", path, "-p", "Once upon a time", "-n", "60",
                                                "--temp", "0", "--cpu", level]).text()
                         for level in levels}
                int8 = [texts[lv] for lv in levels if lv in ("avx2", "avx512-vnni", "neon-dotprod")]
                for text in int8[1:]:
                    self.assertEqual(text, int8[0], f"{qtype}: {texts}")
                for level, text in texts.items():
                    self.assertEqual(text[:40], texts[levels[-1]][:40], f"{qtype} --cpu {level}: {texts}")

    def assert_one_error_line(self, res, what):
        self.assertNotEqual(res.rc, 0, f"{what}: exit code 0\n{res.describe()}")
        lines = [ln for ln in res.err().splitlines() if ln.strip()]
        self.assertEqual(len(lines), 1, f"{what}: expected one line on stderr, got {lines!r}")
        self.assertTrue(lines[0].startswith("error:"),
                        f"{what}: stderr line does not start with 'error:': {lines[0]!r}")

    def test_cli_missing_model(self):
        missing = os.path.join(common.models_dir(), "does-not-exist.gguf")
        res = common.run_cli(["run", "-m", missing, "-p", "", "-n", "5"], check=False)
        self.assert_one_error_line(res, "missing model file")

    def test_cli_bad_flag(self):
        res = common.run_cli(["run", "-m", self.model, "--no-such-flag", "-n", "5"], check=False)
        self.assert_one_error_line(res, "unknown flag")


if __name__ == "__main__":
    unittest.main(verbosity=2)
