"""Shared helpers for the numpy reference tests: locating the CLI and the test models,
running the CLI with timeouts, parsing its outputs, and caching the reference model."""

import functools
import os
import re
import subprocess
import sys

# Single-threaded OpenBLAS (numpy's BLAS): the matrices are tiny and test machines are shared;
# BLAS worker threads only spin against the CLI and other jobs. Set before numpy is imported.
# (Only OpenBLAS reads this variable, so it does not change how the lmtk CLI runs.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from llama_ref import LlamaRef  # noqa: E402

DEFAULT_TIMEOUT = 60


def models_dir():
    d = os.environ.get("LMTK_TEST_MODELS") or os.path.join(REPO_ROOT, "..", "shared", "models")
    return os.path.abspath(d)


def model_path(name="stories260K.gguf"):
    p = os.path.join(models_dir(), name)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"test model not found: {p} (set LMTK_TEST_MODELS)")
    return p


def cli_path():
    """The lmtk CLI: $LMTK_CLI, else the usual build folders. Raises with a clear message."""
    env = os.environ.get("LMTK_CLI")
    if env:
        if not os.access(env, os.X_OK):
            raise FileNotFoundError(f"LMTK_CLI={env} is not an executable file")
        return env
    for sub in ("build/bin/lmtk", "build-ref/cpp/bin/lmtk"):
        p = os.path.join(REPO_ROOT, sub)
        if os.access(p, os.X_OK):
            return p
    raise FileNotFoundError("lmtk CLI not found: set LMTK_CLI to the built `lmtk` binary")


class CliResult:
    def __init__(self, args, rc, stdout, stderr):
        self.args, self.rc, self.stdout, self.stderr = args, rc, stdout, stderr

    def text(self):
        return self.stdout.decode("utf-8", errors="replace")

    def err(self):
        return self.stderr.decode("utf-8", errors="replace")

    def describe(self):
        return (f"command: {' '.join(self.args)}\nexit code: {self.rc}\n"
                f"stderr (tail): {self.err()[-2000:]}")


def run_cli(args, stdin=None, timeout=DEFAULT_TIMEOUT, check=True):
    """Run `lmtk ARGS...`; stdin as str/bytes; returns CliResult. check=True asserts rc == 0."""
    cmd = [cli_path()] + [str(a) for a in args]
    if isinstance(stdin, str):
        stdin = stdin.encode("utf-8")
    try:
        proc = subprocess.run(cmd, input=stdin if stdin is not None else b"",
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"timed out after {timeout}s: {' '.join(cmd)}") from e
    res = CliResult(cmd, proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError("lmtk exited with an error\n" + res.describe())
    return res


def parse_ids(text):
    """Token ids printed by `lmtk tokenize` (one line, ints separated by spaces/commas/brackets)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) != 1:
        raise AssertionError(f"expected one line of token ids from `lmtk tokenize`, got {text!r}")
    ids = [int(t) for t in re.findall(r"-?\d+", lines[0])]
    return ids


def cli_tokenize(model, text, bos=True):
    args = ["tokenize", "-m", model] + ([] if bos else ["--no-bos"])
    return parse_ids(run_cli(args, stdin=text).text())


@functools.lru_cache(maxsize=4)
def reference_model(path):
    return LlamaRef(path)
