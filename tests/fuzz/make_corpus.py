#!/usr/bin/env python3
"""Writes the seed corpora of lmtk's own loader harnesses (gguf, safetensors, tokenizer_json)
into tests/fuzz/corpus/<name>/, from small files made here and parts of the shared test data.

    python3 tests/fuzz/make_corpus.py [MODELS_DIR]     (default: $LMTK_TEST_MODELS or ../shared/models)

Deterministic: the same models folder gives the same bytes. Seeds are kept small (a few KB
each; the fuzzers run each input thousands of times a second) and valid where that matters,
so mutations start from files that load all the way to a forward pass. Standard library only.
"""
import json
import os
import random
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
MODELS = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("LMTK_TEST_MODELS") or ROOT / "../../../shared/models")
rng = random.Random(1234)


def write(harness, name, data):
    d = ROOT / "corpus" / harness
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


# --- GGUF -----------------------------------------------------------------------------------
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q8_0 = 0, 1, 2, 8


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gval(t, v):
    if t == STR:
        return gstr(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(gval(et, x) for x in items)
    return struct.pack(SCALAR[t], v)


def gguf(kvs, tensors, alignment=32):
    """kvs: [(key, type, value)]; tensors: [(name, ggml type, ne, bytes)]."""
    out = struct.pack("<IIqq", 0x46554747, 3, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += gstr(k) + struct.pack("<I", t) + gval(t, v)
    offset = 0
    for name, ty, ne, data in tensors:
        out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<q", e) for e in ne)
        out += struct.pack("<IQ", ty, offset)
        offset += (len(data) + alignment - 1) // alignment * alignment
    out += b"\0" * (-len(out) % alignment)
    for _, _, _, data in tensors:
        out += data + b"\0" * (-len(data) % alignment)
    return out


def f32s(n, scale=0.1):
    return struct.pack("<%df" % n, *[rng.gauss(0, scale) for _ in range(n)])


def f16s(n, scale=0.1):
    return struct.pack("<%de" % n, *[rng.gauss(0, scale) for _ in range(n)])


def q8_0(n):  # blocks of 32: f16 scale + 32 int8
    return b"".join(struct.pack("<e", 0.01) + bytes(rng.randrange(256) for _ in range(32)) for _ in range(n // 32))


def q4_0(n):  # blocks of 32: f16 scale + 16 bytes of nibbles
    return b"".join(struct.pack("<e", 0.01) + bytes(rng.randrange(256) for _ in range(16)) for _ in range(n // 32))


SPM_TOKENS = ["<unk>", "<s>", "</s>", "<0x0A>", "<0x20>", "<0x41>", "\u2581", "\u2581H", "e", "l", "o", "ll", "\u2581Hello",
              "\u2581w", "or", "ld", "\u2581world", "!", "a", "b", "<|user|>"]
SPM_TYPES = [2, 3, 3, 6, 6, 6] + [1] * 14 + [4]


def spm_vocab(n_vocab):
    toks = (SPM_TOKENS + ["\u2581t%d" % i for i in range(n_vocab)])[:n_vocab]
    types = (SPM_TYPES + [1] * n_vocab)[:n_vocab]
    return [("tokenizer.ggml.model", STR, "llama"),
            ("tokenizer.ggml.tokens", ARR, (STR, toks)),
            ("tokenizer.ggml.scores", ARR, (F32, [-float(i) for i in range(n_vocab)])),
            ("tokenizer.ggml.token_type", ARR, (I32, types)),
            ("tokenizer.ggml.bos_token_id", U32, 1), ("tokenizer.ggml.eos_token_id", U32, 2),
            ("tokenizer.ggml.unknown_token_id", U32, 0)]


def gpt2_vocab(n_vocab):
    # GPT-2's printable stand-ins for the bytes, then a few merges of them.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    stand_in = {b: chr(c) for b, c in zip(bs, cs)}
    toks = [stand_in[b] for b in range(256)]
    merges = ["\u0120 w", "\u0120w o", "h e", "l l", "he ll", "hell o"]
    for m in merges:
        toks.append(m.replace(" ", ""))
    toks += ["<|endoftext|>"]
    toks = (toks + ["x%d" % i for i in range(n_vocab)])[:max(n_vocab, len(toks))]
    types = [1] * len(toks)
    types[toks.index("<|endoftext|>")] = 3
    return [("tokenizer.ggml.model", STR, "gpt2"), ("tokenizer.ggml.pre", STR, "gpt-2"),
            ("tokenizer.ggml.tokens", ARR, (STR, toks)), ("tokenizer.ggml.token_type", ARR, (I32, types)),
            ("tokenizer.ggml.merges", ARR, (STR, merges)),
            ("tokenizer.ggml.eos_token_id", U32, toks.index("<|endoftext|>"))], len(toks)


def llama_gguf(arch="llama", d=8, heads=2, kv_heads=1, ff=16, layers=1, n_vocab=21, wtype=GGML_F32, bias=False,
               vocab_kvs=None, tied=False, extra_kvs=()):
    hd = d // heads
    kvs = [("general.architecture", STR, arch), ("general.name", STR, "lmtk fuzz seed"),
           (arch + ".embedding_length", U32, d), (arch + ".block_count", U32, layers),
           (arch + ".attention.head_count", U32, heads), (arch + ".attention.head_count_kv", U32, kv_heads),
           (arch + ".feed_forward_length", U32, ff), (arch + ".context_length", U32, 64),
           (arch + ".attention.layer_norm_rms_epsilon", F32, 1e-5), (arch + ".rope.freq_base", F32, 10000.0)]
    kvs += list(extra_kvs)
    kvs += vocab_kvs if vocab_kvs is not None else spm_vocab(n_vocab)
    mat = {GGML_F32: lambda n: f32s(n), GGML_F16: lambda n: f16s(n), GGML_Q8_0: q8_0, GGML_Q4_0: q4_0}[wtype]
    ts = [("token_embd.weight", GGML_F32, [d, n_vocab], f32s(d * n_vocab)),
          ("output_norm.weight", GGML_F32, [d], f32s(d, 1.0))]
    if not tied:
        ts.append(("output.weight", wtype, [d, n_vocab], mat(d * n_vocab)))
    for i in range(layers):
        p = "blk.%d." % i
        ts += [(p + "attn_norm.weight", GGML_F32, [d], f32s(d, 1.0)),
               (p + "attn_q.weight", wtype, [d, heads * hd], mat(d * heads * hd)),
               (p + "attn_k.weight", wtype, [d, kv_heads * hd], mat(d * kv_heads * hd)),
               (p + "attn_v.weight", wtype, [d, kv_heads * hd], mat(d * kv_heads * hd)),
               (p + "attn_output.weight", wtype, [heads * hd, d], mat(heads * hd * d)),
               (p + "ffn_norm.weight", GGML_F32, [d], f32s(d, 1.0)),
               (p + "ffn_gate.weight", wtype, [d, ff], mat(d * ff)),
               (p + "ffn_up.weight", wtype, [d, ff], mat(d * ff)),
               (p + "ffn_down.weight", wtype, [ff, d], mat(ff * d))]
        if bias:
            ts += [(p + "attn_q.bias", GGML_F32, [heads * hd], f32s(heads * hd)),
                   (p + "attn_k.bias", GGML_F32, [kv_heads * hd], f32s(kv_heads * hd)),
                   (p + "attn_v.bias", GGML_F32, [kv_heads * hd], f32s(kv_heads * hd))]
    return gguf(kvs, ts)


def gguf_header_end(data):
    """Byte offset just past the tensor infos of a GGUF file, and where its metadata ends."""
    _, _, n_tensors, n_kv = struct.unpack_from("<IIqq", data, 0)
    pos = 24

    def skip_value(t, p):
        if t in SCALAR:
            return p + struct.calcsize(SCALAR[t])
        if t == STR:
            return p + 8 + struct.unpack_from("<Q", data, p)[0]
        et, n = struct.unpack_from("<IQ", data, p)
        p += 12
        for _ in range(n):
            p = skip_value(et, p)
        return p

    for _ in range(n_kv):
        pos += 8 + struct.unpack_from("<Q", data, pos)[0]
        t = struct.unpack_from("<I", data, pos)[0]
        pos = skip_value(t, pos + 4)
    meta_end = pos
    for _ in range(n_tensors):
        pos += 8 + struct.unpack_from("<Q", data, pos)[0]
        nd = struct.unpack_from("<I", data, pos)[0]
        pos += 4 + 8 * nd + 12
    return pos, meta_end


def gguf_seeds():
    write("gguf", "tiny-llama-f32-spm.gguf", llama_gguf())
    write("gguf", "tiny-llama-q8_0.gguf", llama_gguf(d=32, heads=2, kv_heads=2, ff=64, wtype=GGML_Q8_0))
    write("gguf", "tiny-llama-q4_0-tied-2layers.gguf", llama_gguf(d=32, heads=4, kv_heads=2, ff=32, layers=2, wtype=GGML_Q4_0, tied=True))
    write("gguf", "tiny-llama-f16-keylength.gguf",
          llama_gguf(d=8, heads=2, kv_heads=2, wtype=GGML_F16,
                     extra_kvs=[("llama.rope.dimension_count", U32, 4), ("llama.attention.key_length", U32, 4),
                                ("llama.rope.scaling.type", STR, "linear"), ("llama.rope.scaling.factor", F32, 2.0)]))
    vk, nv = gpt2_vocab(0)
    write("gguf", "tiny-qwen2-bias-gpt2.gguf", llama_gguf(arch="qwen2", bias=True, vocab_kvs=vk, n_vocab=nv))
    # Every metadata value type, nested arrays and an explicit alignment; no tensors.
    write("gguf", "all-value-types.gguf", gguf(
        [("general.alignment", U32, 64), ("u8", U8, 7), ("i8", I8, -7), ("u16", U16, 700), ("i16", I16, -700),
         ("u32", U32, 70000), ("i32", I32, -70000), ("f32", F32, 0.5), ("bool", BOOL, True), ("str", STR, "s"),
         ("u64", U64, 1 << 40), ("i64", I64, -(1 << 40)), ("f64", F64, 0.25),
         ("nested", ARR, (ARR, [(U8, [1, 2]), (STR, ["a", "b"]), (ARR, [])]))], []))
    stories = MODELS / "stories260K.gguf"
    if stories.exists():
        data = stories.read_bytes()
        infos_end, meta_end = gguf_header_end(data)
        # The real model's header, cut after its tensor infos (refused: no data section) ...
        write("gguf", "stories260K-header.gguf", data[:infos_end])
        # ... and its metadata alone, the tensor count set to 0: its 512-token vocabulary loads.
        write("gguf", "stories260K-vocab-only.gguf", data[:8] + struct.pack("<q", 0) + data[16:meta_end])
    else:
        print("note: %s is missing; its seeds are skipped" % stories, file=sys.stderr)


# --- safetensors + config.json ----------------------------------------------------------------
def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, bytes)] -> the file's bytes."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, b in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data


def st_container(config, model, quantize_config=None):
    """The harness's input: flags | u16 n | config.json | (u16 m | quantize_config.json) | model.safetensors."""
    c = json.dumps(config, separators=(",", ":")).encode() if not isinstance(config, bytes) else config
    out = bytes([1 if quantize_config is not None else 0]) + struct.pack("<H", len(c)) + c
    if quantize_config is not None:
        q = json.dumps(quantize_config, separators=(",", ":")).encode()
        out += struct.pack("<H", len(q)) + q
    return out + model


def hf_config(d, heads, kv_heads, ff, layers, n_vocab, arch="LlamaForCausalLM", **extra):
    c = {"architectures": [arch], "hidden_size": d, "intermediate_size": ff, "num_hidden_layers": layers,
         "num_attention_heads": heads, "num_key_value_heads": kv_heads, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
         "max_position_embeddings": 64, "vocab_size": n_vocab, "hidden_act": "silu", "tie_word_embeddings": False}
    c.update(extra)
    return c


def float_bytes(dtype, n):
    if dtype == "F32":
        return f32s(n)
    if dtype == "F16":
        return f16s(n)
    return b"".join(struct.pack("<f", rng.gauss(0, 0.1))[2:] for _ in range(n))  # BF16: the high halves


def hf_float_model(dtype, d=8, heads=2, kv_heads=1, ff=16, layers=1, n_vocab=16, tied=False, bias=False):
    hd = d // heads
    ts = [("model.embed_tokens.weight", dtype, [n_vocab, d], float_bytes(dtype, n_vocab * d)),
          ("model.norm.weight", dtype, [d], float_bytes(dtype, d))]
    if not tied:
        ts.append(("lm_head.weight", dtype, [n_vocab, d], float_bytes(dtype, n_vocab * d)))
    for i in range(layers):
        p = "model.layers.%d." % i
        for name, shape in [("input_layernorm.weight", [d]), ("post_attention_layernorm.weight", [d]),
                            ("self_attn.q_proj.weight", [heads * hd, d]), ("self_attn.k_proj.weight", [kv_heads * hd, d]),
                            ("self_attn.v_proj.weight", [kv_heads * hd, d]), ("self_attn.o_proj.weight", [d, heads * hd]),
                            ("mlp.gate_proj.weight", [ff, d]), ("mlp.up_proj.weight", [ff, d]), ("mlp.down_proj.weight", [d, ff])]:
            n = 1
            for s in shape:
                n *= s
            ts.append((p + name, dtype, shape, float_bytes(dtype, n)))
        if bias:
            ts += [(p + "self_attn.q_proj.bias", dtype, [heads * hd], float_bytes(dtype, heads * hd)),
                   (p + "self_attn.k_proj.bias", dtype, [kv_heads * hd], float_bytes(dtype, kv_heads * hd)),
                   (p + "self_attn.v_proj.bias", dtype, [kv_heads * hd], float_bytes(dtype, kv_heads * hd))]
    return ts


def words(n):
    return bytes(rng.randrange(256) for _ in range(4 * n))


def hf_quantized_model(method, bits=4, act_order=False, gemv=False):
    """hidden 32, 2 heads of 16, ff 64, 1 layer, vocab 16; every linear quantized in groups of 32."""
    d, ff, n_vocab, g = 32, 64, 16, 32
    ts = [("model.embed_tokens.weight", "F16", [n_vocab, d], f16s(n_vocab * d)),
          ("model.norm.weight", "F16", [d], f16s(d)), ("lm_head.weight", "F16", [n_vocab, d], f16s(n_vocab * d)),
          ("model.layers.0.input_layernorm.weight", "F16", [d], f16s(d)),
          ("model.layers.0.post_attention_layernorm.weight", "F16", [d], f16s(d))]
    for name, out, inp in [("self_attn.q_proj", d, d), ("self_attn.k_proj", d, d), ("self_attn.v_proj", d, d),
                           ("self_attn.o_proj", d, d), ("mlp.gate_proj", ff, d), ("mlp.up_proj", ff, d), ("mlp.down_proj", d, ff)]:
        p = "model.layers.0." + name
        groups = inp // g
        if method == "awq" and not gemv:
            ts += [(p + ".qweight", "I32", [inp, out // 8], words(inp * out // 8)),
                   (p + ".qzeros", "I32", [groups, out // 8], words(groups * out // 8)),
                   (p + ".scales", "F16", [groups, out], struct.pack("<%de" % (groups * out), *[0.01] * (groups * out)))]
        elif method == "awq":
            zw = (groups + 7) // 8
            ts += [(p + ".qweight", "I32", [out, inp // 8], words(out * inp // 8)),
                   (p + ".qzeros", "I32", [out, zw], words(out * zw)),
                   (p + ".scales", "F16", [out, zw * 8], struct.pack("<%de" % (out * zw * 8), *[0.01] * (out * zw * 8)))]
        else:
            ts += [(p + ".qweight", "I32", [inp * bits // 32, out], words(inp * bits // 32 * out)),
                   (p + ".qzeros", "I32", [groups, out * bits // 32], words(groups * out * bits // 32)),
                   (p + ".scales", "F16", [groups, out], struct.pack("<%de" % (groups * out), *[0.01] * (groups * out)))]
            if act_order:
                gi = [k * groups // inp for k in range(inp)]
                rng.shuffle(gi)
                ts.append((p + ".g_idx", "I32", [inp], struct.pack("<%di" % inp, *gi)))
    return ts


def safetensors_seeds():
    write("safetensors", "tiny-f32.bin", st_container(hf_config(8, 2, 1, 16, 1, 16), safetensors(hf_float_model("F32"), {"format": "pt"})))
    write("safetensors", "tiny-f16-tied.bin", st_container(hf_config(8, 2, 2, 16, 1, 16, tie_word_embeddings=True),
                                                            safetensors(hf_float_model("F16", kv_heads=2, tied=True))))
    write("safetensors", "tiny-bf16-qwen2-bias.bin",
          st_container(hf_config(8, 2, 1, 16, 2, 16, arch="Qwen2ForCausalLM", rope_scaling={"type": "linear", "factor": 2.0},
                                 sliding_window=32, use_sliding_window=False),
                       safetensors(hf_float_model("BF16", layers=2, bias=True))))
    q = {"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": True, "version": "gemm"}
    write("safetensors", "tiny-awq-gemm.bin", st_container(hf_config(32, 2, 2, 64, 1, 16, quantization_config=q), safetensors(hf_quantized_model("awq"))))
    q = dict(q, version="gemv")
    write("safetensors", "tiny-awq-gemv.bin", st_container(hf_config(32, 2, 2, 64, 1, 16, quantization_config=q),
                                                            safetensors(hf_quantized_model("awq", gemv=True))))
    q = {"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": False, "sym": True, "checkpoint_format": "gptq"}
    write("safetensors", "tiny-gptq4.bin", st_container(hf_config(32, 2, 2, 64, 1, 16, quantization_config=q), safetensors(hf_quantized_model("gptq"))))
    # AutoGPTQ's layout: the quantization settings in quantize_config.json beside config.json.
    q = {"bits": 4, "group_size": 32, "desc_act": True, "sym": False, "checkpoint_format": "gptq_v2"}
    write("safetensors", "tiny-gptq4-actorder-quantize-config.bin",
          st_container(hf_config(32, 2, 2, 64, 1, 16), safetensors(hf_quantized_model("gptq", act_order=True)), q))
    q = {"quant_method": "gptq", "bits": 3, "group_size": 32, "desc_act": False}
    write("safetensors", "tiny-gptq3.bin", st_container(hf_config(32, 2, 2, 64, 1, 16, quantization_config=q),
                                                        safetensors(hf_quantized_model("gptq", bits=3))))
    ts = MODELS / "tinystories-656k"
    if ts.exists():
        # The real config.json with the real safetensors header, without the 2.6 MB of data.
        st = (ts / "model.safetensors").read_bytes()
        n = struct.unpack_from("<Q", st, 0)[0]
        write("safetensors", "tinystories-header-only.bin", st_container((ts / "config.json").read_bytes(), st[:8 + n]))
    else:
        print("note: %s is missing; its seeds are skipped" % ts, file=sys.stderr)


# --- tokenizer files and text -----------------------------------------------------------------
META_NORM = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                  {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}


def tokjson(obj, text=None, tokenizer_config=None, config=None):
    """Mode 0 of the harness: tokenizer.json, then text, tokenizer_config.json and config.json,
    separated by NUL bytes (trailing parts may be left out)."""
    dump = lambda o: json.dumps(o, ensure_ascii=False, separators=(",", ":")).encode()
    parts = [dump(obj), text.encode() if text is not None else None,
             dump(tokenizer_config) if tokenizer_config is not None else None, dump(config) if config is not None else None]
    while parts[-1] is None:
        parts.pop()
    return bytes([0]) + b"\0".join(p if p is not None else b"" for p in parts)


def protobuf_varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def pb_field(num, wire, payload):
    key = protobuf_varint(num << 3 | wire)
    if wire == 0:
        return key + protobuf_varint(payload)
    if wire == 5:
        return key + payload
    return key + protobuf_varint(len(payload)) + payload


def sentencepiece_model(pieces):
    """pieces: [(text, score, type)] -> a ModelProto with a BPE trainer spec."""
    out = b""
    for text, score, ty in pieces:
        out += pb_field(1, 2, pb_field(1, 2, text.encode()) + pb_field(2, 5, struct.pack("<f", score)) + pb_field(3, 0, ty))
    out += pb_field(2, 2, pb_field(3, 0, 2) + pb_field(40, 0, 0) + pb_field(41, 0, 1) + pb_field(42, 0, 2) +
                    pb_field(43, 0, (1 << 64) - 1))  # pad id -1, sign-extended as protobuf writes int32
    out += pb_field(3, 2, pb_field(3, 0, 1))
    return out


def vocab_cases(path):
    """The input strings of a llama.cpp vocabulary test file (cases separated by __ggml_vocab_test__)."""
    if not path.exists():
        print("note: %s is missing; its seeds are skipped" % path, file=sys.stderr)
        return []
    return [c.strip("\n") for c in path.read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n") if c.strip("\n")]


def tokenizer_seeds():
    # Metaspace BPE with byte fallback (the TinyStories/Llama form): holes, added tokens, pairs.
    write("tokenizer_json", "metaspace-bpe.bin", tokjson({
        "normalizer": META_NORM, "pre_tokenizer": None,
        "added_tokens": [{"id": 1, "content": "<s>", "special": True}, {"id": 2, "content": "</s>", "special": True},
                         {"id": 9, "content": "<|user|>", "special": False}],
        "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                                   {"Sequence": {"id": "A", "type_id": 0}}]},
        "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": True,
                  "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x41>": 3, "a": 4, "b": 5, "ab": 6, "\u2581": 7, "\u2581ab": 8},
                  "merges": [["a", "b"], "\u2581 ab"]}}, "ab ab<|user|>Ab</s>",
        {"bos_token": {"content": "<s>"}, "eos_token": "</s>", "pad_token": "<unk>", "add_bos_token": True, "add_eos_token": False},
        {"bos_token_id": 1, "eos_token_id": [2, 9]}))
    # The same with a Metaspace pre-tokenizer that does not split.
    write("tokenizer_json", "metaspace-pretokenizer.bin", tokjson({
        "normalizer": None, "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False},
        "model": {"type": "BPE", "vocab": {"<unk>": 0, "a": 1, "\u2581": 2, "\u2581a": 3}, "unk_token": "<unk>",
                  "merges": ["\u2581 a"]}}))
    # Byte-level BPE (GPT-2 form) with an unknown token standing in for missing bytes.
    write("tokenizer_json", "byte-level-bpe.bin", tokjson({
        "normalizer": {"type": "NFC"}, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
        "decoder": {"type": "ByteLevel"},
        "added_tokens": [{"id": 6, "content": "<|endoftext|>", "special": True}],
        "model": {"type": "BPE", "unk_token": "<unk>",
                  "vocab": {"<unk>": 0, "h": 1, "i": 2, "hi": 3, "\u0120": 4, "\u0120hi": 5}, "merges": ["h i", "\u0120 hi"]}},
        "hi hi<|endoftext|>\xff"))
    # Byte-level BPE split the Llama 3 way: Split(Regex, Isolated) + ByteLevel without its regex,
    # Digits, ignore_merges.
    llama3 = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
              "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
    write("tokenizer_json", "split-regex-bpe.bin", tokjson({
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": llama3}, "behavior": "Isolated", "invert": False},
            {"type": "Digits", "individual_digits": True},
            {"type": "Split", "pattern": {"String": "."}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "ignore_merges": True,
                  "vocab": {"h": 0, "i": 1, "hi": 2, "\u0120": 3, "\u0120hi": 4, "1": 5, "2": 6, ".": 7, "'": 8, "s": 9},
                  "merges": ["h i", "\u0120 hi"]}},
        "hi hi's 12.2  \n\n"))
    # The regex mode: a pattern, NUL, a text.
    for i, (pat, text) in enumerate([(llama3, "Hello world 12345 I'M \n\n x"), ("\\s+$|(a|b)*?c{1,3}", "ababccc  "),
                                     ("[\\p{Lu}\\p{M}]+(?!\\S)|[^\\x{41}-\\u005A]", "AB\u0301 x")]):
        write("tokenizer_json", "regex-%d.bin" % i, bytes([6]) + pat.encode() + b"\0" + text.encode())
    ts = MODELS / "tinystories-656k" / "tokenizer.json"
    if ts.exists():
        # The real file, cut down to its first 120 tokens and the merges among them (the whole
        # file is 86 KB: every run of it would cost milliseconds).
        j = json.loads(ts.read_text(encoding="utf-8"))
        keep = {t: i for t, i in j["model"]["vocab"].items() if i < 120}
        j["model"]["vocab"] = keep
        merges = []
        for m in j["model"]["merges"]:
            a, b = m.split(" ", 1) if isinstance(m, str) else m
            if a in keep and b in keep and a + b in keep:
                merges.append(m)
        j["model"]["merges"] = merges
        write("tokenizer_json", "tinystories-cut.bin", tokjson(j, "Once upon a time, there was a little girl named Lily."))
    # tokenizer.model: the real Llama-2 one's first 300 pieces (specials, byte pieces, merges).
    sp = MODELS / "tokenizer.model"
    pieces = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)] + [("<0x%02X>" % b, 0.0, 6) for b in range(256)]
    pieces += [("\u2581t", -1.0, 1), ("he", -2.0, 1), ("\u2581the", -3.0, 1), ("\u2581", -4.0, 1), ("h", -5.0, 1), ("e", -6.0, 1),
               ("t", -7.0, 1), ("<user>", 0.0, 4), ("x", 0.0, 5)]
    write("tokenizer_json", "sentencepiece-bpe.model.bin", bytes([1]) + sentencepiece_model(pieces))
    if sp.exists():
        data = sp.read_bytes()
        # Walk the top-level fields, keep the first 300 pieces and every other field as it is.
        pos, out, kept = 0, b"", 0
        while pos < len(data):
            start = pos
            key = 0
            shift = 0
            while True:
                b = data[pos]
                pos += 1
                key |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            wire = key & 7
            if wire == 2:
                n, shift = 0, 0
                while True:
                    b = data[pos]
                    pos += 1
                    n |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                pos += n
            elif wire == 0:
                while data[pos] & 0x80:
                    pos += 1
                pos += 1
            elif wire == 5:
                pos += 4
            elif wire == 1:
                pos += 8
            if key >> 3 == 1:
                kept += 1
                if kept > 300:
                    continue
            out += data[start:pos]
        write("tokenizer_json", "llama2-tokenizer.model-300.bin", bytes([1]) + out)
    # Text for the real vocabularies: llama.cpp's test inputs, one seed per case and mode.
    cases = vocab_cases(MODELS / "vocab" / "ggml-vocab-llama-spm.gguf.inp")
    for mode, tag in [(2, "llama-spm"), (3, "gpt2"), (4, "stories260K"), (5, "tinystories")]:
        for i, text in enumerate(cases):
            write("tokenizer_json", "%s-%02d.txt.bin" % (tag, i), bytes([mode]) + text.encode())


if __name__ == "__main__":
    gguf_seeds()
    safetensors_seeds()
    tokenizer_seeds()
