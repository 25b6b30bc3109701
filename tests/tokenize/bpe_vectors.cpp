// BPE tokenization: GPT-2's byte-level BPE against llama.cpp's test vectors (vocabulary-only GGUF),
// the GPT-2 pre-tokenizer split on its own, the TinyStories tokenizer.json (BPE with byte
// fallback), tokenizer.json validation, and the unified tokenize::tokenizer over all of them.
#include <lmtk/tokenize/load.hpp>
#include <lmtk/tokenize/tokenize.hpp>

#include <catch2/catch.hpp>

#include "support/models.hpp"
#include "support/vocab_vectors.hpp"
#include "support/safetensors_files.hpp"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace tk = lmtk::tokenize;
using ids_t = std::vector<std::int32_t>;

using test_case = lmtk::test::vocab_case;

std::vector<test_case> load_vectors(const std::string& gguf_path) { return lmtk::test::load_vocab_vectors(gguf_path); }

const std::string& gpt2_path() {
    static const std::string p = lmtk::test::model_path("vocab/ggml-vocab-gpt-2.gguf");
    return p;
}
const tk::tokenizer& gpt2() {
    static const tk::tokenizer t = tk::load_tokenizer(gpt2_path());
    return t;
}
std::string tinystories_dir() { return lmtk::test::model_path("tinystories-656k"); }
const tk::tokenizer& tinystories() {
    static const tk::tokenizer t = tk::load_tokenizer(tinystories_dir());
    return t;
}

std::vector<std::string> chunks(std::string_view s) {
    std::vector<std::string> out;
    tk::unicode::split_gpt2(s, [&](std::string_view c) { out.emplace_back(c); });
    return out;
}

std::string printable(const std::string& s) {
    std::ostringstream os;
    for (const unsigned char c : s) {
        if (c >= 0x20 && c < 0x7F && c != '\\') os << c;
        else os << "\\x" << std::hex << int(c) << std::dec;
    }
    return os.str();
}

}  // namespace

TEST_CASE("bpe: GPT-2 pre-tokenizer split", "[tokenize][bpe]") {
    using v = std::vector<std::string>;
    CHECK(chunks("Hello world") == v{"Hello", " world"});
    CHECK(chunks("Hello, world!") == v{"Hello", ",", " world", "!"});
    CHECK(chunks("   Hello") == v{"  ", " Hello"});
    CHECK(chunks("a\n\nb") == v{"a", "\n", "\n", "b"});  // \s+(?!\S) keeps one, then \s+ takes it
    CHECK(chunks("a \n b") == v{"a", " \n", " b"});
    CHECK(chunks("x  ") == v{"x", "  "});  // trailing whitespace stays together
    CHECK(chunks("I've 'll 'LL") == v{"I", "'ve", " '", "ll", " '", "LL"});  // case-sensitive
    CHECK(chunks("3.14 333") == v{"3", ".", "14", " 333"});
    CHECK(chunks("нещо на") == v{"нещо", " на"});
    CHECK(chunks("½ months") == v{"½", " months"});  // ½ is a number (No)
    CHECK(chunks("🦙.cpp") == v{"🦙.", "cpp"});
    CHECK(chunks("\xFF\xFE" "ab") == v{"\xFF\xFE", "ab"});  // malformed bytes are "other"
    CHECK(chunks("").empty());
    // The chunks always cover the text exactly.
    std::mt19937 g(7);
    for (int round = 0; round < 200; ++round) {
        std::string s;
        for (int k = 0; k < 24; ++k) s.push_back(" a1!\n\t\xC3\xA9\xE2\x96\x81\xFF'"[g() % 13]);
        std::string joined;
        for (const auto& c : chunks(s)) {
            CHECK_FALSE(c.empty());
            joined += c;
        }
        CHECK(joined == s);
    }
}

TEST_CASE("bpe: llama.cpp test vectors for the GPT-2 vocabulary", "[tokenize][bpe]") {
    const auto cases = load_vectors(gpt2_path());
    REQUIRE(cases.size() > 30);
    const tk::tokenizer& tok = gpt2();
    CHECK(tok.kind() == "bpe (byte-level)");
    std::size_t passed = 0;
    for (std::size_t i = 0; i < cases.size(); ++i) {
        INFO("case " << i << ": '" << printable(cases[i].text) << "'");
        const ids_t got = tok.encode(cases[i].text, false);
        CHECK(got == cases[i].expected);
        passed += got == cases[i].expected;
        CHECK(tok.decode(got) == cases[i].text);  // byte-level BPE is lossless
    }
    WARN("bpe_tokenizer (byte-level): " << passed << "/" << cases.size() << " GPT-2 cases pass");
}

