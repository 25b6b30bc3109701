#pragma once
// lmtk::tokenize::spm_tokenizer: SentencePiece BPE encoding over a GGUF vocabulary (the `llama`
// tokenizer model: Llama 1/2, Mistral v0.1, TinyLlama, stories260K, ...).
//
// encode, per stretch of text between special tokens:
//   1. normalise: prepend a space (add_space_prefix), then write every space as U+2581 "▁";
//   2. split into UTF-8 characters (a malformed byte is a character of its own);
//   3. repeatedly merge the adjacent pair whose concatenation is a vocabulary piece with the
//      highest score, leftmost on ties; a max-heap of candidate pairs makes this O(n log n);
//   4. emit each final symbol's id; a symbol that is no emittable piece (a merged `unused`
//      piece, or a character the vocabulary lacks) splits back into the symbols it was merged
//      from, and a character that is still unknown becomes its UTF-8 bytes as <0xXX> tokens
//      (byte fallback), or one unknown token when the vocabulary has no byte tokens.
// This reproduces sentencepiece and llama.cpp on their test vectors (tests/tokenize/spm_vectors.cpp).
#include <lmtk/core/error.hpp>
#include <lmtk/tokenize/special_tokens.hpp>
#include <lmtk/tokenize/vocab.hpp>

#include <array>
#include <cstdint>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::tokenize {

namespace detail {

inline constexpr std::string_view spm_space = "\xE2\x96\x81";      // U+2581, SentencePiece's space
inline constexpr std::string_view spm_unk_surface = " \xE2\x81\x87 ";  // " ⁇ ", how sentencepiece shows <unk>

// Length of the UTF-8 character starting at s[i]. Anything malformed (stray continuation byte,
// invalid lead byte, truncated or broken sequence) counts as a one-byte character, so hostile
// input still tokenizes, via byte fallback, without reading past the end.
inline std::size_t utf8_char_len(std::string_view s, std::size_t i) noexcept {
    const auto lead = static_cast<unsigned char>(s[i]);
    std::size_t n = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 1;
    if (n > s.size() - i) return 1;
    for (std::size_t k = 1; k < n; ++k)
        if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 1;
    return n;
}

// "<0x41>" -> 0x41; -1 when the text is not a byte-token text.
inline int parse_byte_token(std::string_view t) noexcept {
    if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
    auto hex = [](char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    };
    const int hi = hex(t[3]), lo = hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

}  // namespace detail

class spm_tokenizer {
public:
    explicit spm_tokenizer(vocab v) : v_(std::move(v)) {
        if (v_.model() != "llama")
            fail("spm_tokenizer: the vocabulary's tokenizer model is '", v_.model(),
                 "', expected 'llama' (SentencePiece)");
        byte_ids_.fill(no_token);
        for (std::int32_t id = 0; id < static_cast<std::int32_t>(v_.size()); ++id) {
            const token_type t = v_.type(id);
            if (t == token_type::byte || t == token_type::undefined) {
                // Byte-typed tokens win over a normal token that merely looks like one.
                const int b = detail::parse_byte_token(v_.text(id));
                if (b >= 0 && (byte_ids_[b] == no_token || t == token_type::byte)) byte_ids_[b] = id;
            }
            if (mergeable(t) && v_.text(id).size() > max_piece_bytes_) max_piece_bytes_ = v_.text(id).size();
            // User-defined pieces are atomic in sentencepiece and llama.cpp, special or not;
            // control (and unknown) texts only when the caller asks for special parsing.
            if (t == token_type::user_defined) {
                always_.add(v_.text(id), id);
                with_control_.add(v_.text(id), id);
            } else if (t == token_type::control || t == token_type::unknown) {
                with_control_.add(v_.text(id), id);
            }
        }
        has_all_bytes_ = true;
        for (std::int32_t id : byte_ids_) has_all_bytes_ = has_all_bytes_ && id != no_token;
    }

    // Token ids of `text`: BOS first when add_bos (and the vocabulary has one). With
    // parse_special, control-token texts such as "<s>" become their ids; as in llama.cpp, the
    // text after a special token gets the space prefix again.
    std::vector<std::int32_t> encode(std::string_view text, bool add_bos, bool parse_special = false) const {
        std::vector<std::int32_t> out;
        out.reserve(text.size() / 3 + 2);
        if (add_bos && v_.bos() != no_token) out.push_back(v_.bos());
        bool after_special = true;  // the start of the text counts as "after a special token"
        (parse_special ? with_control_ : always_)
            .split(
                text,
                [&](std::string_view fragment) {
                    encode_fragment(fragment, v_.add_space_prefix() && after_special, out);
                    after_special = false;
                },
                [&](std::int32_t id) {
                    out.push_back(id);
                    after_special = true;
                });
        return out;
    }

