#pragma once
// Many prompts, one model, one forward pass per step for all of them: the library's batch
// generation, the same pipeline type as lmtk::pipeline with the same one-line `using`:
//
//   using my_batch = lmtk::batch_pipeline<lmtk::quant::default_set, lmtk::target::cpu<>,
//                                         lmtk::sample::chain<lmtk::sample::top_k, lmtk::sample::dist>>;
//   my_batch b("model.gguf", {.context = {.n_ctx = 512, .n_seq = 8}});
//   std::vector<lmtk::completion> out = b.generate(prompts, {.max_tokens = 64});
//
// Up to context.n_seq prompts run together, each in a sequence of the context with its own KV
// cache; their rows go through the network in one decode_batch() per step, so the weights are
// read once per step for all of them (decode is bound by reading weights: N sequences cost
// little more than one). A prompt that ends frees its sequence for the next one. Each prompt
// is an lmtk::sequence (sequence.hpp): the same end rules, stop strings and text as the
// single pipeline, with its own copy of the sampler chain and its own generator, seeded from
// the options' seed plus the prompt's index, so a prompt's result does not depend on which
// others share its batch (up to float rounding of the batched arithmetic).
#include <lmtk/core/error.hpp>
#include <lmtk/generate/completion.hpp>
#include <lmtk/generate/pipeline.hpp>
#include <lmtk/generate/sequence.hpp>
#include <lmtk/generate/timings.hpp>
#include <lmtk/model/llama.hpp>
#include <lmtk/sample/sample.hpp>
#include <lmtk/tokenize/load.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lmtk {

template <class Set, class Target, class Chain, class KV = model::kv_f32>
class batch_pipeline {
public:
    using model_type = model::llama<Set, Target>;
    using context_type = model::llama_context<model_type, KV>;
    using tokenizer_type = tokenize::tokenizer;
    using sampler_type = Chain;

    // context.n_seq is the number of prompts run together (at least 1).
    explicit batch_pipeline(const std::string& model_path, pipeline_options opt = {}, Chain chain = Chain{})
        : chain_(std::move(chain)), seed_(opt.seed) {
        const stopwatch load;
        detail::load_model_and_tokenizer(model_path, opt.load, model_, tokenizer_);
        opt.context.n_seq = std::max<std::size_t>(1, opt.context.n_seq);
        context_ = std::make_unique<context_type>(*model_, opt.context);
        time_.load_ms = load.ms();
    }

    const model_type& model() const noexcept { return *model_; }
    context_type& context() noexcept { return *context_; }
    const tokenizer_type& tokenizer() const noexcept { return *tokenizer_; }
    // The last generate() call's totals over all its prompts.
    const timings& last_timings() const noexcept { return time_; }

    // One completion per prompt, in the prompts' order.
    std::vector<completion> generate(std::span<const std::string> prompts, const generate_options& opt = {}) {
        return generate(prompts, opt, [](std::size_t, std::string_view) {});
    }

