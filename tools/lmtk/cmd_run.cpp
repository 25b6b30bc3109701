// lmtk run: stream a completion to stdout, timings to stderr.
#include "commands.hpp"
#include "common.hpp"

namespace lmtk::cli {

namespace {

template <class Chain, class KV>
int run_with(const args& a, Chain chain) {
    pipeline_options po;
    po.context = context_options_from(a);
    po.load = load_options_from(a);
    const bool random_seed = !a.has("--seed");
    po.seed = random_seed ? (std::uint64_t(std::random_device{}()) << 32) | std::random_device{}()
                          : a.number<std::uint64_t>("--seed", 0);
    pipeline<cli_set, cli_target, Chain, KV> p(a.require("-m"), po, std::move(chain));
    if (random_seed) std::fprintf(stderr, "lmtk: seed = %llu\n", static_cast<unsigned long long>(po.seed));

    generate_options g;
    g.max_tokens = a.number<int>("-n", -1);
    if (const auto s = a.get("--stop")) g.stop.push_back(*s);
    g.parse_special = a.has("--special");
    g.ignore_eos = a.has("--ignore-eos");
    std::string prompt = a.get("-p").value_or("");
    if (const auto file = a.get("-f")) prompt = read_file(*file);

    if (!a.has("--no-display-prompt")) {
        std::fwrite(prompt.data(), 1, prompt.size(), stdout);
        std::fflush(stdout);
    }
    const completion c = p.generate(prompt, g, [](std::string_view text) {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
    });
    std::fputc('\n', stdout);
    std::fflush(stdout);
    std::fprintf(stderr, "\nlmtk: %zu prompt tokens, %zu generated, finished by %.*s, %zu threads, kv %.*s\n",
                 c.n_prompt_tokens, c.tokens.size(), int(to_string(c.finish).size()), to_string(c.finish).data(),
                 p.context().n_threads(), int(KV::name.size()), KV::name.data());
    c.time.print(stderr);
    return 0;
}

}  // namespace

int cmd_run(const argv_t& argv) {
    const args a("run", argv,
                 {"-m|--model", "-p|--prompt", "-f|--file", "-n|--n-predict", "--temp", "--top-k", "--top-p", "--min-p",
                  "--repeat-penalty", "--repeat-last-n", "--seed|-s", "-t|--threads", "-c|--ctx-size", "-b|--batch-size",
                  "--kv-type", "--stop", "--cpu"},
                 {"--no-display-prompt", "--special", "--ignore-eos"});
    const float temp = a.number<float>("--temp", 0.8f);
    const sample::repetition_penalty penalty{a.number<float>("--repeat-penalty", 1.0f),
                                             a.number<std::int32_t>("--repeat-last-n", 64)};
    return with_kv_type(a, [&]<class KV>() {
        if (temp <= 0.0f) return run_with<greedy_chain, KV>(a, greedy_chain(penalty, sample::greedy{}));
        return run_with<sampling_chain, KV>(
            a, sampling_chain(penalty, sample::top_k{a.number<std::int32_t>("--top-k", 40)},
                              sample::top_p{a.number<float>("--top-p", 0.95f)},
                              sample::min_p{a.number<float>("--min-p", 0.05f)}, sample::temperature{temp},
                              sample::dist{}));
    });
}

}  // namespace lmtk::cli
