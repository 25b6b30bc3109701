#pragma once
// Constrained decoding to JSON: the output must be one JSON object (RFC 8259 syntax), as
// Ollama's `format: "json"` and OpenAI's `response_format: {"type": "json_object"}` promise.
//
//   sample::json_prefix state;                      // what has been generated so far
//   sample::json_vocab vocab = ...;                 // each token's bytes, once per model
//   chain.get<sample::json_constraint>() = {&vocab, &state};
//   ... after each sampled token: state.feed(vocab.pieces[tok]);
//
// json_prefix is a byte-level pushdown recogniser: feed() says whether the bytes so far can
// still be completed to a JSON object. The json_constraint stage bans (logit -inf) every
// candidate whose bytes would break that, and every end-of-generation token until the object
// is closed; once it is closed, only end tokens remain. A run of blanks between tokens holds at
// most one line break and 20 bytes (llama.cpp's JSON grammar allows about as much), so that a
// model cannot idle in blank lines forever; nesting stops at 32 levels. Bytes inside strings
// are not checked to be UTF-8 (a string may hold a broken character): the server's JSON mode
// runs the GBNF grammar matcher (grammar.hpp) instead, which checks them. The state is a few dozen bytes, trivially copyable: each candidate is checked
// on a copy, which is the whole cost (about a microsecond per thousand tokens of vocabulary).
#include <lmtk/sample/candidate.hpp>
#include <lmtk/sample/stages.hpp>

#include <array>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace lmtk::sample {

class json_prefix {
public:
    static constexpr int max_depth = 32;
    static constexpr int max_blank_run = 20;

    // Feeds bytes; false when they cannot continue a JSON object (the state is then unusable).
    bool feed(std::string_view bytes) noexcept {
        for (const char c : bytes)
            if (!feed(static_cast<unsigned char>(c))) return false;
        return true;
    }

    bool feed(unsigned char c) noexcept {
        const bool blank = c == ' ' || c == '\n' || c == '\t' || c == '\r';
        if (in_string()) {
            blank_run_ = breaks_ = 0;
        } else if (blank && !in_number() && s_ != state::literal) {
            if (s_ == state::done) return false;
            return take_blank(c);
        } else {
            blank_run_ = breaks_ = 0;
        }
        switch (s_) {
            case state::root: return c == '{' && open('{');
            case state::value: return start_value(c);
            case state::array_first:
                if (c == ']') return close(']');
                return start_value(c);
            case state::object_first:
                if (c == '}') return close('}');
                [[fallthrough]];
            case state::object_key:
                if (c != '"') return false;
                s_ = state::string, key_ = true;
                return true;
            case state::colon:
                if (c != ':') return false;
                s_ = state::value;
                return true;
            case state::object_next:
                if (c == ',') return s_ = state::object_key, true;
                return c == '}' && close('}');
            case state::array_next:
                if (c == ',') return s_ = state::value, true;
                return c == ']' && close(']');
            case state::string:
                if (c == '"') {
                    if (key_) return s_ = state::colon, true;
                    return after_value(), true;
                }
                if (c == '\\') return s_ = state::escape, true;
                return c >= 0x20;
            case state::escape:
                if (c == 'u') return s_ = state::unicode, hex_left_ = 4, true;
                if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't')
                    return s_ = state::string, true;
                return false;
            case state::unicode:
                if (!is_hex(c)) return false;
                if (--hex_left_ == 0) s_ = state::string;
                return true;
            case state::literal:
                if (c != static_cast<unsigned char>(literal_[lit_pos_])) return false;
                if (literal_[++lit_pos_] == '\0') after_value();
                return true;
            case state::minus:
                if (c == '0') return s_ = state::zero, true;
                return is_digit(c) && (s_ = state::integer, true);
            case state::zero:
                if (c == '.') return s_ = state::dot, true;
                if (c == 'e' || c == 'E') return s_ = state::exp_mark, true;
                return end_number(c);
            case state::integer:
                if (is_digit(c)) return true;
                if (c == '.') return s_ = state::dot, true;
                if (c == 'e' || c == 'E') return s_ = state::exp_mark, true;
                return end_number(c);
            case state::dot: return is_digit(c) && (s_ = state::fraction, true);
            case state::fraction:
                if (is_digit(c)) return true;
                if (c == 'e' || c == 'E') return s_ = state::exp_mark, true;
                return end_number(c);
            case state::exp_mark:
                if (c == '+' || c == '-') return s_ = state::exp_sign, true;
                return is_digit(c) && (s_ = state::exponent, true);
            case state::exp_sign: return is_digit(c) && (s_ = state::exponent, true);
            case state::exponent:
                if (is_digit(c)) return true;
                return end_number(c);
            case state::done: return false;
        }
        return false;
    }

    // The top-level object is closed: nothing but the end may follow.
    bool complete() const noexcept { return s_ == state::done; }
    // Nothing but blanks so far.
    bool empty() const noexcept { return s_ == state::root; }

