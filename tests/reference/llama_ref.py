"""Independent numpy reference of the Llama forward pass over a GGUF file (float64).

Written from the architecture's definition, not from any C++ implementation:

  x = token_embd[ids]
  per layer:
    h = rmsnorm(x) * attn_norm
    q, k, v = h Wq^T, h Wk^T, h Wv^T        (per head, head_dim = n_embd / n_head)
    RoPE ("normal"/GGUF llama convention): within the first rope_dim dims of each head,
         pairs (x[2i], x[2i+1]) are rotated by angle pos * theta^(-2i/rope_dim)
    grouped-query attention: query head h reads kv head h // (n_head / n_head_kv);
         causal softmax(q k^T / sqrt(head_dim)) v
    x = x + attn Wo^T
    h = rmsnorm(x) * ffn_norm
    x = x + (silu(h Wgate^T) * (h Wup^T)) Wdown^T
  logits = (rmsnorm(x) * output_norm) Wout^T   (Wout = token_embd when output.weight is absent)

rmsnorm(x) = x / sqrt(mean(x^2) + eps).
"""

import os
import sys

# Single-threaded OpenBLAS (numpy's BLAS): the matrices are tiny and test machines are shared;
# BLAS worker threads only spin against the CLI and other jobs. Set before numpy is imported.
# (Only OpenBLAS reads this variable, so it does not change how the lmtk CLI runs.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gguf_reader import GGUFFile  # noqa: E402


