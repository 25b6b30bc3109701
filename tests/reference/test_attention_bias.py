"""Attention biases: Qwen2ForCausalLM (q/k/v biases, rotate-half RoPE) and LlamaForCausalLM with
attention_bias (q/k/v/o biases) checkpoint folders, through `lmtk eval -m DIR` and
`lmtk convert`, against the independent numpy forward (hf_ref.HFLlamaRef, which adds the biases).

No real Qwen2 checkpoint fits in the shared models, so the weights here are random (seeded) in
real Qwen2 layout; the tokenizer is tinystories-656k's (2048 tokens), which fixes the vocabulary
size. The biases are large (std 0.5) so that dropping any one of them moves the logits far
beyond the tolerance.

Tolerance: 1e-4 relative to each position's largest logit, the bound of test_logits.py and
test_hf.py (float32 dot products of at most 128 terms over 2 layers against float64). The
converted GGUF must give the folder's logits within 1e-5: same weights, same kernels, only the
RoPE pairing (and for llama the Q/K row and bias permutation) differs.
"""

import json
import os
import shutil
import struct
import sys
import tempfile
import unittest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from gguf_reader import GGUFFile  # noqa: E402
from hf_ref import HFLlamaRef  # noqa: E402

HIDDEN, FF, LAYERS, HEADS, KV_HEADS, VOCAB = 64, 128, 2, 4, 2, 2048
REL_TOL = 1e-4
PROMPT = "Once upon a time, there was a little dog named Max. He liked to run in the park."


def write_safetensors(path, tensors):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def make_checkpoint(folder, arch, with_o_bias, seed):
    rng = np.random.default_rng(seed)
    hd = HIDDEN // HEADS

    def normal(*shape, std=0.1):
        return rng.normal(0.0, std, size=shape).astype(np.float32)

    w = {"model.embed_tokens.weight": normal(VOCAB, HIDDEN, std=0.5),
         "model.norm.weight": 1.0 + normal(HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1.0 + normal(HIDDEN)
        w[p + "post_attention_layernorm.weight"] = 1.0 + normal(HIDDEN)
        w[p + "self_attn.q_proj.weight"] = normal(HEADS * hd, HIDDEN)
        w[p + "self_attn.k_proj.weight"] = normal(KV_HEADS * hd, HIDDEN)
        w[p + "self_attn.v_proj.weight"] = normal(KV_HEADS * hd, HIDDEN)
        w[p + "self_attn.o_proj.weight"] = normal(HIDDEN, HEADS * hd)
        w[p + "self_attn.q_proj.bias"] = normal(HEADS * hd, std=0.5)
        w[p + "self_attn.k_proj.bias"] = normal(KV_HEADS * hd, std=0.5)
        w[p + "self_attn.v_proj.bias"] = normal(KV_HEADS * hd, std=0.5)
        if with_o_bias:
            w[p + "self_attn.o_proj.bias"] = normal(HIDDEN, std=0.5)
        w[p + "mlp.gate_proj.weight"] = normal(FF, HIDDEN)
        w[p + "mlp.up_proj.weight"] = normal(FF, HIDDEN)
        w[p + "mlp.down_proj.weight"] = normal(HIDDEN, FF)
    os.makedirs(folder)
    write_safetensors(os.path.join(folder, "model.safetensors"), w)
    cfg = {"architectures": [arch], "hidden_size": HIDDEN, "intermediate_size": FF,
           "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
           "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 512,
           "vocab_size": VOCAB, "tie_word_embeddings": True, "hidden_act": "silu",
           "bos_token_id": 1, "eos_token_id": 2}
    if arch == "Qwen2ForCausalLM":
        # Qwen2 configs name a window but do not use it.
        cfg.update({"sliding_window": 4, "use_sliding_window": False, "max_window_layers": 2})
    else:
        cfg["attention_bias"] = True
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    src = os.path.join(common.models_dir(), "tinystories-656k")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(src, name), folder)


class AttentionBiasTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def eval_logits(self, model, n_ids):
        out = os.path.join(self.tmp.name, "logits.f32")
        common.run_cli(["eval", "-m", model, "-p", PROMPT, "--logits-out", out])
        raw = np.fromfile(out, dtype="<f4")
        self.assertEqual(raw.size, n_ids * VOCAB)
        return raw.reshape(n_ids, VOCAB).astype(np.float64)

    def check(self, arch, with_o_bias, gguf_arch, seed):
        folder = os.path.join(self.tmp.name, arch)
        make_checkpoint(folder, arch, with_o_bias, seed)
        ids = common.cli_tokenize(folder, PROMPT)
        self.assertGreater(len(ids), 10)
        ref = HFLlamaRef(folder)
        expect = ref.forward(ids)
        ours = self.eval_logits(folder, len(ids))
        rel = (np.abs(ours - expect).max(axis=1) / np.abs(expect).max(axis=1)).max()
        print(f"[{arch}, {len(ids)} tokens] max rel err vs numpy {rel:.3e}")
        self.assertLessEqual(rel, REL_TOL)
        # The biases matter: the same model without them is far away.
        for layer in ref.layers:
            for key in ("bq", "bk", "bv", "bo"):
                layer.pop(key, None)
        unbiased = ref.forward(ids)
        self.assertGreater((np.abs(unbiased - expect).max(axis=1) / np.abs(expect).max(axis=1)).max(), 100 * REL_TOL)

        gguf = os.path.join(self.tmp.name, arch + ".gguf")
        common.run_cli(["convert", folder, gguf, "--type", "f32"])
        g = GGUFFile(gguf)
        self.assertEqual(g.get("general.architecture"), gguf_arch)
        self.assertEqual(int(g.get(f"{gguf_arch}.attention.head_count_kv")), KV_HEADS)
        self.assertIn("blk.0.attn_q.bias", g.tensors)
        self.assertEqual("blk.1.attn_output.bias" in g.tensors, with_o_bias)
        converted = self.eval_logits(gguf, len(ids))
        rel_c = (np.abs(converted - ours).max(axis=1) / np.abs(ours).max(axis=1)).max()
        print(f"[{arch} -> {gguf_arch} GGUF] max rel diff vs the folder {rel_c:.3e}")
        self.assertLessEqual(rel_c, 1e-5)

    def test_qwen2(self):
        self.check("Qwen2ForCausalLM", with_o_bias=False, gguf_arch="qwen2", seed=2)

    def test_llama_with_attention_bias(self):
        self.check("LlamaForCausalLM", with_o_bias=True, gguf_arch="llama", seed=3)


if __name__ == "__main__":
    unittest.main(verbosity=2)
