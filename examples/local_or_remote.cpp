// One function template drives a local model or one behind an OpenAI-compatible server:
//   local_or_remote --model FILE PROMPT
//   local_or_remote --remote http://127.0.0.1:PORT PROMPT      (e.g. from `lmtk serve-model FILE --port PORT`)
// Both decode greedily, so for the same model the two print the same text.
#include <lmtk/lmtk.hpp>
#include <lmtk/serve/remote.hpp>

#include <iostream>
#include <string>
#include <string_view>

using greedy_pipeline = lmtk::pipeline<lmtk::quant::default_set, lmtk::target::cpu<>, lmtk::sample::chain<lmtk::sample::greedy>>;

template <lmtk::text_generator G>
void complete(G& model, const std::string& prompt) {
    std::cout << prompt << std::flush;
    const lmtk::completion c =
        model.generate(prompt, {.max_tokens = 64}, [](std::string_view piece) { std::cout << piece << std::flush; });
    std::cout << '\n';
    std::cerr << "[" << lmtk::to_string(c.finish) << ", " << c.n_prompt_tokens << " prompt tokens]\n";
}

int main(int argc, char** argv) try {
    const std::string how = argc == 4 ? argv[1] : "";
    if (how != "--model" && how != "--remote") {
        std::cerr << "usage: local_or_remote --model FILE | --remote http://127.0.0.1:PORT  PROMPT\n";
        return 2;
    }
    if (how == "--model") {
        greedy_pipeline local(argv[2]);
        complete(local, argv[3]);
    } else {
        lmtk::remote_model remote(argv[2], {.sampling = {.temperature = 0.0f}});
        complete(remote, argv[3]);
    }
} catch (const lmtk::error& e) {
    std::cerr << "error: " << e.what() << '\n';
    return 1;
}
