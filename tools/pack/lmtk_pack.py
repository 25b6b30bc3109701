#!/usr/bin/env python3
"""lmtk_pack: quantize a float Hugging Face Llama checkpoint folder into an AutoAWQ-GEMM or a
GPTQ (v1 "gptq" / v2 "gptq_v2") checkpoint folder, numpy only.

Written from /work/shared/spec/quant-formats.md sections 1 (AutoAWQ) and 2 (GPTQ); no code was
taken from AutoAWQ/AutoGPTQ/GPTQModel. The purpose is test material for lmtk's loaders: the
*bit layout* and config files are those of the real tools, the *choice of quantized values* is
not (see "Quantization" below), so these files are not quality-equivalent to real AWQ/GPTQ
checkpoints.

Usage:
  python lmtk_pack.py SRC_DIR OUT_DIR --format {awq,gptq,gptq_v2} [--bits {4,3}]
        [--group {32,64,128,-1}] [--act-order] [--asym] [--reference FILE]

  --format awq      AutoAWQ, version "gemm": 4-bit only, group 32/64/128, always asymmetric with
                    zero point (spec 1.2, 1.3).
  --format gptq     GPTQ v1 (AutoGPTQ): qzeros store z-1 (spec 2.5). Symmetric unless --asym.
  --format gptq_v2  GPTQ v2 (GPTQModel): qzeros store the true z.
  --bits            4 (default) or 3 for gptq/gptq_v2 (2 and 8 are accepted too, untested).
  --group           group size along the input dim, default 128; -1 = one group over all inputs.
  --act-order       gptq only: desc_act=true, non-monotonic g_idx (see below).
  --asym            gptq only: asymmetric (sym=false).
  --reference FILE  also write FILE (safetensors) with, per quantized linear <prefix>:
                      <prefix>.weight  F32 [out, in]: np.float32(q - z) * np.float32(scale_fp16)
                                       with the TRUE zero z (v1 offset already removed), i.e.
                                       exactly what a loader's dequantization must produce;
                      <prefix>.q       U8  [out, in]: the quantized values (debugging).

Input: SRC_DIR/model.safetensors or SRC_DIR/model.safetensors.index.json shards; F32/F16/BF16.
Output: OUT_DIR/model.safetensors (one file), config.json (source config + "torch_dtype":
"float16" + "quantization_config"), quantize_config.json (gptq formats), and the tokenizer /
generation files copied when present.

Quantized modules: model.layers.N.self_attn.{q,k,v,o}_proj and model.layers.N.mlp.{gate,up,
down}_proj (their .weight [out, in]) -> <prefix>.qweight/.qzeros/.scales (+ .g_idx int32 for
gptq, always written). Everything else (embeddings, norms, lm_head, biases) -> F16.

Quantization: plain ROUND-TO-NEAREST per (output row, input group). There is no calibration
data, no AWQ activation-aware scale search and no GPTQ Hessian error feedback.
  * AWQ (spec 1.2): s = (max - min)/15 over the group, s >= 1e-5; s is rounded to fp16 first
    and that stored fp16 scale is used for z and q: z = clamp(-round(min/s), 0, 15),
    q = clamp(round(w/s) + z, 0, 15).
  * GPTQ (spec 2.5, AutoGPTQ quantizer rules): xmin = min(min w, 0), xmax = max(max w, 0);
    sym: xmax = max(|xmin|, xmax), xmin = -xmax when xmin < 0; xmin == xmax == 0 -> -1, +1;
    maxq = 2^bits - 1; s = fp16((xmax - xmin)/maxq); z = (maxq + 1)/2 (sym) or
    round(-xmin/s) (asym); q = clamp(round(w/s) + z, 0, maxq).
  * v1 + asym: the historical v1 packer stores z-1, so a true zero of 0 would be stored as -1
    and corrupt the neighbouring fields (spec 2.5). This packer never produces that: for
    --format gptq --asym the true zero is clamped to >= 1 BEFORE quantizing (q uses that z),
    so every stored v1 field is z-1 >= 0 and the file is unambiguous for all readers.
  * act-order: GPTQ orders input columns by decreasing Hessian diagonal. Without calibration we
    use decreasing column importance sum_over_out(w^2) (stable sort, ties by index) as the
    order perm; g_idx[perm[k]] = k // g, and the scale/zero of group G are computed over the
    columns with g_idx == G. Without act-order g_idx[i] = i // g.
  * A scale that rounds to fp16 0 is replaced by the smallest fp16 subnormal (2^-24); a scale
    that overflows fp16 is an error.
  * Rounding is numpy's round-half-to-even (as torch.round).

Errors (bad arguments, unsupported combinations, missing SRC, dims not divisible) print one line
"error: ..." on stderr and exit with status 2.
"""

