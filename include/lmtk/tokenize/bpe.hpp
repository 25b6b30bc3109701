#pragma once
// lmtk::tokenize::bpe_tokenizer: merge-rank BPE, as Hugging Face `tokenizers` and GPT-2 define
// it, in its two common dialects:
//
//   byte_level     (tokenizer.ggml.model "gpt2"; GPT-2, Llama 3, Qwen, DeepSeek, ...): the text
//                  is split by the family's pre-tokenizer (pre_tokenizer.hpp), each chunk's bytes
//                  are written as GPT-2's printable stand-ins
//                  (' ' -> 'Ġ'), and merges run within a chunk. Every byte is a token, so
//                  nothing is unknown.
//   byte_fallback  (tokenizer.ggml.model "llama" with merges; Llama/Mistral/TinyStories
//                  tokenizer.json files converted from SentencePiece): spaces become U+2581 "▁"
//                  (with one prepended when add_space_prefix), merges run over the whole
//                  stretch, and a character the vocabulary lacks becomes its UTF-8 bytes as
//                  <0xXX> tokens, or the unknown token (a run of them fused into one).
//
// encode, per stretch of text between special tokens:
//   1. initial symbols: one token per character (or per byte stand-in);
//   2. repeatedly merge the adjacent pair with the lowest merge rank (leftmost on ties) into
//      the token the merge produces; a min-heap of candidate pairs makes this O(n log n);
//   3. emit the symbols' ids.
// Unlike spm_tokenizer, which merges whatever concatenation has the best score, only listed
// merges apply: this is what the checkpoint's own tokenizer does.
#include <lmtk/core/error.hpp>
#include <lmtk/tokenize/pre_tokenizer.hpp>
#include <lmtk/tokenize/special_tokens.hpp>
#include <lmtk/tokenize/spm.hpp>
#include <lmtk/tokenize/unicode.hpp>
#include <lmtk/tokenize/vocab.hpp>

#include <array>
#include <cstdint>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lmtk::tokenize {

class bpe_tokenizer {
public:
    enum class dialect { byte_level, byte_fallback };

    explicit bpe_tokenizer(vocab v) : v_(std::move(v)) {
        if (v_.model() == "gpt2") {
            dialect_ = dialect::byte_level;
            // The split: tokenizer.json's own patterns, else the family tokenizer.ggml.pre names
            // (an unknown name throws rather than splitting wrongly).
            if (v_.pre_patterns()) {
                pre_ = pre_tokenizer(pre_tokenizer_spec{*v_.pre_patterns(), v_.ignore_merges()});
            } else {
                pre_ = pre_tokenizer(pre_tokenizer_for(v_.pre()));
            }
        } else if (v_.model() == "llama") {
            dialect_ = dialect::byte_fallback;
            if (v_.merges().empty()) fail("bpe_tokenizer: a 'llama' vocabulary without merges is SentencePiece; use spm_tokenizer");
        } else {
            fail("bpe_tokenizer: tokenizer model '", v_.model(), "' is not BPE (supported: gpt2, llama with merges)");
        }

        const auto n = static_cast<std::int32_t>(v_.size());
        byte_ids_.fill(no_token);
        for (std::int32_t id = 0; id < n; ++id) {
            const token_type t = v_.type(id);
            if (dialect_ == dialect::byte_fallback && (t == token_type::byte || t == token_type::undefined)) {
                const int b = detail::parse_byte_token(v_.text(id));
                if (b >= 0 && (byte_ids_[b] == no_token || t == token_type::byte)) byte_ids_[b] = id;
            }
            if (t == token_type::user_defined) {
                always_.add(v_.text(id), id);
                with_control_.add(v_.text(id), id);
            } else if (t == token_type::control || t == token_type::unknown) {
                with_control_.add(v_.text(id), id);
            }
        }
        has_all_bytes_ = true;
        for (const std::int32_t id : byte_ids_) has_all_bytes_ = has_all_bytes_ && id != no_token;
        if (dialect_ == dialect::byte_level) {
            const auto& bm = unicode::byte_map::get();
            for (int b = 0; b < 256; ++b) {
                // A byte-level vocabulary normally has a token for every byte stand-in. Some lack
                // a few control bytes (Falcon's has no token for byte 3): such a byte becomes
                // the unknown token, or, without one, is left out, as Hugging Face's BPE does.
                byte_ids_[b] = v_.find(bm.to_utf8[b]);
            }
        }

        // "left right" -> (rank, result). Merges whose parts or result are not tokens can never
        // apply (HF refuses such files; llama.cpp skips them): skip them too.
        ranks_.reserve(v_.merges().size());
        for (std::size_t r = 0; r < v_.merges().size(); ++r) {
            const std::string& m = v_.merges()[r];
            const std::size_t sp = m.find(' ', 1);
            if (sp == std::string::npos) fail("bpe_tokenizer: merge ", r, " '", m, "' is not two tokens separated by a space");
            const std::string_view a = std::string_view(m).substr(0, sp), b = std::string_view(m).substr(sp + 1);
            const std::int32_t ia = v_.find(a), ib = v_.find(b);
            const std::int32_t ic = v_.find(std::string(a) + std::string(b));
            if (ia == no_token || ib == no_token || ic == no_token) continue;
            ranks_.emplace(key(ia, ib), merge{static_cast<std::uint32_t>(r), ic});  // first listing wins
        }
    }

