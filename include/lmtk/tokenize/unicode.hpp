#pragma once
// The bits of Unicode the byte-level BPE tokenizers need, without std::regex or ICU:
//   - UTF-8 decoding that never fails (a malformed byte is a code point of its own),
//   - the general category of every code point (ranges generated from the Unicode database),
//     for \p{..} classes, and \s,
//   - GPT-2's byte <-> printable-character table,
//   - GPT-2's pre-tokenizer split, written out by hand from its regular expression.
#include <lmtk/tokenize/unicode_data.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lmtk::tokenize::unicode {

// Stands for a byte that starts no valid UTF-8 sequence: belongs to no class.
inline constexpr std::uint32_t invalid = 0xFFFFFFFFu;

struct code_point {
    std::uint32_t cp;
    std::uint32_t offset;  // byte offset in the text
    std::uint32_t len;     // bytes
};

// Decodes `s` into code points. Overlong forms, surrogates and values above U+10FFFF count as
// malformed, like any truncated or broken sequence: each such byte becomes one `invalid`
// code point, so every byte of the input is covered exactly once.
inline std::vector<code_point> decode_utf8(std::string_view s) {
    std::vector<code_point> out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) {
        const auto b0 = static_cast<unsigned char>(s[i]);
        std::size_t n = b0 < 0x80 ? 1 : (b0 >> 5) == 0x6 ? 2 : (b0 >> 4) == 0xE ? 3 : (b0 >> 3) == 0x1E ? 4 : 0;
        std::uint32_t cp = n == 1 ? b0 : n == 2 ? (b0 & 0x1Fu) : n == 3 ? (b0 & 0x0Fu) : (b0 & 0x07u);
        bool ok = n != 0 && n <= s.size() - i;
        for (std::size_t k = 1; ok && k < n; ++k) {
            const auto b = static_cast<unsigned char>(s[i + k]);
            ok = (b & 0xC0) == 0x80;
            cp = (cp << 6) | (b & 0x3Fu);
        }
        static constexpr std::uint32_t min_of_len[] = {0, 0, 0x80, 0x800, 0x10000};
        ok = ok && cp >= min_of_len[n] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
        if (!ok) {
            cp = invalid;
            n = 1;
        }
        out.push_back({cp, static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(n)});
        i += n;
    }
    return out;
}

inline void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

using unicode_data::category;

// The general category of `cp` (Cn for unassigned code points and for `invalid`).
inline category general_category(std::uint32_t cp) noexcept {
    static constexpr auto ascii = [] {
        std::array<category, 128> t{};
        for (const auto& r : unicode_data::categories)
            for (std::uint32_t c = r.first; c <= r.last && c < 128; ++c) t[c] = r.cat;
        return t;
    }();
    if (cp < 128) return ascii[cp];
    const auto* first = std::begin(unicode_data::categories);
    const auto* last = std::end(unicode_data::categories);
    const auto* it = std::upper_bound(first, last, cp, [](std::uint32_t c, const unicode_data::category_range& r) { return c < r.first; });
    return it != first && cp <= std::prev(it)->last ? std::prev(it)->cat : unicode_data::Cn;
}

// Sets of general categories as bit masks (bit c for category c), for \p{..} classes.
namespace categories {
inline constexpr std::uint32_t bit(category c) noexcept { return std::uint32_t(1) << c; }
using enum unicode_data::category;
inline constexpr std::uint32_t letter = bit(Lu) | bit(Ll) | bit(Lt) | bit(Lm) | bit(Lo);
inline constexpr std::uint32_t mark = bit(Mn) | bit(Mc) | bit(Me);
inline constexpr std::uint32_t number = bit(Nd) | bit(Nl) | bit(No);
inline constexpr std::uint32_t punctuation = bit(Pc) | bit(Pd) | bit(Ps) | bit(Pe) | bit(Pi) | bit(Pf) | bit(Po);
inline constexpr std::uint32_t symbol = bit(Sm) | bit(Sc) | bit(Sk) | bit(So);
inline constexpr std::uint32_t separator = bit(Zs) | bit(Zl) | bit(Zp);
inline constexpr std::uint32_t other = bit(Cc) | bit(Cf) | bit(Cs) | bit(Co) | bit(Cn);
}  // namespace categories

