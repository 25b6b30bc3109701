"""Independent numpy readers for a Hugging Face Llama checkpoint folder: safetensors weights,
config.json, and tokenizer.json's BPE, written from the formats' definitions.

  HFLlamaRef(dir)   the Llama forward pass of llama_ref.LlamaRef, with weights taken straight
                    from model.safetensors (HF names, [out, in] shapes) and RoPE in HF's
                    rotate-half ("neox") form: pairs (x[i], x[i + rope_dim/2]).
  BpeRef(dir)       tokenizer.json BPE with byte fallback, the slow obvious way: normalize
                    (prepend "\u2581", spaces -> "\u2581"), one symbol per character, then
                    repeatedly merge the lowest-ranked adjacent pair listed in `merges`.
"""

import json
import os
import struct
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_ref import LlamaRef  # noqa: E402

_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def read_safetensors(path):
    """{name: np.ndarray} of a .safetensors file (F32/F16/F64; BF16 widened to float32)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = data[base + begin:base + end]
        shape = tuple(info["shape"])
        if info["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            out[name] = u.view(np.float32).reshape(shape)
        else:
            out[name] = np.frombuffer(raw, dtype=np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")).reshape(shape)
    return out


class HFLlamaRef(LlamaRef):
    def __init__(self, folder):  # noqa: super().__init__ reads GGUF; this reads the folder
        with open(os.path.join(folder, "config.json")) as f:
            cfg = json.load(f)
        w = read_safetensors(os.path.join(folder, "model.safetensors"))
        self.n_embd = cfg["hidden_size"]
        self.n_layer = cfg["num_hidden_layers"]
        self.n_ff = cfg["intermediate_size"]
        self.n_head = cfg["num_attention_heads"]
        self.n_head_kv = cfg.get("num_key_value_heads", self.n_head)
        self.eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.head_dim = cfg.get("head_dim") or self.n_embd // self.n_head
        self.rope_dim = self.head_dim
        self.theta = float(cfg.get("rope_theta", 10000.0))

        def f64(name):
            return np.asarray(w[name], dtype=np.float64)

        # torch's save_model keeps one copy of tied weights, possibly only as lm_head.weight
        embed = "model.embed_tokens.weight" if "model.embed_tokens.weight" in w else "lm_head.weight"
        self.tok_embd = f64(embed)
        self.n_vocab = self.tok_embd.shape[0]
        self.out_norm = f64("model.norm.weight")
        tied = cfg.get("tie_word_embeddings", False)
        self.output = self.tok_embd if tied or "lm_head.weight" not in w else f64("lm_head.weight")
        self.layers = []
        for i in range(self.n_layer):
            p = f"model.layers.{i}."
            self.layers.append({
                "attn_norm": f64(p + "input_layernorm.weight"),
                "wq": f64(p + "self_attn.q_proj.weight"),
                "wk": f64(p + "self_attn.k_proj.weight"),
                "wv": f64(p + "self_attn.v_proj.weight"),
                "wo": f64(p + "self_attn.o_proj.weight"),
                "ffn_norm": f64(p + "post_attention_layernorm.weight"),
                "w_gate": f64(p + "mlp.gate_proj.weight"),
                "w_up": f64(p + "mlp.up_proj.weight"),
                "w_down": f64(p + "mlp.down_proj.weight"),
            })
            for key, proj in (("bq", "q_proj"), ("bk", "k_proj"), ("bv", "v_proj"), ("bo", "o_proj")):
                if p + f"self_attn.{proj}.bias" in w:
                    self.layers[-1][key] = f64(p + f"self_attn.{proj}.bias")
        self.bos = int(cfg.get("bos_token_id", 1))
        self.eos = int(cfg.get("eos_token_id", 2))
        self.tokens = None
        self.token_types = None

    def rope(self, x, positions):
        """Rotate-half RoPE: (x[i], x[i + half]) by pos * theta^(-2i/rope_dim)."""
        half = self.rope_dim // 2
        i = np.arange(half, dtype=np.float64)
        inv_freq = self.theta ** (-2.0 * i / self.rope_dim)
        ang = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq
        cos = np.cos(ang)[:, None, :]
        sin = np.sin(ang)[:, None, :]
        out = x.copy()
        x0 = x[..., 0:half]
        x1 = x[..., half:2 * half]
        out[..., 0:half] = x0 * cos - x1 * sin
        out[..., half:2 * half] = x0 * sin + x1 * cos
        return out


class BpeRef:
    SPACE = "\u2581"

    def __init__(self, folder):
        with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
            t = json.load(f)
        m = t["model"]
        assert m["type"] == "BPE"
        self.vocab = dict(m["vocab"])
        for a in t.get("added_tokens") or []:
            self.vocab[a["content"]] = a["id"]
        self.ranks = {}
        for r, mg in enumerate(m["merges"]):
            a, b = mg.split(" ", 1) if isinstance(mg, str) else mg
            self.ranks.setdefault((a, b), r)
        self.unk = self.vocab.get(m.get("unk_token"))
        self.text_of = {i: t for t, i in self.vocab.items()}

    def decode(self, ids):
        """Text of generated ids (no byte tokens in this vocabulary; specials render empty)."""
        return "".join("" if i <= 2 else self.text_of[i] for i in ids).replace(self.SPACE, " ")

    def encode(self, text):
        """Ids of `text` without BOS (no special-token parsing)."""
        if not text:
            return []
        s = self.SPACE + text.replace(" ", self.SPACE)
        syms = []
        for ch in s:
            if ch in self.vocab:
                syms.append(ch)
            elif syms and syms[-1] is None:
                continue  # fuse a run of unknown characters
            else:
                syms.append(None)
        while True:
            best = None
            for i in range(len(syms) - 1):
                if syms[i] is None or syms[i + 1] is None:
                    continue
                r = self.ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            syms[i:i + 2] = [syms[i] + syms[i + 1]]
        return [self.unk if s is None else self.vocab[s] for s in syms]
