#pragma once
// The serving engine: N slots over one model, a bounded wait queue, and the per-request
// generation loop the HTTP front ends share. No HTTP or JSON here.
//
//   engine<Model, KV> e(model, tokenizer, {.n_slots = 4, .max_queue = 32, .context = ...});
//   auto t = e.enter();                      // throws queue_full when too many are waiting
//   auto lease = t.wait([&] { return client_still_there(); });   // nullopt: given up
//   result r = e.run(*lease, request, [&](std::string_view text, std::span<const token_logprobs>) {
//       return send(text);                   // false: the client is gone, stop generating
//   });
//
// Each slot owns a llama_context (KV cache + scratch) over the shared, read-only model, its
// own sampler chain and generator, and remembers which tokens its cache holds, so a request
// that extends an earlier one (a chat's next turn) only evaluates the new tokens. A free slot
// whose cache shares the longest prefix with the prompt is preferred.
//
// Slots run concurrently, each request on its caller's thread (every context has its own
// thread pool). They do not share a forward pass yet: that needs a batched decode in the
// model (see the report of issue 5 / decode_batch).
#include <lmtk/core/error.hpp>
#include <lmtk/generate/pipeline.hpp>
#include <lmtk/generate/text_stream.hpp>
#include <lmtk/generate/timings.hpp>
#include <lmtk/model/llama.hpp>
#include <lmtk/sample/sample.hpp>
#include <lmtk/tokenize/load.hpp>
#include <lmtk/tokenize/tokenize.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace lmtk::serve {

namespace s = lmtk::sample;

// Whatever tokenizer type the model's source yields (load_tokenizer decides per file).
using tokenizer_t = std::remove_cvref_t<decltype(tokenize::load_tokenizer(std::declval<const model::weight_source&>()))>;

// The one chain every slot runs; a request sets each stage's parameters. Order as llama.cpp:
// bias, penalties, top-k, top-p, min-p, temperature, draw. temperature <= 0 leaves only the
// argmax, so the draw is then greedy.
using server_chain = s::chain<s::logit_bias, s::repetition_penalty, s::top_k, s::top_p, s::min_p, s::temperature, s::dist>;

struct sampling_params {
    float temperature = 0.8f;
    std::int32_t top_k = 40;
    float top_p = 0.95f;
    float min_p = 0.05f;
    float repeat_penalty = 1.0f;
    std::int32_t repeat_last_n = 64;
    float presence_penalty = 0.0f;
    float frequency_penalty = 0.0f;
    std::vector<s::token_bias> logit_bias;
    std::optional<std::uint64_t> seed;  // none: the slot's generator continues
};

struct request {
    std::vector<std::int32_t> prompt;   // token ids, BOS included when wanted
    int max_tokens = -1;                // < 0: until the context is full
    std::vector<std::string> stop;
    bool ignore_eos = false;
    sampling_params sampling;
    int top_logprobs = -1;              // < 0: no logprobs; else that many alternatives per token
};

// Log-probabilities of one generated token under the model's distribution (raw logits plus
// logit_bias, before temperature and truncation: what OpenAI and llama.cpp report).
struct token_logprobs {
    std::int32_t id = 0;
    float logprob = 0.0f;
    std::vector<std::pair<std::int32_t, float>> top;  // best first
};

struct result {
    std::string text;
    std::vector<std::int32_t> tokens;      // generated, an end-of-generation token excluded
    std::vector<token_logprobs> logprobs;  // per generated token when requested
    std::size_t n_prompt = 0;              // prompt tokens
    std::size_t n_cached = 0;              // of which came from the slot's cache
    finish_reason finish = finish_reason::none;
    bool cancelled = false;                // the callback asked to stop
    double prompt_ms = 0.0, eval_ms = 0.0, total_ms = 0.0;
    std::size_t slot = 0;
};

struct engine_options {
    std::size_t n_slots = 1;
    std::size_t max_queue = 32;            // requests waiting for a slot beyond the running ones
    model::context_options context;
    std::uint64_t seed = 0x6c6d746b;
};

