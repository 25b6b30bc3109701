"""Test material for tests/model/quantized_checkpoints.cpp (a ctest fixture, not a test):
tinystories-656k (a real HF Llama checkpoint, F32) quantized every way lmtk reads.

  python make_quantized_models.py OUT_DIR

writes into OUT_DIR
  <variant>/ and <variant>.ref.safetensors   AWQ and GPTQ checkpoints from tools/pack/lmtk_pack.py,
                                             with the packer's dequantized weights
  f32.gguf, q8_0.gguf, q4_k_m.gguf           `lmtk convert` of the checkpoint, and
                                             `lmtk quantize` of that (needs $LMTK_CLI)
and a file `done` last, so a half-written folder is never mistaken for a complete one.
"""

import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from common import cli_path, models_dir  # noqa: E402

PACKER = os.path.join(REPO_ROOT, "tools", "pack", "lmtk_pack.py")

# name -> packer arguments. Covers every layout lmtk reads: AWQ GEMM at each group size; GPTQ
# v1/v2, 3/4 bits, sym/asym, act-order or not, groups 32/64/128/-1.
VARIANTS = {
    "awq-g128": ["--format", "awq", "--group", "128"],
    "awq-g64": ["--format", "awq", "--group", "64"],
    "awq-g32": ["--format", "awq", "--group", "32"],
    "gptq4-g128-act": ["--format", "gptq", "--bits", "4", "--group", "128", "--act-order"],
    "gptq4-g128": ["--format", "gptq", "--bits", "4", "--group", "128"],
    "gptq4-g32-v2-asym": ["--format", "gptq_v2", "--bits", "4", "--group", "32", "--asym"],
    "gptq4-g64-asym-act": ["--format", "gptq", "--bits", "4", "--group", "64", "--asym", "--act-order"],
    "gptq4-gm1": ["--format", "gptq", "--bits", "4", "--group", "-1"],
    "gptq3-g128": ["--format", "gptq", "--bits", "3", "--group", "128"],
    "gptq3-g32-v2-asym-act": ["--format", "gptq_v2", "--bits", "3", "--group", "32", "--asym", "--act-order"],
    "gptq3-g64-act": ["--format", "gptq", "--bits", "3", "--group", "64", "--act-order"],
    "gptq3-gm1-v2": ["--format", "gptq_v2", "--bits", "3", "--group", "-1"],
}


def run(args):
    r = subprocess.run(args, capture_output=True, timeout=300)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(args)}\n{r.stderr.decode(errors='replace')}")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_quantized_models.py OUT_DIR")
    out = os.path.abspath(sys.argv[1])
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    src = os.path.join(models_dir(), "tinystories-656k")
    for name, args in VARIANTS.items():
        run([sys.executable, PACKER, src, os.path.join(out, name), *args,
             "--reference", os.path.join(out, name + ".ref.safetensors")])
    cli = cli_path()
    f32 = os.path.join(out, "f32.gguf")
    run([cli, "convert", src, f32, "--type", "f32"])
    run([cli, "quantize", f32, os.path.join(out, "q8_0.gguf"), "Q8_0"])
    run([cli, "quantize", f32, os.path.join(out, "q4_k_m.gguf"), "Q4_K_M"])
    with open(os.path.join(out, "done"), "w") as f:
        f.write("\n".join(VARIANTS) + "\n")
    print(f"wrote {len(VARIANTS)} AWQ/GPTQ checkpoints and 3 GGUF files to {out}")


if __name__ == "__main__":
    main()
