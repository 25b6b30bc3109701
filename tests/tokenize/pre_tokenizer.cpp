// Pre-tokenizers: the regular expression engine they run on (tokenize/regex.hpp), the families
// named by tokenizer.ggml.pre (tokenize/pre_tokenizer.hpp), and llama.cpp's tokenizer test suites
// for every byte-level BPE family and SPM vocabulary in tests/data/vocab-suites.tar.xz (unpacked
// by CMake into $LMTK_TEST_VOCAB; refreshed by tools/fetch_vocab_suites.py). The suites' expected
// ids come from each family's Hugging Face tokenizer: every case must match exactly.
#include <lmtk/tokenize/load.hpp>
#include <lmtk/tokenize/pre_tokenizer.hpp>
#include <lmtk/tokenize/regex.hpp>
#include <lmtk/tokenize/tokenize.hpp>

#include <catch2/catch.hpp>

#include "support/vocab_vectors.hpp"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace tk = lmtk::tokenize;
using strings = std::vector<std::string>;

// Every match of `pattern` in `text`, as strings.
strings matches(std::string_view pattern, std::string_view text) {
    const tk::regex re(pattern);
    const auto decoded = tk::unicode::decode_utf8(text);
    const tk::regex_text t = tk::regex_text::of(decoded);
    tk::regex::scratch sc(re);
    strings out;
    re.for_each_match(t, 0, decoded.size(), sc, [&](std::size_t s, std::size_t e) {
        const std::size_t b = s < decoded.size() ? decoded[s].offset : text.size();
        const std::size_t f = e < decoded.size() ? decoded[e].offset : text.size();
        out.emplace_back(text.substr(b, f - b));
    });
    return out;
}

strings pieces(const tk::pre_tokenizer& p, std::string_view text) {
    strings out;
    p.split(text, [&](std::string_view s) { out.emplace_back(s); });
    return out;
}

std::string refusal(std::string_view pattern) {
    try {
        tk::regex re(pattern);
    } catch (const lmtk::error& e) {
        return e.what();
    }
    return "accepted";
}

std::filesystem::path vocab_dir() {
    if (const char* env = std::getenv("LMTK_TEST_VOCAB"); env && *env) return env;
    return "data/vocab";
}

}  // namespace

TEST_CASE("regex: leftmost-first matching, as Oniguruma does", "[tokenize][regex]") {
    CHECK(matches("a|ab", "ab") == strings{"a"});             // first alternative, not longest
    CHECK(matches("ab|a", "ab") == strings{"ab"});
    CHECK(matches("a+", "caaab aa") == strings{"aaa", "aa"});  // greedy
    CHECK(matches("a+?", "aaa") == strings{"a", "a", "a"});   // lazy
    CHECK(matches("a{2}", "aaaaa") == strings{"aa", "aa"});
    CHECK(matches("a{1,2}b", "aaab") == strings{"aab"});
    CHECK(matches("\\p{N}{1,3}", "12345") == strings{"123", "45"});
    CHECK(matches("x*", "ab") == strings{"", "", ""});        // empty matches move on by one
    CHECK(matches("(?i:'s|'ll)", "'S 'lL 's") == strings{"'S", "'lL", "'s"});
    CHECK(matches("\\s+(?!\\S)|\\s+", "a   b") == strings{"  ", " "});
    CHECK(matches("\\s+$", "a  b  ") == strings{"  "});
    CHECK(matches("^a", "aaa") == strings{"a"});
    CHECK(matches("[^\\r\\n\\p{L}\\p{N}]?\\p{L}+", "\xC2\xA0мир,x") == strings{"\xC2\xA0мир", ",x"});
    CHECK(matches("[\\p{Lu}]+", "abCDé\xC3\x89") == strings{"CD", "\xC3\x89"});
    CHECK(matches("[a-c\\-]+", "xa-cbz") == strings{"a-cb"});
    CHECK(matches("[一-龥]+", "a中文b") == strings{"中文"});
    CHECK(matches("\\x41\\u0042\\x{43}", "zABC") == strings{"ABC"});
    CHECK(matches(".+", "ab\ncd") == strings{"ab", "cd"});
    CHECK(matches("\\p{P}+", "hi, there!?") == strings{",", "!?"});
    CHECK(matches("\\p{M}", "e\xCC\x81") == strings{"\xCC\x81"});  // a combining accent
    CHECK(matches("(a|b)*c", "ababc") == strings{"ababc"});
    // A malformed byte is a code point of its own, in no class but negated ones.
    CHECK(matches("[^a]", "\xFF") == strings{"\xFF"});
    CHECK(matches("\\p{L}", "\xFF").empty());
}