class queue_full : public error {
public:
    using error::error;
};

template <class Model, class KV = model::kv_f32>
class engine {
public:
    using context_type = model::llama_context<Model, KV>;

    struct slot {
        slot(const Model& m, const model::context_options& o, std::uint64_t seed) : ctx(m, o), gen(seed) {}
        context_type ctx;
        server_chain chain;
        s::rng gen;
        std::vector<std::int32_t> cached;  // tokens whose keys/values ctx holds, in order
        std::size_t index = 0;
        bool busy = false;
    };

    engine(const Model& m, const tokenizer_t& tok, engine_options opt)
        : m_(m), tok_(tok), opt_(std::move(opt)) {
        if (opt_.n_slots == 0) fail("the server needs at least one slot (--parallel 1)");
        for (std::size_t i = 0; i < opt_.n_slots; ++i) {
            slots_.push_back(std::make_unique<slot>(m, opt_.context, opt_.seed + 0x9e3779b97f4a7c15ull * (i + 1)));
            slots_.back()->index = i;
        }
    }

    const Model& model() const noexcept { return m_; }
    const tokenizer_t& tokenizer() const noexcept { return tok_; }
    std::size_t n_ctx() const noexcept { return slots_.front()->ctx.n_ctx(); }
    std::size_t n_slots() const noexcept { return slots_.size(); }
    std::size_t n_threads_per_slot() const noexcept { return slots_.front()->ctx.n_threads(); }
    const engine_options& options() const noexcept { return opt_; }

    // Requests admitted (running or waiting) and requests generating right now.
    std::size_t n_admitted() const {
        std::lock_guard lock(mu_);
        return admitted_;
    }
    std::size_t n_busy() const {
        std::lock_guard lock(mu_);
        return busy_;
    }

    // ---- admission: a ticket holds a place in line; a lease holds a slot ---------------------
    class lease {
    public:
        lease(engine* e, slot* s) : e_(e), s_(s) {}
        lease(lease&& o) noexcept : e_(std::exchange(o.e_, nullptr)), s_(std::exchange(o.s_, nullptr)) {}
        lease& operator=(lease&&) = delete;
        ~lease() {
            if (e_) e_->release(s_);
        }
        slot& operator*() const noexcept { return *s_; }
        slot* operator->() const noexcept { return s_; }

    private:
        engine* e_;
        slot* s_;
    };

    class ticket {
    public:
        explicit ticket(engine* e, std::uint64_t id) : e_(e), id_(id) {}
        ticket(ticket&& o) noexcept : e_(std::exchange(o.e_, nullptr)), id_(o.id_) {}
        ticket& operator=(ticket&&) = delete;
        ~ticket() {
            if (e_) e_->leave(id_);
        }
        // Blocks until a slot is ours (in arrival order), preferring the free slot whose cache
        // shares most of `prompt`. `still_wanted` is polled a few times a second while waiting:
        // a client that hung up gives its place away. nullopt when it did.
        std::optional<lease> wait(std::span<const std::int32_t> prompt, const std::function<bool()>& still_wanted) {
            return e_->wait_for_slot(id_, prompt, still_wanted);
        }

    private:
        engine* e_;
        std::uint64_t id_;
    };

    // Admits a request or throws queue_full (the HTTP layer answers 503).
    ticket enter() {
        std::lock_guard lock(mu_);
        if (admitted_ >= slots_.size() + opt_.max_queue)
            throw queue_full(lmtk::detail::concat("the server is busy: ", slots_.size(), " requests are running and ",
                                            admitted_ - std::min(admitted_, slots_.size()),
                                            " are waiting (limit ", opt_.max_queue, "); retry later"));
        ++admitted_;
        const std::uint64_t id = next_id_++;
        line_.push_back(id);
        return ticket(this, id);
    }

    // ---- generation ---------------------------------------------------------------------------
    using on_text_fn = std::function<bool(std::string_view text, std::span<const token_logprobs> lp)>;

