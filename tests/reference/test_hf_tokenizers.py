"""lmtk's tokenizers against Hugging Face `tokenizers` (PyPI), the library the families' own
tokenizer.json files run on, and `lmtk export-tokenizer` against transformers' AutoTokenizer.

For every vocabulary of llama.cpp's suites (byte-level BPE: llama-bpe, qwen2, qwen35,
deepseek-llm, deepseek-coder, falcon, mpt, starcoder, refact, command-r, gpt-2; SPM: llama-spm,
phi-3), stories260K.gguf and the tinystories-656k folder:
  1. `lmtk export-tokenizer MODEL DIR` writes a tokenizer.json;
  2. HF `tokenizers` encodes a sample of texts with it (the suite's own texts plus generated ones:
     Unicode-heavy, code, whitespace runs, digits), and so does `lmtk tokenize -m MODEL`;
     the ids must be identical, text by text;
  3. lmtk reading the exported tokenizer.json (its Split patterns) gives the same ids again.
The tinystories-656k folder's original tokenizer.json is compared the same way, and
AutoTokenizer.from_pretrained(DIR) on exported folders must give lmtk's ids with BOS.

The vocabularies come from tests/data/vocab-suites.tar.xz, unpacked by CMake into
$LMTK_TEST_VOCAB (tools/fetch_vocab_suites.py), plus ../shared/models/vocab.
"""

import os
import random
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from tokenizers import Tokenizer  # noqa: E402

SEP = "\n__ggml_vocab_test__\n"
SUITE_FAMILIES = ["llama-bpe", "qwen2", "qwen35", "deepseek-llm", "deepseek-coder", "falcon", "mpt", "starcoder",
                  "refact", "command-r", "phi-3"]


def vocab_dir():
    d = os.environ.get("LMTK_TEST_VOCAB")
    if not d:
        raise unittest.SkipTest("LMTK_TEST_VOCAB is not set (ctest sets it)")
    return d


def generated_texts(n=120, seed=1234):
    """Texts the suites do not have: mixed scripts, code, whitespace runs, digit runs."""
    rng = random.Random(seed)
    pool = [
        "Hello", " world", "  ", "\t", "\n", "\n\n", "\r\n", "   \n  ", "12345678", " 3.14159", "1,000,000",
        "Привет", " мир", "Ελληνικά", "日本語のテキスト", "中文字符", "한국어", "עברית", "العربية", " हिन्दी",
        "ไทย", "e\u0301", "naïve café", "🦙🦙", " 🤖", "\u00a0", "\u3000", "def f(x):\n    return x ** 2\n",
        "if (a && b) { c++; }", "#include <vector>", "    ", "'s", "'LL", " I'm", "don't", "https://example.com/a?b=c",
        "<html>", "!!!", "...", "—", "½", "Ⅻ", "x²", "$100", "@user", "snake_case_name", "CamelCaseName", "ALLCAPS",
    ]
    out = []
    for _ in range(n):
        k = rng.randint(1, 8)
        out.append("".join(rng.choice(pool) for _ in range(k)))
    return out


class HfTokenizersTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="lmtk-hf-tok-")
        cls.generated = generated_texts()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def lmtk_ids(self, model, texts, bos=False):
        payload = "".join(t + SEP for t in texts).encode("utf-8")
        args = ["tokenize", "-m", model, "--split", SEP] + ([] if bos else ["--no-bos"])
        r = common.run_cli(args, stdin=payload, timeout=300)
        lines = r.text().split("\n")[:-1]
        self.assertEqual(len(lines), len(texts), r.describe())
        return [[int(x) for x in line.split()] for line in lines]

    def export(self, model, name):
        out = os.path.join(self.tmp, name)
        common.run_cli(["export-tokenizer", model, out], timeout=300)
        return out

    def compare(self, name, model, texts):
        """HF tokenizers on the exported file, lmtk on the model and on the exported file."""
        exported = self.export(model, name)
        hf = Tokenizer.from_file(os.path.join(exported, "tokenizer.json"))
        want = self.lmtk_ids(model, texts)
        again = self.lmtk_ids(exported, texts)
        bad = []
        for text, ids, ids2 in zip(texts, want, again):
            got = hf.encode(text, add_special_tokens=False).ids
            if got != ids or ids2 != ids:
                bad.append((text, ids, got, ids2))
        self.assertEqual(bad[:3], [], f"{name}: {len(bad)} of {len(texts)} texts differ (text, lmtk, HF, lmtk on export)")
        return exported

    def suite_texts(self, gguf):
        with open(gguf + ".inp", encoding="utf-8") as f:
            return f.read().split(SEP)[:-1]

    def test_suite_vocabularies(self):
        for family in SUITE_FAMILIES:
            with self.subTest(family=family):
                gguf = os.path.join(vocab_dir(), f"ggml-vocab-{family}.gguf")
                self.compare(family, gguf, self.suite_texts(gguf) + self.generated)

    def test_shared_vocabularies(self):
        for family in ["gpt-2", "llama-spm"]:
            with self.subTest(family=family):
                gguf = common.model_path(f"vocab/ggml-vocab-{family}.gguf")
                self.compare(family, gguf, self.suite_texts(gguf) + self.generated)

    def test_small_models(self):
        # stories260K: SPM with 512 tokens, no byte tokens for most bytes (unknown -> <unk>).
        texts = ["Once upon a time", " there was a little girl.", "Lily and Tom played."] + self.generated
        self.compare("stories260K", common.model_path("stories260K.gguf"), texts)
        folder = common.model_path("tinystories-656k/tokenizer.json").rsplit("/", 1)[0]
        self.compare("tinystories-656k", folder, texts)
        # And the folder's own tokenizer.json, as Hugging Face ships it.
        hf = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        want = self.lmtk_ids(folder, texts)
        for text, ids in zip(texts, want):
            self.assertEqual(hf.encode(text, add_special_tokens=False).ids, ids, repr(text))

    def test_auto_tokenizer(self):
        from transformers import AutoTokenizer
        texts = ["Once upon a time", "Hello world! 123", "  spaces\n\nand lines"]
        for name, model in [("auto-llama-bpe", os.path.join(vocab_dir(), "ggml-vocab-llama-bpe.gguf")),
                            ("auto-stories260K", common.model_path("stories260K.gguf"))]:
            with self.subTest(model=name):
                d = self.export(model, name)
                auto = AutoTokenizer.from_pretrained(d)
                want = self.lmtk_ids(model, texts, bos=True)
                for text, ids in zip(texts, want):
                    self.assertEqual(auto(text)["input_ids"], ids, repr(text))
                    # And back: what the ids decode to is the text (no space prefix left over).
                    self.assertEqual(auto.decode(ids, skip_special_tokens=True), text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
