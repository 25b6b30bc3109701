#pragma once
// The generation pipeline: a model format set x a compute target x a sampler chain, fixed at
// compile time, e.g.
//
//   using my_pipeline = lmtk::pipeline<lmtk::quant::default_set, lmtk::target::cpu<>,
//                                      lmtk::sample::chain<lmtk::sample::top_k, lmtk::sample::dist>>;
//   my_pipeline p("model.gguf");
//   for (const std::string& text : p.stream("Once upon a time", {.max_tokens = 64})) std::cout << text;
//
// Streaming comes as a pull iterator (`stream`) and as a callback (`generate`); both stop on
// end-of-generation tokens, a token limit, a stop string or a full context. A new prompt that
// extends the previous conversation reuses the cached prefix instead of evaluating it again.
// What a generation does is lmtk::sequence's (sequence.hpp); the pipeline runs its tokens.
#include <lmtk/core/error.hpp>
#include <lmtk/generate/completion.hpp>
#include <lmtk/generate/piece_iterator.hpp>
#include <lmtk/generate/sequence.hpp>
#include <lmtk/generate/timings.hpp>
#include <lmtk/model/llama.hpp>
#include <lmtk/sample/sample.hpp>
#include <lmtk/tokenize/load.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lmtk {

struct pipeline_options {
    model::load_options load;
    model::context_options context;
    std::uint64_t seed = 0x6c6d746b;      // "lmtk"
};

namespace detail {

// The model and its tokenizer, loaded and checked against each other: what pipeline and
// batch_pipeline both start from.
template <class Model>
void load_model_and_tokenizer(const std::string& path, const model::load_options& opt, std::unique_ptr<Model>& model,
                              std::unique_ptr<tokenize::tokenizer>& tok) {
    model = std::make_unique<Model>(path, opt);
    tok = std::make_unique<tokenize::tokenizer>(tokenize::load_tokenizer(model->source()));
    if (tok->size() != model->n_vocab())
        fail(path, ": the tokenizer has ", tok->size(), " tokens but the model's vocabulary has ", model->n_vocab());
}

}  // namespace detail

template <class Set, class Target, class Chain, class KV = model::kv_f32>
class pipeline {
public:
    using model_type = model::llama<Set, Target>;
    using context_type = model::llama_context<model_type, KV>;
    using tokenizer_type = tokenize::tokenizer;
    using sampler_type = Chain;

    explicit pipeline(const std::string& model_path, pipeline_options opt = {}, Chain chain = Chain{})
        : chain_(std::move(chain)), gen_(opt.seed) {
        const stopwatch load;
        detail::load_model_and_tokenizer(model_path, opt.load, model_, tokenizer_);
        context_ = std::make_unique<context_type>(*model_, opt.context);
        time_.load_ms = load.ms();
    }

    const model_type& model() const noexcept { return *model_; }
    context_type& context() noexcept { return *context_; }
    const tokenizer_type& tokenizer() const noexcept { return *tokenizer_; }
    Chain& sampler() noexcept { return chain_; }
    const timings& last_timings() const noexcept { return time_; }

    std::vector<std::int32_t> tokenize(std::string_view text, const generate_options& opt = {}) const {
        return tokenizer_->encode(text, opt.add_bos.value_or(tokenizer_->vocabulary().add_bos()), opt.parse_special);
    }

    // A generation in progress: call next() (or iterate) to get text as it is produced.
    class generation {
    public:
        generation(pipeline& p, std::string_view prompt, generate_options opt)
            : p_(&p), seq_(p.tokenize(prompt, opt), sequence_options{.max_tokens = opt.max_tokens,
                                                                     .stop = std::move(opt.stop),
                                                                     .ignore_eos = opt.ignore_eos}) {
            if (const std::string why = context_fit_error(seq_.prompt().size(), 1, p.context_->n_ctx()); !why.empty())
                fail(why, " (use a larger -c or a shorter prompt)");
            if (opt.seed) p.gen_.reseed(*opt.seed);
            const double load_ms = p.time_.load_ms;
            p.time_ = timings{};
            p.time_.load_ms = load_ms;
        }
        generation(const generation&) = delete;
        generation& operator=(const generation&) = delete;
        generation(generation&&) noexcept = default;
        generation& operator=(generation&&) noexcept = default;

        // Replaces `out` with the next piece of text; false once the generation has ended
        // and everything has been returned.
        bool next(std::string& out) {
            out.clear();
            auto& ctx = *p_->context_;
            const auto& tok = *p_->tokenizer_;
            while (!seq_.finished()) {
                if (!seq_.prompt_done()) {
                    evaluate_prompt();
                } else if (seq_.pending() >= 0) {
                    const stopwatch sw;
                    const std::int32_t t = seq_.pending();
                    ctx.decode(std::span(&t, 1));
                    seq_.ran_pending(p_->cached_);
                    p_->time_.eval_ms += sw.ms();
                    ++p_->time_.n_eval;
                }
                const stopwatch sw;
                seq_.step(ctx.logits(), p_->chain_, p_->gen_, [&](std::int32_t id) { return tok.piece(id); },
                          [&](std::int32_t id) { return tok.is_eog(id); }, ctx.n_past(), ctx.n_ctx(), out);
                p_->time_.sample_ms += sw.ms();
                ++p_->time_.n_sample;
                if (!out.empty()) return true;
            }
            return false;
        }

        finish_reason finish() const noexcept { return seq_.finish(); }
        const std::vector<std::int32_t>& tokens() const noexcept { return seq_.tokens(); }
        std::size_t n_prompt_tokens() const noexcept { return seq_.prompt().size(); }

        // Input iteration: for (const std::string& piece : generation) ...
        using iterator = piece_iterator<generation>;
        iterator begin() { return iterator(this); }
        std::default_sentinel_t end() const noexcept { return {}; }

    private:
        // The prompt in one pass after the cached prefix (the context splits it into batches).
        void evaluate_prompt() {
            p_->context_->truncate(seq_.begin(p_->cached_));
            const auto rest = seq_.unfed();
            const stopwatch sw;
            p_->context_->decode(rest);
            p_->time_.prompt_ms += sw.ms();
            p_->time_.n_prompt += rest.size();
            seq_.fed(rest.size(), p_->cached_);
        }

        pipeline* p_;
        sequence seq_;
    };

    generation stream(std::string_view prompt, generate_options opt = {}) { return generation(*this, prompt, std::move(opt)); }

    // Runs to the end, calling on_text(std::string_view) for each piece of text.
    template <class OnText>
    completion generate(std::string_view prompt, generate_options opt, OnText&& on_text) {
        generation g = stream(prompt, std::move(opt));
        completion c;
        c.text = read_all(g, on_text);
        c.tokens = g.tokens();
        c.n_prompt_tokens = g.n_prompt_tokens();
        c.finish = g.finish();
        c.time = time_;
        return c;
    }
    completion generate(std::string_view prompt, generate_options opt = {}) {
        return generate(prompt, std::move(opt), [](std::string_view) {});
    }

private:
    std::unique_ptr<model_type> model_;
    std::unique_ptr<tokenizer_type> tokenizer_;
    std::unique_ptr<context_type> context_;
    Chain chain_;
    sample::rng gen_;
    timings time_;
    std::vector<std::int32_t> cached_;  // tokens whose keys/values are in the context
};

}  // namespace lmtk