    // Runs one request on a leased slot. on_text gets each piece of text that is safe to show
    // (never inside a UTF-8 character or a possible stop string) with the logprobs of the
    // tokens generated since the previous call; returning false stops generation
    // (result.cancelled). Throws lmtk::error for a prompt that does not fit.
    result run(slot& sl, const request& rq, const on_text_fn& on_text) {
        const stopwatch total;
        result r;
        r.slot = sl.index;
        r.n_prompt = rq.prompt.size();
        if (rq.prompt.empty()) fail("the prompt is empty and the model adds no BOS token: nothing to condition on");
        if (rq.prompt.size() >= sl.ctx.n_ctx())
            fail("the prompt has ", rq.prompt.size(), " tokens, which does not fit in the context of ", sl.ctx.n_ctx(),
                 " tokens");
        for (const std::int32_t t : rq.prompt)
            if (t < 0 || static_cast<std::size_t>(t) >= tok_.size())
                fail("token id ", t, " is outside the vocabulary of ", tok_.size());
        configure(sl, rq.sampling);
        try {
            generate(sl, rq, on_text, r);
        } catch (...) {
            // Whatever the context holds now is not known to match `cached`: start over next time.
            sl.ctx.truncate(0);
            sl.cached.clear();
            throw;
        }
        r.total_ms = total.ms();
        return r;
    }

private:
    void configure(slot& sl, const sampling_params& p) {
        sl.chain.template get<s::logit_bias>().biases = p.logit_bias;
        auto& pen = sl.chain.template get<s::repetition_penalty>();
        pen.penalty = p.repeat_penalty > 0.0f ? p.repeat_penalty : 1.0f;
        pen.last_n = p.repeat_last_n;
        pen.presence = p.presence_penalty;
        pen.frequency = p.frequency_penalty;
        sl.chain.template get<s::top_k>().k = p.top_k;
        sl.chain.template get<s::top_p>().p = p.top_p;
        sl.chain.template get<s::min_p>().p = p.min_p;
        sl.chain.template get<s::temperature>().value = p.temperature;
        if (p.seed) sl.gen.reseed(*p.seed);
    }

    // Evaluates the prompt (reusing the cached prefix), then samples until a stop condition.
    void generate(slot& sl, const request& rq, const on_text_fn& on_text, result& r) {
        const auto& prompt = rq.prompt;
        std::size_t common = 0;
        while (common < sl.cached.size() && common < prompt.size() && sl.cached[common] == prompt[common]) ++common;
        if (common == prompt.size()) --common;  // run at least one token to get fresh logits
        sl.ctx.truncate(common);
        sl.cached.resize(common);
        r.n_cached = common;

        // The prompt goes in pieces so that a client who leaves during a long prefill is noticed.
        const stopwatch prefill;
        constexpr std::size_t piece = 256;
        for (std::size_t at = common; at < prompt.size(); at += piece) {
            const std::size_t n = std::min(piece, prompt.size() - at);
            sl.ctx.decode(std::span(prompt).subspan(at, n));
            sl.cached.insert(sl.cached.end(), prompt.begin() + std::ptrdiff_t(at), prompt.begin() + std::ptrdiff_t(at + n));
            if (at + n < prompt.size() && !on_text({}, {})) {
                r.cancelled = true;
                r.prompt_ms = prefill.ms();
                return;
            }
        }
        r.prompt_ms = prefill.ms();

        text_stream text(rq.stop);
        std::vector<std::int32_t> history = prompt;
        std::vector<token_logprobs> pending_lp;
        std::string out;
        std::int32_t last = -1;
        const stopwatch eval;
        auto finish = [&](finish_reason why) {
            r.finish = why;
            out.clear();
            text.flush(out);
            if (!out.empty() || !pending_lp.empty()) {
                r.text += out;
                if (!on_text(out, pending_lp)) r.cancelled = true;
            }
        };
        for (;;) {
            if (rq.max_tokens >= 0 && r.tokens.size() >= static_cast<std::size_t>(rq.max_tokens)) {
                finish(finish_reason::max_tokens);
                break;
            }
            if (last >= 0) {
                if (sl.ctx.n_past() >= sl.ctx.n_ctx()) {
                    finish(finish_reason::context_full);
                    break;
                }
                sl.ctx.decode(std::span(&last, 1));
                sl.cached.push_back(last);
                last = -1;
            }
            const std::span<const float> logits = sl.ctx.logits();
            s::context sc{history, sl.gen};
            const std::int32_t tok = sl.chain(logits, sc);
            if (rq.top_logprobs >= 0) {
                pending_lp.push_back(logprobs_of(logits, rq.sampling.logit_bias, tok, rq.top_logprobs));
                r.logprobs.push_back(pending_lp.back());
            }
            if (!rq.ignore_eos && tok_.is_eog(tok)) {
                if (!pending_lp.empty()) {  // the end token is not part of the output
                    pending_lp.pop_back();
                    r.logprobs.pop_back();
                }
                finish(finish_reason::end_of_text);
                break;
            }
            r.tokens.push_back(tok);
            history.push_back(tok);
            last = tok;
            out.clear();
            if (text.push(tok_.piece(tok), out)) {
                r.text += out;
                r.finish = finish_reason::stop_string;
                if (!on_text(out, pending_lp)) r.cancelled = true;
                break;
            }
            r.text += out;
            // Called for every token, text or not, so that a vanished client is noticed promptly.
            if (!on_text(out, pending_lp)) {
                r.cancelled = true;
                break;
            }
            pending_lp.clear();
        }
        r.eval_ms = eval.ms();
    }

