#pragma once
// lmtk::tokenize::tokenizer: whichever tokenizer a vocabulary calls for, behind one interface.
//
//   tokenizer.ggml.model "llama", no merges   -> spm_tokenizer (SentencePiece scores)
//   tokenizer.ggml.model "llama", with merges -> bpe_tokenizer, byte_fallback (HF tokenizer.json
//                                                BPE converted from SentencePiece)
//   tokenizer.ggml.model "gpt2"               -> bpe_tokenizer, byte_level
//
// A std::variant: the choice is made once, at load; each call is one switch, no virtual calls
// and no allocation beyond what the tokenizer itself does.
#include <lmtk/core/error.hpp>
#include <lmtk/tokenize/bpe.hpp>
#include <lmtk/tokenize/spm.hpp>
#include <lmtk/tokenize/vocab.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace lmtk::tokenize {

class tokenizer {
public:
    explicit tokenizer(spm_tokenizer t) : impl_(std::move(t)) {}
    explicit tokenizer(bpe_tokenizer t) : impl_(std::move(t)) {}

    // The tokenizer `v` calls for (see the table above); `origin` names it in errors.
    static tokenizer from_vocab(vocab v, std::string_view origin = "") {
        const std::string model = v.model();
        try {
            if (model == "llama" && v.merges().empty()) return tokenizer(spm_tokenizer(std::move(v)));
            if (model == "llama" || model == "gpt2") return tokenizer(bpe_tokenizer(std::move(v)));
        } catch (const error& e) {
            if (origin.empty()) throw;
            fail(origin, ": ", e.what());
        }
        fail(origin.empty() ? std::string_view("tokenizer") : origin, ": tokenizer model '", model,
             "' is not supported (supported: llama (SentencePiece or BPE with byte fallback), gpt2 (byte-level BPE))");
    }

    // "spm", "bpe (byte-level)" or "bpe (byte fallback)", for messages.
    std::string_view kind() const noexcept {
        if (std::holds_alternative<spm_tokenizer>(impl_)) return "spm";
        return std::get<bpe_tokenizer>(impl_).kind() == bpe_tokenizer::dialect::byte_level ? "bpe (byte-level)"
                                                                                             : "bpe (byte fallback)";
    }

    std::vector<std::int32_t> encode(std::string_view text, bool add_bos, bool parse_special = false) const {
        return std::visit([&](const auto& t) { return t.encode(text, add_bos, parse_special); }, impl_);
    }
    std::string decode(std::span<const std::int32_t> ids, bool skip_special = true) const {
        return std::visit([&](const auto& t) { return t.decode(ids, skip_special); }, impl_);
    }
    std::string piece(std::int32_t id) const {
        return std::visit([&](const auto& t) { return t.piece(id); }, impl_);
    }
    const vocab& vocabulary() const noexcept {
        return std::visit([](const auto& t) -> const vocab& { return t.vocabulary(); }, impl_);
    }
    std::int32_t bos() const noexcept { return vocabulary().bos(); }
    std::int32_t eos() const noexcept { return vocabulary().eos(); }
    bool is_eog(std::int32_t id) const noexcept {
        return std::visit([&](const auto& t) { return t.is_eog(id); }, impl_);
    }
    std::size_t size() const noexcept { return vocabulary().size(); }

    // The concrete tokenizer, for code that needs its specifics.
    template <class T>
    const T* get_if() const noexcept {
        return std::get_if<T>(&impl_);
    }

private:
    std::variant<spm_tokenizer, bpe_tokenizer> impl_;
};

}  // namespace lmtk::tokenize