TEST_CASE("bpe: GPT-2 special tokens, BOS, pieces", "[tokenize][bpe]") {
    const tk::tokenizer& tok = gpt2();
    const tk::vocab& v = tok.vocabulary();
    CHECK(tok.size() == 50257);
    CHECK(tok.bos() == 50256);
    CHECK(tok.eos() == 50256);
    CHECK(tok.is_eog(50256));
    CHECK_FALSE(v.add_bos());
    CHECK(tok.encode("Hello<|endoftext|>", false, true) == ids_t{15496, 50256});
    const ids_t plain = tok.encode("Hello<|endoftext|>", false, false);
    CHECK(plain.size() > 2);  // not parsed: ordinary text
    CHECK(tok.decode(plain) == "Hello<|endoftext|>");
    CHECK(tok.encode("Hello", true) == ids_t{50256, 15496});
    CHECK(tok.piece(995) == " world");  // "Ġworld"
    CHECK(tok.decode(ids_t{15496, 50256}) == "Hello");
    CHECK(tok.decode(ids_t{15496, 50256}, false) == "Hello<|endoftext|>");
    CHECK_THROWS_AS(tok.piece(50257), lmtk::error);
    CHECK_THROWS_AS(tok.piece(-1), lmtk::error);
    // Any bytes round-trip, malformed UTF-8 included.
    std::mt19937 g(3);
    for (int round = 0; round < 100; ++round) {
        std::string s;
        for (int k = 0; k < 40; ++k) s.push_back(static_cast<char>(g() & 0xFF));
        CHECK(tok.decode(tok.encode(s, false)) == s);
    }
}

TEST_CASE("bpe: TinyStories tokenizer.json (BPE with byte fallback)", "[tokenize][bpe][hf]") {
    const tk::tokenizer& tok = tinystories();
    const tk::vocab& v = tok.vocabulary();
    CHECK(tok.kind() == "bpe (byte fallback)");
    CHECK(v.model() == "llama");
    CHECK(tok.size() == 2048);
    CHECK(v.merges().size() == 1967);
    CHECK(tok.bos() == 1);
    CHECK(tok.eos() == 2);
    CHECK(v.unk() == 0);
    CHECK(v.add_bos());
    CHECK_FALSE(v.add_eos());
    CHECK(v.add_space_prefix());
    CHECK(v.type(0) == tk::token_type::unknown);
    CHECK(v.type(1) == tk::token_type::control);
    CHECK(v.type(80) == tk::token_type::normal);  // "▁"
    CHECK(v.text(1) == "<|start_story|>");

    const std::string text = "Once upon a time, there was a little girl named Lily.";
    const ids_t ids = tok.encode(text, true);
    REQUIRE(ids.size() > 2);
    CHECK(ids[0] == 1);
    CHECK(ids.size() < 20);  // merges cross word boundaries in this vocabulary ("in▁the▁")
    CHECK(tok.decode(ids) == text);
    CHECK(tok.decode(tok.encode("", true)) == "");
    CHECK(tok.encode("", false).empty());
    // '~' and 'é' are not in the vocabulary and there are no byte tokens: one <unk> per run.
    const ids_t unk = tok.encode("a~~é b", false);
    CHECK(std::count(unk.begin(), unk.end(), 0) == 1);
    CHECK(tok.decode(unk).find("\xE2\x81\x87") != std::string::npos);  // shown as " ⁇ "
    CHECK(tok.encode("<|end_story|>", false, true) == ids_t{2});
    // Every merge applied is a listed merge: the result never contains a pair that a lower
    // ranked merge could still join (checked by re-running BPE on the output's pieces).
    for (const char* s : {"The cat sat on the mat.", "  two  spaces", "Tom and Mia went to the park!\nThe end."}) {
        INFO(s);
        const ids_t got = tok.encode(s, false);
        CHECK(tok.decode(got) == s);
    }
}

