// One function template drives a local model or one behind a server, by a command-line flag:
//   local_or_remote --model FILE PROMPT
//   local_or_remote --remote http://127.0.0.1:PORT PROMPT         OpenAI-compatible endpoint
//   local_or_remote --lmtp 127.0.0.1:PORT TOKENIZER PROMPT        LMTP endpoint (LMQL's protocol)
// (servers e.g. from `lmtk serve-model FILE --port PORT`, which offers both endpoints). LMTP
// carries token ids, so that client tokenizes itself: TOKENIZER is the served model's file or
// folder (a vocabulary-only GGUF works too). All decode greedily, so for the same model the
// three print the same text.
#include <lmtk/lmtk.hpp>
#include <lmtk/client/remote.hpp>
#include <lmtk/client/remote_lmtp.hpp>

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
    const std::string how = argc >= 4 ? argv[1] : "";
    if (!((how == "--model" || how == "--remote") && argc == 4) && !(how == "--lmtp" && argc == 5)) {
        std::cerr << "usage: local_or_remote --model FILE PROMPT\n"
                     "       local_or_remote --remote http://127.0.0.1:PORT PROMPT\n"
                     "       local_or_remote --lmtp 127.0.0.1:PORT TOKENIZER PROMPT\n";
        return 2;
    }
    if (how == "--model") {
        greedy_pipeline local(argv[2]);
        complete(local, argv[3]);
    } else if (how == "--remote") {
        lmtk::remote_model remote(argv[2], {.sampling = {.temperature = 0.0f}});
        complete(remote, argv[3]);
    } else {
        lmtk::remote_lmtp_model remote(argv[2], lmtk::tokenize::load_tokenizer(argv[3]), {.temperature = 0.0f});
        complete(remote, argv[4]);
    }
} catch (const lmtk::error& e) {
    std::cerr << "error: " << e.what() << '\n';
    return 1;
}
