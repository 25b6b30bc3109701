#pragma once
// What one generation is asked to do and what it yields, shared by the local pipeline, the
// server's engine and the remote models (no model, no HTTP here).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <lmtk/generate/timings.hpp>

namespace lmtk {

enum class finish_reason { none, end_of_text, stop_string, max_tokens, context_full };

constexpr std::string_view to_string(finish_reason r) noexcept {
    switch (r) {
        case finish_reason::none: return "none";
        case finish_reason::end_of_text: return "end_of_text";
        case finish_reason::stop_string: return "stop_string";
        case finish_reason::max_tokens: return "max_tokens";
        case finish_reason::context_full: return "context_full";
    }
    return "none";
}

struct generate_options {
    int max_tokens = 128;                 // < 0: until the context is full
    std::vector<std::string> stop;        // stop strings (not included in the output)
    std::optional<bool> add_bos;          // default: what the model's metadata says
    bool parse_special = false;           // turn "<s>"-like text in the prompt into control tokens
    bool ignore_eos = false;
    std::optional<std::uint64_t> seed;    // reseed the sampler's generator for this request
};

struct completion {
    std::string text;
    std::vector<std::int32_t> tokens;     // generated tokens (an end-of-generation token excluded)
    std::size_t n_prompt_tokens = 0;
    finish_reason finish = finish_reason::none;
    timings time;
};

}  // namespace lmtk
