#pragma once
// Constrained decoding by a GBNF grammar (gbnf.hpp): a pushdown matcher over code points and a
// filter stage that bans every candidate token whose bytes the grammar cannot take next.
//
//   auto g = std::make_shared<const sample::grammar>(sample::parse_gbnf(text));
//   sample::grammar_matcher state(g);               // what has been generated so far
//   chain.get<sample::grammar_constraint>() = {&vocab, &state};   // vocab: each token's bytes
//   ... after each sampled token: state.accept(vocab.pieces[tok]);
//
// The matcher holds a set of stacks, as llama.cpp's does: each stack is a path through the
// rules, its top the next character set to match; a reference on top is replaced by the first
// element of each of its rule's alternatives (one stack each), an alternative's end pops back
// to the element after the reference, and an empty stack means the text so far is a complete
// sentence. Code points are decoded from the tokens' bytes, a character split across tokens
// included (its first bytes are checked against the code points they can still become).
//
// Cost: sets of stacks are interned, and each (set, code point) transition is computed once and
// remembered, so the matcher becomes a lazily built automaton: in a repetitive stretch (inside a
// JSON string) a token costs a hash lookup per character. Checking a whole vocabulary is still
// the expensive case, so grammar_constraint::accepts() lets a caller check the token it sampled
// first and mask everything only when that one is refused (the draw then has exactly the masked
// distribution). Bounds: at most max_stacks stacks of max_depth elements (past them a candidate
// is refused); the remembered sets and transitions are forgotten past max_sets / max_transitions.
#include <lmtk/sample/candidate.hpp>
#include <lmtk/sample/gbnf.hpp>
#include <lmtk/sample/json_constraint.hpp>
#include <lmtk/sample/stages.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lmtk::sample {

class grammar_matcher {
public:
    static constexpr std::size_t max_stacks = 4096;
    static constexpr std::size_t max_depth = 1024;
    // Interned sets and remembered transitions kept at most (then forgotten, all but the current).
    static constexpr std::size_t max_sets = 1u << 16;
    static constexpr std::size_t max_transitions = 1u << 22;

    // The start: root's alternatives, expanded.
    explicit grammar_matcher(std::shared_ptr<const grammar> g) : g_(std::move(g)) {
        stack_set start;
        work_.clear();
        for (const std::uint32_t a : g_->alternatives[g_->root]) {
            const std::uint32_t st[1] = {a};
            work_.push(st);
        }
        ok_ = expand(start);
        if (ok_) state_.set = intern(start);
    }
    grammar_matcher(const grammar_matcher&) = delete;  // its cache is large: share the grammar instead
    grammar_matcher& operator=(const grammar_matcher&) = delete;
    grammar_matcher(grammar_matcher&&) = default;

    const grammar& rules() const noexcept { return *g_; }

    // Takes a token's bytes; false (and the state unchanged) when the grammar cannot.
    bool accept(std::string_view bytes) {
        position next;
        if (!run(state_, bytes, next)) return false;
        state_ = next;
        trim();
        return true;
    }
    // Whether accept(bytes) would succeed; the state is left as it is.
    bool accepts(std::string_view bytes) const {
        position next;
        return run(state_, bytes, next);
    }
    // A budget of tokens (those this generation may still produce): with one set, a token is
    // accepted only if the text after it can still be finished in the tokens then left, at one
    // code point or more per token, with one step to spare for the end-of-generation token (the fewest
    // code points to a complete sentence, from the grammar's min_tail). Near the limit, this
    // leaves only tokens that move toward closing: a JSON object closes before max_tokens
    // instead of being cut. No budget (the default): only the grammar decides.
    void set_budget(std::optional<std::size_t> tokens_left) noexcept { budget_ = tokens_left; }
    // Code points still needed, at the fewest, to complete a sentence.
    std::size_t distance() const noexcept { return ok_ ? sets_[state_.set].distance : grammar::unreachable_length; }

    // Whether some text starting with ASCII character c could follow (the grammar alone, no
    // budget); false also while a multi-byte character is incomplete. Lets a mask refuse every
    // token that starts with c at once.
    bool can_begin_with(unsigned char c) const {
        return ok_ && c < 0x80 && state_.left == 0 && step(state_.set, c) != dead;
    }
    // The same for two ASCII characters c then d.
    bool can_begin_with(unsigned char c, unsigned char d) const {
        if (!ok_ || c >= 0x80 || d >= 0x80 || state_.left != 0) return false;
        const std::uint32_t s1 = step(state_.set, c);
        return s1 != dead && step(s1, d) != dead;
    }

