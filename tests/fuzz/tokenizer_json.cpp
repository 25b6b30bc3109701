// libFuzzer harness: tokenizer files, and the tokenizers encoding and decoding arbitrary bytes.
//
// The first byte of the input chooses what the rest is:
//   0  NUL-separated parts: tokenizer.json, text to encode and decode with it (default: a
//      fixed sample), tokenizer_config.json and config.json (BOS/EOS and add_bos settings)
//   1  a SentencePiece tokenizer.model (protobuf, as Hugging Face folders without
//      tokenizer.json ship it); loaded ones encode a fixed sample
//   2  text for the real SPM vocabulary of a GGUF (ggml-vocab-llama-spm.gguf)
//   3  text for the real byte-level BPE vocabulary of a GGUF (ggml-vocab-gpt-2.gguf)
//   4  text for stories260K.gguf's SPM vocabulary (512 tokens, no byte tokens for every byte)
//   5  text for TinyStories' tokenizer.json (BPE with byte fallback)
//   6  a pre-tokenizer regular expression, NUL, a text: compiled (lmtk::error is fine) and run
//      through a pre_tokenizer of it and the Llama 3 split
// (the byte modulo 7). The real files come from $LMTK_TEST_MODELS, else the models folder the
// build was configured with; modes whose file is missing do nothing.
//
// Checked beyond "no crash": every id encode returns is inside the vocabulary, and byte-level
// BPE gives back exactly the bytes it was given (it has a token for every byte). lmtk::error is
// the only acceptable failure of a load; encode and decode of a loaded tokenizer must not throw.
#include "memfd_file.hpp"

#include <lmtk/core/error.hpp>
#include <lmtk/core/json.hpp>
#include <lmtk/io/gguf.hpp>
#include <lmtk/tokenize/pre_tokenizer.hpp>
#include <lmtk/tokenize/regex.hpp>
#include <lmtk/tokenize/sentencepiece_model.hpp>
#include <lmtk/tokenize/tokenizer.hpp>
#include <lmtk/tokenize/tokenizer_json.hpp>
#include <lmtk/tokenize/vocab.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

#ifndef LMTK_TEST_MODELS_DIR
#define LMTK_TEST_MODELS_DIR "../shared/models"
#endif

struct memfd_path_tag;  // this harness's memfd (memfd_file.hpp)

namespace {

namespace tk = lmtk::tokenize;

std::filesystem::path models_dir() {
    if (const char* env = std::getenv("LMTK_TEST_MODELS"); env && *env) return env;
    return LMTK_TEST_MODELS_DIR;
}

// A real tokenizer, loaded once; nullopt (and a note on stderr) when its file is missing.
std::optional<tk::tokenizer> load_real(const std::filesystem::path& relative) {
    const std::filesystem::path p = models_dir() / relative;
    std::error_code ec;
    if (!std::filesystem::exists(p, ec)) {
        std::fprintf(stderr, "fuzz_tokenizer_json: %s is missing; its mode is skipped\n", p.c_str());
        return std::nullopt;
    }
    if (std::filesystem::is_directory(p, ec)) return tk::tokenizer::from_vocab(tk::vocab_from_hf_folder(p), p.string());
    const lmtk::gguf::file f(p.string());
    return tk::tokenizer::from_vocab(tk::vocab::from_gguf(f), p.string());
}

// Encodes `text` both ways (special tokens parsed or not), checks the ids, decodes them and
// each piece. With `round_trip`, decoding must give back the text exactly.
void exercise(const tk::tokenizer& tok, std::string_view text, bool round_trip) {
    for (const bool special : {false, true}) {
        const std::vector<std::int32_t> ids = tok.encode(text, special, special);
        for (const std::int32_t id : ids)
            if (id < 0 || static_cast<std::size_t>(id) >= tok.size()) {
                std::fprintf(stderr, "encode returned id %d outside the vocabulary of %zu\n", id, tok.size());
                std::abort();
            }
        const std::string back = tok.decode(ids, special);
        if (round_trip && !special && back != text) {
            std::fprintf(stderr, "decode(encode(x)) != x for %zu bytes\n", text.size());
            std::abort();
        }
        for (const std::int32_t id : ids) (void)tok.piece(id);
    }
}


constexpr std::string_view sample = "Hello world! <s></s><|endoftext|> \xE2\x96\x81\xE2\x96\x81 \xF0\x9F\x98\x80\xFF <0x41>";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    static const std::optional<tk::tokenizer> llama_spm = load_real("vocab/ggml-vocab-llama-spm.gguf");
    static const std::optional<tk::tokenizer> gpt2 = load_real("vocab/ggml-vocab-gpt-2.gguf");
    static const std::optional<tk::tokenizer> stories = load_real("stories260K.gguf");
    static const std::optional<tk::tokenizer> tinystories = load_real("tinystories-656k");

