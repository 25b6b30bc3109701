#pragma once
// Timings of one generation, reported the way llama.cpp users read them.
#include <chrono>
#include <cstddef>
#include <cstdio>

namespace lmtk {

struct timings {
    double load_ms = 0.0;
    std::size_t n_prompt = 0;   // prompt tokens evaluated
    double prompt_ms = 0.0;
    std::size_t n_eval = 0;     // generated tokens evaluated one at a time
    double eval_ms = 0.0;
    std::size_t n_sample = 0;
    double sample_ms = 0.0;

    static double per_second(std::size_t n, double ms) noexcept { return ms > 0.0 ? 1e3 * double(n) / ms : 0.0; }
    double prompt_tokens_per_second() const noexcept { return per_second(n_prompt, prompt_ms); }
    double eval_tokens_per_second() const noexcept { return per_second(n_eval, eval_ms); }

    void print(std::FILE* out) const {
        auto line = [out](const char* what, double ms, std::size_t n, const char* unit) {
            if (n == 0) {
                std::fprintf(out, "lmtk: %16s = %10.2f ms\n", what, ms);
                return;
            }
            std::fprintf(out, "lmtk: %16s = %10.2f ms / %5zu %s (%8.2f ms per token, %8.2f tokens per second)\n", what, ms,
                         n, unit, ms / double(n), per_second(n, ms));
        };
        line("load time", load_ms, 0, "");
        line("sample time", sample_ms, n_sample, "runs  ");
        line("prompt eval time", prompt_ms, n_prompt, "tokens");
        line("eval time", eval_ms, n_eval, "runs  ");
        std::fprintf(out, "lmtk: %16s = %10.2f ms / %5zu tokens\n", "total time", load_ms + prompt_ms + eval_ms + sample_ms,
                     n_prompt + n_eval);
    }
};

// Milliseconds since construction (steady clock).
class stopwatch {
public:
    stopwatch() noexcept : start_(std::chrono::steady_clock::now()) {}
    double ms() const noexcept {
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
    }

private:
    std::chrono::steady_clock::time_point start_;
};

}  // namespace lmtk
