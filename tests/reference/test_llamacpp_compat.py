"""Files written by `lmtk quantize` load in llama.cpp (through llama-cpp-python) and give the
logits lmtk gives for them: the on-disk block layouts of every format lmtk writes agree with
ggml's, which the hand-built spec blocks of tests/quant/kquants.cpp check only against the
spec text.

llama-cpp-python compiles llama.cpp from source when installed (minutes), so CI does not
install it: without it this test prints "SKIP: ..." and passes. To run it:
    python -m venv venv && CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON
        -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF" venv/bin/pip install llama-cpp-python numpy
(not GGML_NATIVE=ON on this machine: it builds ggml's AMX kernels, whose tile instructions raise
SIGILL in this VM although CPUID reports AMX; bench/compare_llamacpp uses the same flags)
    LMTK_CLI=build/bin/lmtk venv/bin/python tests/reference/test_llamacpp_compat.py

Perplexity: `lmtk perplexity -c 128` of files lmtk quantized equals llama.cpp's perplexity of the
same files within 0.5% (llama.cpp's method, computed here from llama.cpp's logits over the same
token ids, chunk by chunk: BOS first, the second half of each chunk scored).

Models: stories260K (dim 64, so the K-quant mixes fall back to Q5_0/Q8_0/IQ4_NL/F16 there)
and a random-weight Llama written here whose every row is a multiple of 256 (dim 256, FFN 512,
2 layers), quantized to every K format. For each file, both programs evaluate the same token
ids; the logits must agree to within the error that llama.cpp's own int8 quantization of the
activations adds (a few percent of their RMS), far below what one misplaced bit of a block
layout costs (the logits of another model altogether: error of order one).
"""

import os
import struct
import subprocess
import sys
import tempfile
import unittest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

try:
    import llama_cpp  # noqa: F401
except ImportError:
    print("SKIP: llama-cpp-python (module llama_cpp) is not installed; the llama.cpp "
          "compatibility check of lmtk quantize's files did not run")
    sys.exit(0)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

PROMPT = "Once upon a time there was a little girl who liked to play in the park"

# Relative RMS of (llama.cpp logits - lmtk logits) over RMS of lmtk's, per file.
MAX_REL_DIFF = 0.05
# Share of positions where both pick the same top token.
MIN_ARGMAX_AGREEMENT = 0.9


# --- a minimal GGUF writer for the random model ---------------------------------------------

