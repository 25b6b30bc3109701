// lmtk eval: run a prompt through the model and write every position's logits.
#include "commands.hpp"
#include "common.hpp"

#include <vector>

namespace lmtk::cli {

int cmd_eval(const argv_t& argv) {
    const args a("eval", argv, {"-m|--model", "-p|--prompt", "-f|--file", "--logits-out", "-t|--threads", "-c|--ctx-size",
                                "-b|--batch-size", "--kv-type", "--cpu"},
                 {"--no-bos", "--special", "--no-interleave"});
    const std::string out_path = a.require("--logits-out");
    return with_kv_type(a, [&]<class KV>() {
        const stopwatch load;
        const cli_model m(a.require("-m"), load_options_from(a));
        const auto tok = tokenize::load_tokenizer(m.source());
        std::string prompt = a.get("-p").value_or("");
        if (const auto file = a.get("-f")) prompt = read_file(*file);
        const auto ids = tok.encode(prompt, !a.has("--no-bos") && tok.vocabulary().add_bos(), a.has("--special"));
        if (ids.empty()) fail("eval: the prompt has no tokens");
        model::context_options co = context_options_from(a, ids.size());
        model::llama_context<cli_model, KV> ctx(m, co);
        const double load_ms = load.ms();

        std::vector<float> logits(ids.size() * m.n_vocab());
        const stopwatch sw;
        ctx.decode(ids, logits.data());
        const double eval_ms = sw.ms();

        std::FILE* f = std::fopen(out_path.c_str(), "wb");
        if (!f) fail(out_path, ": cannot open for writing");
        const bool ok = std::fwrite(logits.data(), sizeof(float), logits.size(), f) == logits.size();
        if (std::fclose(f) != 0 || !ok) fail(out_path, ": write failed");
        std::fprintf(stderr, "lmtk: wrote %zu x %u float32 logits to %s (load %.2f ms, eval %.2f ms)\n", ids.size(),
                     m.n_vocab(), out_path.c_str(), load_ms, eval_ms);
        return 0;
    });
}

}  // namespace lmtk::cli
