"""tools/pack/lmtk_pack.py (fp32 HF Llama -> AutoAWQ-GEMM / GPTQ v1 / GPTQ v2 folders) against
an unpacker written here from /work/shared/spec/quant-formats.md sections 1.3, 2.2-2.5.

For each packed variant of tinystories-656k (awq g128, awq g32, gptq 4-bit g128 act-order,
gptq_v2 4-bit g64 asym, gptq 3-bit g128, gptq_v2 3-bit g32 asym act-order, gptq 4-bit g-1, and
gptq 4-bit g32 asym, i.e. v1 asym):
  - the output model.safetensors is a valid safetensors file (own reader here: header padding,
    contiguous offsets, __metadata__) with the tensor names, dtypes and shapes of the spec;
  - the spec's reference dequant loops (vectorised over the output dim `o`; one linear per
    variant also element by element with Python ints) reproduce the --reference weights
    bit-for-bit, and its quantized values;
  - |dequant - original f32| <= s/2 wherever round(w/s) + z was not clamped (few are clamped);
  - spec facts: sym 4-bit v1 qzeros words are all 0x77777777, sym 3-bit v1 zero fields all 3,
    v1 asym true zeros are >= 1 (the packer never stores -1); g_idx non-monotonic with
    act-order (each group exactly g inputs) and i // g without;
  - config.json / quantize_config.json contents, copied tokenizer files, F16 other tensors.
Also: hand-made AWQ nibble interleave and GPTQ 3-bit triple examples; a synthetic sharded
BF16/F16 checkpoint with a bias; the error exits (status 2, one line "error: ...").
"""

import importlib.util
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
PACKER = os.path.join(REPO_ROOT, "tools", "pack", "lmtk_pack.py")
FOLDER = "tinystories-656k"
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
AWQ_REVERSE = [0, 4, 1, 5, 2, 6, 3, 7]  # spec 1.3: output column 8c + j lives in nibble REV[j]

# name, packer args, format, bits, group, act_order, sym
VARIANTS = [
    ("awq-g128", ["--format", "awq"], "awq", 4, 128, False, False),
    ("awq-g32", ["--format", "awq", "--group", "32"], "awq", 4, 32, False, False),
    ("gptq-4b-g128-act", ["--format", "gptq", "--act-order"], "gptq", 4, 128, True, True),
    ("gptqv2-4b-g64-asym", ["--format", "gptq_v2", "--group", "64", "--asym"],
     "gptq_v2", 4, 64, False, False),
    ("gptq-3b-g128", ["--format", "gptq", "--bits", "3"], "gptq", 3, 128, False, True),
    ("gptqv2-3b-g32-asym-act", ["--format", "gptq_v2", "--bits", "3", "--group", "32", "--asym",
                                "--act-order"], "gptq_v2", 3, 32, True, False),
    ("gptq-4b-gall", ["--format", "gptq", "--group", "-1"], "gptq", 4, -1, False, True),
    ("gptq-4b-g32-asym", ["--format", "gptq", "--group", "32", "--asym"], "gptq", 4, 32, False,
     False),
]


def models_dir():
    d = os.environ.get("LMTK_TEST_MODELS") or os.path.join(REPO_ROOT, "..", "shared", "models")
    return os.path.abspath(d)


def folder():
    d = os.path.join(models_dir(), FOLDER)
    if not os.path.isfile(os.path.join(d, "config.json")):
        raise FileNotFoundError(f"test model folder not found: {d} (set LMTK_TEST_MODELS)")
    return d


def run_packer(args, timeout=120):
    return subprocess.run([sys.executable, PACKER] + args, capture_output=True, text=True,
                          timeout=timeout)


def load_packer_module():
    spec = importlib.util.spec_from_file_location("lmtk_pack", PACKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# -- safetensors (spec 4), strict -------------------------------------------------------------

_DT = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "I32": "<i4", "U8": "u1"}


