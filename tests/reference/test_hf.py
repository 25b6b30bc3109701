"""Hugging Face checkpoint folders through the CLI: `lmtk run/eval/tokenize -m DIR` and
`lmtk convert DIR OUT.gguf`, against independent numpy readers (hf_ref.py, gguf_reader.py).

Model: tinystories-656k (LlamaForCausalLM, F32 safetensors, tied embeddings, tokenizer.json BPE).

  - tokenize: `lmtk tokenize -m DIR` equals a slow, obvious BPE over tokenizer.json (BpeRef),
    and `-m converted.gguf` gives the same ids (the tokenizer survives conversion);
  - logits: `lmtk eval -m DIR` against the numpy forward with rotate-half RoPE on the
    safetensors weights, within 1e-4 relative (the bound of test_logits.py, same reasoning:
    dot products of at most 384 terms, 2 layers); the converted GGUF (F32) against the GGUF
    reference with interleaved RoPE, which only agrees if convert permuted Q and K correctly;
  - greedy: 100 greedy tokens of `lmtk run -m DIR` equal those of `-m converted.gguf` and of the
    numpy reference, and read like a story;
  - the converted file's metadata and its Q rows (permuted) against the safetensors.
"""

import os
import sys
import tempfile
import unittest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from gguf_reader import GGUFFile  # noqa: E402
from hf_ref import BpeRef, HFLlamaRef, read_safetensors  # noqa: E402
from llama_ref import LlamaRef  # noqa: E402

REL_TOL = 1e-4
N_GREEDY = 100
FOLDER = "tinystories-656k"
PROMPTS = [
    "",
    "Once upon a time, there was a little",
    "Tom had a small red boat. Every morning he took it to the pond near his house. One day the "
    "wind was strong and the boat went far away. Tom was sad, but his friend Mia came to help.",
]
TOKENIZE_TEXTS = PROMPTS[1:] + ["  two  spaces", "Line one.\nLine two!", "caf\u00e9 ~~ 42 ok", "a"]


def folder():
    d = os.path.join(common.models_dir(), FOLDER)
    if not os.path.isfile(os.path.join(d, "config.json")):
        raise FileNotFoundError(f"test model folder not found: {d} (set LMTK_TEST_MODELS)")
    return d


def rel_err(ours, ref):
    return np.abs(ours - ref).max(axis=1) / np.abs(ref).max(axis=1)


class HFTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = folder()
        cls.tmp = tempfile.TemporaryDirectory()
        cls.gguf = os.path.join(cls.tmp.name, "tinystories-f32.gguf")
        common.run_cli(["convert", cls.dir, cls.gguf, "--type", "f32"])
        cls.ref = HFLlamaRef(cls.dir)
        cls.bpe = BpeRef(cls.dir)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def eval_logits(self, model, prompt, n_ids):
        out = os.path.join(self.tmp.name, "logits.f32")
        common.run_cli(["eval", "-m", model, "-p", prompt, "--logits-out", out])
        raw = np.fromfile(out, dtype="<f4")
        self.assertEqual(raw.size, n_ids * self.ref.n_vocab)
        return raw.reshape(n_ids, self.ref.n_vocab).astype(np.float64)

    # -- tokenizer ---------------------------------------------------------------------------
    def test_tokenize_matches_reference_bpe(self):
        for text in TOKENIZE_TEXTS:
            ids = common.cli_tokenize(self.dir, text)
            self.assertEqual(ids[0], 1, "BOS <|start_story|> first")
            self.assertEqual(ids[1:], self.bpe.encode(text), f"tokenize -m DIR differs for {text!r}")
            self.assertEqual(common.cli_tokenize(self.gguf, text), ids,
                             f"the converted GGUF tokenizes {text!r} differently")

    # -- logits ------------------------------------------------------------------------------
    def test_logits_folder_vs_numpy(self):
        for prompt in PROMPTS:
            ids = common.cli_tokenize(self.dir, prompt)
            ours = self.eval_logits(self.dir, prompt, len(ids))
            ref = self.ref.forward(ids)
            rel = rel_err(ours, ref)
            print(f"[dir, {len(ids)} tokens] max rel err {rel.max():.3e}")
            self.assertLessEqual(rel.max(), REL_TOL, f"prompt {prompt[:30]!r}: rel err {rel.max():.3e}")
            self.assertTrue((ours.argmax(axis=1) == ref.argmax(axis=1)).all())

    def test_logits_converted_gguf_vs_numpy(self):
        gref = LlamaRef(self.gguf)  # interleaved RoPE on the converted (permuted) weights
        for prompt in PROMPTS:
            ids = common.cli_tokenize(self.gguf, prompt)
            ours = self.eval_logits(self.gguf, prompt, len(ids))
            ref_hf = self.ref.forward(ids)
            rel_g = rel_err(gref.forward(ids), ref_hf)
            rel = rel_err(ours, ref_hf)
            print(f"[gguf, {len(ids)} tokens] lmtk vs hf ref {rel.max():.3e}, gguf ref vs hf ref {rel_g.max():.3e}")
            self.assertLessEqual(rel_g.max(), 1e-9, "the converted GGUF is not the same model (Q/K permutation?)")
            self.assertLessEqual(rel.max(), REL_TOL)

    # -- greedy ------------------------------------------------------------------------------
    def test_greedy_folder_equals_converted_and_reference(self):
        args = ["-p", "", "-n", str(N_GREEDY), "--temp", "0", "--ignore-eos"]
        from_dir = common.run_cli(["run", "-m", self.dir] + args).text()
        from_gguf = common.run_cli(["run", "-m", self.gguf] + args).text()
        self.assertEqual(from_dir, from_gguf, "greedy text of the folder and its converted GGUF differ")
        self.assertTrue(from_dir.lstrip().startswith("Once upon a time"), from_dir[:200])
        ref_ids = self.ref.greedy(N_GREEDY, stop_at_eos=False)
        self.assertEqual(len(ref_ids), N_GREEDY)
        ref_text = self.bpe.decode(ref_ids)
        self.assertEqual(from_dir.strip(), ref_text.strip(), "lmtk's greedy text differs from the numpy reference's")
        print("greedy:", from_dir[:120].replace("\n", " "), "...")

    # -- convert -----------------------------------------------------------------------------
    def test_converted_metadata_and_permutation(self):
        g = GGUFFile(self.gguf)
        self.assertEqual(g.get("general.architecture"), "llama")
        self.assertEqual(g.get("tokenizer.ggml.model"), "llama")
        self.assertEqual(len(g.get("tokenizer.ggml.tokens")), 2048)
        self.assertEqual(len(g.get("tokenizer.ggml.merges")), 1967)
        self.assertEqual(int(g.get("tokenizer.ggml.bos_token_id")), 1)
        self.assertEqual(int(g.get("tokenizer.ggml.eos_token_id")), 2)
        self.assertEqual(int(g.get("llama.attention.head_count_kv")), 4)
        self.assertEqual(int(g.get("llama.rope.dimension_count")), 16)
        self.assertNotIn("output.weight", g.tensors)  # tied
        w = read_safetensors(os.path.join(self.dir, "model.safetensors"))
        q_hf = w["model.layers.0.self_attn.q_proj.weight"]
        k_hf = w["model.layers.1.self_attn.k_proj.weight"]

        def permute(x, n_head):  # HF rotate-half rows -> interleaved rows, per head
            hd = x.shape[0] // n_head
            return x.reshape(n_head, 2, hd // 2, x.shape[1]).swapaxes(1, 2).reshape(x.shape)

        np.testing.assert_array_equal(g.tensor("blk.0.attn_q.weight"), permute(q_hf, 8))
        np.testing.assert_array_equal(g.tensor("blk.1.attn_k.weight"), permute(k_hf, 4))
        np.testing.assert_array_equal(g.tensor("blk.0.attn_v.weight"), w["model.layers.0.self_attn.v_proj.weight"])
        np.testing.assert_array_equal(g.tensor("token_embd.weight"), w["lm_head.weight"])

    def test_convert_errors(self):
        res = common.run_cli(["convert", self.dir, os.path.join(self.tmp.name, "x.gguf"), "--type", "q9_9"], check=False)
        self.assertNotEqual(res.rc, 0)
        self.assertIn("unknown --type", res.err())
        res = common.run_cli(["convert", self.gguf, os.path.join(self.tmp.name, "y.gguf")], check=False)
        self.assertNotEqual(res.rc, 0)
        self.assertIn("not a folder", res.err())
        res = common.run_cli(["run", "-m", self.tmp.name, "-p", "x"], check=False)
        self.assertNotEqual(res.rc, 0)
        self.assertIn("config.json", res.err())


if __name__ == "__main__":
    unittest.main(verbosity=2)