    // As above, calling on_text(prompt_index, piece) as each prompt's text is produced (the
    // pieces of different prompts interleave).
    template <class OnText>
    std::vector<completion> generate(std::span<const std::string> prompts, const generate_options& opt, OnText&& on_text) {
        context_type& ctx = *context_;
        const tokenizer_type& tok = *tokenizer_;
        const double load_ms = time_.load_ms;
        time_ = timings{};
        time_.load_ms = load_ms;

        // Every prompt is tokenized and checked before any runs: one that cannot fit fails the
        // call at once, not after the others have been generated.
        std::vector<std::vector<std::int32_t>> ids(prompts.size());
        for (std::size_t i = 0; i < prompts.size(); ++i) {
            ids[i] = tok.encode(prompts[i], opt.add_bos.value_or(tok.vocabulary().add_bos()), opt.parse_special);
            if (const std::string why = context_fit_error(ids[i].size(), 1, ctx.n_ctx()); !why.empty())
                fail("prompt ", i, ": ", why, " (use a larger n_ctx or a shorter prompt)");
        }

        struct running {
            std::size_t index, slot;
            sequence seq;
            Chain chain;
            sample::rng gen;
            std::vector<std::int32_t> cached;  // what this slot's cache holds
            std::string text;
        };
        std::vector<completion> out(prompts.size());
        std::vector<running> live;
        std::vector<std::size_t> free_slots;
        for (std::size_t s = ctx.n_seq(); s-- > 0;) free_slots.push_back(s);
        std::size_t next = 0;
        const std::uint64_t seed = opt.seed.value_or(seed_);
        const sequence_options seq_opt{.max_tokens = opt.max_tokens, .stop = opt.stop, .ignore_eos = opt.ignore_eos,
                                       .top_logprobs = -1, .logit_bias = {}};
        std::vector<model::batch_entry> batch;
        std::vector<float> logits;
        std::string piece;

        while (next < prompts.size() || !live.empty()) {
            // Start prompts in the free sequences.
            while (next < prompts.size() && !free_slots.empty()) {
                const std::size_t slot = free_slots.back();
                free_slots.pop_back();
                ctx.truncate(0, slot);
                live.push_back(running{next, slot, sequence(ids[next], seq_opt), chain_, sample::rng(seed + next), {}, {}});
                live.back().seq.begin(live.back().cached);
                ++next;
            }
            // One row per sequence that has a token to run; the prompt rows of a new sequence
            // all go in, and only its last asks for logits.
            batch.clear();
            std::size_t n_prompt_rows = 0;
            for (running& r : live) {
                const auto slot = static_cast<std::uint32_t>(r.slot);
                if (!r.seq.prompt_done()) {
                    const auto rest = r.seq.unfed();
                    for (std::size_t k = 0; k < rest.size(); ++k) batch.push_back({rest[k], slot, k + 1 == rest.size()});
                    n_prompt_rows += rest.size();
                    r.seq.fed(rest.size(), r.cached);
                } else {
                    batch.push_back({r.seq.pending(), slot, true});
                    r.seq.ran_pending(r.cached);
                }
            }
            logits.resize(live.size() * std::size_t{model_->n_vocab()});
            const stopwatch sw;
            ctx.decode_batch(batch, logits.data());
            const double ms = sw.ms();
            // Time split between prompt and generated rows in proportion to their counts.
            const double prompt_share = batch.empty() ? 0.0 : double(n_prompt_rows) / double(batch.size());
            time_.prompt_ms += ms * prompt_share;
            time_.eval_ms += ms * (1.0 - prompt_share);
            time_.n_prompt += n_prompt_rows;
            time_.n_eval += batch.size() - n_prompt_rows;

            // One step of each sequence from its row of logits, in the order the rows were asked.
            const stopwatch ss;
            for (std::size_t k = 0; k < live.size(); ++k) {
                running& r = live[k];
                piece.clear();
                const std::span<const float> row(logits.data() + k * model_->n_vocab(), model_->n_vocab());
                r.seq.step(row, r.chain, r.gen, [&](std::int32_t id) { return tok.piece(id); },
                           [&](std::int32_t id) { return tok.is_eog(id); }, ctx.n_past(r.slot), ctx.n_ctx(), piece);
                ++time_.n_sample;
                if (!piece.empty()) {
                    r.text += piece;
                    on_text(r.index, std::string_view(piece));
                }
            }
            time_.sample_ms += ss.ms();
            // Finished sequences hand their slot on.
            for (std::size_t k = 0; k < live.size();) {
                running& r = live[k];
                if (!r.seq.finished()) {
                    ++k;
                    continue;
                }
                completion& c = out[r.index];
                c.text = std::move(r.text);
                c.tokens = r.seq.tokens();
                c.n_prompt_tokens = r.seq.prompt().size();
                c.finish = r.seq.finish();
                free_slots.push_back(r.slot);
                live.erase(live.begin() + std::ptrdiff_t(k));
            }
        }
        for (completion& c : out) c.time = time_;
        return out;
    }

private:
    std::unique_ptr<model_type> model_;
    std::unique_ptr<tokenizer_type> tokenizer_;
    std::unique_ptr<context_type> context_;
    Chain chain_;
    std::uint64_t seed_;
    timings time_;
};

}  // namespace lmtk
