#pragma once
// lmtk::piece_iterator<G>: input iteration over a generation that hands out text with
// `bool next(std::string& out)` (false once it has ended), so that
//   for (const std::string& piece : g.stream(prompt, opt)) ...
// reads the same for a local pipeline's generation and the remote ones; read_all() is the loop
// their generate() shares.
#include <cstddef>
#include <iterator>
#include <string>
#include <string_view>

namespace lmtk {

template <class G>
class piece_iterator {
public:
    using value_type = std::string;
    using difference_type = std::ptrdiff_t;
    piece_iterator() = default;
    explicit piece_iterator(G* g) : g_(g) { ++*this; }
    const std::string& operator*() const noexcept { return cur_; }
    piece_iterator& operator++() {
        if (g_ && !g_->next(cur_)) g_ = nullptr;
        return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(std::default_sentinel_t) const noexcept { return g_ == nullptr; }

private:
    G* g_ = nullptr;
    std::string cur_;
};

// Reads g to its end, handing each piece to on_text(std::string_view); returns all the text.
template <class G, class OnText>
std::string read_all(G& g, OnText&& on_text) {
    std::string text, piece;
    while (g.next(piece)) {
        text += piece;
        on_text(std::string_view(piece));
    }
    return text;
}

}  // namespace lmtk