TEST_CASE("bpe: tokenizer.json validation", "[tokenize][bpe][hf]") {
    lmtk::test::scratch_dir d("tokjson");
    const std::string p = d.file("tokenizer.json");
    auto write = [&](const std::string& s) {
        std::ofstream(p, std::ios::binary | std::ios::trunc) << s;
    };
    auto refused = [&](const std::string& json, const std::string& what) {
        write(json);
        try {
            (void)tk::vocab_from_tokenizer_json(p);
            FAIL("accepted " << json);
        } catch (const lmtk::error& e) {
            INFO(e.what());
            CHECK(std::string(e.what()).find(what) != std::string::npos);
            CHECK(std::string(e.what()).find(p) != std::string::npos);
        }
    };
    const std::string meta_norm =
        R"("normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},)"
        R"({"type":"Replace","pattern":{"String":" "},"content":"▁"}]},"pre_tokenizer":null,)";
    refused("[]", "not a JSON object");
    refused("{", "invalid JSON");
    refused(R"({"model":{"type":"WordPiece","vocab":{"a":0}}})", "'WordPiece' is not supported");
    refused(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]}})", "neither byte-level nor metaspace");
    refused("{" + meta_norm + R"("model":{"type":"BPE","vocab":{},"merges":["a b"]}})", "vocab is missing or empty");
    refused("{" + meta_norm + R"("model":{"type":"BPE","vocab":{"a":-1},"merges":["a b"]}})", "invalid id");
    refused("{" + meta_norm + R"("model":{"type":"BPE","vocab":{"a":0,"b":0},"merges":["a b"]}})", "is both");
    refused("{" + meta_norm + R"("model":{"type":"BPE","vocab":{"a":0,"a":1},"merges":["a b"]}})", "duplicate key");
    refused("{" + meta_norm + R"("model":{"type":"BPE","vocab":{"a":0},"merges":[7]}})", "malformed entry in model.merges");
    refused(R"({"pre_tokenizer":{"type":"Split","pattern":{"Regex":"x"}},"model":{"type":"BPE","vocab":{"a":0}}})",
            "Split pre-tokenizer with behavior '' is not supported");
    refused(R"({"pre_tokenizer":{"type":"Split","pattern":{"Regex":"x"},"behavior":"Isolated"},"model":{"type":"BPE","vocab":{"a":0}}})",
            "without ByteLevel are not supported");
    refused(R"({"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"(?<=x)y"},)"
            R"("behavior":"Isolated"},{"type":"ByteLevel","use_regex":false}]},"model":{"type":"BPE","vocab":{"a":0}}})",
            "lookbehind and named groups are not supported");
    refused(R"({"pre_tokenizer":{"type":"WhitespaceSplit"},"model":{"type":"BPE","vocab":{"a":0}}})",
            "pre-tokenizer 'WhitespaceSplit' is not supported");
    refused(R"({"normalizer":{"type":"NFKC"},"pre_tokenizer":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":{"a":0}}})",
            "normalizer 'NFKC' is not supported");

    // Ids size the token table, so they are bounded by the number of tokens the file lists
    // (vocab + added_tokens): one id of 2^24 - 1 in a small file once cost 3 GB and half a
    // minute of placeholders before anything was refused.
    refused("{" + meta_norm + R"("model":{"type":"BPE","vocab":{"a":0,"b":16777215},"merges":["a b"]}})",
            "id 16777215, but the file lists only 2 tokens");
    refused("{" + meta_norm + R"("added_tokens":[{"id":3,"content":"<s>","special":true}],)"
                              R"("model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":["a b"]}})",
            "id 3, but the file lists only 3 tokens");

    // A minimal valid one: ids with a hole get a placeholder (the hole is paid for by <unk>,
    // listed twice, as real files list their specials); merges as pairs; byte tokens.
    write("{" + meta_norm +
          R"("added_tokens":[{"id":4,"content":"<s>","special":true},{"id":0,"content":"<unk>","special":true}],)"
          R"("model":{"type":"BPE","unk_token":"<unk>","byte_fallback":true,)"
          R"("vocab":{"<unk>":0,"a":1,"b":2,"ab":3,"▁":6,"▁ab":7},"merges":[["a","b"],"▁ ab"]}})");
    const tk::vocab v = tk::vocab_from_tokenizer_json(p);
    CHECK(v.size() == 8);
    CHECK(v.type(5) == tk::token_type::unused);
    CHECK(v.type(4) == tk::token_type::control);
    CHECK(v.type(0) == tk::token_type::unknown);
    CHECK(v.merges() == std::vector<std::string>{"a b", "▁ ab"});
    CHECK(v.score(3) > v.score(7));  // earlier merge, higher score
    const tk::tokenizer t = tk::tokenizer::from_vocab(v);
    CHECK(t.encode("ab ab", false) == ids_t{7, 7});
    CHECK(t.encode("ab<s>ab", false, true) == ids_t{7, 4, 7});
    CHECK(t.encode("ba", false) == ids_t{6, 2, 1});
}

TEST_CASE("tokenizer: one class over every vocabulary kind", "[tokenize]") {
    const tk::tokenizer spm = tk::load_tokenizer(lmtk::test::model_path("vocab/ggml-vocab-llama-spm.gguf"));
    CHECK(spm.kind() == "spm");
    CHECK(spm.get_if<tk::spm_tokenizer>() != nullptr);
    CHECK(spm.encode("Hello world!", false) == ids_t{15043, 3186, 29991});
    CHECK(gpt2().get_if<tk::bpe_tokenizer>() != nullptr);
    CHECK_THROWS_WITH(tk::load_tokenizer(lmtk::test::model_path("vocab")), Catch::Contains("no tokenizer.json"));
}

TEST_CASE("special tokens: the longest text at a position wins, whatever the order they were added", "[tokenize]") {
    // The matcher no longer keeps its buckets sorted on insertion (quadratic in a vocabulary
    // with 10^5 user-defined tokens); split() picks the longest hit itself.
    for (const bool short_first : {true, false}) {
        tk::special_matcher m;
        if (short_first) {
            m.add("<|end|>", 1);
            m.add("<|endoftext|>", 2);
        } else {
            m.add("<|endoftext|>", 2);
            m.add("<|end|>", 1);
        }
        m.add("<|end|>", 3);  // a repeated text: the first id added wins
        std::vector<std::string> parts;
        m.split("a<|endoftext|>b<|end|>", [&](std::string_view t) { parts.emplace_back(t); },
                [&](std::int32_t id) { parts.push_back("#" + std::to_string(id)); });
        CHECK(parts == std::vector<std::string>{"a", "#2", "b", "#1"});
    }
}
