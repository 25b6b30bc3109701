// tokenizer.model read natively (tokenize/sentencepiece_model.hpp): the Llama-2 model's pieces,
// scores, types and special ids equal llama.cpp's vocabulary of the same tokenizer
// (ggml-vocab-llama-spm.gguf) and libsentencepiece's view of the file (when linked); the
// native SPM tokenizer over it passes the llama-spm test vectors; a Hugging Face folder with
// only tokenizer.model loads; truncated and corrupted files are clean errors.
#include <lmtk/tokenize/load.hpp>
#include <lmtk/tokenize/sentencepiece_model.hpp>
#include <lmtk/tokenize/tokenize.hpp>
#ifdef LMTK_HAVE_SENTENCEPIECE
#include <lmtk/tokenize/sentencepiece.hpp>
#endif

#include <catch2/catch.hpp>

#include "support/models.hpp"
#include "support/temp_dir.hpp"
#include "support/vocab_vectors.hpp"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace tk = lmtk::tokenize;

using lmtk::test::read_all;

void write_all(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

std::string model_file() { return lmtk::test::model_path("tokenizer.model"); }
std::string gguf_vocab() { return lmtk::test::model_path("vocab/ggml-vocab-llama-spm.gguf"); }

}  // namespace

TEST_CASE("tokenizer.model: the same vocabulary as llama.cpp's GGUF of it", "[tokenize][sentencepiece_model]") {
    const tk::vocab ours = tk::vocab_from_sentencepiece_model(model_file());
    const lmtk::gguf::file f(gguf_vocab());
    const tk::vocab ref = tk::vocab::from_gguf(f);
    REQUIRE(ours.size() == 32000);
    REQUIRE(ours.size() == ref.size());
    std::size_t text_diff = 0, score_diff = 0, type_diff = 0;
    for (std::int32_t id = 0; id < static_cast<std::int32_t>(ours.size()); ++id) {
        text_diff += ours.text(id) != ref.text(id);
        score_diff += ours.score(id) != ref.score(id);
        type_diff += ours.type(id) != ref.type(id);
    }
    CHECK(text_diff == 0);
    CHECK(score_diff == 0);
    CHECK(type_diff == 0);
    CHECK(ours.model() == "llama");
    CHECK(ours.bos() == 1);
    CHECK(ours.eos() == 2);
    CHECK(ours.unk() == 0);
    CHECK(ours.bos() == ref.bos());
    CHECK(ours.eos() == ref.eos());
    CHECK(ours.add_space_prefix());
}

#ifdef LMTK_HAVE_SENTENCEPIECE
TEST_CASE("tokenizer.model: the same pieces as libsentencepiece reads", "[tokenize][sentencepiece_model]") {
    const tk::vocab ours = tk::vocab_from_sentencepiece_model(model_file());
    const tk::sentencepiece_tokenizer sp(model_file());
    const auto& p = sp.processor();
    REQUIRE(static_cast<std::size_t>(p.GetPieceSize()) == ours.size());
    std::size_t diff = 0;
    for (int id = 0; id < p.GetPieceSize(); ++id) {
        diff += p.IdToPiece(id) != ours.text(id);
        diff += p.GetScore(id) != ours.score(id);
        diff += p.IsControl(id) != (ours.type(id) == tk::token_type::control);
        diff += p.IsByte(id) != (ours.type(id) == tk::token_type::byte);
        diff += p.IsUnknown(id) != (ours.type(id) == tk::token_type::unknown);
    }
    CHECK(diff == 0);
    CHECK(p.bos_id() == ours.bos());
    CHECK(p.eos_id() == ours.eos());
    CHECK(p.unk_id() == ours.unk());
}
#endif

TEST_CASE("tokenizer.model: the native tokenizer over it passes the llama-spm vectors", "[tokenize][sentencepiece_model]") {
    const auto tok = tk::tokenizer::from_vocab(tk::vocab_from_sentencepiece_model(model_file()), model_file());
    std::size_t n = 0;
    for (const lmtk::test::vocab_case& c : lmtk::test::load_vocab_vectors(gguf_vocab())) {
        INFO("case " << n << ": '" << c.text << "'");
        CHECK(tok.encode(c.text, false) == c.expected);
        ++n;
    }
    CHECK(n >= 40);
    CHECK(tok.encode("Hello world!", true) == std::vector<std::int32_t>{1, 15043, 3186, 29991});
}

TEST_CASE("tokenizer.model: a checkpoint folder without tokenizer.json uses it", "[tokenize][sentencepiece_model]") {
    lmtk::test::temp_dir d("spm-folder");
    std::filesystem::copy_file(model_file(), d.file("tokenizer.model"));
    write_all(d.file("config.json"), R"({"architectures":["LlamaForCausalLM"],"bos_token_id":1,"eos_token_id":2})");
    write_all(d.file("tokenizer_config.json"), R"({"add_bos_token":false,"add_eos_token":true})");
    const auto tok = tk::load_tokenizer(d.dir.string());
    CHECK(tok.encode("Hello world!", true) == std::vector<std::int32_t>{1, 15043, 3186, 29991});
    // tokenizer_config.json decides whether callers add BOS and EOS.
    CHECK_FALSE(tok.vocabulary().add_bos());
    CHECK(tok.vocabulary().add_eos());
    std::filesystem::remove(d.file("tokenizer.model"));
    CHECK_THROWS_WITH(tk::load_tokenizer(d.dir.string()), Catch::Contains("no tokenizer.json or tokenizer.model"));
}

TEST_CASE("tokenizer.model: truncated and corrupted files are errors, never crashes", "[tokenize][sentencepiece_model]") {
    const std::string bytes = read_all(model_file());
    lmtk::test::temp_dir d("spm-bad");
    const std::string path = d.file("tokenizer.model");
    // Cut inside the first piece, inside the pieces, and just before the end.
    for (const std::size_t cut : {std::size_t{0}, std::size_t{1}, std::size_t{3}, std::size_t{100}, bytes.size() / 2, bytes.size() - 1}) {
        INFO("cut at " << cut);
        write_all(path, bytes.substr(0, cut));
        try {
            const tk::vocab v = tk::vocab_from_sentencepiece_model(path);
            // A cut on a field boundary is a shorter, valid model; it must still be consistent.
            CHECK(v.size() > 0);
        } catch (const lmtk::error& e) {
            CHECK(std::string(e.what()).find(path) != std::string::npos);
        }
    }
    std::mt19937 g(17);
    std::size_t errors = 0;
    for (int trial = 0; trial < 200; ++trial) {
        std::string bad = bytes;
        for (int k = 0; k < 4; ++k) bad[g() % 4096] = static_cast<char>(g());  // the header and first pieces
        write_all(path, bad);
        try {
            static_cast<void>(tk::vocab_from_sentencepiece_model(path));
        } catch (const lmtk::error&) {
            ++errors;
        }
    }
    CHECK(errors > 0);  // some corruptions are detected; none may crash (ASan in the test build)
    write_all(path, std::string("\x0a\xff\xff\xff\xff\x0f", 6));  // a piece claiming 4 GiB
    CHECK_THROWS_WITH(tk::vocab_from_sentencepiece_model(path), Catch::Contains("runs past the end"));
}
