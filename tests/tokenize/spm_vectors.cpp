// SentencePiece tokenization against llama.cpp's test vectors for the Llama-2 vocabulary, for the
// native spm_tokenizer and (when linked) the libsentencepiece adapter, plus the edges: BOS,
// special tokens, byte fallback, empty and malformed input, and vocabulary validation.
#include <lmtk/tokenize/tokenize.hpp>
#ifdef LMTK_HAVE_SENTENCEPIECE
#include <lmtk/tokenize/sentencepiece.hpp>
#endif

#include <catch2/catch.hpp>

#include "support/models.hpp"
#include "support/vocab_vectors.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

using lmtk::tokenize::spm_tokenizer;
using lmtk::tokenize::vocab;
using ids_t = std::vector<std::int32_t>;

using test_case = lmtk::test::vocab_case;

std::vector<test_case> load_vectors(const std::string& gguf_path) { return lmtk::test::load_vocab_vectors(gguf_path); }

const std::string& llama_vocab_path() {
    static const std::string p = lmtk::test::model_path("vocab/ggml-vocab-llama-spm.gguf");
    return p;
}

const spm_tokenizer& llama_tokenizer() {
    static const spm_tokenizer tok(vocab::from_gguf(lmtk::gguf::file(llama_vocab_path())));
    return tok;
}

std::string printable(const std::string& s) {
    std::ostringstream os;
    for (const unsigned char c : s) {
        if (c >= 0x20 && c < 0x7F && c != '\\') os << c;
        else os << "\\x" << std::hex << int(c) << std::dec;
    }
    return os.str();
}

// Random substrings of the test texts, cut at UTF-8 character starts: spaces, newlines, emoji,
// CJK, Khmer and digits in fresh combinations for the differential test.
std::vector<std::string> random_texts(const std::vector<test_case>& cases, std::size_t count) {
    std::string corpus;
    for (const auto& c : cases) corpus += c.text + " ";
    std::vector<std::size_t> starts;
    for (std::size_t i = 0; i < corpus.size(); ++i)
        if ((static_cast<unsigned char>(corpus[i]) & 0xC0) != 0x80) starts.push_back(i);
    starts.push_back(corpus.size());
    std::mt19937 g(1234);
    std::uniform_int_distribution<std::size_t> pick(0, starts.size() - 1);
    std::vector<std::string> out;
    for (std::size_t k = 0; k < count; ++k) {
        std::size_t a = pick(g), b = pick(g);
        if (a > b) std::swap(a, b);
        if (starts[b] - starts[a] > 200) b = std::min(a + std::size_t(g() % 80), starts.size() - 1);
        out.push_back(corpus.substr(starts[a], starts[b] - starts[a]));
    }
    return out;
}

}  // namespace

TEST_CASE("spm: llama.cpp test vectors for the Llama-2 vocabulary", "[tokenize][spm]") {
    const auto cases = load_vectors(llama_vocab_path());
    REQUIRE(cases.size() == 46);
    const spm_tokenizer& tok = llama_tokenizer();
    std::size_t passed = 0;
    for (std::size_t i = 0; i < cases.size(); ++i) {
        INFO("case " << i << ": '" << printable(cases[i].text) << "'");
        const ids_t got = tok.encode(cases[i].text, false);
        CHECK(got == cases[i].expected);
        passed += got == cases[i].expected;
        CHECK(tok.decode(got) == cases[i].text);
    }
    WARN("native spm_tokenizer: " << passed << "/" << cases.size() << " cases pass");
}

TEST_CASE("spm: vocabulary metadata from GGUF", "[tokenize][vocab]") {
    const vocab& v = llama_tokenizer().vocabulary();
    CHECK(v.size() == 32000);
    CHECK(v.model() == "llama");
    CHECK(v.bos() == 1);
    CHECK(v.eos() == 2);
    CHECK(v.unk() == 0);
    CHECK(v.pad() == lmtk::tokenize::no_token);
    CHECK(v.add_bos());
    CHECK_FALSE(v.add_eos());
    CHECK(v.add_space_prefix());  // absent in the file: the SPM default
    CHECK(v.type(0) == lmtk::tokenize::token_type::unknown);
    CHECK(v.type(1) == lmtk::tokenize::token_type::control);
    CHECK(v.type(3) == lmtk::tokenize::token_type::byte);
    CHECK(v.find("\xE2\x96\x81Hello") == 15043);
    CHECK(v.find("no such piece at all") == lmtk::tokenize::no_token);
}