    dialect kind() const noexcept { return dialect_; }

    // Token ids of `text`: BOS first when add_bos (and the vocabulary has one). With
    // parse_special, control-token texts such as "<|endoftext|>" become their ids.
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

    // Text of `ids`. skip_special drops control tokens. For byte_fallback the space the space
    // prefix put at the start (and after each control token) is dropped again, as sentencepiece
    // and the HF decoder (Strip) do. An id outside the vocabulary throws.
    std::string decode(std::span<const std::int32_t> ids, bool skip_special = true) const {
        std::string out;
        bool at_prefix = v_.add_space_prefix();
        for (const std::int32_t id : ids) {
            check(id);
            if (v_.type(id) == token_type::control) {
                if (skip_special) continue;
                out += v_.text(id);
                at_prefix = v_.add_space_prefix();
                continue;
            }
            std::string p = piece(id);
            if (at_prefix && !p.empty() && p[0] == ' ') p.erase(0, 1);
            out += p;
            at_prefix = false;
        }
        return out;
    }

    // The raw bytes one token stands for; control tokens are empty. For streaming output:
    // concatenated pieces may split a UTF-8 character across tokens.
    std::string piece(std::int32_t id) const {
        check(id);
        const std::string& t = v_.text(id);
        std::string out;
        switch (v_.type(id)) {
            case token_type::control: return out;
            case token_type::user_defined: return t;  // stored as plain text in both dialects
            case token_type::unknown:
                if (dialect_ == dialect::byte_fallback) return std::string(detail::spm_unk_surface);
                return t;
            case token_type::byte:
                if (const int b = detail::parse_byte_token(t); b >= 0) return std::string(1, static_cast<char>(b));
                break;
            default: break;
        }
        if (dialect_ == dialect::byte_level) {
            // Stand-ins back to bytes; a character outside the table is kept as it is.
            const auto& bm = unicode::byte_map::get();
            for (const unicode::code_point& c : unicode::decode_utf8(t)) {
                if (c.cp < bm.from_cp.size() && bm.from_cp[c.cp] >= 0) out.push_back(static_cast<char>(bm.from_cp[c.cp]));
                else out.append(t, c.offset, c.len);
            }
        } else {
            std::string_view rest = t;
            for (std::size_t p = rest.find(detail::spm_space); p != std::string_view::npos; p = rest.find(detail::spm_space)) {
                out.append(rest.substr(0, p)).push_back(' ');
                rest.remove_prefix(p + detail::spm_space.size());
            }
            out.append(rest);
        }
        return out;
    }

    const vocab& vocabulary() const noexcept { return v_; }
    std::int32_t bos() const noexcept { return v_.bos(); }
    std::int32_t eos() const noexcept { return v_.eos(); }
    bool is_eog(std::int32_t id) const noexcept { return v_.is_eog(id); }
    std::size_t size() const noexcept { return v_.size(); }

private:
    struct merge {
        std::uint32_t rank;
        std::int32_t result;
    };
    static std::uint64_t key(std::int32_t a, std::int32_t b) noexcept {
        return (std::uint64_t(std::uint32_t(a)) << 32) | std::uint32_t(b);
    }

    void check(std::int32_t id) const {
        if (!v_.contains(id)) fail("token id ", id, " is outside the vocabulary of ", v_.size(), " tokens");
    }