class LlamaRef:
    def __init__(self, path):
        g = GGUFFile(path)
        self.gguf = g
        arch = g.get("general.architecture")
        if arch != "llama":
            raise ValueError(f"reference supports llama only, got {arch!r}")
        p = "llama."
        self.n_embd = int(g.get(p + "embedding_length"))
        self.n_layer = int(g.get(p + "block_count"))
        self.n_ff = int(g.get(p + "feed_forward_length"))
        self.n_head = int(g.get(p + "attention.head_count"))
        self.n_head_kv = int(g.get(p + "attention.head_count_kv", self.n_head))
        self.eps = float(g.get(p + "attention.layer_norm_rms_epsilon", 1e-5))
        self.head_dim = self.n_embd // self.n_head
        self.rope_dim = int(g.get(p + "rope.dimension_count", self.head_dim))
        self.theta = float(g.get(p + "rope.freq_base", 10000.0))
        if self.n_head % self.n_head_kv:
            raise ValueError("n_head must be a multiple of n_head_kv")
        if self.rope_dim % 2 or self.rope_dim > self.head_dim:
            raise ValueError("bad rope dimension_count")

        def w(name):
            return np.asarray(g.tensor(name), dtype=np.float64)

        self.tok_embd = w("token_embd.weight")  # [n_vocab, n_embd]
        self.n_vocab = self.tok_embd.shape[0]
        self.out_norm = w("output_norm.weight")
        self.output = w("output.weight") if "output.weight" in g.tensors else self.tok_embd
        self.layers = []
        for i in range(self.n_layer):
            b = f"blk.{i}."
            self.layers.append({
                "attn_norm": w(b + "attn_norm.weight"),
                "wq": w(b + "attn_q.weight"),        # [n_embd, n_embd]
                "wk": w(b + "attn_k.weight"),        # [n_head_kv*head_dim, n_embd]
                "wv": w(b + "attn_v.weight"),
                "wo": w(b + "attn_output.weight"),   # [n_embd, n_embd]
                "ffn_norm": w(b + "ffn_norm.weight"),
                "w_gate": w(b + "ffn_gate.weight"),  # [n_ff, n_embd]
                "w_up": w(b + "ffn_up.weight"),      # [n_ff, n_embd]
                "w_down": w(b + "ffn_down.weight"),  # [n_embd, n_ff]
            })

        # tokenizer metadata for decoding
        self.tokens = g.get("tokenizer.ggml.tokens")
        self.token_types = g.get("tokenizer.ggml.token_type")
        self.bos = int(g.get("tokenizer.ggml.bos_token_id", 1))
        self.eos = int(g.get("tokenizer.ggml.eos_token_id", 2))

    # -- building blocks -------------------------------------------------------------------
    def rmsnorm(self, x, weight):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * weight

    def rope(self, x, positions):
        """x: [n_tok, n_heads, head_dim]; rotate interleaved pairs of the first rope_dim dims."""
        half = self.rope_dim // 2
        i = np.arange(half, dtype=np.float64)
        inv_freq = self.theta ** (-2.0 * i / self.rope_dim)               # [half]
        ang = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq  # [n_tok, half]
        cos = np.cos(ang)[:, None, :]
        sin = np.sin(ang)[:, None, :]
        out = x.copy()
        x0 = x[..., 0:self.rope_dim:2]
        x1 = x[..., 1:self.rope_dim:2]
        out[..., 0:self.rope_dim:2] = x0 * cos - x1 * sin
        out[..., 1:self.rope_dim:2] = x0 * sin + x1 * cos
        return out

    # -- forward ---------------------------------------------------------------------------
    def forward(self, ids, start_pos=0):
        """Full (cache-free) forward over the token ids; returns float64 logits [n_tok, n_vocab]."""
        ids = np.asarray(ids, dtype=np.int64)
        n = len(ids)
        hd, nh, nkv = self.head_dim, self.n_head, self.n_head_kv
        group = nh // nkv
        pos = np.arange(start_pos, start_pos + n)
        x = self.tok_embd[ids].copy()                                    # [n, n_embd]
        causal = np.triu(np.ones((n, n), dtype=bool), k=1)               # True = masked
        scale = 1.0 / np.sqrt(hd)
        for L in self.layers:
            h = self.rmsnorm(x, L["attn_norm"])
            # Attention biases (Qwen2: q/k/v; Llama with attention_bias: also o) when present.
            q = (h @ L["wq"].T + L.get("bq", 0.0)).reshape(n, nh, hd)
            k = (h @ L["wk"].T + L.get("bk", 0.0)).reshape(n, nkv, hd)
            v = (h @ L["wv"].T + L.get("bv", 0.0)).reshape(n, nkv, hd)
            q = self.rope(q, pos)
            k = self.rope(k, pos)
            kv_of_head = np.arange(nh) // group
            kh = k[:, kv_of_head, :]                                     # [n, nh, hd]
            vh = v[:, kv_of_head, :]
            scores = np.einsum("qhd,khd->hqk", q, kh) * scale            # [nh, n, n]
            scores = np.where(causal[None], -np.inf, scores)
            scores -= scores.max(axis=-1, keepdims=True)
            p = np.exp(scores)
            p /= p.sum(axis=-1, keepdims=True)
            att = np.einsum("hqk,khd->qhd", p, vh).reshape(n, nh * hd)
            x = x + att @ L["wo"].T + L.get("bo", 0.0)
            h = self.rmsnorm(x, L["ffn_norm"])
            gate = h @ L["w_gate"].T
            up = h @ L["w_up"].T
            act = gate / (1.0 + np.exp(-gate)) * up                      # silu(gate) * up
            x = x + act @ L["w_down"].T
        x = self.rmsnorm(x, self.out_norm)
        return x @ self.output.T

    def greedy(self, n_new, prompt_ids=None, stop_at_eos=True):
        """Greedy decode by full recompute; returns generated ids (without the prompt)."""
        ids = list(prompt_ids) if prompt_ids is not None else [self.bos]
        out = []
        for _ in range(n_new):
            logits = self.forward(ids)
            t = int(np.argmax(logits[-1]))
            if stop_at_eos and t == self.eos:
                break
            out.append(t)
            ids.append(t)
        return out

    # -- decoding (SentencePiece-style vocab in the GGUF) ----------------------------------
    def token_bytes(self, t):
        piece = self.tokens[t]
        ttype = int(self.token_types[t]) if self.token_types is not None else 1
        if ttype == 6 and piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
            return bytes([int(piece[3:5], 16)])
        if ttype in (2, 3, 5):  # unknown / control / unused render as nothing
            return b""
        return piece.replace("\u2581", " ").encode("utf-8", errors="surrogateescape")

    def decode(self, ids):
        return b"".join(self.token_bytes(t) for t in ids).decode("utf-8", errors="replace")


def softmax_nll(logits, target):
    """-log softmax(logits)[target], computed stably in float64."""
    z = np.asarray(logits, dtype=np.float64)
    m = z.max()
    return float(np.log(np.exp(z - m).sum()) + m - z[target])


if __name__ == "__main__":
    model = LlamaRef(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    ids = model.greedy(n)
    print(ids, file=sys.stderr)
    sys.stdout.write(model.decode(ids))