    // Text of `ids`. The space the space prefix put at the start is dropped, as sentencepiece
    // does. skip_special drops control tokens; otherwise their text is written and, mirroring
    // encode, the space prefix after each is dropped too. An id outside the vocabulary throws.
    std::string decode(std::span<const std::int32_t> ids, bool skip_special = true) const {
        std::string out;
        bool at_prefix = v_.add_space_prefix();  // the next text piece starts with the space prefix
        for (const std::int32_t id : ids) {
            check(id);
            const token_type t = v_.type(id);
            if (t == token_type::control) {
                if (skip_special) continue;
                out += v_.text(id);
                at_prefix = v_.add_space_prefix();
                continue;
            }
            if (t == token_type::unknown) {
                out += detail::spm_unk_surface;
            } else if (t == token_type::byte) {
                out += piece(id);
            } else {
                std::string_view text = v_.text(id);
                if (at_prefix && text.starts_with(detail::spm_space)) text.remove_prefix(detail::spm_space.size());
                append_with_spaces(out, text);
            }
            at_prefix = false;
        }
        return out;
    }

    // The raw bytes one token stands for: "▁" -> ' ', <0xXX> -> that byte, control -> empty.
    // For streaming output: concatenated pieces may split a UTF-8 character across tokens.
    std::string piece(std::int32_t id) const {
        check(id);
        std::string out;
        switch (v_.type(id)) {
            case token_type::control: break;
            case token_type::unknown: out = detail::spm_unk_surface; break;
            case token_type::byte: {
                const int b = detail::parse_byte_token(v_.text(id));
                if (b >= 0) out.push_back(static_cast<char>(b));
                else append_with_spaces(out, v_.text(id));
                break;
            }
            default: append_with_spaces(out, v_.text(id));
        }
        return out;
    }

    const vocab& vocabulary() const noexcept { return v_; }
    std::int32_t bos() const noexcept { return v_.bos(); }
    std::int32_t eos() const noexcept { return v_.eos(); }
    // End of generation: EOS, end of turn/message, and the turn-ending tokens (vocab::is_eog).
    bool is_eog(std::int32_t id) const noexcept { return v_.is_eog(id); }
    std::size_t size() const noexcept { return v_.size(); }

private:
    // Pieces the merge step may form. Control, unknown and byte tokens are no text pieces (in
    // sentencepiece they are not in the piece table at all), so "<s>" is never built from '<' 's' '>'.
    static bool mergeable(token_type t) noexcept {
        return t != token_type::control && t != token_type::unknown && t != token_type::byte;
    }
    // Pieces emitted as they are; a merged `unused` piece is split back (sentencepiece does so).
    static bool emittable(token_type t) noexcept { return mergeable(t) && t != token_type::unused; }

    void check(std::int32_t id) const {
        if (!v_.contains(id)) fail("token id ", id, " is outside the vocabulary of ", v_.size(), " tokens");
    }

    static void append_with_spaces(std::string& out, std::string_view t) {
        for (std::size_t p = t.find(detail::spm_space); p != std::string_view::npos; p = t.find(detail::spm_space)) {
            out.append(t.substr(0, p)).push_back(' ');
            t.remove_prefix(p + detail::spm_space.size());
        }
        out.append(t);
    }

    // A stretch of the normalised text; merged nodes remember their halves for resegmenting.
    struct node {
        std::uint32_t start, len;
        std::int32_t left = -1, right = -1;  // -1: a single character
    };
    // One live symbol of the doubly linked list being merged.
    struct symbol {
        std::int32_t prev, next;
        std::int32_t node;  // -1 once merged into its left neighbour
    };
    struct candidate {
        float score;
        std::uint32_t start;               // byte offset of the left symbol: the tie-break
        std::int32_t left, right;          // symbols
        std::int32_t left_node, right_node;  // stale once either symbol changes
    };
    struct lower_priority {
        bool operator()(const candidate& a, const candidate& b) const noexcept {
            return a.score < b.score || (a.score == b.score && a.start > b.start);
        }
    };