    // Whether the text so far is a whole sentence of the grammar (generation may end).
    bool complete() const noexcept { return ok_ && state_.left == 0 && sets_[state_.set].has_empty; }
    // Whether anything can follow (false once every stack is empty).
    bool can_continue() const noexcept { return ok_ && sets_[state_.set].has_nonempty; }

private:
    // Stacks stored end to end; stack i is data[begin(i), ends[i]).
    struct stack_set {
        std::vector<std::uint32_t> data;
        std::vector<std::uint32_t> ends;

        void clear() noexcept {
            data.clear();
            ends.clear();
        }
        std::size_t size() const noexcept { return ends.size(); }
        std::span<const std::uint32_t> operator[](std::size_t i) const noexcept {
            const std::uint32_t b = i ? ends[i - 1] : 0;
            return {data.data() + b, ends[i] - b};
        }
        void push(std::span<const std::uint32_t> st) {
            data.insert(data.end(), st.begin(), st.end());
            ends.push_back(static_cast<std::uint32_t>(data.size()));
        }
        bool contains(std::span<const std::uint32_t> st) const noexcept {
            for (std::size_t i = 0; i < size(); ++i) {
                const auto t = (*this)[i];
                if (t.size() == st.size() && std::equal(t.begin(), t.end(), st.begin())) return true;
            }
            return false;
        }
    };
    // An interned set: its stacks in a canonical order, and what the matcher asks of it.
    struct interned {
        stack_set stacks;
        bool has_empty = false, has_nonempty = false;
        std::uint32_t distance = grammar::unreachable_length;  // fewest code points to a complete sentence
    };
    // Where the matcher is: an interned set, and the bits of a character still incomplete.
    struct position {
        std::uint32_t set = 0;
        std::uint32_t partial = 0;  // code point bits so far
        std::uint8_t left = 0;      // bytes of it still to come
        std::uint8_t length = 0;    // bytes of the whole character (its lead byte says)
    };
    // The smallest code point of each UTF-8 length: a character written longer is overlong,
    // not UTF-8 (0xC1 0xBB is not '{', whatever a decoder that only shifts bits says).
    static constexpr char32_t min_of_length[5] = {0, 0, 0x80, 0x800, 0x10000};
    static constexpr std::uint32_t dead = std::numeric_limits<std::uint32_t>::max();

    // The id of `s`'s interned copy: the same set of stacks always gets the same id, so that a
    // transition computed once is remembered for every later visit of that set.
    std::uint32_t intern(const stack_set& s) const {
        order_.resize(s.size());
        for (std::size_t i = 0; i < s.size(); ++i) order_[i] = static_cast<std::uint32_t>(i);
        std::sort(order_.begin(), order_.end(), [&](std::uint32_t a, std::uint32_t b) {
            const auto x = s[a], y = s[b];
            return std::lexicographical_compare(x.begin(), x.end(), y.begin(), y.end());
        });
        key_.clear();
        for (const std::uint32_t i : order_) {
            const auto st = s[i];
            const auto n = static_cast<std::uint32_t>(st.size());
            key_.append(reinterpret_cast<const char*>(&n), sizeof n);
            key_.append(reinterpret_cast<const char*>(st.data()), st.size() * sizeof(std::uint32_t));
        }
        if (const auto it = index_.find(key_); it != index_.end()) return it->second;
        interned in;
        for (const std::uint32_t i : order_) {
            in.stacks.push(s[i]);
            (s[i].empty() ? in.has_empty : in.has_nonempty) = true;
            std::uint32_t d = 0;
            for (const std::uint32_t pos : s[i]) d = std::min(grammar::unreachable_length, d + g_->min_tail[pos]);
            in.distance = std::min(in.distance, d);
        }
        const auto id = static_cast<std::uint32_t>(sets_.size());
        sets_.push_back(std::move(in));
        index_.emplace(key_, id);
        return id;
    }