TEST_CASE("spm: BOS, special tokens and pieces", "[tokenize][spm]") {
    const spm_tokenizer& tok = llama_tokenizer();
    CHECK(tok.encode("Hello world!", false) == ids_t{15043, 3186, 29991});
    CHECK(tok.encode("Hello world!", true) == ids_t{1, 15043, 3186, 29991});
    CHECK(tok.bos() == 1);
    CHECK(tok.eos() == 2);
    CHECK(tok.size() == 32000);
    CHECK(tok.is_eog(2));
    CHECK_FALSE(tok.is_eog(1));
    CHECK_FALSE(tok.is_eog(lmtk::tokenize::no_token));

    // Without parse_special, "<s>" is just text; with it, the control token, and the text after
    // a special token gets the space prefix again (llama.cpp; HF's legacy Llama tokenizer).
    const ids_t plain = tok.encode("<s>Hello", false);
    CHECK(std::find(plain.begin(), plain.end(), 1) == plain.end());
    CHECK(tok.decode(plain) == "<s>Hello");
    CHECK(tok.encode("<s>Hello", false, true) == ids_t{1, 15043});
    ids_t expect{1};
    for (std::int32_t id : tok.encode("Hi", false)) expect.push_back(id);
    expect.insert(expect.end(), {2, 1, 15043});
    CHECK(tok.encode("Hi</s><s>Hello", true, true) == expect);

    const ids_t with_specials{1, 15043, 3186, 2};
    CHECK(tok.decode(with_specials) == "Hello world");
    CHECK(tok.decode(with_specials, false) == "<s>Hello world</s>");
    CHECK(tok.decode(tok.encode("<s>Hi there</s>", false, true), false) == "<s>Hi there</s>");

    CHECK(tok.piece(15043) == " Hello");
    CHECK(tok.piece(29871) == " ");
    CHECK(tok.piece(1).empty());
    CHECK(tok.piece(13) == "\n");  // <0x0A>
    CHECK(tok.piece(3 + 0xF0) == "\xF0");
    CHECK_THROWS_AS(tok.piece(32000), lmtk::error);
    CHECK_THROWS_AS(tok.piece(-1), lmtk::error);
    const ids_t bad{15043, 99999};
    CHECK_THROWS_AS(tok.decode(bad), lmtk::error);
}

TEST_CASE("spm: byte fallback, empty and malformed input", "[tokenize][spm]") {
    const spm_tokenizer& tok = llama_tokenizer();
    // U+1F999 (llama emoji) is no piece: its four UTF-8 bytes become byte tokens <0xXX> = 3 + byte.
    const ids_t llama = tok.encode("\xF0\x9F\xA6\x99", false);
    CHECK(llama == ids_t{29871, 3 + 0xF0, 3 + 0x9F, 3 + 0xA6, 3 + 0x99});
    std::string joined;
    for (std::int32_t id : llama) joined += tok.piece(id);
    CHECK(joined == " \xF0\x9F\xA6\x99");

    CHECK(tok.encode("", false).empty());
    CHECK(tok.encode("", true) == ids_t{1});
    CHECK(tok.decode(ids_t{}).empty());

    // Stray continuation bytes, invalid lead bytes, truncated and broken sequences: each bad
    // byte is a character of its own and falls back to its byte token; nothing is lost.
    for (const std::string& s : {std::string("\xFF\xFE abc \xC3"), std::string("\x80"), std::string("a\xE2\x96"),
                                std::string("\xE2\x28\xA1 x"), std::string("\xF0\x9F\xA6"), std::string("ok\xC0\xAF")}) {
        INFO("'" << printable(s) << "'");
        const ids_t ids = tok.encode(s, false);
        CHECK_FALSE(ids.empty());
        CHECK(tok.decode(ids) == s);
    }
    CHECK(tok.encode("\xFF", false) == ids_t{29871, 3 + 0xFF});
    // Random bytes, mostly malformed UTF-8: always encodable and lossless.
    std::mt19937 g(42);
    for (int k = 0; k < 500; ++k) {
        std::string s(g() % 64, '\0');
        for (char& c : s) c = static_cast<char>(g() % 256);
        const ids_t ids = tok.encode(s, true, true);
        for (std::int32_t id : ids) REQUIRE(tok.vocabulary().contains(id));
        if (s.find("<s>") == std::string::npos && s.find("</s>") == std::string::npos &&
            s.find("<unk>") == std::string::npos)
            CHECK(tok.decode(ids) == s);
    }
    // NUL bytes are text like any other.
    const std::string nul("a\0b", 3);
    CHECK(tok.decode(tok.encode(nul, false)) == nul);
}