    const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
    switch (data[0] % 7) {
        case 0: {
            std::string_view parts[4] = {rest, sample, {}, {}};
            for (std::size_t i = 0; i + 1 < std::size(parts); ++i) {
                const std::size_t nul = parts[i].find('\0');
                if (nul == std::string_view::npos) break;
                parts[i + 1] = parts[i].substr(nul + 1);
                parts[i] = parts[i].substr(0, nul);
            }
            std::optional<tk::tokenizer> tok;
            try {
                const auto parse = [](std::string_view text, const char* what) {
                    return lmtk::core::parse_json_file(text, what, lmtk::safetensors::max_json_depth);
                };
                tk::tokenizer_json_context ctx;
                if (!parts[2].empty()) ctx.tokenizer_config = parse(parts[2], "tokenizer_config.json");
                if (!parts[3].empty()) ctx.model_config = parse(parts[3], "config.json");
                const nlohmann::json j = parse(parts[0], "tokenizer.json");
                tok.emplace(tk::tokenizer::from_vocab(tk::vocab_from_parsed_tokenizer_json(j, "tokenizer.json", ctx), "tokenizer.json"));
            } catch (const lmtk::error&) {
                return 0;
            }
            exercise(*tok, parts[1], false);
            break;
        }
        case 1: {
            std::optional<tk::tokenizer> tok;
            try {
                const std::string& path = lmtk::fuzz::memfd_file<memfd_path_tag>(rest.data(), rest.size());
                tok.emplace(tk::tokenizer::from_vocab(tk::vocab_from_sentencepiece_model(path), path));
            } catch (const lmtk::error&) {
                return 0;
            }
            exercise(*tok, sample, false);
            break;
        }
        case 2:
            if (llama_spm) exercise(*llama_spm, rest, false);
            break;
        case 3:
            if (gpt2) exercise(*gpt2, rest, true);
            break;
        case 4:
            if (stories) exercise(*stories, rest, false);
            break;
        case 5:
            if (tinystories) exercise(*tinystories, rest, false);
            break;
        case 6: {
            const std::size_t nul = rest.find('\0');
            const std::string_view text = nul == std::string_view::npos ? sample : rest.substr(nul + 1);
            std::optional<tk::pre_tokenizer> pre;
            try {
                pre.emplace(tk::pre_tokenizer_spec{{std::string(rest.substr(0, nul)), std::string(tk::pre_patterns::llama3)}});
            } catch (const lmtk::error&) {
                return 0;
            }
            // The pieces cover the text exactly, in order.
            std::size_t at = 0;
            pre->split(text, [&](std::string_view piece) {
                if (piece.empty() || piece.data() != text.data() + at) {
                    std::fprintf(stderr, "pre_tokenizer: piece at %zu is empty or out of place\n", at);
                    std::abort();
                }
                at += piece.size();
            });
            if (at != text.size()) {
                std::fprintf(stderr, "pre_tokenizer: pieces cover %zu of %zu bytes\n", at, text.size());
                std::abort();
            }
            break;
        }
    }
    return 0;
}