    // The set after code point c from set `from`, or dead; remembered.
    std::uint32_t step(std::uint32_t from, char32_t c) const {
        const std::uint64_t k = (std::uint64_t{from} << 21) | std::uint64_t(c & 0x1FFFFF);
        if (const auto it = next_.find(k); it != next_.end()) return it->second;
        std::uint32_t to = dead;
        if (advance(sets_[from].stacks, c, tmp_)) to = intern(tmp_);
        next_.emplace(k, to);
        return to;
    }

    // Forgets every remembered set and transition but the current set, when they pass the bounds.
    void trim() {
        if (sets_.size() <= max_sets && next_.size() <= max_transitions) return;
        interned keep = std::move(sets_[state_.set]);
        sets_.clear();
        index_.clear();
        next_.clear();
        state_.set = intern(keep.stacks);
    }

    // Expands the stacks of work_ until each top is a character set (or the stack is empty),
    // adding each distinct result to `out`. False when the bounds are passed.
    bool expand(stack_set& out) const {
        while (work_.size() > 0) {
            const auto last = work_[work_.size() - 1];
            cur_.assign(last.begin(), last.end());
            work_.data.resize(work_.data.size() - last.size());
            work_.ends.pop_back();
            for (;;) {
                if (cur_.empty()) {
                    if (!out.contains(cur_)) out.push(cur_);
                    break;
                }
                const std::uint32_t pos = cur_.back();
                const grammar_element& e = g_->elements[pos];
                if (e.kind == grammar_element::end) {
                    cur_.pop_back();  // back to the element after the reference (or empty: done)
                    continue;
                }
                if (e.kind == grammar_element::chars) {
                    if (!out.contains(cur_)) {
                        if (out.size() >= max_stacks) return false;
                        out.push(cur_);
                    }
                    break;
                }
                // A reference: continue after it once the rule is matched; one stack per alternative.
                if (cur_.size() + 1 > max_depth) return false;
                cur_.back() = pos + 1;
                const auto& alts = g_->alternatives[e.rule];
                for (std::size_t k = alts.size(); k-- > 1;) {
                    cur_.push_back(alts[k]);
                    if (work_.size() >= max_stacks) return false;
                    work_.push(cur_);
                    cur_.pop_back();
                }
                cur_.push_back(alts[0]);
            }
        }
        return true;
    }

    // One code point: every stack whose top set matches moves past it.
    bool advance(const stack_set& in, char32_t c, stack_set& out) const {
        out.clear();
        work_.clear();
        for (std::size_t i = 0; i < in.size(); ++i) {
            const auto st = in[i];
            if (st.empty() || !g_->matches(st.back(), c)) continue;
            work_.push(st);
            work_.data.back() += 1;
        }
        if (work_.size() == 0) return false;
        return expand(out) && out.size() > 0;
    }

    // Whether some stack's top may match a code point that starts with `partial`, `left`
    // continuation bytes still to come.
    bool partial_possible(std::uint32_t set, std::uint32_t partial, std::uint8_t left, std::uint8_t length) const {
        const unsigned bits = 6u * left;
        const char32_t lo = std::max(char32_t(partial << bits), min_of_length[length]);
        const char32_t hi = std::min(char32_t((partial << bits) | ((1u << bits) - 1)), char32_t{0x10FFFF});
        if (lo > hi) return false;
        const stack_set& s = sets_[set].stacks;
        for (std::size_t i = 0; i < s.size(); ++i) {
            const auto st = s[i];
            if (!st.empty() && g_->may_match(st.back(), lo, hi)) return true;
        }
        return false;
    }

