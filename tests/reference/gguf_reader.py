"""Minimal GGUF v3 reader in pure Python + numpy (independent reference for lmtk tests).

Reads the header, all metadata key/value pairs (every gguf value type, including arrays),
the tensor infos, and F32 / F16 tensor data. numpy shapes are the reverse of ggml's ``ne``:
a tensor with ``ne = [ne0, ne1]`` becomes a numpy array of shape ``[ne1, ne0]`` (row-major,
ne0 contiguous), which for a Llama weight is the usual ``[out_features, in_features]``.

Layout (little-endian): magic "GGUF", u32 version, i64 n_tensors, i64 n_kv, kv pairs,
tensor infos, padding to the alignment (general.alignment, default 32), data section.
"""

import struct
import sys

import numpy as np

GGUF_MAGIC = b"GGUF"

# gguf value types
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL = range(8)
T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = 8, 9, 10, 11, 12

_SCALAR_FMT = {
    T_UINT8: "<B", T_INT8: "<b", T_UINT16: "<H", T_INT16: "<h",
    T_UINT32: "<I", T_INT32: "<i", T_FLOAT32: "<f", T_BOOL: "<B",
    T_UINT64: "<Q", T_INT64: "<q", T_FLOAT64: "<d",
}
_SCALAR_DTYPE = {
    T_UINT8: "<u1", T_INT8: "<i1", T_UINT16: "<u2", T_INT16: "<i2",
    T_UINT32: "<u4", T_INT32: "<i4", T_FLOAT32: "<f4", T_BOOL: "<u1",
    T_UINT64: "<u8", T_INT64: "<i8", T_FLOAT64: "<f8",
}

# ggml tensor types this reader can materialise
GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1
_TENSOR_DTYPE = {GGML_TYPE_F32: np.dtype("<f4"), GGML_TYPE_F16: np.dtype("<f2")}


class GGUFError(Exception):
    pass


class TensorInfo:
    __slots__ = ("name", "ne", "ggml_type", "offset")

    def __init__(self, name, ne, ggml_type, offset):
        self.name = name
        self.ne = tuple(ne)
        self.ggml_type = ggml_type
        self.offset = offset

    @property
    def shape(self):
        """numpy shape: reversed ne."""
        return tuple(reversed(self.ne))

    def __repr__(self):
        return f"TensorInfo({self.name!r}, ne={self.ne}, type={self.ggml_type}, offset={self.offset})"


class _Cursor:
    def __init__(self, buf):
        self.buf = buf
        self.pos = 0

    def take(self, n):
        if n < 0 or self.pos + n > len(self.buf):
            raise GGUFError(f"truncated file: need {n} bytes at offset {self.pos}")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))[0]

    def string(self):
        n = self.unpack("<Q")
        return bytes(self.take(n)).decode("utf-8", errors="surrogateescape")


class GGUFFile:
    """A parsed GGUF file. ``metadata`` maps key -> python value (arrays of numbers become
    numpy arrays, arrays of strings become lists of str), ``tensors`` maps name -> TensorInfo."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.data = f.read()
        self.metadata = {}
        self.metadata_types = {}
        self.tensors = {}
        self._parse()

    # -- parsing ---------------------------------------------------------------------------
    def _read_value(self, cur, vtype):
        if vtype in _SCALAR_FMT:
            v = cur.unpack(_SCALAR_FMT[vtype])
            return bool(v) if vtype == T_BOOL else v
        if vtype == T_STRING:
            return cur.string()
        if vtype == T_ARRAY:
            etype = cur.unpack("<i")
            count = cur.unpack("<Q")
            if etype == T_ARRAY:
                raise GGUFError("nested arrays are not supported")
            if etype == T_STRING:
                return [cur.string() for _ in range(count)]
            if etype not in _SCALAR_DTYPE:
                raise GGUFError(f"bad array element type {etype}")
            dt = np.dtype(_SCALAR_DTYPE[etype])
            arr = np.frombuffer(cur.take(dt.itemsize * count), dtype=dt).copy()
            return arr.astype(bool) if etype == T_BOOL else arr
        raise GGUFError(f"bad value type {vtype}")

    def _parse(self):
        cur = _Cursor(memoryview(self.data))
        if bytes(cur.take(4)) != GGUF_MAGIC:
            raise GGUFError("not a GGUF file (bad magic)")
        self.version = cur.unpack("<I")
        if self.version not in (2, 3):
            raise GGUFError(f"unsupported GGUF version {self.version}")
        n_tensors = cur.unpack("<q")
        n_kv = cur.unpack("<q")
        if n_tensors < 0 or n_kv < 0:
            raise GGUFError("negative counts")
        for _ in range(n_kv):
            key = cur.string()
            vtype = cur.unpack("<i")
            if key in self.metadata:
                raise GGUFError(f"duplicate key {key}")
            self.metadata[key] = self._read_value(cur, vtype)
            self.metadata_types[key] = vtype
        infos = []
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.unpack("<I")
            if n_dims > 4:
                raise GGUFError(f"tensor {name}: {n_dims} dims")
            ne = [cur.unpack("<q") for _ in range(n_dims)]
            ggml_type = cur.unpack("<i")
            offset = cur.unpack("<Q")
            if name in self.tensors:
                raise GGUFError(f"duplicate tensor {name}")
            info = TensorInfo(name, ne, ggml_type, offset)
            self.tensors[name] = info
            infos.append(info)
        self.alignment = 32
        if "general.alignment" in self.metadata:
            if self.metadata_types["general.alignment"] != T_UINT32:
                raise GGUFError("general.alignment must be UINT32")
            self.alignment = int(self.metadata["general.alignment"])
        a = self.alignment
        if a <= 0 or a & (a - 1):
            raise GGUFError(f"alignment {a} is not a power of two")
        self.data_offset = (cur.pos + a - 1) // a * a
        self.tensor_order = [t.name for t in infos]

    # -- access ----------------------------------------------------------------------------
    def get(self, key, default=None):
        return self.metadata.get(key, default)

    def tensor(self, name):
        """Tensor data as a numpy array (F32 -> float32, F16 -> float16) of shape reversed(ne)."""
        info = self.tensors[name]
        if info.ggml_type not in _TENSOR_DTYPE:
            raise GGUFError(f"tensor {name}: ggml type {info.ggml_type} not supported by the reference")
        dt = _TENSOR_DTYPE[info.ggml_type]
        count = 1
        for n in info.ne:
            count *= n
        start = self.data_offset + info.offset
        end = start + count * dt.itemsize
        if end > len(self.data):
            raise GGUFError(f"tensor {name}: data runs past the end of the file")
        return np.frombuffer(self.data, dtype=dt, count=count, offset=start).reshape(info.shape)


def load(path):
    return GGUFFile(path)


if __name__ == "__main__":
    g = GGUFFile(sys.argv[1])
    print(f"GGUF v{g.version}, alignment {g.alignment}, data at {g.data_offset}")
    for k, v in g.metadata.items():
        if isinstance(v, (list, np.ndarray)) and len(v) > 8:
            v = f"[{len(v)} items] {list(v[:5])}..."
        print(f"  {k} = {v}")
    for name in g.tensor_order:
        print(f"  {g.tensors[name]}")