TEST_CASE("spm: long input encodes quickly and round-trips", "[tokenize][spm]") {
    const spm_tokenizer& tok = llama_tokenizer();
    std::string text;
    const auto cases = load_vectors(llama_vocab_path());
    while (text.size() < 256 * 1024)
        for (const auto& c : cases) text += c.text + "\n";
    const auto t0 = std::chrono::steady_clock::now();
    const ids_t ids = tok.encode(text, true);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(tok.decode(ids) == text);
    // 256 KiB takes milliseconds; quadratic rescans would take minutes. Generous for sanitizers.
    CHECK(s < 20.0);
    // One long run without spaces: a single fragment with one long merge chain.
    const std::string run(100000, '3');
    CHECK(tok.decode(tok.encode(run, false)) == run);
}

TEST_CASE("spm: stories260K vocabulary", "[tokenize][spm]") {
    const spm_tokenizer tok(vocab::from_gguf(lmtk::gguf::file(lmtk::test::model_path("stories260K.gguf"))));
    CHECK(tok.size() == 512);
    CHECK(tok.bos() == 1);
    CHECK(tok.eos() == 2);
    CHECK(tok.vocabulary().pad() == lmtk::tokenize::no_token);  // stored as 0xFFFFFFFF
    const std::string text = "Once upon a time, there was a little girl named Lily. \xC3\xA9t\xC3\xA9!";
    const ids_t ids = tok.encode(text, true);
    REQUIRE(ids.size() > 2);
    CHECK(ids[0] == 1);
    for (std::int32_t id : ids) CHECK(tok.vocabulary().contains(id));
    CHECK(tok.decode(ids) == text);
}

TEST_CASE("vocab: validation and non-SPM vocabularies", "[tokenize][vocab]") {
    using lmtk::tokenize::token_type;
    using lmtk::tokenize::vocab_spec;
    auto spec = [] {
        vocab_spec s;
        s.model = "llama";
        s.tokens = {"<unk>", "<s>", "</s>", "a", "b", "ab"};
        s.scores = {0, 0, 0, -1, -2, -0.5f};
        s.types = {token_type::unknown, token_type::control, token_type::control,
                   token_type::normal, token_type::normal, token_type::normal};
        s.bos = 1;
        s.eos = 2;
        s.unk = 0;
        s.add_space_prefix = false;
        return s;
    };
    CHECK_NOTHROW(vocab(spec(), "test"));
    auto s = spec();
    s.scores.pop_back();
    CHECK_THROWS_AS(vocab(s, "test"), lmtk::error);
    s = spec();
    s.types.push_back(token_type::normal);
    CHECK_THROWS_AS(vocab(s, "test"), lmtk::error);
    s = spec();
    s.bos = 6;
    CHECK_THROWS_WITH(vocab(s, "test.gguf"), Catch::Contains("test.gguf") && Catch::Contains("bos"));
    s = spec();
    s.eos = -5;
    CHECK_THROWS_AS(vocab(s, "test"), lmtk::error);
    s = spec();
    s.tokens.clear();
    s.scores.clear();
    s.types.clear();
    CHECK_THROWS_AS(vocab(s, "test"), lmtk::error);
    s = spec();
    s.types[3] = static_cast<token_type>(9);
    CHECK_THROWS_AS(vocab(s, "test"), lmtk::error);

    // No byte tokens: an unknown character becomes <unk>, a run of them one <unk>.
    const spm_tokenizer tok(vocab(spec(), "test"));
    CHECK(tok.encode("ab", false) == ids_t{5});
    CHECK(tok.encode("ba", false) == ids_t{4, 3});
    CHECK(tok.encode("axyb", false) == ids_t{3, 0, 4});
    CHECK(tok.decode(ids_t{3, 0, 4}) == "a \xE2\x81\x87 b");

    // The GPT-2 vocabulary loads (BPE merges, no scores) but is no SentencePiece vocabulary.
    const vocab gpt2 = vocab::from_gguf(lmtk::gguf::file(lmtk::test::model_path("vocab/ggml-vocab-gpt-2.gguf")));
    CHECK(gpt2.size() == 50257);
    CHECK(gpt2.merges().size() == 50000);
    CHECK(gpt2.bos() == 50256);
    CHECK_FALSE(gpt2.add_bos());
    CHECK_FALSE(gpt2.add_space_prefix());
    CHECK_THROWS_AS(spm_tokenizer(gpt2), lmtk::error);
}

