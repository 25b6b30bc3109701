#pragma once
// lmtk::tokenize::special_matcher: finds special-token texts ("<s>", "<|im_end|>") in input
// text, so a tokenizer can emit their ids directly and run its algorithm only on the text between.
//
// Matching is leftmost first and, at one position, longest first: "<|end|>" inside
// "<|endoftext|>" is never split out when both are special.
#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::tokenize {

class special_matcher {
public:
    // Empty texts are ignored: they would match everywhere. Appended in any order (split()
    // picks the longest hit itself): keeping a bucket sorted on insertion cost a scan and a
    // shift per token, quadratic in a vocabulary that marks 10^5 tokens user-defined.
    void add(std::string_view text, std::int32_t id) {
        if (text.empty()) return;
        by_first_byte_[static_cast<unsigned char>(text[0])].push_back(entry{std::string(text), id});
        ++count_;
    }
    bool empty() const noexcept { return count_ == 0; }

    // Calls on_text(std::string_view) for each non-empty stretch of ordinary text and
    // on_special(std::int32_t) for each special token, in input order.
    template <class OnText, class OnSpecial>
    void split(std::string_view s, OnText&& on_text, OnSpecial&& on_special) const {
        if (empty()) {
            if (!s.empty()) on_text(s);
            return;
        }
        std::size_t text_start = 0;
        std::size_t i = 0;
        while (i < s.size()) {
            const auto& bucket = by_first_byte_[static_cast<unsigned char>(s[i])];
            // Longest match at i; among equal texts the first added, as a vocabulary's first id wins.
            const entry* hit = nullptr;
            for (const entry& e : bucket)
                if ((!hit || e.text.size() > hit->text.size()) && s.substr(i, e.text.size()) == e.text) hit = &e;
            if (!hit) { ++i; continue; }
            if (i > text_start) on_text(s.substr(text_start, i - text_start));
            on_special(hit->id);
            i += hit->text.size();
            text_start = i;
        }
        if (text_start < s.size()) on_text(s.substr(text_start));
    }

private:
    struct entry {
        std::string text;
        std::int32_t id;
    };
    std::array<std::vector<entry>, 256> by_first_byte_;
    std::size_t count_ = 0;
};

}  // namespace lmtk::tokenize