import argparse
import json
import os
import re
import shutil
import struct
import sys

import numpy as np

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble k of a word holds output column 8c + AWQ_ORDER[k]
COPY_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "generation_config.json", "tokenizer.model")
LINEAR_RE = re.compile(r"^(model\.layers\.\d+\.(?:self_attn\.(?:q|k|v|o)_proj|mlp\.(?:gate|up|down)_proj))\.weight$")


class PackError(Exception):
    pass


# -- safetensors ------------------------------------------------------------------------------

_ST_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I32": "<i4", "U32": "<u4", "I64": "<i8",
              "U8": "u1", "I8": "i1", "I16": "<i2", "U16": "<u2"}


def read_safetensors_file(path):
    """{name: np.ndarray} in header order; floats other than F64 come back as float32."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise PackError(f"{path}: not a safetensors file (too short)")
    (n,) = struct.unpack_from("<Q", data, 0)
    if 8 + n > len(data):
        raise PackError(f"{path}: header length {n} exceeds the file size")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackError(f"{path}: bad header JSON ({e})")
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        shape = tuple(int(d) for d in info["shape"])
        begin, end = info["data_offsets"]
        raw = data[base + begin:base + end]
        if dt == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        elif dt in _ST_DTYPES:
            arr = np.frombuffer(raw, dtype=np.dtype(_ST_DTYPES[dt]))
            if dt == "F16":
                arr = arr.astype(np.float32)
        else:
            raise PackError(f"{path}: tensor {name}: unsupported dtype {dt}")
        count = int(np.prod(shape)) if shape else 1
        if arr.size != count:
            raise PackError(f"{path}: tensor {name}: {arr.size} elements for shape {list(shape)}")
        out[name] = arr.reshape(shape)
    return out


def read_checkpoint(src):
    single = os.path.join(src, "model.safetensors")
    index = os.path.join(src, "model.safetensors.index.json")
    if os.path.isfile(single):
        return read_safetensors_file(single)
    if os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        out = {}
        for shard in dict.fromkeys(weight_map.values()):  # first-seen order, no duplicates
            for name, arr in read_safetensors_file(os.path.join(src, shard)).items():
                out[name] = arr
        missing = [n for n in weight_map if n not in out]
        if missing:
            raise PackError(f"index lists tensors missing from the shards: {missing[:3]}")
        return out
    raise PackError(f"{src}: neither model.safetensors nor model.safetensors.index.json")


_WRITE_DTYPES = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<i4"): "I32",
                 np.dtype("u1"): "U8"}


def write_safetensors(path, tensors):
    """tensors: {name: ndarray (float32/float16/int32/uint8)}. Tensors are laid out in header
    order, sorted by descending element size then name (as the reference writer does, so every
    tensor's data offset is aligned to its element size); header padded with spaces to 8."""
    names = sorted(tensors, key=lambda n: (-tensors[n].dtype.itemsize, n))
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name in names:
        arr = np.ascontiguousarray(tensors[name])
        dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        if dt not in _WRITE_DTYPES:
            raise PackError(f"cannot write {name}: dtype {arr.dtype}")
        raw = arr.astype(dt.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _WRITE_DTYPES[dt], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for raw in blobs:
            f.write(raw)


# -- quantization -----------------------------------------------------------------------------

FP16_MIN_SUBNORMAL = np.float16(2.0 ** -24)


def to_fp16_scale(s):
    """float64 scales -> float16, refusing overflow and replacing 0 by the smallest subnormal."""
    if not np.all(np.isfinite(s)) or np.any(np.abs(s) > 65504.0):
        raise PackError("a quantization scale does not fit in fp16 (weights too large)")
    s16 = s.astype(np.float16)
    return np.where(s16 == 0, FP16_MIN_SUBNORMAL, s16).astype(np.float16)


def make_g_idx(w, g, act_order):
    """g_idx [in] int32 (spec 2.4) and the act order perm (None without act-order)."""
    n_in = w.shape[1]
    if not act_order:
        return (np.arange(n_in) // g).astype(np.int32), None
    importance = np.sum(np.asarray(w, dtype=np.float64) ** 2, axis=0)
    perm = np.argsort(-importance, kind="stable")
    g_idx = np.empty(n_in, dtype=np.int32)
    g_idx[perm] = (np.arange(n_in) // g).astype(np.int32)
    return g_idx, perm


def quantize(w, g, g_idx, method, bits, sym, v1):
    """w [out, in] float32. Returns q uint8 [out, in], z int64 [out, groups] (true zeros),
    s16 float16 [out, groups]."""
    w64 = np.asarray(w, dtype=np.float64)
    n_out, n_in = w.shape
    n_groups = n_in // g
    maxq = (1 << bits) - 1
    # gather each group's columns: cols[G] = sorted input indices with g_idx == G
    cols = np.stack([np.nonzero(g_idx == G)[0] for G in range(n_groups)])  # [groups, g]
    wg = w64[:, cols]                                                      # [out, groups, g]
    if method == "awq":
        wmax = wg.max(axis=2)
        wmin = wg.min(axis=2)
        s = np.maximum((wmax - wmin) / maxq, 1e-5)
        s16 = to_fp16_scale(s)
        sf = s16.astype(np.float64)
        z = np.clip(-np.round(wmin / sf), 0, maxq)
    else:
        xmin = np.minimum(wg.min(axis=2), 0.0)
        xmax = np.maximum(wg.max(axis=2), 0.0)
        if sym:
            xmax = np.maximum(np.abs(xmin), xmax)
            xmin = np.where(xmin < 0, -xmax, xmin)
        both0 = (xmin == 0) & (xmax == 0)
        xmin = np.where(both0, -1.0, xmin)
        xmax = np.where(both0, 1.0, xmax)
        s16 = to_fp16_scale((xmax - xmin) / maxq)
        sf = s16.astype(np.float64)
        if sym:
            z = np.full(sf.shape, (maxq + 1) // 2, dtype=np.float64)
        else:
            z = np.clip(np.round(-xmin / sf), 0, maxq)
            if v1:
                z = np.maximum(z, 1)  # v1 stores z-1: keep it >= 0 (module docstring)
    z = z.astype(np.int64)
    # per element: its group's scale and zero
    s_el = sf[:, g_idx]                                                    # [out, in]
    z_el = z[:, g_idx]
    q = np.clip(np.round(w64 / s_el) + z_el, 0, maxq).astype(np.uint8)
    return q, z, s16


def dequantize_reference(q, z, s16, g_idx):
    """np.float32(q - z) * np.float32(scale_fp16), [out, in] float32."""
    diff = (q.astype(np.int64) - z[:, g_idx]).astype(np.float32)
    return diff * s16[:, g_idx].astype(np.float32)


# -- packing ----------------------------------------------------------------------------------

def pack_awq(vals):
    """vals [rows, out] ints 0..15 -> int32 [rows, out/8], nibble k = column 8c + AWQ_ORDER[k]
    (spec 1.3)."""
    rows, n_out = vals.shape
    v = vals.astype(np.uint32).reshape(rows, n_out // 8, 8)
    words = np.zeros((rows, n_out // 8), dtype=np.uint32)
    for k in range(8):
        words |= v[:, :, AWQ_ORDER[k]] << np.uint32(4 * k)
    return words.view(np.int32)


def pack_gptq_axis0(vals, bits):
    """vals [n, m] ints -> uint32 [n*bits/32, m]; value v of the bit stream along axis 0 occupies
    absolute bits bits*v .. bits*v+bits-1 (LSB first, words little-endian). For 2/4/8 bits this
    is 'value j of a word at bit offset bits*j'; for 3 bits it is the cross-word triple of
    spec 2.3."""
    n, m = vals.shape
    if (n * bits) % 32:
        raise PackError(f"cannot pack {n} values of {bits} bits into whole words")
    words = np.zeros((n * bits // 32, m), dtype=np.uint64)
    v64 = vals.astype(np.uint64)
    for i in range(n):
        b = bits * i
        wi, off = divmod(b, 32)
        words[wi] |= (v64[i] << np.uint64(off)) & np.uint64(0xFFFFFFFF)
        if off + bits > 32:
            words[wi + 1] |= v64[i] >> np.uint64(32 - off)
    return words.astype(np.uint32)


def pack_gptq(q, z, s16, g_idx, bits, v1):
    """Spec 2.2/2.3: qweight [in*bits/32, out] along input, qzeros [groups, out*bits/32] along
    output (v1: z-1), scales fp16 [groups, out], g_idx int32 [in]."""
    qweight = pack_gptq_axis0(q.T, bits).view(np.int32)               # q.T: [in, out]
    zs = z.T - (1 if v1 else 0)                                       # [groups, out]
    if zs.min() < 0:
        raise PackError("internal: negative stored zero")  # excluded by quantize()
    qzeros = pack_gptq_axis0(zs.T, bits).T.copy().view(np.int32)       # pack along out
    return {"qweight": qweight, "qzeros": qzeros, "scales": np.ascontiguousarray(s16.T),
            "g_idx": g_idx.astype(np.int32)}


# -- driver -----------------------------------------------------------------------------------

def quant_config(fmt, bits, group, act_order, sym):
    if fmt == "awq":
        return {"quant_method": "awq", "bits": 4, "group_size": group, "zero_point": True,
                "version": "gemm", "modules_to_not_convert": None}
    cfg = {"quant_method": "gptq", "bits": bits, "group_size": group, "damp_percent": 0.01,
           "desc_act": bool(act_order), "static_groups": False, "sym": bool(sym),
           "true_sequential": True, "model_name_or_path": None, "model_file_base_name": "model",
           "checkpoint_format": fmt}
    if fmt == "gptq_v2":
        cfg["format"] = "gptq_v2"
        cfg["pack_dtype"] = "int32"
    return cfg


def check_args(a):
    if a.format == "awq":
        if a.bits != 4:
            raise PackError("awq supports only --bits 4")
        if a.group not in (32, 64, 128):
            raise PackError("awq supports only --group 32, 64 or 128")
        if a.act_order:
            raise PackError("--act-order is for gptq/gptq_v2 only")
        if a.asym:
            raise PackError("--asym is for gptq/gptq_v2 only (awq is always asymmetric)")
    if not os.path.isdir(a.src):
        raise PackError(f"source folder not found: {a.src}")
    if not os.path.isfile(os.path.join(a.src, "config.json")):
        raise PackError(f"no config.json in {a.src}")
    if os.path.abspath(a.src) == os.path.abspath(a.out):
        raise PackError("OUT_DIR must differ from SRC_DIR")


def check_dims(name, shape, fmt, bits, group):
    n_out, n_in = shape
    g = n_in if group == -1 else group
    if n_in % g:
        raise PackError(f"{name}: in_features {n_in} is not a multiple of the group size {g}")
    if fmt == "awq":
        if n_out % 8:
            raise PackError(f"{name}: out_features {n_out} is not a multiple of 8 (awq)")
        return g
    per = 32 if bits == 3 else 32 // bits
    if n_in % per:
        raise PackError(f"{name}: in_features {n_in} is not a multiple of {per} ({bits}-bit gptq)")
    if n_out % per:
        raise PackError(f"{name}: out_features {n_out} is not a multiple of {per} ({bits}-bit gptq)")
    return g


def pack_folder(src, out, fmt, bits=4, group=128, act_order=False, asym=False, reference=None):
    sym = fmt != "awq" and not asym
    v1 = fmt == "gptq"
    method = "awq" if fmt == "awq" else "gptq"
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    weights = read_checkpoint(src)
    linears = {}
    for name, arr in weights.items():
        m = LINEAR_RE.match(name)
        if m:
            if arr.ndim != 2:
                raise PackError(f"{name}: expected a 2-D weight, got shape {list(arr.shape)}")
            linears[m.group(1)] = check_dims(name, arr.shape, fmt, bits, group)
    if not linears:
        raise PackError("no model.layers.N.{self_attn,mlp}.*_proj.weight tensors in the checkpoint")

    tensors = {}
    ref = {}
    for name, arr in weights.items():
        m = LINEAR_RE.match(name)
        if not m:
            if arr.dtype.kind != "f":
                tensors[name] = arr
            else:
                tensors[name] = np.asarray(arr, dtype=np.float32).astype(np.float16)
            continue
        prefix = m.group(1)
        g = linears[prefix]
        w = np.asarray(arr, dtype=np.float32)
        g_idx, _ = make_g_idx(w, g, act_order)
        q, z, s16 = quantize(w, g, g_idx, method, bits, sym, v1)
        if fmt == "awq":
            tensors[prefix + ".qweight"] = pack_awq(q.T)
            tensors[prefix + ".qzeros"] = pack_awq(z.T)
            tensors[prefix + ".scales"] = np.ascontiguousarray(s16.T)
        else:
            for k, v in pack_gptq(q, z, s16, g_idx, bits, v1).items():
                tensors[prefix + "." + k] = v
        if reference:
            ref[prefix + ".weight"] = dequantize_reference(q, z, s16, g_idx)
            ref[prefix + ".q"] = q

    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, "model.safetensors"), tensors)
    qcfg = quant_config(fmt, bits, group, act_order, sym)
    config["torch_dtype"] = "float16"
    config["quantization_config"] = qcfg
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    if fmt != "awq":
        with open(os.path.join(out, "quantize_config.json"), "w") as f:
            json.dump(qcfg, f, indent=2)
            f.write("\n")
    for fn in COPY_FILES:
        p = os.path.join(src, fn)
        if os.path.isfile(p):
            shutil.copyfile(p, os.path.join(out, fn))
    if reference:
        rdir = os.path.dirname(os.path.abspath(reference))
        os.makedirs(rdir, exist_ok=True)
        write_safetensors(reference, ref)
    return tensors


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        sys.stderr.write("error: " + " ".join(str(message).split()) + "\n")
        sys.exit(2)


def main(argv=None):
    p = _Parser(prog="lmtk_pack.py", description="Quantize an fp32/fp16/bf16 HF Llama folder into "
                "AutoAWQ-GEMM / GPTQ v1 / GPTQ v2 layout (round-to-nearest).")
    p.add_argument("src", metavar="SRC_DIR")
    p.add_argument("out", metavar="OUT_DIR")
    p.add_argument("--format", required=True, choices=["awq", "gptq", "gptq_v2"])
    p.add_argument("--bits", type=int, default=4, choices=[2, 3, 4, 8])
    p.add_argument("--group", type=int, default=128, choices=[32, 64, 128, -1])
    p.add_argument("--act-order", action="store_true")
    p.add_argument("--asym", action="store_true")
    p.add_argument("--reference", metavar="FILE")
    a = p.parse_args(argv)
    try:
        check_args(a)
        pack_folder(a.src, a.out, a.format, a.bits, a.group, a.act_order, a.asym, a.reference)
    except PackError as e:
        sys.stderr.write("error: " + " ".join(str(e).split()) + "\n")
        return 2
    except (OSError, KeyError, ValueError) as e:
        sys.stderr.write("error: " + " ".join(str(e).split()) + "\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