#ifdef LMTK_HAVE_SENTENCEPIECE
TEST_CASE("sentencepiece adapter: llama.cpp test vectors", "[tokenize][sentencepiece]") {
    using lmtk::tokenize::sentencepiece_tokenizer;
    const sentencepiece_tokenizer sp(lmtk::test::model_path("tokenizer.model"));
    const auto cases = load_vectors(llama_vocab_path());
    REQUIRE(cases.size() == 46);
    CHECK(sp.size() == 32000);
    CHECK(sp.bos() == 1);
    CHECK(sp.eos() == 2);
    std::size_t passed = 0;
    for (std::size_t i = 0; i < cases.size(); ++i) {
        INFO("case " << i << ": '" << printable(cases[i].text) << "'");
        const ids_t got = sp.encode(cases[i].text, false);
        CHECK(got == cases[i].expected);
        passed += got == cases[i].expected;
        CHECK(sp.decode(got) == cases[i].text);
    }
    WARN("sentencepiece adapter: " << passed << "/" << cases.size() << " cases pass");

    CHECK(sp.encode("Hello world!", true) == ids_t{1, 15043, 3186, 29991});
    CHECK(sp.encode("<s>Hello", false, true) == ids_t{1, 15043});
    CHECK(sp.decode(ids_t{1, 15043, 3186, 2}, false) == "<s>Hello world</s>");
    CHECK(sp.piece(15043) == " Hello");
    CHECK(sp.piece(13) == "\n");
    CHECK(sp.piece(1).empty());
    CHECK_THROWS_AS(sp.piece(32000), lmtk::error);
}

TEST_CASE("sentencepiece adapter: native tokenizer agrees on random text", "[tokenize][sentencepiece]") {
    using lmtk::tokenize::sentencepiece_tokenizer;
    const sentencepiece_tokenizer sp(lmtk::test::model_path("tokenizer.model"));
    const spm_tokenizer& tok = llama_tokenizer();
    const auto texts = random_texts(load_vectors(llama_vocab_path()), 2000);
    std::size_t agree = 0;
    for (const std::string& t : texts) {
        INFO("'" << printable(t) << "'");
        const ids_t a = tok.encode(t, true);
        const ids_t b = sp.encode(t, true);
        CHECK(a == b);
        agree += a == b;
        CHECK(tok.decode(a) == sp.decode(b));
        CHECK(tok.decode(a, false) == sp.decode(b, false));
    }
    for (std::int32_t id = 0; id < 32000; ++id) {
        if (tok.piece(id) != sp.piece(id)) FAIL_CHECK("piece " << id);
    }
    CHECK(agree == texts.size());
}

TEST_CASE("sentencepiece adapter: load errors", "[tokenize][sentencepiece]") {
    using lmtk::tokenize::sentencepiece_tokenizer;
    CHECK_THROWS_AS(sentencepiece_tokenizer(lmtk::test::model_path("no-such-tokenizer.model")), lmtk::error);
    // A GGUF file is no SentencePiece model.
    CHECK_THROWS_AS(sentencepiece_tokenizer(lmtk::test::model_path("stories260K.gguf")), lmtk::error);
}
#endif