inline bool is_letter(std::uint32_t cp) noexcept {
    if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
    return (categories::bit(general_category(cp)) & categories::letter) != 0;
}
inline bool is_number(std::uint32_t cp) noexcept {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    return (categories::bit(general_category(cp)) & categories::number) != 0;
}
// The White_Space property, which regex engines use for \s.
inline bool is_whitespace(std::uint32_t cp) noexcept {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

// GPT-2 maps every byte to a printable character so that BPE works on text: the printable
// Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves, the other 68 bytes take
// U+0100, U+0101, ... in byte order. A space is thus 'Ġ' (U+0120), a newline 'Ċ' (U+010A).
struct byte_map {
    std::array<std::uint32_t, 256> to_cp{};
    std::array<std::string, 256> to_utf8{};
    std::array<std::int16_t, 512> from_cp{};  // every mapped code point is below 512; -1: none

    byte_map() {
        from_cp.fill(-1);
        std::uint32_t next = 256;
        for (std::uint32_t b = 0; b < 256; ++b) {
            const bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            to_cp[b] = self ? b : next++;
            append_utf8(to_utf8[b], to_cp[b]);
            from_cp[to_cp[b]] = static_cast<std::int16_t>(b);
        }
    }
    static const byte_map& get() {
        static const byte_map m;
        return m;
    }
};

// GPT-2's pre-tokenizer, the regular expression
//     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// applied left to right, first alternative that matches wins. Calls on_chunk(string_view) for
// each match; together the chunks are exactly `text`.
template <class OnChunk>
void split_gpt2(std::string_view text, OnChunk&& on_chunk) {
    const std::vector<code_point> cps = decode_utf8(text);
    const std::size_t n = cps.size();
    auto cp = [&](std::size_t i) { return i < n ? cps[i].cp : invalid; };
    auto other = [&](std::size_t i) {
        return i < n && !is_whitespace(cps[i].cp) && !is_letter(cps[i].cp) && !is_number(cps[i].cp);
    };
    auto emit = [&](std::size_t from, std::size_t to) {
        const std::size_t b = cps[from].offset;
        const std::size_t e = to < n ? cps[to].offset : text.size();
        on_chunk(text.substr(b, e - b));
    };
    std::size_t i = 0;
    while (i < n) {
        const std::uint32_t c = cp(i);
        // 's 't 're 've 'm 'll 'd (case-sensitive, ASCII apostrophe only)
        if (c == '\'') {
            const std::uint32_t a = cp(i + 1), b = cp(i + 2);
            if (a == 's' || a == 't' || a == 'm' || a == 'd') {
                emit(i, i + 2);
                i += 2;
                continue;
            }
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
                emit(i, i + 3);
                i += 3;
                continue;
            }
        }
        // ` ?X+` for X = letters, numbers, other: an optional single space, then a run of X.
        const std::size_t s = (c == ' ' && i + 1 < n) ? i + 1 : i;
        auto run = [&](auto&& in_class) {
            if (!in_class(s)) return false;
            std::size_t j = s + 1;
            while (in_class(j)) ++j;
            emit(i, j);
            i = j;
            return true;
        };
        if (run([&](std::size_t k) { return k < n && is_letter(cps[k].cp); })) continue;
        if (run([&](std::size_t k) { return k < n && is_number(cps[k].cp); })) continue;
        if (run(other)) continue;
        // Whitespace: `\s+(?!\S)` takes the run but leaves its last character to a following
        // non-space (which then takes it as its ` ?` prefix when it is ' '); `\s+` takes a
        // single whitespace character before a non-space.
        std::size_t j = i;
        while (j < n && is_whitespace(cps[j].cp)) ++j;
        const std::size_t end = (j < n && j - i >= 2) ? j - 1 : j;
        emit(i, end);
        i = end;
    }
}

}  // namespace lmtk::tokenize::unicode
