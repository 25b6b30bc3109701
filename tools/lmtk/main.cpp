// lmtk: command-line front end. Every error reaches the user as one line and a non-zero exit.
#include "commands.hpp"

#include <lmtk/core/error.hpp>

#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string_view>

namespace {

struct subcommand {
    std::string_view name;
    int (*fn)(const lmtk::cli::argv_t&);
    std::string_view usage;
};

constexpr subcommand subcommands[] = {
    {"run", lmtk::cli::cmd_run,
     "run -m MODEL -p PROMPT [-n N] [--temp T] [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R] "
     "[--seed S] [-t THREADS] [-c CTX] [--kv-type f32|f16] [--stop STR]\n      stream a completion to stdout, timings to "
     "stderr (--temp 0: greedy)"},
    {"tokenize", lmtk::cli::cmd_tokenize,
     "tokenize -m MODEL [--no-bos] [--special] [--split SEP]\n      read text from stdin, print its token ids on one line (one per text with --split)"},
    {"eval", lmtk::cli::cmd_eval,
     "eval -m MODEL -p PROMPT --logits-out FILE [-t THREADS]\n      write n_tokens x n_vocab float32 logits"},
    {"perplexity", lmtk::cli::cmd_perplexity,
     "perplexity -m MODEL -f TEXT [-c CTX] [-t THREADS]\n      perplexity as llama.cpp defines it"},
    {"bench", lmtk::cli::cmd_bench,
     "bench -m MODEL [-p 128,512] [-n 64] [-t THREADS] [-r 5] [-o md|json]\n      llama-bench-like pp/tg tokens/s, "
     "bytes read per token and the share of read bandwidth"},
    {"gen-model", lmtk::cli::cmd_gen_model,
     "gen-model -o FILE [--shape medium|stories15m] [--type f16|q8_0|q4_0|f32|bf16] [--seed S] [--vocab GGUF]\n"
     "      write a random-weight Llama GGUF of a real shape, for benchmarks"},
    {"convert", lmtk::cli::cmd_convert,
     "convert DIR OUT.gguf [--type auto|f32|f16|bf16|q8_0|q4_0|...] [--name NAME]\n"
     "      Hugging Face checkpoint folder (safetensors + tokenizer.json) -> GGUF (llama)"},
    {"export-tokenizer", lmtk::cli::cmd_export_tokenizer,
     "export-tokenizer MODEL DIR\n      write DIR/tokenizer.json + tokenizer_config.json: a Hugging Face tokenizer that "
     "encodes as lmtk does"},
    {"render-template", lmtk::cli::cmd_render_template,
     "render-template TEMPLATE.jinja CONTEXTS.json\n      render a chat template for each context of a JSON list "
     "(messages, tools, add_generation_prompt, ...)"},
    {"quantize", lmtk::cli::cmd_quantize,
     "quantize IN.gguf OUT.gguf TYPE [-t THREADS] [--pure] [--allow-requantize]\n      convert the weights to TYPE: "
     "F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 IQ4_NL Q6_K, or a mix Q2_K Q3_K_S/M/L Q4_K_S/M Q5_K_S/M"},
#ifdef LMTK_CLI_HAVE_SERVE
    {"serve-model", lmtk::cli::cmd_serve,
     "serve-model MODEL [--host 127.0.0.1] [--port 8080] [-c CTX] [--parallel N] [-t N] [--max-queue N] [--alias NAME]\n"
     "      [--chat-template-file JINJA]\n"
     "      [--api-key KEY] [--NAME VALUE ...]   serve the OpenAI, Ollama and llama.cpp HTTP APIs"},
#endif
};

void usage(std::FILE* out) {
    std::fputs("usage: lmtk COMMAND [OPTIONS]\n\ncommands:\n", out);
    for (const auto& s : subcommands) std::fprintf(out, "  %.*s\n", int(s.usage.size()), s.usage.data());
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const std::string_view name = argv[1];
    lmtk::cli::argv_t rest(argv + 2, argv + argc);
    for (const auto& s : subcommands) {
        if (s.name != name) continue;
        try {
            return s.fn(rest);
        } catch (const lmtk::error& e) {
            std::fprintf(stderr, "error: %s\n", e.what());
        } catch (const std::bad_alloc&) {
            std::fprintf(stderr, "error: out of memory (the model or context is too large for this machine)\n");
        } catch (const std::exception& e) {
            std::fprintf(stderr, "error: %s\n", e.what());
        }
        return 1;
    }
    std::fprintf(stderr, "error: unknown command '%.*s'\n", int(name.size()), name.data());
    usage(stderr);
    return 2;
}
