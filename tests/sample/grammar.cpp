// GBNF grammars: the parser on llama.cpp's example grammars and on hostile input, the matcher
// against an independent JSON parser (nlohmann::json) on random documents, their mutations and
// random splits into tokens, and the grammar_constraint stage driving the real stories260K
// model: every sentence it completes is valid JSON.
#include "support/random_json.hpp"
#include "support/models.hpp"

#include <lmtk/lmtk.hpp>
#include <lmtk/sample/grammar.hpp>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using namespace lmtk::sample;

namespace {

std::filesystem::path data_dir() {
    if (const char* env = std::getenv("LMTK_TEST_DATA"); env && *env) return env;
    return std::filesystem::path("tests") / "data";
}

std::string read_file(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    REQUIRE(in);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::shared_ptr<const grammar> load(const std::string& name) {
    return std::make_shared<const grammar>(parse_gbnf(read_file(data_dir() / "grammars" / (name + ".gbnf"))));
}
std::shared_ptr<const grammar> make(std::string_view text) { return std::make_shared<const grammar>(parse_gbnf(text)); }

// Fed whole: accepted and a complete sentence.
bool complete(const std::shared_ptr<const grammar>& g, std::string_view s) {
    grammar_matcher m(g);
    return m.accept(s) && m.complete();
}

// Fed in pieces cut at the given byte offsets (possibly inside a UTF-8 character).
bool complete_in_pieces(const std::shared_ptr<const grammar>& g, std::string_view s, std::vector<std::size_t> cuts) {
    grammar_matcher m(g);
    std::size_t from = 0;
    cuts.push_back(s.size());
    for (const std::size_t c : cuts) {
        if (c < from) continue;
        if (!m.accept(s.substr(from, c - from))) return false;
        from = c;
    }
    return m.complete();
}


}  // namespace

TEST_CASE("gbnf: every llama.cpp example grammar parses", "[sample][grammar]") {
    std::size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(data_dir() / "grammars")) {
        if (e.path().extension() != ".gbnf") continue;
        INFO(e.path().filename().string());
        const grammar g = parse_gbnf(read_file(e.path()));
        CHECK(g.rule_names.at(g.root) == "root");
        CHECK(!g.elements.empty());
        ++n;
    }
    CHECK(n >= 8);
}

TEST_CASE("gbnf: sentences of the example grammars are accepted, others refused", "[sample][grammar]") {
    const auto arith = load("arithmetic");
    CHECK(complete(arith, "1+2=3\n"));
    CHECK(complete(arith, "x*(y+2)=z\nab_1 = 7\n"));
    CHECK_FALSE(complete(arith, "1+=3\n"));
    CHECK_FALSE(complete(arith, "1+2=3"));  // the line must end
    const auto chess = load("chess");
    CHECK(complete(chess, "1. e4 e5\n2. Nf3 Nc6\n"));
    CHECK(complete(chess, "1. d4 d5\n2. c4 dxc4\n3. O-O-O Qxd8#\n"));
    CHECK_FALSE(complete(chess, "1. e9 e5\n2. Nf3 Nc6\n"));
    const auto list = load("list");
    CHECK(complete(list, "- apples\n- pears\n"));
    CHECK_FALSE(complete(list, "- apples\n* pears\n"));
    const auto japanese = load("japanese");
    CHECK(complete(japanese, "\xe3\x81\x93\xe3\x82\x93\xe3\x81\xab\xe3\x81\xa1\xe3\x81\xaf"));  // こんにちは
    CHECK_FALSE(complete(japanese, "hello"));
    const auto english = load("english");
    CHECK(complete(english, "Hello, world! [x] {y} a\\b"));
    const auto c = load("c");
    CHECK(complete(c, "int main(){int x = 1;x = x+2;}"));
    CHECK_FALSE(complete(c, "int main(){x==1;}"));
}

