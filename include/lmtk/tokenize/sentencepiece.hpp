#pragma once
// lmtk::tokenize::sentencepiece_tokenizer: libsentencepiece behind spm_tokenizer's interface, for
// models that ship a tokenizer.model and as the reference the native tokenizer is tested against.
//
// Not part of <lmtk/lmtk.hpp>: link lmtk::sentencepiece to use it.
#include <lmtk/core/error.hpp>
#include <lmtk/tokenize/special_tokens.hpp>

#include <sentencepiece_processor.h>

#include <charconv>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lmtk::tokenize {

class sentencepiece_tokenizer {
public:
    explicit sentencepiece_tokenizer(const std::string& path) : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
        std::error_code ec;
        if (!std::filesystem::is_regular_file(path, ec)) fail(path, ": no such SentencePiece model file");
        const auto status = sp_->Load(path);
        if (!status.ok()) fail(path, ": cannot load the SentencePiece model: ", status.ToString());
        n_ = sp_->GetPieceSize();
        if (n_ <= 0) fail(path, ": the SentencePiece model has no pieces");
        // sentencepiece never parses control texts itself; this makes parse_special mean what it
        // means for spm_tokenizer. (User-defined pieces it already keeps atomic.)
        for (int id = 0; id < n_; ++id)
            if (sp_->IsControl(id) || sp_->IsUnknown(id)) specials_.add(sp_->IdToPiece(id), id);
    }

    // Token ids of `text`, BOS first when add_bos (and the model has one). With parse_special,
    // control texts ("<s>") become their ids and each stretch between them is encoded on its
    // own (getting the space prefix again, as in spm_tokenizer).
    std::vector<std::int32_t> encode(std::string_view text, bool add_bos, bool parse_special = false) const {
        std::vector<std::int32_t> out;
        if (add_bos && bos() >= 0) out.push_back(bos());
        auto encode_text = [&](std::string_view t) {
            std::vector<int> ids;
            const auto status = sp_->Encode(t, &ids);
            if (!status.ok()) fail("sentencepiece: cannot encode: ", status.ToString());
            out.insert(out.end(), ids.begin(), ids.end());
        };
        if (parse_special) specials_.split(text, encode_text, [&](std::int32_t id) { out.push_back(id); });
        else if (!text.empty()) encode_text(text);
        return out;
    }

    // Text of `ids`, as sentencepiece decodes it. skip_special = false writes control tokens'
    // texts; the text after each is decoded on its own (its space prefix dropped), mirroring encode.
    std::string decode(std::span<const std::int32_t> ids, bool skip_special = true) const {
        std::string out;
        std::vector<int> run;
        auto flush = [&] {
            if (run.empty()) return;
            std::string text;
            const auto status = sp_->Decode(run, &text);
            if (!status.ok()) fail("sentencepiece: cannot decode: ", status.ToString());
            out += text;
            run.clear();
        };
        for (const std::int32_t id : ids) {
            check(id);
            if (!skip_special && sp_->IsControl(id)) {
                flush();
                out += sp_->IdToPiece(id);
            } else {
                run.push_back(id);
            }
        }
        flush();
        return out;
    }

    // The raw bytes of one token: "▁" -> ' ', <0xXX> -> that byte, control -> empty.
    std::string piece(std::int32_t id) const {
        check(id);
        if (sp_->IsControl(id)) return {};
        if (sp_->IsUnknown(id)) return " \xE2\x81\x87 ";
        const std::string& p = sp_->IdToPiece(id);
        if (sp_->IsByte(id)) {  // "<0xXX>"
            unsigned byte = 0;
            if (p.size() == 6 && std::from_chars(p.data() + 3, p.data() + 5, byte, 16).ptr == p.data() + 5)
                return std::string(1, static_cast<char>(byte));
        }
        std::string out;
        constexpr std::string_view space = "\xE2\x96\x81";
        for (std::size_t i = 0; i < p.size();) {
            if (std::string_view(p).substr(i, space.size()) == space) {
                out.push_back(' ');
                i += space.size();
            } else {
                out.push_back(p[i++]);
            }
        }
        return out;
    }

    std::int32_t bos() const { return sp_->bos_id(); }
    std::int32_t eos() const { return sp_->eos_id(); }
    bool is_eog(std::int32_t id) const { return id >= 0 && id == eos(); }
    std::size_t size() const noexcept { return static_cast<std::size_t>(n_); }
    const sentencepiece::SentencePieceProcessor& processor() const noexcept { return *sp_; }

private:
    // sentencepiece does not range-check ids everywhere; lmtk's contract is an error, not a crash.
    void check(std::int32_t id) const {
        if (id < 0 || id >= n_) fail("token id ", id, " is outside the vocabulary of ", n_, " tokens");
    }

    std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;  // movable tokenizer, pinned processor
    int n_ = 0;
    special_matcher specials_;
};

}  // namespace lmtk::tokenize
