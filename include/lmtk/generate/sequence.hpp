#pragma once
// lmtk::sequence: the generation of one sequence, written once. The local pipeline drives one
// over its context; the server's engine drives one per slot, N of them batched in each forward
// pass. Everything that decides what a generation does lives here:
//
//   - the context-fit rule (fits_context): the only place that says whether a request can run;
//   - prefix reuse: the longest prefix of the prompt the cache already holds is kept, at least
//     one prompt token is run again so that there are fresh logits;
//   - prompt feeding in chunks of any size (unfed() / fed());
//   - one step per set of fresh logits: sample through the chain, log-probabilities when asked,
//     then the end rules in one order (end-of-generation token, stop string, token limit, full
//     context), and the text that is safe to show (text_stream: no half UTF-8 character, no
//     possible beginning of a stop string).
//
// The caller owns the model context and runs the tokens: the prompt tokens unfed() names, then
// after each step() that goes on, the token pending() names.
//
//   sequence seq(prompt, {.max_tokens = 64, .stop = {"\n"}});
//   ctx.truncate(seq.begin(cached));                 // cached: the tokens the cache holds
//   ctx.decode(seq.unfed()); seq.fed(seq.unfed().size(), cached);
//   std::string text;
//   while (seq.step(ctx.logits(), chain, gen, pieces, ctx.n_past(), ctx.n_ctx(), text)) {
//       ctx.decode({seq.pending()}); seq.ran_pending(cached);
//   }
#include <lmtk/core/error.hpp>
#include <lmtk/generate/completion.hpp>
#include <lmtk/generate/text_stream.hpp>
#include <lmtk/sample/sample.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace lmtk {

// The context-fit rule, the one place that says whether a request can run: its prompt and the
// tokens it must be able to generate fit in the context together. A generation needs room for
// one token (it then ends with context_full at the latest), LMTP's GENERATE for all of its
// max_tokens, scoring (the logits at every prompt position) for none.
constexpr bool fits_context(std::size_t n_prompt, std::size_t n_generate, std::size_t n_ctx) noexcept {
    return n_prompt > 0 && n_prompt <= n_ctx && n_generate <= n_ctx - n_prompt;
}

// Why a request does not fit, for error messages; empty when it does.
inline std::string context_fit_error(std::size_t n_prompt, std::size_t n_generate, std::size_t n_ctx) {
    if (fits_context(n_prompt, n_generate, n_ctx)) return {};
    if (n_prompt == 0) return "the prompt is empty (and the model adds no BOS token): nothing to condition on";
    if (n_generate <= 1)
        return detail::concat("the prompt has ", n_prompt, " tokens, which does not fit in the context of ", n_ctx,
                              " tokens", n_generate == 1 ? " with room for one generated token" : "");
    return detail::concat("the prompt (", n_prompt, " tokens) plus max_tokens (", n_generate, ") exceed the context of ",
                          n_ctx, " tokens");
}

// Log-probabilities of one token under the model's distribution: raw logits plus logit_bias,
// before temperature and truncation (what OpenAI and llama.cpp report).
struct token_logprobs {
    std::int32_t id = 0;
    float logprob = 0.0f;
    std::vector<std::pair<std::int32_t, float>> top;  // best first
};

// log_softmax over logits + bias: the chosen token and the k best.
inline token_logprobs logprobs_of(std::span<const float> logits, std::span<const sample::token_bias> bias,
                                  std::int32_t chosen, int k) {
    thread_local std::vector<float> z;
    z.assign(logits.begin(), logits.end());
    for (const sample::token_bias& b : bias)
        if (b.id >= 0 && static_cast<std::size_t>(b.id) < z.size()) z[std::size_t(b.id)] += b.bias;
    float mx = -std::numeric_limits<float>::infinity();
    for (float& v : z) {
        if (std::isnan(v)) v = -std::numeric_limits<float>::infinity();
        mx = std::max(mx, v);
    }
    double sum = 0.0;
    if (std::isfinite(mx))
        for (const float v : z) sum += std::exp(double(v) - mx);
    const double lse = std::isfinite(mx) ? mx + std::log(sum) : 0.0;
    auto lp = [&](std::int32_t id) {
        // JSON has no -inf: clamp to the most negative float, as llama.cpp does.
        const double v = double(z[std::size_t(id)]) - lse;
        return std::isfinite(v) ? static_cast<float>(v) : std::numeric_limits<float>::lowest();
    };
    token_logprobs out;
    out.id = chosen;
    out.logprob = lp(chosen);
    const std::size_t n = std::min<std::size_t>(static_cast<std::size_t>(std::max(k, 0)), z.size());
    if (n > 0) {
        thread_local std::vector<std::int32_t> ids;
        ids.resize(z.size());
        for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>(i);
        std::partial_sort(ids.begin(), ids.begin() + std::ptrdiff_t(n), ids.end(), [&](std::int32_t a, std::int32_t b) {
            return z[std::size_t(a)] > z[std::size_t(b)] || (z[std::size_t(a)] == z[std::size_t(b)] && a < b);
        });
        for (std::size_t i = 0; i < n; ++i) out.top.emplace_back(ids[i], lp(ids[i]));
    }
    return out;
}

struct sequence_options {
    int max_tokens = -1;                   // < 0: until the context is full
    std::vector<std::string> stop;         // stop strings (not included in the text)
    bool ignore_eos = false;
    int top_logprobs = -1;                 // < 0: none; else that many alternatives per token
    std::span<const sample::token_bias> logit_bias;  // added before the logprobs are taken (it outlives the sequence)
};