    // log_softmax over logits + bias; the chosen token and the k best.
    static token_logprobs logprobs_of(std::span<const float> logits, const std::vector<s::token_bias>& bias,
                                      std::int32_t chosen, int k) {
        thread_local std::vector<float> z;
        z.assign(logits.begin(), logits.end());
        for (const s::token_bias& b : bias)
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

    // ---- slot bookkeeping ----------------------------------------------------------------------
    std::optional<lease> wait_for_slot(std::uint64_t id, std::span<const std::int32_t> prompt,
                                       const std::function<bool()>& still_wanted) {
        std::unique_lock lock(mu_);
        for (;;) {
            // First in line among those still waiting, and a slot is free.
            if (!line_.empty() && line_.front() == id && busy_ < slots_.size()) {
                slot* best = nullptr;
                std::size_t best_common = 0;
                for (auto& sp : slots_) {
                    if (sp->busy) continue;
                    std::size_t c = 0;
                    while (c < sp->cached.size() && c < prompt.size() && sp->cached[c] == prompt[c]) ++c;
                    if (!best || c > best_common) {
                        best = sp.get();
                        best_common = c;
                    }
                }
                best->busy = true;
                ++busy_;
                line_.pop_front();
                cv_.notify_all();  // the next in line may find another free slot
                return lease(this, best);
            }
            cv_.wait_for(lock, std::chrono::milliseconds(100));
            if (still_wanted && !still_wanted_unlocked(lock, still_wanted)) {
                line_.remove(id);
                cv_.notify_all();
                return std::nullopt;
            }
        }
    }

    // Polls the caller's check without holding the engine lock (it may touch a socket).
    static bool still_wanted_unlocked(std::unique_lock<std::mutex>& lock, const std::function<bool()>& f) {
        lock.unlock();
        bool ok = true;
        try {
            ok = f();
        } catch (...) {
            ok = false;
        }
        lock.lock();
        return ok;
    }

    void release(slot* sl) {
        std::lock_guard lock(mu_);
        sl->busy = false;
        --busy_;
        cv_.notify_all();
    }

    void leave(std::uint64_t id) {
        std::lock_guard lock(mu_);
        line_.remove(id);  // no-op once it got a slot
        --admitted_;
        cv_.notify_all();
    }

    const Model& m_;
    const tokenizer_t& tok_;
    engine_options opt_;
    std::vector<std::unique_ptr<slot>> slots_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::list<std::uint64_t> line_;  // tickets waiting for a slot, in arrival order
    std::uint64_t next_id_ = 1;
    std::size_t admitted_ = 0, busy_ = 0;
};

}  // namespace lmtk::serve