private:
    enum class state : std::uint8_t {
        root, value, array_first, array_next, object_first, object_key, colon, object_next,
        string, escape, unicode, literal, minus, zero, integer, dot, fraction, exp_mark, exp_sign, exponent, done
    };

    static bool is_digit(unsigned char c) noexcept { return c >= '0' && c <= '9'; }
    static bool is_hex(unsigned char c) noexcept { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
    bool take_blank(unsigned char c) noexcept {
        if ((c == '\n' || c == '\r') && ++breaks_ > 1) return false;
        return ++blank_run_ <= max_blank_run;
    }
    bool in_string() const noexcept { return s_ == state::string || s_ == state::escape || s_ == state::unicode; }
    bool in_number() const noexcept { return s_ >= state::minus && s_ <= state::exponent; }

    bool open(char bracket) noexcept {
        if (depth_ >= max_depth) return false;
        stack_[depth_++] = bracket;
        s_ = bracket == '{' ? state::object_first : state::array_first;
        return true;
    }
    bool close(char bracket) noexcept {
        if (depth_ == 0 || stack_[depth_ - 1] != (bracket == '}' ? '{' : '[')) return false;
        --depth_;
        after_value();
        return true;
    }
    void after_value() noexcept {
        if (depth_ == 0) s_ = state::done;
        else s_ = stack_[depth_ - 1] == '{' ? state::object_next : state::array_next;
    }
    bool start_value(unsigned char c) noexcept {
        key_ = false;
        switch (c) {
            case '{': return open('{');
            case '[': return open('[');
            case '"': s_ = state::string; return true;
            case '-': s_ = state::minus; return true;
            case '0': s_ = state::zero; return true;
            case 't': return start_literal("true");
            case 'f': return start_literal("false");
            case 'n': return start_literal("null");
            default: return is_digit(c) && (s_ = state::integer, true);
        }
    }
    bool start_literal(const char* word) noexcept {
        literal_ = word;
        lit_pos_ = 1;
        s_ = state::literal;
        return true;
    }
    // A number ends at the first byte that cannot extend it; that byte belongs to what follows.
    bool end_number(unsigned char c) noexcept {
        after_value();
        if (c == ' ' || c == '\n' || c == '\t' || c == '\r') return take_blank(c);
        return feed(c);
    }

    state s_ = state::root;
    bool key_ = false;
    std::uint8_t depth_ = 0;
    std::uint8_t hex_left_ = 0;
    std::uint8_t lit_pos_ = 0;
    std::uint8_t blank_run_ = 0;
    std::uint8_t breaks_ = 0;
    const char* literal_ = nullptr;
    std::array<char, max_depth> stack_{};
};
static_assert(std::is_trivially_copyable_v<json_prefix>);

// Each token's bytes and whether it ends generation, built once per vocabulary.
struct json_vocab {
    std::vector<std::string> pieces;
    std::vector<bool> is_end;
};

// The filter stage. Off (a no-op) while `state` is null.
struct json_constraint {
    const json_vocab* vocab = nullptr;
    const json_prefix* state = nullptr;

    std::span<candidate> operator()(std::span<candidate> c, context&) const noexcept {
        if (!state || !vocab) return c;
        constexpr float banned = -std::numeric_limits<float>::infinity();
        bool any = false;
        for (candidate& x : c) {
            const auto id = static_cast<std::size_t>(x.id);
            bool ok = false;
            if (id < vocab->pieces.size()) {
                if (vocab->is_end[id]) {
                    ok = state->complete();
                } else if (!vocab->pieces[id].empty()) {
                    json_prefix next = *state;
                    ok = next.feed(vocab->pieces[id]);
                }
            }
            if (ok) any = true;
            else x.logit = banned;
        }
        // No token continues the object (a vocabulary without the needed bytes): let it end.
        if (!any)
            for (candidate& x : c)
                if (static_cast<std::size_t>(x.id) < vocab->is_end.size() && vocab->is_end[std::size_t(x.id)]) x.logit = 0.0f;
        return c;
    }
};

}  // namespace lmtk::sample