TEST_CASE("regex: what it cannot run is refused by name", "[tokenize][regex]") {
    CHECK_THAT(refusal("(?<=a)b"), Catch::Contains("lookbehind"));
    CHECK_THAT(refusal("a++"), Catch::Contains("possessive"));
    CHECK_THAT(refusal("(?>a)"), Catch::Contains("atomic"));
    CHECK_THAT(refusal("(a)\\1"), Catch::Contains("unsupported escape \\1"));
    CHECK_THAT(refusal("\\p{Han}+"), Catch::Contains("unsupported property \\p{Han}"));
    CHECK_THAT(refusal("\\bx"), Catch::Contains("word boundaries"));
    CHECK_THAT(refusal("(?=ab)"), Catch::Contains("lookahead of more than one character"));
    CHECK_THAT(refusal("(a"), Catch::Contains("missing ')'"));
    CHECK_THAT(refusal("a)"), Catch::Contains("unbalanced ')'"));
    CHECK_THAT(refusal("[a"), Catch::Contains("missing ']'"));
    CHECK_THAT(refusal("[z-a]"), Catch::Contains("out of order"));
    CHECK_THAT(refusal("*a"), Catch::Contains("nothing to repeat"));
    CHECK_THAT(refusal("a{3,1}"), Catch::Contains("m < n"));
    CHECK_THAT(refusal("a{99999}{99999}"), Catch::Contains("instructions"));
    CHECK_THAT(refusal(std::string(300, '(') + std::string(300, ')')), Catch::Contains("nested too deeply"));
    CHECK_THAT(refusal("\\"), Catch::Contains("ends in a backslash"));
    CHECK_THAT(refusal("\xFF"), Catch::Contains("malformed UTF-8"));
}

TEST_CASE("regex: patterns that make backtracking engines explode run in linear time", "[tokenize][regex]") {
    // (a*)*b on a long run of a's takes exponential time in a backtracking engine; a Pike VM
    // visits each (position, instruction) once per search. Not timed: it finishes, or ctest's
    // timeout fails it.
    const std::string as(200000, 'a');
    CHECK(matches("(a*)*b", as).empty());
    CHECK(matches("(a|aa)+$", as) == strings{as});
    const std::string spaces(200000, ' ');
    CHECK(matches("\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", spaces) == strings{spaces});
}

