// lmtk perplexity: llama.cpp's definition, so the numbers compare directly. The text is
// tokenized once with BOS; each chunk of CTX tokens starts with BOS (replacing its first
// token), is evaluated from an empty cache, and only its second half is scored: token j+1
// under the logits of position j, for j from CTX/2 to CTX-2.
#include "commands.hpp"
#include "common.hpp"

#include <cmath>
#include <vector>

namespace lmtk::cli {

int cmd_perplexity(const argv_t& argv) {
    const args a("perplexity", argv, {"-m|--model", "-f|--file", "-c|--ctx-size", "-t|--threads", "-b|--batch-size",
                                      "--kv-type", "--chunks", "--cpu"});
    const std::string text = read_file(a.require("-f"));
    return with_kv_type(a, [&]<class KV>() {
        const cli_model m(a.require("-m"), load_options_from(a));
        const auto tok = tokenize::load_tokenizer(m.source());
        const std::size_t n_ctx = a.number<std::size_t>("-c", 512);
        if (n_ctx < 8) fail("perplexity: -c must be at least 8");
        const bool add_bos = tok.vocabulary().add_bos();
        const auto tokens = tok.encode(text, add_bos);
        if (tokens.size() < 2 * n_ctx)
            fail("perplexity: the text has ", tokens.size(), " tokens; at least 2 * ", n_ctx, " = ", 2 * n_ctx,
                 " are needed (use a smaller -c or a longer text)");
        std::size_t n_chunk = tokens.size() / n_ctx;
        if (const auto limit = a.number<std::size_t>("--chunks", 0); limit) n_chunk = std::min(n_chunk, limit);

        model::context_options co = context_options_from(a, n_ctx);
        co.n_ctx = n_ctx;
        model::llama_context<cli_model, KV> ctx(m, co);
        const std::size_t n_vocab = m.n_vocab(), first = n_ctx / 2;
        std::vector<float> logits(n_ctx * n_vocab);
        std::vector<std::int32_t> chunk(n_ctx);
        double nll = 0.0, nll2 = 0.0;
        std::size_t count = 0;
        const stopwatch sw;
        std::fprintf(stderr, "lmtk: %zu tokens, %zu chunks of %zu, %zu threads\n", tokens.size(), n_chunk, n_ctx,
                     ctx.n_threads());
        for (std::size_t c = 0; c < n_chunk; ++c) {
            std::copy_n(tokens.begin() + std::ptrdiff_t(c * n_ctx), n_ctx, chunk.begin());
            if (add_bos) chunk[0] = tok.bos();
            ctx.truncate(0);
            ctx.decode(chunk, logits.data());
            for (std::size_t j = first; j + 1 < n_ctx; ++j) {
                const float* row = &logits[j * n_vocab];
                double mx = row[0];
                for (std::size_t v = 1; v < n_vocab; ++v) mx = std::max(mx, double(row[v]));
                double sum = 0.0;
                for (std::size_t v = 0; v < n_vocab; ++v) sum += std::exp(double(row[v]) - mx);
                const double l = -(double(row[chunk[j + 1]]) - mx - std::log(sum));
                nll += l;
                nll2 += l * l;
                ++count;
            }
            std::printf("[%zu]%.4f,", c + 1, std::exp(nll / double(count)));
            std::fflush(stdout);
        }
        const double mean = nll / double(count);
        const double var = nll2 / double(count) - mean * mean;
        const double err = count > 1 && var > 0 ? std::sqrt(var / double(count - 1)) : 0.0;
        const double ppl = std::exp(mean);
        std::printf("\nFinal estimate: PPL = %.4f +/- %.5f\n", ppl, ppl * err);
        std::fprintf(stderr, "lmtk: %zu positions scored in %.2f ms\n", count, sw.ms());
        return 0;
    });
}

}  // namespace lmtk::cli
