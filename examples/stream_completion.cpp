// Loads a GGUF model and streams a completion:  stream_completion MODEL [PROMPT]
#include <lmtk/lmtk.hpp>

#include <iostream>

namespace s = lmtk::sample;
using sampler = s::chain<s::top_k, s::min_p, s::temperature, s::dist>;
using pipeline = lmtk::pipeline<lmtk::quant::default_set, lmtk::target::cpu<>, sampler>;

int main(int argc, char** argv) try {
    if (argc < 2) {
        std::cerr << "usage: stream_completion MODEL [PROMPT]\n";
        return 2;
    }
    pipeline p(argv[1], {}, sampler(s::top_k{40}, s::min_p{0.05f}, s::temperature{0.8f}, s::dist{}));
    const std::string prompt = argc > 2 ? argv[2] : "Once upon a time";
    std::cout << prompt;
    for (const std::string& text : p.stream(prompt, {.max_tokens = 100})) std::cout << text << std::flush;
    std::cout << '\n';
    p.last_timings().print(stderr);
} catch (const lmtk::error& e) {
    std::cerr << "error: " << e.what() << '\n';
    return 1;
}