def read_st(path, tc=None):
    """{name: (dtype string, ndarray)}; with tc, the spec-4 validity checks of a file written
    by the packer are asserted on it."""
    if tc is None:
        tc = _Lenient()
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack_from("<Q", data, 0)
    tc.assertEqual(n % 8, 0, "header padded to a multiple of 8")
    raw_header = data[8:8 + n]
    tc.assertEqual(raw_header[:1], b"{")
    header = json.loads(raw_header.decode("utf-8"))
    tc.assertEqual(header.get("__metadata__"), {"format": "pt"})
    base = 8 + n
    out = {}
    spans = []
    for name, info in header.items():  # json keeps file order
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dt = np.dtype(_DT[info["dtype"]])
        count = int(np.prod(info["shape"])) if info["shape"] else 1
        tc.assertEqual(e - b, count * dt.itemsize, name)
        spans.append((b, e))
        out[name] = (info["dtype"], np.frombuffer(data[base + b:base + e], dtype=dt).reshape(info["shape"]))
    pos = 0
    for b, e in spans:  # contiguous, in header order
        tc.assertEqual(b, pos)
        pos = e
    tc.assertEqual(base + pos, len(data), "no trailing bytes")
    return out


# -- unpackers from the spec's reference loops --------------------------------------------------

class _Lenient:
    """Stands in for a TestCase when reading input files written by others."""

    def assertEqual(self, a, b, msg=None):
        pass


def awq_dequant(qweight, qzeros, scales, g):
    """Spec 1.3 loop, vectorised over o. Returns Wt [in, out] float32, q and z [in, out]."""
    n_in = qweight.shape[0]
    n_out = scales.shape[1]
    qw = qweight.view(np.uint32)
    qz = qzeros.view(np.uint32)
    o = np.arange(n_out)
    c = o // 8
    sh = (4 * np.array(AWQ_REVERSE)[o % 8]).astype(np.uint32)
    wt = np.empty((n_in, n_out), np.float32)
    qs = np.empty((n_in, n_out), np.int64)
    zs = np.empty((n_in, n_out), np.int64)
    for i in range(n_in):
        G = i // g
        q = (qw[i, c] >> sh) & 0xF
        z = (qz[G, c] >> sh) & 0xF
        qs[i], zs[i] = q, z
        wt[i] = (q.astype(np.int64) - z).astype(np.float32) * scales[G].astype(np.float32)
    return wt, qs, zs