    void encode_fragment(std::string_view fragment, bool space_prefix, std::vector<std::int32_t>& out) const {
        if (dialect_ == dialect::byte_level) {
            std::string prefixed;
            if (space_prefix && !fragment.empty() && fragment[0] != ' ') {
                prefixed = " ";
                prefixed += fragment;
                fragment = prefixed;
            }
            std::vector<std::int32_t> syms;
            std::string whole;
            const auto& bm = unicode::byte_map::get();
            pre_.split(fragment, [&](std::string_view chunk) {
                if (pre_.ignore_merges()) {  // a piece that is a token is that token, merges or not
                    whole.clear();
                    for (const char ch : chunk) whole += bm.to_utf8[static_cast<unsigned char>(ch)];
                    if (const std::int32_t id = v_.find(whole); id != no_token) {
                        out.push_back(id);
                        return;
                    }
                }
                syms.clear();
                for (const char ch : chunk) {
                    const std::int32_t id = byte_ids_[static_cast<unsigned char>(ch)];
                    syms.push_back(id == no_token ? v_.unk() : id);
                }
                merge_symbols(syms, out);
            });
            return;
        }

        // byte_fallback: spaces as "▁", one prepended, then one symbol per character.
        std::string norm;
        norm.reserve(fragment.size() + fragment.size() / 2 + detail::spm_space.size());
        if (space_prefix && !fragment.empty()) norm += detail::spm_space;
        for (const char c : fragment) {
            if (c == ' ') norm += detail::spm_space;
            else norm.push_back(c);
        }
        std::vector<std::int32_t> syms;
        syms.reserve(norm.size());
        bool last_unk = false;  // a run of unknown characters becomes one unknown token
        for (std::size_t i = 0; i < norm.size();) {
            const std::size_t n = detail::utf8_char_len(norm, i);
            const std::string_view ch = std::string_view(norm).substr(i, n);
            i += n;
            const std::int32_t id = v_.find(ch);
            if (id != no_token && v_.type(id) != token_type::control && v_.type(id) != token_type::unknown) {
                syms.push_back(id);
                last_unk = false;
            } else if (has_all_bytes_) {
                for (const char b : ch) syms.push_back(byte_ids_[static_cast<unsigned char>(b)]);
                last_unk = false;
            } else if (v_.unk() != no_token) {
                if (!last_unk) syms.push_back(v_.unk());
                last_unk = true;
            }
            // else: no token, no byte tokens, no unknown token. Hugging Face's BPE leaves such a
            // character out (its neighbours become adjacent and may merge); so does lmtk, rather
            // than refusing a prompt at encode time.
        }
        merge_symbols(syms, out);
    }

    // Applies merges to `syms` (token ids, no_token allowed for nothing-mergeable) and appends
    // the result to out.
    void merge_symbols(const std::vector<std::int32_t>& syms, std::vector<std::int32_t>& out) const {
        const auto n = static_cast<std::int32_t>(syms.size());
        if (n == 0) return;
        if (n == 1) {
            if (syms[0] != no_token) out.push_back(syms[0]);
            return;
        }
        struct symbol {
            std::int32_t id, prev, next;
        };
        std::vector<symbol> s(static_cast<std::size_t>(n));
        for (std::int32_t i = 0; i < n; ++i) s[i] = {syms[i], i - 1, i + 1 < n ? i + 1 : -1};

        struct candidate {
            std::uint32_t rank;
            std::int32_t left, right;       // symbol positions
            std::int32_t left_id, right_id;  // stale once either symbol has changed
            std::int32_t result;
        };
        struct later {  // min-heap on (rank, position)
            bool operator()(const candidate& a, const candidate& b) const noexcept {
                return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
            }
        };
        std::priority_queue<candidate, std::vector<candidate>, later> heap;
        auto consider = [&](std::int32_t l, std::int32_t r) {
            if (l < 0 || r < 0 || s[l].id == no_token || s[r].id == no_token) return;
            const auto it = ranks_.find(key(s[l].id, s[r].id));
            if (it == ranks_.end()) return;
            heap.push({it->second.rank, l, r, s[l].id, s[r].id, it->second.result});
        };
        for (std::int32_t i = 0; i + 1 < n; ++i) consider(i, i + 1);

        while (!heap.empty()) {
            const candidate c = heap.top();
            heap.pop();
            symbol& l = s[c.left];
            symbol& r = s[c.right];
            // Stale: the right symbol was absorbed (no longer l's neighbour) or either changed.
            if (l.next != c.right || l.id != c.left_id || r.id != c.right_id) continue;
            l.id = c.result;
            l.next = r.next;
            if (r.next >= 0) s[r.next].prev = c.left;
            r.id = no_token;
            r.prev = r.next = -1;
            consider(l.prev, c.left);
            consider(c.left, l.next);
        }
        for (std::int32_t i = 0; i >= 0; i = s[i].next)
            if (s[i].id != no_token) out.push_back(s[i].id);
    }

    vocab v_;
    dialect dialect_ = dialect::byte_level;
    pre_tokenizer pre_;  // byte_level: how text is cut into pieces before merging
    std::array<std::int32_t, 256> byte_ids_{};  // byte_fallback: <0xXX> ids; byte_level: stand-in ids
    bool has_all_bytes_ = false;
    std::unordered_map<std::uint64_t, merge> ranks_;
    special_matcher always_;        // user-defined pieces
    special_matcher with_control_;  // user-defined, control and unknown pieces
};

}  // namespace lmtk::tokenize
