#!/usr/bin/env python3
"""Refresh tests/data/vocab-suites.tar.xz (llama.cpp's tokenizer test suites) and
tests/data/chat_templates/ (the real chat templates llama.cpp tests with).

llama.cpp keeps, for each tokenizer family, a vocabulary-only GGUF (`models/ggml-vocab-NAME.gguf`)
and test vectors made with the family's Hugging Face tokenizer (`.gguf.inp`: texts, each followed
by "\\n__ggml_vocab_test__\\n"; `.gguf.out`: one line of ids per text). They ship in the source
distribution of llama-cpp-python on PyPI (vendor/llama.cpp/models/). This script downloads that
sdist with pip (or takes one given with --sdist), and packs the suites of the families lmtk's
tests cover into one xz-compressed tar, which CMake unpacks into the build folder at configure
time (tests/CMakeLists.txt). It also copies every `models/templates/*.jinja` (about 70 real
models' chat templates) into tests/data/chat_templates/, which
tests/reference/test_chat_templates.py renders with lmtk and with transformers, and every
`grammars/*.gbnf` (llama.cpp's example GBNF grammars) into tests/data/grammars/, which
tests/sample/grammar.cpp parses and generates from. The files are data: llama.cpp's, under its
MIT licence.

Usage: python3 tools/fetch_vocab_suites.py [--sdist llama_cpp_python-X.tar.gz]
"""
import argparse
import glob
import io
import lzma
import os
import subprocess
import sys
import tarfile
import tempfile

# The families of issue #14 that have suites (smollm has none upstream; it shares starcoder's
# split), plus qwen35 (its split uses \p{M}). gpt-2 and llama-spm are in ../shared/models/vocab.
FAMILIES = ["command-r", "deepseek-coder", "deepseek-llm", "falcon", "llama-bpe", "mpt", "phi-3",
            "qwen2", "qwen35", "refact", "starcoder"]
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")
OUT = os.path.join(DATA, "vocab-suites.tar.xz")
TEMPLATES = os.path.join(DATA, "chat_templates")
GRAMMARS = os.path.join(DATA, "grammars")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sdist", help="a llama-cpp-python source tarball (default: pip download the newest)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sdist = args.sdist
        if not sdist:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                            "-d", tmp, "llama-cpp-python"], check=True)
            sdist = glob.glob(os.path.join(tmp, "llama_cpp_python-*.tar.gz"))[0]
        members = {}
        templates = {}
        grammars = {}
        with tarfile.open(sdist) as src:
            for m in src.getmembers():
                base = os.path.basename(m.name)
                if "/vendor/llama.cpp/models/templates/" in m.name and base.endswith(".jinja") and m.isfile():
                    templates[base] = src.extractfile(m).read()
                if "/vendor/llama.cpp/grammars/" in m.name and base.endswith(".gbnf") and m.isfile():
                    grammars[base] = src.extractfile(m).read()
                    continue
                if "/vendor/llama.cpp/models/" not in m.name or not base.startswith("ggml-vocab-"):
                    continue
                family = base[len("ggml-vocab-"):].split(".gguf")[0]
                if family in FAMILIES:
                    members[base] = src.extractfile(m).read()
        missing = [f"ggml-vocab-{f}.gguf{e}" for f in FAMILIES for e in ("", ".inp", ".out")
                   if f"ggml-vocab-{f}.gguf{e}" not in members]
        if missing:
            sys.exit(f"not in {sdist}: {', '.join(missing)}")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as out:
            for name in sorted(members):
                info = tarfile.TarInfo("vocab/" + name)
                info.size = len(members[name])
                info.mtime = 0
                out.addfile(info, io.BytesIO(members[name]))
        with open(OUT, "wb") as f:
            f.write(lzma.compress(buf.getvalue(), preset=9 | lzma.PRESET_EXTREME))
        print(f"{OUT}: {len(members)} files from {os.path.basename(sdist)}, {os.path.getsize(OUT)} bytes")
        replace_folder(TEMPLATES, "*.jinja", templates, f"no models/templates/*.jinja in {sdist}")
        replace_folder(GRAMMARS, "*.gbnf", grammars, f"no grammars/*.gbnf in {sdist}")


def replace_folder(folder, pattern, files, missing):
    """Replaces the files matching `pattern` in `folder` by `files` (name -> bytes)."""
    if not files:
        sys.exit(missing)
    os.makedirs(folder, exist_ok=True)
    for old in glob.glob(os.path.join(folder, pattern)):
        os.unlink(old)
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    print(f"{folder}: {len(files)} files")

if __name__ == "__main__":
    main()