TEST_CASE("pre_tokenizer: families by tokenizer.ggml.pre", "[tokenize][pre_tokenizer]") {
    const tk::pre_tokenizer llama3(tk::pre_tokenizer_for("llama-bpe"));
    CHECK(llama3.ignore_merges());
    CHECK(pieces(llama3, "Hello world, I'M here 123456\n\n  x") ==
          strings{"Hello", " world", ",", " I", "'M", " here", " ", "123", "456", "\n\n", " ", " x"});
    const tk::pre_tokenizer qwen2(tk::pre_tokenizer_for("qwen2"));
    CHECK(pieces(qwen2, "x 2024") == strings{"x", " ", "2", "0", "2", "4"});
    const tk::pre_tokenizer coder(tk::pre_tokenizer_for("deepseek-coder"));
    CHECK(pieces(coder, "a\nb 12") == strings{"a", "\n", "b", " ", "1", "2"});
    // The same split for GPT-2 by its hand-written path and by the engine.
    const tk::pre_tokenizer fast(tk::pre_tokenizer_for("gpt-2"));
    tk::pre_tokenizer_spec spec = tk::pre_tokenizer_for("gpt-2");
    spec.patterns.push_back("$");  // a second (no-op) step forces the engine
    const tk::pre_tokenizer engine(spec);
    for (const std::string_view s : {"I've 'll 'LL  x\n\n y", "🦙.cpp 3.14 333\t\t", "\xFF\xFE" "ab  "})
        CHECK(pieces(fast, s) == pieces(engine, s));
    CHECK(tk::pre_tokenizer_name({std::string(tk::pre_patterns::llama3)}, true) == "llama-bpe");
    CHECK(tk::pre_tokenizer_name({"x"}).empty());
    CHECK_THROWS_WITH(tk::pre_tokenizer_for("no-such-family"), Catch::Contains("'no-such-family' (tokenizer.ggml.pre) is not known"));
}

TEST_CASE("pre_tokenizer: llama.cpp's tokenizer test suites, every case", "[tokenize][pre_tokenizer][vectors]") {
    const std::filesystem::path dir = vocab_dir();
    INFO("suites in " << dir.string());
    REQUIRE(std::filesystem::exists(dir / "ggml-vocab-llama-bpe.gguf"));
    const char* families[] = {"command-r", "deepseek-coder", "deepseek-llm", "falcon", "llama-bpe", "mpt",
                              "phi-3", "qwen2", "qwen35", "refact", "starcoder"};
    for (const char* family : families) {
        const std::string path = (dir / (std::string("ggml-vocab-") + family + ".gguf")).string();
        INFO(family);
        const tk::tokenizer tok = tk::load_tokenizer(path);
        std::size_t passed = 0;
        const auto cases = lmtk::test::load_vocab_vectors(path);
        for (const auto& c : cases) {
            const std::vector<std::int32_t> got = tok.encode(c.text, false, false);
            if (got == c.expected) ++passed;
            else FAIL_CHECK("case [" << c.text << "]");
            // Byte-level BPE gives back exactly the bytes it was given.
            if (tok.kind() == "bpe (byte-level)") CHECK(tok.decode(got) == c.text);
        }
        CHECK(passed == cases.size());
        CHECK(cases.size() >= 46);
    }
}

TEST_CASE("vocab: every turn-ending token ends generation, as llama.cpp's list has it", "[tokenize][eog]") {
    // Llama 3: EOS is <|end_of_text|> (128001); instruct answers end with <|eot_id|> (128009).
    // (This is the 3.0 vocabulary: 3.1's <|eom_id|> is still a reserved token here.)
    const tk::tokenizer llama3 = tk::load_tokenizer((vocab_dir() / "ggml-vocab-llama-bpe.gguf").string());
    const tk::vocab& v = llama3.vocabulary();
    CHECK(v.eos() == 128001);
    for (const char* t : {"<|end_of_text|>", "<|eot_id|>"}) {
        INFO(t);
        CHECK(llama3.is_eog(v.find(t)));
    }
    CHECK_FALSE(llama3.is_eog(v.find("<|begin_of_text|>")));
    CHECK_FALSE(llama3.is_eog(v.find("Hello")));
    // Qwen 2: <|endoftext|> and <|im_end|>.
    const tk::tokenizer qwen = tk::load_tokenizer((vocab_dir() / "ggml-vocab-qwen2.gguf").string());
    CHECK(qwen.is_eog(qwen.vocabulary().find("<|im_end|>")));
    CHECK(qwen.is_eog(qwen.vocabulary().find("<|endoftext|>")));
    CHECK_FALSE(qwen.is_eog(qwen.vocabulary().find("<|im_start|>")));
}