def extract(words, v, bits):
    """Value v of the group of words holding 32 values (3-bit: spec 2.3 triple extractor;
    2/4/8 bits: word v // (32/bits), bit offset bits * (v % (32/bits)))."""
    if bits == 3:
        b = 3 * v
        wi, off = b // 32, b % 32
        val = words[wi].astype(np.uint64) >> np.uint64(off)
        if off > 29:
            val |= words[wi + 1].astype(np.uint64) << np.uint64(32 - off)
        return (val & np.uint64(7)).astype(np.int64)
    per = 32 // bits
    return ((words[v // per] >> np.uint32(bits * (v % per))) & np.uint32((1 << bits) - 1)).astype(np.int64)


def gptq_fields(bits):
    """(values per packed unit, words per unit): 3-bit units are triples of 32 values."""
    return (32, 3) if bits == 3 else (32 // bits, 1)


def gptq_dequant(qweight, qzeros, scales, g_idx, bits, v1):
    """Spec 2.5 loop (with the 2.3 extractor for 3-bit), vectorised over o."""
    n_out = qweight.shape[1]
    n_in = g_idx.shape[0]
    qw = qweight.view(np.uint32)
    qz = qzeros.view(np.uint32)
    per, nw = gptq_fields(bits)
    o = np.arange(n_out)
    zcols = [(3 * (o // 32) + k) if bits == 3 else (o // per) for k in range(nw)]
    wt = np.empty((n_in, n_out), np.float32)
    qs = np.empty((n_in, n_out), np.int64)
    zs = np.empty((n_in, n_out), np.int64)
    for i in range(n_in):
        G = int(g_idx[i])
        words = qw[nw * (i // per):nw * (i // per) + nw]
        q = extract(words, i % per, bits)
        # z: the fields of output o live in qzeros[G][unit of o]; extract per o
        if bits == 3:
            zw = [qz[G, zcols[k]] for k in range(3)]
            zst = np.empty(n_out, np.int64)
            for v in range(32):
                sel = (o % 32) == v
                zst[sel] = extract([w[sel] for w in zw], v, 3)
        else:
            zw = qz[G, o // per]
            zst = ((zw >> (bits * (o % per)).astype(np.uint32)) & np.uint32((1 << bits) - 1)).astype(np.int64)
        z = zst + 1 if v1 else zst
        qs[i], zs[i] = q, z
        wt[i] = scales[G].astype(np.float32) * (q - z).astype(np.float32)
    return wt, qs, zs


def gptq_dequant_scalar(qweight, qzeros, scales, g_idx, bits, v1, i_rows):
    """The same loop with Python ints, element by element, for the input rows i_rows."""
    n_out = qweight.shape[1]
    qw = [[int(x) & 0xFFFFFFFF for x in row] for row in qweight.tolist()]
    qz = [[int(x) & 0xFFFFFFFF for x in row] for row in qzeros.tolist()]
    mask = (1 << bits) - 1

    def ext(ws, v):
        b = bits * v
        wi, off = b // 32, b % 32
        val = ws[wi] >> off
        if off + bits > 32:
            val |= ws[wi + 1] << (32 - off)
        return val & mask

    per, nw = gptq_fields(bits)
    out = {}
    for i in i_rows:
        G = int(g_idx[i])
        r0 = nw * (i // per)
        for o in range(n_out):
            q = ext([qw[r0 + k][o] for k in range(nw)], i % per)
            c0 = nw * (o // per)
            zst = ext([qz[G][c0 + k] for k in range(nw)], o % per)
            z = zst + 1 if v1 else zst
            out[(i, o)] = np.float32(scales[G, o]) * np.float32(q - z)
    return out


def awq_dequant_scalar(qweight, qzeros, scales, g, i_rows):
    n_out = scales.shape[1]
    out = {}
    for i in i_rows:
        G = i // g
        for o in range(n_out):
            c, j = o // 8, o % 8
            sh = 4 * AWQ_REVERSE[j]
            q = ((int(qweight[i, c]) & 0xFFFFFFFF) >> sh) & 0xF
            z = ((int(qzeros[G, c]) & 0xFFFFFFFF) >> sh) & 0xF
            out[(i, o)] = np.float32(q - z) * np.float32(scales[G, o])
    return out


# -- tests ----------------------------------------------------------------------------------------

class HandMadeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mod = load_packer_module()

    def test_awq_nibble_order(self):
        vals = np.arange(8, dtype=np.int64).reshape(1, 8)  # one row, output columns 0..7
        word = int(self.mod.pack_awq(vals)[0, 0]) & 0xFFFFFFFF
        # nibble k holds column AWQ_ORDER[k] = [0,2,4,6,1,3,5,7][k] -> 0x75316420
        self.assertEqual(word, 0x75316420)
        qw = np.array([[word]], dtype=np.uint32).view(np.int32)
        qz = np.zeros((1, 1), np.int32)
        sc = np.ones((1, 8), np.float16)
        wt, q, _ = awq_dequant(qw, qz, sc, 1)
        self.assertEqual(q[0].tolist(), list(range(8)))
        rng = np.random.default_rng(1)
        vals = rng.integers(0, 16, size=(5, 24))
        packed = self.mod.pack_awq(vals)
        self.assertEqual(packed.shape, (5, 3))
        _, q, _ = awq_dequant(packed, np.zeros((5, 3), np.int32), np.ones((5, 24), np.float16), 1)
        self.assertTrue(np.array_equal(q, vals))

    def test_gptq_3bit_triple(self):
        rng = np.random.default_rng(2)
        vals = rng.integers(0, 8, size=(64, 3))  # 64 inputs (2 triples) x 3 outputs
        words = self.mod.pack_gptq_axis0(vals, 3)
        self.assertEqual(words.shape, (6, 3))
        for col in range(3):
            for t in range(2):  # 96-bit little-endian concatenation, value v at bits 3v..3v+2
                big = sum(int(vals[32 * t + v, col]) << (3 * v) for v in range(32))
                expect = [(big >> (32 * k)) & 0xFFFFFFFF for k in range(3)]
                self.assertEqual([int(x) for x in words[3 * t:3 * t + 3, col]], expect)
                for v in range(32):
                    got = extract([words[3 * t + k, col:col + 1] for k in range(3)], v, 3)[0]
                    self.assertEqual(got, vals[32 * t + v, col])

    def test_gptq_4bit_word(self):
        vals = np.arange(8).reshape(8, 1)
        self.assertEqual(int(self.mod.pack_gptq_axis0(vals, 4)[0, 0]), 0x76543210)


class PackedModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.src = folder()
        cls.tmp = tempfile.TemporaryDirectory()
        with open(os.path.join(cls.src, "config.json")) as f:
            cls.src_config = json.load(f)
        cls.orig = read_st(os.path.join(cls.src, "model.safetensors"))
        cls.n_layer = cls.src_config["num_hidden_layers"]

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def pack(self, name, args):
        out = os.path.join(self.tmp.name, name)
        ref = os.path.join(self.tmp.name, name + "-ref.safetensors")
        res = run_packer([self.src, out] + args + ["--reference", ref])
        self.assertEqual(res.returncode, 0, res.stderr)
        return out, ref

    def check_configs(self, out, fmt, bits, group, act, sym):
        with open(os.path.join(out, "config.json")) as f:
            cfg = json.load(f)
        qc = cfg.pop("quantization_config")
        self.assertEqual(cfg.pop("torch_dtype"), "float16")
        src = dict(self.src_config)
        src.pop("torch_dtype")
        self.assertEqual(cfg, src, "the rest of config.json is the source config")
        if fmt == "awq":
            self.assertEqual(qc, {"quant_method": "awq", "bits": 4, "group_size": group,
                                  "zero_point": True, "version": "gemm",
                                  "modules_to_not_convert": None})
            self.assertFalse(os.path.exists(os.path.join(out, "quantize_config.json")))
        else:
            expect = {"quant_method": "gptq", "bits": bits, "group_size": group,
                      "damp_percent": 0.01, "desc_act": act, "static_groups": False, "sym": sym,
                      "true_sequential": True, "model_name_or_path": None,
                      "model_file_base_name": "model", "checkpoint_format": fmt}
            if fmt == "gptq_v2":
                expect.update({"format": "gptq_v2", "pack_dtype": "int32"})
            self.assertEqual(qc, expect)
            with open(os.path.join(out, "quantize_config.json")) as f:
                self.assertEqual(json.load(f), expect)
        for fn in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json"):
            with open(os.path.join(self.src, fn), "rb") as a, open(os.path.join(out, fn), "rb") as b:
                self.assertEqual(a.read(), b.read(), fn)

    def check_variant(self, name, args, fmt, bits, group, act, sym):
        out, ref_path = self.pack(name, args)
        self.check_configs(out, fmt, bits, group, act, sym)
        t = read_st(os.path.join(out, "model.safetensors"), self)
        ref = read_st(ref_path, self)
        v1 = fmt == "gptq"
        maxq = (1 << bits) - 1
        expected_names = set()
        n_clamped = n_total = 0
        for name_t, (dt, arr) in self.orig.items():
            prefix = name_t[:-len(".weight")]
            if not any(name_t == f"model.layers.{L}.{m}.weight"
                       for L in range(self.n_layer) for m in LINEARS):
                expected_names.add(name_t)
                self.assertEqual(t[name_t][0], "F16", name_t)
                self.assertTrue(np.array_equal(t[name_t][1], arr.astype(np.float16)), name_t)
                continue
            w = arr.astype(np.float32)
            n_out, n_in = w.shape
            g = n_in if group == -1 else group
            ng = n_in // g
            parts = ["qweight", "qzeros", "scales"] + ([] if fmt == "awq" else ["g_idx"])
            expected_names.update(prefix + "." + p for p in parts)
            qweight, qzeros, scales = (t[prefix + "." + p] for p in parts[:3])
            self.assertEqual(scales[0], "F16")
            self.assertEqual((qweight[0], qzeros[0]), ("I32", "I32"))
            qweight, qzeros, scales = qweight[1], qzeros[1], scales[1]
            self.assertEqual(scales.shape, (ng, n_out))
            if fmt == "awq":
                self.assertEqual(qweight.shape, (n_in, n_out // 8))
                self.assertEqual(qzeros.shape, (ng, n_out // 8))
                g_idx = np.arange(n_in) // g
                wt, q, z = awq_dequant(qweight, qzeros, scales, g)
                rows = [0, 1, n_in - 1]
                scal = awq_dequant_scalar(qweight, qzeros, scales, g, rows) if "k_proj" in prefix and "layers.0." in prefix else {}
            else:
                self.assertEqual(t[prefix + ".g_idx"][0], "I32")
                g_idx = t[prefix + ".g_idx"][1]
                self.assertEqual(qweight.shape, (n_in * bits // 32, n_out))
                self.assertEqual(qzeros.shape, (ng, n_out * bits // 32))
                self.assertEqual(g_idx.shape, (n_in,))
                if act and ng > 1:
                    self.assertTrue(np.any(np.diff(g_idx) < 0), f"{prefix}: g_idx non-monotonic")
                    self.assertEqual(np.bincount(g_idx, minlength=ng).tolist(), [g] * ng)
                else:
                    self.assertTrue(np.array_equal(g_idx, np.arange(n_in) // g), prefix)
                wt, q, z = gptq_dequant(qweight, qzeros, scales, g_idx, bits, v1)
                scal = {}
                if "k_proj" in prefix and "layers.0." in prefix:
                    scal = gptq_dequant_scalar(qweight, qzeros, scales, g_idx, bits, v1,
                                               range(n_in))
                # spec 2.5 facts about the stored zeros
                qz_u = qzeros.view(np.uint32)
                if v1 and sym and bits == 4:
                    self.assertTrue(np.all(qz_u == 0x77777777), prefix)
                if v1 and sym and bits == 3:
                    self.assertTrue(np.all(z == 4), prefix)  # stored fields all 3
                    for c3 in range(qz_u.shape[1] // 3):
                        for v in range(32):
                            self.assertTrue(np.all(extract([qz_u[:, 3 * c3 + k] for k in range(3)], v, 3) == 3))
                if v1 and not sym:
                    self.assertTrue(np.all(z >= 1), f"{prefix}: v1 asym true zero >= 1")
                if sym:
                    self.assertTrue(np.all(z == (maxq + 1) // 2), prefix)
            # reference file: F32 dequant [out, in] and U8 q, bit-exact
            self.assertEqual(ref[prefix + ".weight"][0], "F32")
            rw = ref[prefix + ".weight"][1]
            self.assertEqual(rw.shape, (n_out, n_in))
            self.assertTrue(np.array_equal(wt.T.view(np.uint32), rw.view(np.uint32)),
                            f"{name}/{prefix}: spec dequant != reference file")
            self.assertTrue(np.array_equal(q.T, ref[prefix + ".q"][1]), prefix)
            for (i, o), val in scal.items():
                self.assertEqual(np.float32(val).view(np.uint32), rw[o, i].view(np.uint32),
                                 f"{prefix} scalar loop at ({i},{o})")
            # quantization error: |w - dq| <= s/2 where round(w/s) + z was not clamped
            s = scales.astype(np.float64)[g_idx, :].T
            zz = z.T.astype(np.float64)
            r = np.round(w.astype(np.float64) / s) + zz
            free = (r >= 0) & (r <= maxq)
            err = np.abs(w.astype(np.float64) - rw.astype(np.float64))
            bound = s / 2 + np.abs(w) * 1e-6 + 1e-12
            self.assertTrue(np.all(err[free] <= bound[free]), f"{name}/{prefix}: error > s/2")
            qT = q.T
            self.assertTrue(np.all((qT[~free] == 0) | (qT[~free] == maxq)), prefix)
            n_clamped += int((~free).sum())
            n_total += free.size
        self.assertEqual(set(t), expected_names, name)
        self.assertLess(n_clamped / n_total, 0.01, f"{name}: clamped fraction")

    def test_variants(self):
        for v in VARIANTS:
            with self.subTest(variant=v[0]):
                self.check_variant(*v)

    def test_error_exits(self):
        out = os.path.join(self.tmp.name, "err")
        cases = [
            [self.src, out, "--format", "awq", "--bits", "3"],
            [self.src, out, "--format", "awq", "--group", "-1"],
            [self.src, out, "--format", "awq", "--act-order"],
            [self.src, out, "--format", "gptq", "--group", "100"],
            [self.src, out, "--format", "q4"],
            [self.src, out],
            [os.path.join(self.tmp.name, "no-such-folder"), out, "--format", "gptq"],
        ]
        for args in cases:
            res = run_packer(args)
            self.assertEqual(res.returncode, 2, f"{args}: {res.stderr}")
            lines = res.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, res.stderr)
            self.assertTrue(lines[0].startswith("error: "), res.stderr)


def write_st(path, tensors):
    """Minimal safetensors writer for the synthetic input: {name: (dtype, ndarray raw)}."""
    header, blobs, off = {}, [], 0
    for name, (dt, arr) in tensors.items():
        raw = arr.tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


class SyntheticTest(unittest.TestCase):
    """Sharded BF16/F16 input with a bias; dims that some formats must refuse."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        rng = np.random.default_rng(3)
        self.src = os.path.join(self.tmp.name, "src")
        os.makedirs(self.src)
        with open(os.path.join(self.src, "config.json"), "w") as f:
            json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                       "torch_dtype": "bfloat16"}, f)

        def bf16(a):
            return (a.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)

        self.q = rng.normal(0, 0.05, (64, 64)).astype(np.float16)
        self.q[:4, :32] = np.abs(self.q[:4, :32])  # all-positive groups: asym true zero 0
        self.bias = rng.normal(0, 0.1, 64).astype(np.float16)
        down = bf16(rng.normal(0, 0.05, (64, 96)))
        self.down = (down.astype(np.uint32) << 16).view(np.float32)
        emb = bf16(rng.normal(0, 1, (16, 64)))
        self.emb = (emb.astype(np.uint32) << 16).view(np.float32)
        write_st(os.path.join(self.src, "model-00001-of-00002.safetensors"), {
            "model.embed_tokens.weight": ("BF16", emb),
            "model.layers.0.self_attn.q_proj.weight": ("F16", self.q),
            "model.layers.0.self_attn.q_proj.bias": ("F16", self.bias)})
        write_st(os.path.join(self.src, "model-00002-of-00002.safetensors"), {
            "model.layers.0.mlp.down_proj.weight": ("BF16", down)})
        wm = {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
              "model.layers.0.self_attn.q_proj.weight": "model-00001-of-00002.safetensors",
              "model.layers.0.self_attn.q_proj.bias": "model-00001-of-00002.safetensors",
              "model.layers.0.mlp.down_proj.weight": "model-00002-of-00002.safetensors"}
        with open(os.path.join(self.src, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, f)

    def tearDown(self):
        self.tmp.cleanup()

    def test_sharded_bf16_f16_with_bias(self):
        out = os.path.join(self.tmp.name, "out")
        ref_path = os.path.join(self.tmp.name, "ref.safetensors")
        res = run_packer([self.src, out, "--format", "gptq_v2", "--bits", "3", "--group", "32",
                          "--asym", "--reference", ref_path])
        self.assertEqual(res.returncode, 0, res.stderr)
        t = read_st(os.path.join(out, "model.safetensors"), self)
        ref = read_st(ref_path, self)
        self.assertEqual(t["model.layers.0.self_attn.q_proj.bias"][0], "F16")
        self.assertTrue(np.array_equal(t["model.layers.0.self_attn.q_proj.bias"][1], self.bias))
        self.assertTrue(np.array_equal(t["model.embed_tokens.weight"][1], self.emb.astype(np.float16)))
        for prefix, w in (("model.layers.0.self_attn.q_proj", self.q.astype(np.float32)),
                          ("model.layers.0.mlp.down_proj", self.down)):
            qw, qz, sc, gi = (t[prefix + "." + p][1] for p in ("qweight", "qzeros", "scales", "g_idx"))
            wt, _, _ = gptq_dequant(qw, qz, sc, gi, 3, False)
            self.assertTrue(np.array_equal(wt.T, ref[prefix + ".weight"][1]), prefix)
            s = sc.astype(np.float64)[gi, :].T
            self.assertLessEqual(np.max(np.abs(wt.T - w) / s), 0.5 + 1e-3, prefix)
        # awq on the same folder: in 96 is fine for g32, not for g64
        res = run_packer([self.src, os.path.join(self.tmp.name, "awq"), "--format", "awq",
                          "--group", "32"])
        self.assertEqual(res.returncode, 0, res.stderr)
        res = run_packer([self.src, os.path.join(self.tmp.name, "awq64"), "--format", "awq",
                          "--group", "64"])
        self.assertEqual(res.returncode, 2)
        self.assertTrue(res.stderr.startswith("error: ") and "multiple" in res.stderr, res.stderr)

    def test_v1_asym_zero_never_stored_as_minus_one(self):
        # groups with all w >= 0 give the GPTQ asym zero round(-xmin/s) = 0; v1 stores z - 1,
        # so the packer raises such zeros to 1 before quantizing (no -1 field in the file)
        out = os.path.join(self.tmp.name, "v1asym")
        ref_path = os.path.join(self.tmp.name, "v1asym-ref.safetensors")
        res = run_packer([self.src, out, "--format", "gptq", "--group", "32", "--asym",
                          "--reference", ref_path])
        self.assertEqual(res.returncode, 0, res.stderr)
        t = read_st(os.path.join(out, "model.safetensors"), self)
        ref = read_st(ref_path, self)
        prefix = "model.layers.0.self_attn.q_proj"
        qw, qz, sc, gi = (t[prefix + "." + p][1] for p in ("qweight", "qzeros", "scales", "g_idx"))
        wt, q, z = gptq_dequant(qw, qz, sc, gi, 4, True)
        self.assertTrue(np.array_equal(wt.T, ref[prefix + ".weight"][1]))
        self.assertTrue(np.all(z >= 1))
        self.assertTrue(np.all(z[:32, :4] == 1), "the all-positive groups got z = 1")
        # stored fields: never 0xF from a -1 (would be z = 16 after +1 with masking first)
        self.assertTrue(np.all(z <= 15))

    def test_3bit_dims(self):
        # out_features 40: fine for 4-bit gptq (multiple of 8), not for 3-bit (needs 32)
        write_st(os.path.join(self.src, "model-00002-of-00002.safetensors"), {
            "model.layers.0.mlp.down_proj.weight": ("F32", np.zeros((40, 96), np.float32))})
        res = run_packer([self.src, os.path.join(self.tmp.name, "o4"), "--format", "gptq",
                          "--group", "32"])
        self.assertEqual(res.returncode, 0, res.stderr)
        res = run_packer([self.src, os.path.join(self.tmp.name, "o3"), "--format", "gptq",
                          "--bits", "3", "--group", "32"])
        self.assertEqual(res.returncode, 2)
        self.assertEqual(len(res.stderr.strip().splitlines()), 1)
        self.assertTrue(res.stderr.startswith("error: ") and "32" in res.stderr, res.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