    void encode_fragment(std::string_view fragment, bool space_prefix, std::vector<std::int32_t>& out) const {
        std::string norm;
        norm.reserve(fragment.size() + fragment.size() / 2 + detail::spm_space.size());
        if (space_prefix) norm += detail::spm_space;
        for (const char c : fragment) {
            if (c == ' ') norm += detail::spm_space;
            else norm.push_back(c);
        }
        if (norm.size() > UINT32_MAX) fail("spm_tokenizer: input of ", norm.size(), " bytes is too long to encode");

        std::vector<node> nodes;
        std::vector<symbol> syms;
        nodes.reserve(norm.size() * 2);
        syms.reserve(norm.size());
        for (std::size_t i = 0; i < norm.size();) {
            const std::size_t n = detail::utf8_char_len(norm, i);
            const auto k = static_cast<std::int32_t>(syms.size());
            nodes.push_back({static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(n)});
            syms.push_back({k - 1, k + 1, k});
            i += n;
        }
        if (syms.empty()) return;
        syms.back().next = -1;

        std::vector<candidate> heap_storage;
        heap_storage.reserve(syms.size());
        std::priority_queue<candidate, std::vector<candidate>, lower_priority> heap(lower_priority{},
                                                                                    std::move(heap_storage));
        auto consider = [&](std::int32_t l, std::int32_t r) {
            if (l < 0 || r < 0) return;
            const node& a = nodes[static_cast<std::size_t>(syms[l].node)];
            const node& b = nodes[static_cast<std::size_t>(syms[r].node)];
            if (a.len + b.len > max_piece_bytes_) return;
            const std::int32_t id = v_.find(std::string_view(norm).substr(a.start, a.len + b.len));
            if (id == no_token || !mergeable(v_.type(id))) return;
            heap.push({v_.score(id), a.start, l, r, syms[l].node, syms[r].node});
        };
        for (std::int32_t i = 0; i + 1 < static_cast<std::int32_t>(syms.size()); ++i) consider(i, i + 1);

        while (!heap.empty()) {
            const candidate c = heap.top();
            heap.pop();
            symbol& l = syms[c.left];
            symbol& r = syms[c.right];
            if (l.node != c.left_node || r.node != c.right_node) continue;  // a side has changed since
            const node& a = nodes[static_cast<std::size_t>(l.node)];
            const node& b = nodes[static_cast<std::size_t>(r.node)];
            nodes.push_back({a.start, a.len + b.len, l.node, r.node});
            l.node = static_cast<std::int32_t>(nodes.size() - 1);
            r.node = -1;
            l.next = r.next;
            if (r.next >= 0) syms[r.next].prev = c.left;
            consider(l.prev, c.left);
            consider(c.left, l.next);
        }

        std::vector<std::int32_t> pending;  // nodes to emit, last on top
        bool last_was_unk = false;          // sentencepiece collapses a run of unknowns into one
        for (std::int32_t s = 0; s >= 0; s = syms[s].next) {
            pending.push_back(syms[s].node);
            while (!pending.empty()) {
                const node& nd = nodes[static_cast<std::size_t>(pending.back())];
                pending.pop_back();
                const std::string_view t = std::string_view(norm).substr(nd.start, nd.len);
                const std::int32_t id = v_.find(t);
                if (id != no_token && emittable(v_.type(id))) {
                    out.push_back(id);
                    last_was_unk = false;
                } else if (nd.left >= 0) {
                    pending.push_back(nd.right);
                    pending.push_back(nd.left);
                } else if (has_all_bytes_) {
                    for (const char ch : t) out.push_back(byte_ids_[static_cast<unsigned char>(ch)]);
                    last_was_unk = false;
                } else if (v_.unk() != no_token) {
                    if (!last_was_unk) out.push_back(v_.unk());
                    last_was_unk = true;
                }
                // else: nothing can stand for it (no byte tokens, no unknown token); it is left
                // out, as the byte-level BPE and Hugging Face's tokenizers do.
            }
        }
    }

    vocab v_;
    std::array<std::int32_t, 256> byte_ids_{};
    bool has_all_bytes_ = false;
    std::size_t max_piece_bytes_ = 0;
    special_matcher always_;        // user-defined pieces
    special_matcher with_control_;  // user-defined, control and unknown pieces
};

}  // namespace lmtk::tokenize