_SCALAR_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _skip_value(buf, pos, vtype):
    if vtype == 8:  # string
        (n,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + n
    if vtype == 9:  # array
        etype, count = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if etype in _SCALAR_SIZE:
            return pos + count * _SCALAR_SIZE[etype]
        for _ in range(count):
            pos = _skip_value(buf, pos, etype)
        return pos
    return pos + _SCALAR_SIZE[vtype]


def tokenizer_kv_blobs(path):
    """The raw bytes of every tokenizer.* key/value of a GGUF file, to copy as they are."""
    with open(path, "rb") as f:
        buf = f.read()
    _, _, _, n_kv = struct.unpack_from("<4sIqq", buf, 0)
    pos, blobs = 24, []
    for _ in range(n_kv):
        start = pos
        (klen,) = struct.unpack_from("<Q", buf, pos)
        key = buf[pos + 8:pos + 8 + klen].decode()
        pos += 8 + klen
        (vtype,) = struct.unpack_from("<I", buf, pos)
        pos = _skip_value(buf, pos + 4, vtype)
        if key.startswith("tokenizer."):
            blobs.append(buf[start:pos])
    return blobs


def _kv(key, fmt, vtype, value):
    k = key.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<I", vtype) + struct.pack(fmt, value)


def _kv_str(key, value):
    k, v = key.encode(), value.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<IQ", 8, len(v)) + v


def write_random_model(path, vocab_model):
    dim, ffn, layers, heads, kv_heads, n_vocab = 256, 512, 2, 4, 2, 512
    kvs = [_kv_str("general.architecture", "llama"), _kv_str("general.name", "random-256")]
    u32 = lambda k, v: _kv(k, "<I", 4, v)  # noqa: E731
    f32 = lambda k, v: _kv(k, "<f", 6, v)  # noqa: E731
    kvs += [u32("llama.context_length", 256), u32("llama.embedding_length", dim), u32("llama.block_count", layers),
            u32("llama.feed_forward_length", ffn), u32("llama.attention.head_count", heads),
            u32("llama.attention.head_count_kv", kv_heads), f32("llama.attention.layer_norm_rms_epsilon", 1e-5),
            u32("llama.rope.dimension_count", dim // heads), f32("llama.rope.freq_base", 10000.0),
            u32("llama.vocab_size", n_vocab), u32("general.file_type", 0)]
    kvs += tokenizer_kv_blobs(vocab_model)
    rng = np.random.default_rng(7)
    tensors = []  # (name, ne, data)

    def add(name, cols, rows=None):
        if rows is None:
            tensors.append((name, [cols], np.ones(cols, dtype="<f4")))
        else:
            tensors.append((name, [cols, rows],
                            (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype("<f4")))

    add("token_embd.weight", dim, n_vocab)
    add("output_norm.weight", dim)
    add("output.weight", dim, n_vocab)
    kv_dim = dim // heads * kv_heads
    for i in range(layers):
        p = f"blk.{i}."
        add(p + "attn_norm.weight", dim)
        add(p + "attn_q.weight", dim, dim)
        add(p + "attn_k.weight", dim, kv_dim)
        add(p + "attn_v.weight", dim, kv_dim)
        add(p + "attn_output.weight", dim, dim)
        add(p + "ffn_norm.weight", dim)
        add(p + "ffn_gate.weight", dim, ffn)
        add(p + "ffn_up.weight", dim, ffn)
        add(p + "ffn_down.weight", ffn, dim)

    pad = lambda n: (n + 31) // 32 * 32  # noqa: E731  (default alignment)
    out = bytearray(b"GGUF" + struct.pack("<Iqq", 3, len(tensors), len(kvs)))
    for b in kvs:
        out += b
    offset = 0
    for name, ne, data in tensors:
        k = name.encode()
        out += struct.pack("<Q", len(k)) + k + struct.pack("<I", len(ne))
        out += struct.pack(f"<{len(ne)}q", *ne) + struct.pack("<IQ", 0, offset)
        offset += pad(data.nbytes)
    out += bytes(pad(len(out)) - len(out))
    for _, _, data in tensors:
        out += data.tobytes() + bytes(pad(data.nbytes) - data.nbytes)
    with open(path, "wb") as f:
        f.write(out)


# --- the comparison --------------------------------------------------------------------------

def lmtk_logits(model, tmp):
    path = os.path.join(tmp, "lmtk.logits")
    common.run_cli(["eval", "-m", model, "-p", PROMPT, "--logits-out", path, "-t", "1"], timeout=120)
    return np.fromfile(path, dtype="<f4")


def llamacpp_logits(model, tokens):
    llm = llama_cpp.Llama(model_path=model, n_ctx=256, logits_all=True, n_threads=1, verbose=False)
    llm.eval(tokens)
    logits = np.array(llm.scores[:llm.n_tokens], dtype=np.float32)
    del llm
    return logits.reshape(-1)


PPL_CTX = 128
PPL_REL_TOL = 0.005
DATA = os.path.join(common.REPO_ROOT, "tests", "data", "tinystories_sample.txt")


def llamacpp_perplexity(model, tokens, ctx, bos):
    """llama.cpp's perplexity method over llama.cpp's logits (as tests/reference/test_perplexity.py)."""
    llm = llama_cpp.Llama(model_path=model, n_ctx=ctx, logits_all=True, n_threads=1, verbose=False)
    nll = []
    for i in range(len(tokens) // ctx):
        chunk = list(tokens[i * ctx:(i + 1) * ctx])
        chunk[0] = bos
        llm.reset()
        llm.eval(chunk)
        logits = np.array(llm.scores[:ctx], dtype=np.float64)
        for j in range(ctx // 2, ctx - 1):
            row = logits[j] - logits[j].max()
            nll.append(np.log(np.exp(row).sum()) - row[chunk[j + 1]])
    del llm
    return float(np.exp(np.mean(nll)))


class LlamaCppCompat(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="lmtk-llamacpp-")
        cls.stories = common.model_path()
        cls.random = os.path.join(cls.tmp.name, "random-f32.gguf")
        write_random_model(cls.random, cls.stories)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def check_file(self, source, qtype, extra=()):
        out = os.path.join(self.tmp.name, f"{os.path.basename(source)}.{qtype}.gguf")
        common.run_cli(["quantize", source, out, qtype, *extra], timeout=300)
        # The prompt as lmtk tokenizes it (BOS first), so both programs see the same ids.
        tokens = common.cli_tokenize(out, PROMPT)
        ours = lmtk_logits(out, self.tmp.name)
        theirs = llamacpp_logits(out, tokens)
        self.assertEqual(ours.size, theirs.size, f"{qtype}: logits of different sizes")
        n_vocab = ours.size // len(tokens)
        diff = np.sqrt(np.mean((ours - theirs) ** 2) / np.mean(ours ** 2))
        agree = np.mean(ours.reshape(-1, n_vocab).argmax(1) == theirs.reshape(-1, n_vocab).argmax(1))
        print(f"  {os.path.basename(source)} {qtype:8s}: relative logit difference {diff:.4f}, "
              f"argmax agreement {agree:.2f}")
        self.assertLess(diff, MAX_REL_DIFF, f"{qtype}: llama.cpp and lmtk disagree on {out}")
        self.assertGreaterEqual(agree, MIN_ARGMAX_AGREEMENT, qtype)

    def test_perplexity_equals_llamacpp(self):
        import re
        for qtype in ["Q8_0", "Q4_0", "Q4_K_M"]:
            with self.subTest(qtype=qtype):
                out = os.path.join(self.tmp.name, f"ppl.{qtype}.gguf")
                common.run_cli(["quantize", self.stories, out, qtype], timeout=300)
                res = common.run_cli(["perplexity", "-m", out, "-f", DATA, "-c", PPL_CTX, "-t", "1"], timeout=300)
                m = re.findall(r"Final estimate:\s*PPL\s*=\s*([-+0-9.eE]+)", res.text() + res.err())
                self.assertTrue(m, "no final estimate from lmtk perplexity")
                ours = float(m[-1])
                with open(DATA, "rb") as f:
                    tokens = common.cli_tokenize(out, f.read().decode("utf-8"))
                theirs = llamacpp_perplexity(out, tokens, PPL_CTX, tokens[0])
                rel = abs(ours - theirs) / theirs
                print(f"  perplexity {qtype:7s}: lmtk {ours:.4f}, llama.cpp {theirs:.4f} (rel {rel:.2e})")
                self.assertLessEqual(rel, PPL_REL_TOL)

    def test_stories260k_formats(self):
        # Q2_K/Q4_K_M here fall back to IQ4_NL / Q5_0 / Q8_0 / F16 (rows of 64 and 172).
        for qtype in ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "Q2_K", "Q4_K_M"]:
            with self.subTest(qtype=qtype):
                self.check_file(self.stories, qtype)

    def test_random_256_k_formats(self):
        for qtype in ["Q2_K", "Q3_K_S", "Q4_K_S", "Q5_K_S", "Q6_K", "IQ4_NL"]:
            with self.subTest(qtype=qtype):
                self.check_file(self.random, qtype, ["--pure"])
        for qtype in ["Q3_K_M", "Q4_K_M", "Q5_K_M"]:
            with self.subTest(qtype=qtype):
                self.check_file(self.random, qtype)


if __name__ == "__main__":
    unittest.main(verbosity=2)
