#pragma once
// Turns token pieces into text that is safe to show: it holds back an incomplete UTF-8
// sequence (a character split across byte tokens) and any tail that could be the start of a
// stop string, and reports when a stop string has appeared. Text before a stop string is
// emitted; the stop string itself and anything after it are not.
#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace lmtk {

class text_stream {
public:
    text_stream() = default;
    explicit text_stream(std::vector<std::string> stops) : stops_(std::move(stops)) {
        stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
    }

    // Adds a piece; appends what may be shown now to `out`. Returns true when a stop string
    // has been seen (generation should end).
    bool push(std::string_view piece, std::string& out) {
        pending_.append(piece);
        std::size_t stop_at = std::string::npos;
        for (const auto& s : stops_) stop_at = std::min(stop_at, pending_.find(s));
        if (stop_at != std::string::npos) {
            out.append(pending_, 0, stop_at);
            pending_.clear();
            return true;
        }
        std::size_t safe = complete_utf8_prefix(pending_);
        for (const auto& s : stops_) {
            // Longest proper prefix of s that ends pending_.
            for (std::size_t k = std::min(s.size() - 1, pending_.size()); k > 0; --k) {
                if (std::string_view(pending_).substr(pending_.size() - k) == std::string_view(s).substr(0, k)) {
                    safe = std::min(safe, pending_.size() - k);
                    break;
                }
            }
        }
        out.append(pending_, 0, safe);
        pending_.erase(0, safe);
        return false;
    }

    // End of generation: whatever is still held back is shown (an incomplete UTF-8 tail too:
    // the bytes are the model's output).
    void flush(std::string& out) {
        out += pending_;
        pending_.clear();
    }

    // Length of the longest prefix of s that does not end inside a UTF-8 sequence.
    static std::size_t complete_utf8_prefix(std::string_view s) noexcept {
        const std::size_t n = s.size();
        // Look back at most 3 bytes for the lead byte of the last sequence.
        for (std::size_t back = 1; back <= std::min<std::size_t>(4, n); ++back) {
            const auto c = static_cast<unsigned char>(s[n - back]);
            if ((c & 0xC0) == 0x80) continue;  // continuation byte
            std::size_t len = 1;
            if ((c & 0xE0) == 0xC0) len = 2;
            else if ((c & 0xF0) == 0xE0) len = 3;
            else if ((c & 0xF8) == 0xF0) len = 4;
            return len > back ? n - back : n;
        }
        return n;
    }

private:
    std::vector<std::string> stops_;
    std::string pending_;
};

}  // namespace lmtk
