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
#include <lmtk/core/error.hpp>
#include <lmtk/generate/piece_iterator.hpp>
#include <lmtk/generate/text_stream.hpp>
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

struct pipeline_options {
    model::load_options load;
    model::context_options context;
    std::uint64_t seed = 0x6c6d746b;      // "lmtk"
};

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
        model_ = std::make_unique<model_type>(model_path, opt.load);
        tokenizer_ = std::make_unique<tokenizer_type>(tokenize::load_tokenizer(model_->source()));
        if (tokenizer_->size() != model_->n_vocab())
            fail(model_path, ": the tokenizer has ", tokenizer_->size(), " tokens but the model's vocabulary has ",
                 model_->n_vocab());
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
            : p_(&p), opt_(std::move(opt)), text_(opt_.stop) {
            prompt_ = p.tokenize(prompt, opt_);
            if (prompt_.empty()) fail("the prompt is empty and the model adds no BOS token: nothing to condition on");
            if (prompt_.size() >= p.context_->n_ctx())
                fail("the prompt has ", prompt_.size(), " tokens, which does not fit in the context of ",
                     p.context_->n_ctx(), " tokens (use a larger -c or a shorter prompt)");
            if (opt_.seed) p.gen_.reseed(*opt_.seed);
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
            while (finish_ == finish_reason::none) {
                if (!prompt_done_) evaluate_prompt();
                // The limit is checked before running the last sampled token: nobody needs
                // the logits that follow it.
                if (opt_.max_tokens >= 0 && tokens_.size() >= static_cast<std::size_t>(opt_.max_tokens)) {
                    end(finish_reason::max_tokens, out);
                    break;
                }
                if (last_ >= 0) {  // the last sampled token still has to be run
                    if (p_->context_->n_past() >= p_->context_->n_ctx()) {
                        end(finish_reason::context_full, out);
                        break;
                    }
                    const stopwatch sw;
                    p_->context_->decode(std::span(&last_, 1));
                    p_->cached_.push_back(last_);
                    p_->time_.eval_ms += sw.ms();
                    ++p_->time_.n_eval;
                    last_ = -1;
                }
                const std::int32_t tok = sample();
                if (!opt_.ignore_eos && p_->tokenizer_->is_eog(tok)) {
                    end(finish_reason::end_of_text, out);
                    break;
                }
                tokens_.push_back(tok);
                history_.push_back(tok);
                last_ = tok;
                if (text_.push(p_->tokenizer_->piece(tok), out)) {
                    end(finish_reason::stop_string, out);
                    break;
                }
                if (!out.empty()) return true;
            }
            return !out.empty();  // the flushed tail, if any; false from then on
        }

        finish_reason finish() const noexcept { return finish_; }
        const std::vector<std::int32_t>& tokens() const noexcept { return tokens_; }
        std::size_t n_prompt_tokens() const noexcept { return prompt_.size(); }

        // Input iteration: for (const std::string& piece : generation) ...
        using iterator = piece_iterator<generation>;
        iterator begin() { return iterator(this); }
        std::default_sentinel_t end() const noexcept { return {}; }

    private:
        void evaluate_prompt() {
            // Reuse the longest cached prefix; at least one token is run to get fresh logits.
            auto& cached = p_->cached_;
            std::size_t common = 0;
            while (common < cached.size() && common < prompt_.size() && cached[common] == prompt_[common]) ++common;
            if (common == prompt_.size()) --common;
            p_->context_->truncate(common);
            cached.resize(common);
            const stopwatch sw;
            p_->context_->decode(std::span(prompt_).subspan(common));
            p_->time_.prompt_ms += sw.ms();
            p_->time_.n_prompt += prompt_.size() - common;
            cached.insert(cached.end(), prompt_.begin() + std::ptrdiff_t(common), prompt_.end());
            history_ = prompt_;
            prompt_done_ = true;
        }

        std::int32_t sample() {
            const stopwatch sw;
            sample::context sc{history_, p_->gen_};
            const std::int32_t tok = p_->chain_(p_->context_->logits(), sc);
            p_->time_.sample_ms += sw.ms();
            ++p_->time_.n_sample;
            return tok;
        }

        void end(finish_reason why, std::string& out) {
            finish_ = why;
            text_.flush(out);
        }

        pipeline* p_;
        generate_options opt_;
        text_stream text_;
        std::vector<std::int32_t> prompt_, tokens_, history_;
        std::int32_t last_ = -1;
        bool prompt_done_ = false;
        finish_reason finish_ = finish_reason::none;
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
