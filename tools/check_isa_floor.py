#!/usr/bin/env python3
"""Checks that a portable x86-64 lmtk binary runs on the SSE4.2 floor: every function that uses
an instruction beyond x86-64-v2 (AVX/AVX2/AVX-512 and FMA/F16C, all VEX- or EVEX-encoded; BMI1/2,
LZCNT, MOVBE) must belong to a kernel level's isolated object (its symbols end in
.lmtk_avx2 or .lmtk_avx512_vnni, see cmake/isolate_kernels.cmake), which runs only where
CPUID says the CPU has that level.

    tools/check_isa_floor.py build/bin/lmtk [--objdump objdump]

Why a disassembly rather than an emulator: QEMU's user mode (Debian 12, 7.2) executes AVX2 even
with -cpu Nehalem, so it cannot show that a path avoids it. Exit status 1 and the offending
functions when the check fails.
"""

import argparse
import re
import subprocess
import sys

ALLOWED_SUFFIXES = (".lmtk_avx2", ".lmtk_avx512_vnni")
# Mnemonics beyond x86-64-v2 that are not VEX/EVEX-encoded (those all start with 'v').
NON_VEX = {"andn", "bextr", "blsi", "blsmsk", "blsr", "bzhi", "mulx", "pdep", "pext", "rorx", "sarx", "shlx",
           "shrx", "lzcnt", "movbe"}
# Not tzcnt: its encoding is `rep bsf`, which CPUs without BMI1 execute as bsf (the same result
# for a nonzero input, the only kind GCC emits it for under generic tuning).
NOT_AVX_V = {"verr", "verw"}  # legacy system instructions that start with 'v'
FUNC = re.compile(r"^[0-9a-f]+ <(.+)>:$")


def needs_above_floor(mnemonic, operands):
    if mnemonic.startswith("v") and mnemonic not in NOT_AVX_V:
        return True
    if mnemonic in NON_VEX:
        return True
    return "%ymm" in operands or "%zmm" in operands


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--objdump", default="objdump")
    a = ap.parse_args()
    proc = subprocess.Popen([a.objdump, "-d", "--no-show-raw-insn", a.binary], stdout=subprocess.PIPE, text=True)
    func = None
    offending = {}
    in_levels = set()
    for line in proc.stdout:
        m = FUNC.match(line.strip())
        if m:
            func = m.group(1)
            continue
        parts = line.split("\t")
        if func is None or len(parts) < 2:
            continue
        insn = parts[-1].strip()
        if not insn or insn.startswith("("):
            continue
        fields = insn.split(None, 1)
        mnemonic = fields[0]
        if mnemonic in ("rep", "repz", "repnz", "lock", "notrack", "bnd", "data16", "cs", "ds") and len(fields) > 1:
            fields = fields[1].split(None, 1)
            mnemonic = fields[0]
        operands = fields[1] if len(fields) > 1 else ""
        if not needs_above_floor(mnemonic, operands):
            continue
        if func.endswith(ALLOWED_SUFFIXES) or ".lmtk_avx2." in func or ".lmtk_avx512_vnni." in func:
            in_levels.add(func)
        else:
            offending.setdefault(func, insn)
    if proc.wait() != 0:
        sys.exit(f"{a.objdump} failed on {a.binary}")
    if not in_levels:
        sys.exit(f"{a.binary}: no function of an AVX2 or AVX-512 kernel level found: is it the portable build?")
    if offending:
        print(f"{a.binary}: {len(offending)} function(s) outside the kernel levels use instructions above "
              f"x86-64-v2 (first instruction shown):")
        for f, insn in sorted(offending.items())[:40]:
            print(f"  {f}: {insn}")
        sys.exit(1)
    print(f"{a.binary}: runs on x86-64-v2 (SSE4.2): {len(in_levels)} functions use AVX2/AVX-512, "
          f"all in the isolated kernel levels chosen by CPUID")


if __name__ == "__main__":
    main()