    // `from` followed by `bytes`, into `to`.
    bool run(const position& from, std::string_view bytes, position& to) const {
        if (!ok_) return false;
        position p = from;
        for (const char ch : bytes) {
            const auto b = static_cast<unsigned char>(ch);
            if (p.left == 0) {
                if (b < 0x80) p.partial = b, p.length = 1;
                else if ((b & 0xE0) == 0xC0) p.partial = b & 0x1F, p.left = 1, p.length = 2;
                else if ((b & 0xF0) == 0xE0) p.partial = b & 0x0F, p.left = 2, p.length = 3;
                else if ((b & 0xF8) == 0xF0) p.partial = b & 0x07, p.left = 3, p.length = 4;
                else return false;  // a continuation byte with no lead byte, or not UTF-8
            } else {
                if ((b & 0xC0) != 0x80) return false;
                p.partial = (p.partial << 6) | (b & 0x3F);
                --p.left;
            }
            if (p.left > 0) {
                // Refused as soon as no character it can still become is UTF-8 (overlong,
                // above U+10FFFF) or matchable.
                if (!partial_possible(p.set, p.partial, p.left, p.length)) return false;
                continue;
            }
            if (p.partial < min_of_length[p.length] || p.partial > 0x10FFFF || (p.partial >= 0xD800 && p.partial <= 0xDFFF))
                return false;
            p.set = step(p.set, p.partial);
            if (p.set == dead) return false;
            p.partial = 0;
        }
        // With a budget, the tokens left after this one must still be able to finish the
        // sentence (a code point or more each) and leave a step for the end-of-generation token.
        if (budget_ && std::size_t{sets_[p.set].distance} + (p.left > 0 ? 1 : 0) + 2 > *budget_) return false;
        to = p;
        return true;
    }

    std::shared_ptr<const grammar> g_;
    position state_;
    bool ok_ = true;
    std::optional<std::size_t> budget_;
    // The interned sets and their transitions (a lazily built automaton), and scratch kept for
    // its capacity. One matcher serves one sequence, on one thread.
    mutable std::vector<interned> sets_;
    mutable std::unordered_map<std::string, std::uint32_t> index_;
    mutable std::unordered_map<std::uint64_t, std::uint32_t> next_;
    mutable stack_set tmp_, work_;
    mutable std::vector<std::uint32_t> cur_, order_;
    mutable std::string key_;
};

// The filter stage. Off (a no-op) while `state` is null. Token bytes come from the same
// per-vocabulary table the JSON constraint uses.
struct grammar_constraint {
    const json_vocab* vocab = nullptr;
    const grammar_matcher* state = nullptr;

    bool active() const noexcept { return state && vocab; }

    // Whether token `id` may come next: its bytes continue the grammar, or it ends generation
    // and the text is complete.
    bool accepts(std::int32_t id) const {
        const auto i = static_cast<std::size_t>(id);
        if (!state || !vocab || i >= vocab->pieces.size()) return false;
        if (vocab->is_end[i]) return state->complete();
        return !vocab->pieces[i].empty() && state->accepts(vocab->pieces[i]);
    }

    std::span<candidate> operator()(std::span<candidate> c, context&) const {
        if (!state || !vocab) return c;
        constexpr float banned = -std::numeric_limits<float>::infinity();
        bool any = false;
        // Tokens are grouped by their first one or two bytes: where the grammar cannot take
        // them next, every token starting with them is refused without being walked (most of
        // a vocabulary outside a string: " word" after a JSON value fails at 'w').
        // 0: not known yet, 1: may continue, 2: cannot.
        std::array<std::uint8_t, 128> first{};
        thread_local std::array<std::uint8_t, 128 * 128> pair;
        pair.fill(0);
        for (candidate& x : c) {
            if (x.logit == banned) continue;
            const auto id = static_cast<std::size_t>(x.id);
            if (id < vocab->pieces.size() && !vocab->is_end[id] && !vocab->pieces[id].empty()) {
                const std::string& piece = vocab->pieces[id];
                const auto b = static_cast<unsigned char>(piece[0]);
                if (b < 0x80) {
                    if (first[b] == 0) first[b] = state->can_begin_with(b) ? 1 : 2;
                    bool dead_start = first[b] == 2;
                    if (!dead_start && piece.size() >= 2 && static_cast<unsigned char>(piece[1]) < 0x80) {
                        std::uint8_t& v = pair[b * 128 + static_cast<unsigned char>(piece[1])];
                        if (v == 0) v = state->can_begin_with(b, static_cast<unsigned char>(piece[1])) ? 1 : 2;
                        dead_start = v == 2;
                    }
                    if (dead_start) {
                        x.logit = banned;
                        continue;
                    }
                }
            }
            if (accepts(x.id)) any = true;
            else x.logit = banned;
        }
        // Nothing can continue (the grammar is complete, or the vocabulary lacks its bytes):
        // let generation end rather than pick a banned token.
        if (!any)
            for (candidate& x : c)
                if (static_cast<std::size_t>(x.id) < vocab->is_end.size() && vocab->is_end[std::size_t(x.id)]) x.logit = 0.0f;
        return c;
    }
};

}  // namespace lmtk::sample