TEST_CASE("gbnf: repetitions, classes, escapes and UTF-8 split across tokens", "[sample][grammar]") {
    const auto g = make(R"(root ::= "a"{2,3} [0-9]{2} ("x" | "yz")* [^a-c\n] "\u00e9" .
# a comment
)");
    CHECK(complete(g, "aa12xyzxd\xc3\xa9q"));
    CHECK(complete(g, "aaa00z\xc3\xa9\xe6\x97\xa5"));
    CHECK_FALSE(complete(g, "a12d\xc3\xa9q"));      // too few a
    CHECK_FALSE(complete(g, "aaaa12d\xc3\xa9q"));   // too many
    CHECK_FALSE(complete(g, "aa12b\xc3\xa9q"));     // b is excluded
    CHECK_FALSE(complete(g, "aa12d\xc3\xa8q"));     // not U+00E9
    // The same sentence cut everywhere, through the multi-byte characters too.
    const std::string s = "aa12xyzxd\xc3\xa9\xe6\x97\xa5";
    for (std::size_t i = 0; i <= s.size(); ++i)
        for (std::size_t j = i; j <= s.size(); ++j) {
            INFO(i << " " << j);
            CHECK(complete_in_pieces(g, s, {i, j}));
        }
    // A character's first bytes are refused as soon as no completion of them can match.
    grammar_matcher m(make(R"(root ::= [a-z] "\u00e9")"));
    REQUIRE(m.accept("q"));
    CHECK(m.accepts("\xc3"));        // may become U+00C0..U+00FF
    CHECK_FALSE(m.accepts("\xe6"));  // U+6000.. cannot be U+00E9
    CHECK_FALSE(m.accepts("\x80"));  // not UTF-8
    CHECK_FALSE(grammar_matcher(make(R"(root ::= "{")")).accepts("\xc1\xbb"));  // an overlong '{' is not '{'
    CHECK_FALSE(grammar_matcher(make(R"(root ::= "{")")).accepts("\xc1"));
    CHECK_FALSE(grammar_matcher(make(R"(root ::= [^a])")).accepts("\xed\xa0\x80"));  // a surrogate
    CHECK(m.accept("\xc3"));
    CHECK_FALSE(m.complete());
    CHECK(m.accept("\xa9"));
    CHECK(m.complete());
}

TEST_CASE("gbnf: json.gbnf agrees with nlohmann::json on random documents, mutations and token splits",
          "[sample][grammar]") {
    const auto g = load("json");
    std::mt19937 gen(7);
    std::size_t accepted = 0, mutants_accepted = 0;
    for (int i = 0; i < 400; ++i) {
        nlohmann::json o = nlohmann::json::object();
        for (unsigned k = 0, n = gen() % 5; k < n; ++k) o["k" + std::to_string(k)] = lmtk::test::random_json_value(gen, 1, {.exponents = false, .multibyte = true});
        const std::string doc = o.dump(gen() % 2 ? -1 : 2);  // compact, or indented by two
        INFO(doc);
        // json.gbnf allows the blanks of both layouts except the indent run limit (20 after a
        // line break): nesting here stays below that, so every document is a sentence.
        const bool ok = complete(g, doc);
        CHECK(ok);
        accepted += ok;
        std::vector<std::size_t> cuts;
        for (std::size_t c = gen() % 4; c < doc.size(); c += 1 + gen() % 5) cuts.push_back(c);
        CHECK(complete_in_pieces(g, doc, cuts) == ok);
        // Mutations: whatever the grammar still takes as complete must be JSON.
        for (int m = 0; m < 8 && !doc.empty(); ++m) {
            std::string bad = doc;
            const std::size_t at = gen() % bad.size();
            static const char bytes[] = "{}[]\",:0-. \nax\\";  // no e: 1e999 is JSON that nlohmann refuses (overflow)
            if (gen() % 3 == 0) bad.erase(at, 1);
            else bad[at] = bytes[gen() % (sizeof bytes - 1)];
            if (complete(g, bad)) {
                ++mutants_accepted;
                INFO(bad);
                CHECK(nlohmann::json::accept(bad));
            }
        }
    }
    CHECK(accepted == 400);
    CHECK(mutants_accepted > 0);  // some mutations stay JSON (a digit for a digit): the check ran
}

TEST_CASE("gbnf: bad and hostile grammars fail with a reason", "[sample][grammar][hostile]") {
    CHECK_THROWS_WITH(parse_gbnf("expr ::= \"a\"\n"), Catch::Contains("no rule named 'root'"));
    CHECK_THROWS_WITH(parse_gbnf("root ::= thing\n"), Catch::Contains("'thing' is used but never defined"));
    CHECK_THROWS_WITH(parse_gbnf("root ::= root \"a\" | \"b\"\n"), Catch::Contains("left-recursive"));
    CHECK_THROWS_WITH(parse_gbnf("root ::= a\na ::= b \"x\"\nb ::= a | \"y\"\n"), Catch::Contains("left-recursive"));
    CHECK_THROWS_WITH(parse_gbnf("root ::= (\"a\"?)* \"b\"\n"), Catch::Contains("left-recursive"));
    CHECK_THROWS_WITH(parse_gbnf("root ::= \"abc\n"), Catch::Contains("unterminated string literal"));
    CHECK_THROWS_WITH(parse_gbnf("root ::= [abc\n"), Catch::Contains("unterminated character class"));
    CHECK_THROWS_WITH(parse_gbnf("root ::= \"\\q\"\n"), Catch::Contains("unknown escape"));
    CHECK_THROWS_WITH(parse_gbnf("root ::= [z-a]\n"), Catch::Contains("backwards"));
    CHECK_THROWS_WITH(parse_gbnf("root ::= \"a\"{3,2}\n"), Catch::Contains("n < m"));
    CHECK_THROWS_WITH(parse_gbnf("root ::= \"a\"{5000}\n"), Catch::Contains("above 1000"));
    CHECK_THROWS_WITH(parse_gbnf("root ::= \"a\"\nroot ::= \"b\"\n"), Catch::Contains("defined twice"));
    CHECK_THROWS_WITH(parse_gbnf("root ::= * \"a\"\n"), Catch::Contains("nothing before it"));
    CHECK_THROWS_WITH(parse_gbnf("root ::= \"a\" )\n"), Catch::Contains("expected the end of the rule"));
    // Deep nesting is refused before it can exhaust the stack; large repetitions of large
    // units before they exhaust memory.
    CHECK_THROWS_WITH(parse_gbnf("root ::= " + std::string(100000, '(') + "\"a\"" + std::string(100000, ')') + "\n"),
                      Catch::Contains("nested too deeply"));
    std::string big = "root ::= x{1000}\nx ::= y{1000}\ny ::= \"" + std::string(2000, 'a') + "\"{1000}\n";
    CHECK_THROWS_WITH(parse_gbnf(big), Catch::Contains("too large"));
}

TEST_CASE("grammar_constraint: the real stories260K model writes JSON that parses and closes, over 20 seeds",
          "[sample][grammar][model]") {
    using model_t = lmtk::model::llama<>;
    const model_t m(lmtk::test::model_path("stories260K.gguf"));
    const auto tok = lmtk::tokenize::load_tokenizer(m.source());
    json_vocab v;
    for (std::int32_t id = 0; id < std::int32_t(m.n_vocab()); ++id) {
        v.pieces.push_back(tok.piece(id));
        v.is_end.push_back(tok.is_eog(id));
    }
    const auto g = load("json");
    using chain_t = chain<grammar_constraint, top_k, temperature, dist>;
    std::size_t closed = 0;
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
        grammar_matcher state(g);
        chain_t ch(grammar_constraint{&v, &state}, top_k{40}, temperature{1.0f}, dist{});
        lmtk::model::llama_context<model_t> ctx(m, {.n_ctx = 256, .n_threads = 2});
        rng gen(seed);
        std::vector<std::int32_t> history = {1};
        std::string text;
        auto logits = ctx.decode(history);
        bool ended = false;
        constexpr int limit = 120;
        for (int step = 0; step < limit; ++step) {
            state.set_budget(std::size_t(limit - step));  // close before the limit
            context sc{history, gen};
            const std::int32_t t = ch(logits, sc);
            if (v.is_end[std::size_t(t)]) {
                CHECK(state.complete());
                ended = true;
                break;
            }
            REQUIRE(state.accept(v.pieces[std::size_t(t)]));  // the stage let only a fitting token through
            text += v.pieces[std::size_t(t)];
            history.push_back(t);
            logits = ctx.decode(std::span(&t, 1));
        }
        INFO("seed " << seed << ": " << text);
        // The budget leaves no way to the limit but through a closed object.
        CHECK(ended);
        closed += ended;
        CHECK(nlohmann::json::accept(text));
        CHECK((nlohmann::json::accept(text) && nlohmann::json::parse(text).is_object()));
    }
    CHECK(closed == 20);
}