class sequence {
public:
    static constexpr std::size_t no_limit = static_cast<std::size_t>(-1);

    sequence(std::span<const std::int32_t> prompt, sequence_options opt)
        : prompt_(prompt.begin(), prompt.end()), opt_(std::move(opt)), text_(opt_.stop), history_(prompt_) {}

    // ---- the prompt ----------------------------------------------------------------------------
    // Keeps the longest prefix of the prompt that `cached` (the tokens the cache holds, in
    // order) already has, at most `keep_limit` tokens and never the whole prompt; cuts `cached`
    // to it and returns its length: the caller truncates its cache to the same length.
    std::size_t begin(std::vector<std::int32_t>& cached, std::size_t keep_limit = no_limit) {
        std::size_t common = 0;
        while (common < cached.size() && common < prompt_.size() && cached[common] == prompt_[common]) ++common;
        if (common == prompt_.size() && common > 0) --common;  // fresh logits need one token run
        common = std::min(common, keep_limit);
        cached.resize(common);
        fed_ = n_cached_ = common;
        return common;
    }

    // Prompt tokens not yet in the cache; fed(n) records that the first n of them went in.
    std::span<const std::int32_t> unfed() const noexcept { return std::span(prompt_).subspan(fed_); }
    void fed(std::size_t n, std::vector<std::int32_t>& cached) {
        cached.insert(cached.end(), prompt_.begin() + std::ptrdiff_t(fed_), prompt_.begin() + std::ptrdiff_t(fed_ + n));
        fed_ += n;
    }
    bool prompt_done() const noexcept { return fed_ == prompt_.size(); }
    std::size_t n_fed() const noexcept { return fed_; }
    std::size_t n_cached() const noexcept { return n_cached_; }
    const std::vector<std::int32_t>& prompt() const noexcept { return prompt_; }

    // ---- generation --------------------------------------------------------------------------
    // One step from fresh logits (those after the whole prompt, or after pending()): samples a
    // token through `chain`, applies the end rules and appends the text that may be shown now
    // to `out`. `piece(id)` gives a token's bytes and `is_eog(id)` whether it ends generation;
    // `n_past` is how many tokens the cache holds. Returns true while the generation goes on:
    // then pending() is the token to run next.
    template <class Chain, class Piece, class IsEog>
    bool step(std::span<const float> logits, Chain& chain, sample::rng& gen, Piece&& piece, IsEog&& is_eog,
              std::size_t n_past, std::size_t n_ctx, std::string& out) {
        pending_ = -1;
        if (reached_limit()) return end(finish_reason::max_tokens, out);  // max_tokens 0: nothing is sampled
        sample::context sc{history_, gen};
        const std::int32_t tok = chain(logits, sc);
        std::optional<token_logprobs> lp;
        if (opt_.top_logprobs >= 0) lp = logprobs_of(logits, opt_.logit_bias, tok, opt_.top_logprobs);
        if (!opt_.ignore_eos && is_eog(tok)) {
            end_token_ = lp ? std::move(*lp) : token_logprobs{tok, 0.0f, {}};
            return end(finish_reason::end_of_text, out);
        }
        tokens_.push_back(tok);
        history_.push_back(tok);
        if (lp) logprobs_.push_back(std::move(*lp));
        if (text_.push(piece(tok), out)) return end(finish_reason::stop_string, out);
        // The limits are checked before the token just sampled is run: nobody needs the logits
        // that would follow it.
        if (reached_limit()) return end(finish_reason::max_tokens, out);
        if (n_past >= n_ctx) return end(finish_reason::context_full, out);
        pending_ = tok;
        return true;
    }

    // The sampled token still to be run through the model; -1 when none.
    std::int32_t pending() const noexcept { return pending_; }
    // The pending token went through the model.
    void ran_pending(std::vector<std::int32_t>& cached) {
        cached.push_back(pending_);
        pending_ = -1;
    }

    // Ends the generation from outside (a client that left: finish_reason::none); flushes the
    // text held back into `out`.
    bool end(finish_reason why, std::string& out) {
        if (finish_ == finish_reason::none) finish_ = why;
        text_.flush(out);
        pending_ = -1;
        return false;
    }

    bool finished() const noexcept { return finish_ != finish_reason::none; }
    finish_reason finish() const noexcept { return finish_; }
    const std::vector<std::int32_t>& tokens() const noexcept { return tokens_; }
    const std::vector<std::int32_t>& history() const noexcept { return history_; }
    // Per generated token when top_logprobs >= 0; the end-of-generation token that ended the
    // generation is not among them but in end_token() (LMTP reports it, the text APIs do not).
    const std::vector<token_logprobs>& logprobs() const noexcept { return logprobs_; }
    const std::optional<token_logprobs>& end_token() const noexcept { return end_token_; }
    const sequence_options& options() const noexcept { return opt_; }

private:
    bool reached_limit() const noexcept {
        return opt_.max_tokens >= 0 && tokens_.size() >= static_cast<std::size_t>(opt_.max_tokens);
    }

    std::vector<std::int32_t> prompt_;
    sequence_options opt_;
    text_stream text_;
    std::vector<std::int32_t> history_;    // prompt and generated tokens: what penalties look at
    std::vector<std::int32_t> tokens_;
    std::vector<token_logprobs> logprobs_;
    std::optional<token_logprobs> end_token_;
    std::size_t fed_ = 0, n_cached_ = 0;
    std::int32_t pending_ = -1;
    finish_reason finish_ = finish_reason::none;
};

}  // namespace lmtk
