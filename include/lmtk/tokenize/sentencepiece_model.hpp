#pragma once
// A SentencePiece tokenizer.model read natively into an SPM vocab, for Hugging Face folders that
// ship tokenizer.model without tokenizer.json (Llama 1/2, Mistral v0.1, TinyLlama...). The file
// is a protobuf ModelProto; only the parts a tokenizer needs are read, in the wire format:
//
//   ModelProto      1: pieces (repeated SentencePiece)   2: trainer_spec   3: normalizer_spec
//   SentencePiece   1: piece (string)   2: score (float)   3: type (1 normal, 2 unknown,
//                   3 control, 4 user defined, 5 unused, 6 byte: the GGUF token types)
//   TrainerSpec     3: model_type (1 unigram, 2 BPE)   40..43: unk/bos/eos/pad id
//   NormalizerSpec  3: add_dummy_prefix (default true)
//
// Every length is checked against the bytes left, so a truncated or hostile file is an error,
// never a read out of bounds. libsentencepiece is the reference this is tested against
// (tests/tokenize/sentencepiece_model.cpp).
#include <lmtk/core/error.hpp>
#include <lmtk/core/mapped_file.hpp>
#include <lmtk/tokenize/vocab.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

namespace lmtk::tokenize {

namespace detail {

// A bounds-checked cursor over protobuf wire-format bytes.
class proto_reader {
public:
    proto_reader(const std::byte* p, std::size_t n, const std::string& origin) : p_(p), end_(p + n), origin_(origin) {}

    bool done() const noexcept { return p_ == end_; }

    std::uint64_t varint() {
        std::uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (p_ == end_) bad("truncated varint");
            const auto b = static_cast<std::uint8_t>(*p_++);
            v |= std::uint64_t(b & 0x7F) << shift;
            if (!(b & 0x80)) return v;
        }
        bad("varint longer than 10 bytes");
    }
    // (field number, wire type) of the next field.
    std::pair<std::uint32_t, std::uint32_t> key() {
        const std::uint64_t k = varint();
        if ((k >> 3) == 0 || (k >> 3) > 0x1FFFFFFF) bad("field number out of range");
        return {static_cast<std::uint32_t>(k >> 3), static_cast<std::uint32_t>(k & 7)};
    }
    // The bytes of a length-delimited field.
    proto_reader sub() {
        const std::uint64_t n = varint();
        if (n > static_cast<std::uint64_t>(end_ - p_)) bad("a field runs past the end of the file");
        proto_reader r(p_, static_cast<std::size_t>(n), origin_);
        p_ += n;
        return r;
    }
    std::string_view bytes() {
        proto_reader r = sub();
        return {reinterpret_cast<const char*>(r.p_), static_cast<std::size_t>(r.end_ - r.p_)};
    }
    float fixed32_float() {
        if (end_ - p_ < 4) bad("truncated 32-bit field");
        float f;
        std::memcpy(&f, p_, 4);  // little-endian on every target lmtk builds for
        p_ += 4;
        return f;
    }
    void skip(std::uint32_t wire) {
        switch (wire) {
            case 0: varint(); return;
            case 1: advance(8); return;
            case 2: sub(); return;
            case 5: advance(4); return;
            default: bad("unsupported wire type " + std::to_string(wire));
        }
    }
    void expect(std::uint32_t wire, std::uint32_t want, const char* what) const {
        if (wire != want) bad(std::string(what) + " has wire type " + std::to_string(wire));
    }
    [[noreturn]] void bad(const std::string& what) const { fail(origin_, ": not a SentencePiece model (", what, ")"); }

private:
    void advance(std::size_t n) {
        if (static_cast<std::size_t>(end_ - p_) < n) bad("truncated field");
        p_ += n;
    }
    const std::byte* p_;
    const std::byte* end_;
    const std::string& origin_;
};

}  // namespace detail

// Pieces, scores and types of tokenizer.model, and its special ids and dummy-prefix setting.
// add_bos follows SentencePiece's Llama convention (true); HF folders override it from
// tokenizer_config.json.
inline vocab_spec sentencepiece_model_spec(const std::string& path) {
    const core::mapped_file file(path);
    detail::proto_reader model(file.data(), file.size(), path);
    vocab_spec s;
    s.model = "llama";
    s.add_bos = true;
    s.add_space_prefix = true;
    std::int64_t model_type = 1;  // unigram unless the trainer spec says otherwise
    std::int64_t ids[4] = {0, 1, 2, -1};  // unk, bos, eos, pad: TrainerSpec's defaults
    while (!model.done()) {
        const auto [field, wire] = model.key();
        if (field == 1) {
            model.expect(wire, 2, "a piece");
            detail::proto_reader piece = model.sub();
            std::string text;
            float score = 0.0f;
            std::uint64_t type = 1;
            while (!piece.done()) {
                const auto [f, w] = piece.key();
                if (f == 1 && w == 2) text = std::string(piece.bytes());
                else if (f == 2 && w == 5) score = piece.fixed32_float();
                else if (f == 3 && w == 0) type = piece.varint();
                else piece.skip(w);
            }
            if (type < 1 || type > 6) model.bad("piece " + std::to_string(s.tokens.size()) + " has type " + std::to_string(type));
            s.tokens.push_back(std::move(text));
            s.scores.push_back(score);
            s.types.push_back(static_cast<token_type>(type));
        } else if (field == 2) {
            model.expect(wire, 2, "the trainer spec");
            detail::proto_reader spec = model.sub();
            while (!spec.done()) {
                const auto [f, w] = spec.key();
                if (w == 0 && (f == 3 || (f >= 40 && f <= 43))) {
                    // int32 fields: a negative value is sign-extended to 64 bits on the wire
                    const auto v = static_cast<std::int64_t>(spec.varint());
                    if (f == 3) model_type = v;
                    else ids[f - 40] = v;
                } else {
                    spec.skip(w);
                }
            }
        } else if (field == 3) {
            model.expect(wire, 2, "the normalizer spec");
            detail::proto_reader spec = model.sub();
            while (!spec.done()) {
                const auto [f, w] = spec.key();
                if (f == 3 && w == 0) s.add_space_prefix = spec.varint() != 0;
                else spec.skip(w);
            }
        } else {
            model.skip(wire);
        }
    }
    if (s.tokens.empty()) model.bad("no pieces");
    // lmtk's SPM tokenizer merges by score, which is SentencePiece's BPE; a unigram model needs
    // Viterbi segmentation, which it does not do.
    if (model_type != 2)
        fail(path, ": SentencePiece model type ", model_type, " (", model_type == 1 ? "unigram" : "not BPE",
             ") is not supported; lmtk tokenizes SentencePiece BPE models (Llama, Mistral)");
    const auto id = [&](std::int64_t v) -> std::int32_t {
        if (v < 0) return no_token;
        if (v >= static_cast<std::int64_t>(s.tokens.size())) fail(path, ": special id ", v, " is outside the ", s.tokens.size(), " pieces");
        return static_cast<std::int32_t>(v);
    };
    s.unk = id(ids[0]);
    s.bos = id(ids[1]);
    s.eos = id(ids[2]);
    s.pad = id(ids[3]);
    return s;
}

inline vocab vocab_from_sentencepiece_model(const std::string& path) { return vocab(sentencepiece_model_spec(path), path); }

}  // namespace lmtk::tokenize
