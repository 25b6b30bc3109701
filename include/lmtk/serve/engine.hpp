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
// The slots are the sequences of one llama_context (one KV cache each) over the shared,
// read-only model. Each slot has its own sampler chain and generator and remembers which tokens
// its sequence holds, so a request that extends an earlier one (a chat's next turn) only
// evaluates the new tokens; a free slot whose cache shares the longest prefix with the prompt is
// preferred. One scheduler thread runs every active slot in the same forward pass
// (llama_context::decode_batch: one row per generating slot plus prompt chunks), so the weights
// are read once per step for all of them; the requesting threads only relay text.
#include <lmtk/core/error.hpp>
#include <lmtk/generate/completion.hpp>
#include <lmtk/generate/sequence.hpp>
#include <lmtk/generate/timings.hpp>
#include <lmtk/model/llama.hpp>
#include <lmtk/sample/grammar.hpp>
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
#include <thread>
#include <deque>
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
// bias, grammar (off unless asked for; checked on the drawn token first, see
// sample::checking_filter), penalties, top-k, top-p, min-p, temperature, draw. temperature <= 0 leaves only the argmax, so the draw is then greedy.
using server_chain = s::chain<s::logit_bias, s::grammar_constraint, s::repetition_penalty, s::top_k, s::top_p, s::min_p,
                              s::temperature, s::dist>;

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
    // Constrain the output to a sentence of this GBNF grammar (JSON mode and JSON schemas too:
    // serve/params.hpp turns them into grammars).
    std::shared_ptr<const s::grammar> grammar;
    // With a grammar: when not empty, the grammar is lazy. The output is free until it contains
    // this text, and from the trigger on (the trigger itself included) it follows the grammar:
    // tool calls in a model's own syntax after free text (serve/tool_calls.hpp).
    std::string grammar_trigger;
    // Scoring instead of generating (LMTP's SCORE): the last n_scored tokens of `prompt` are
    // scored as its continuation. result.logprobs gets log P(prompt[i] | prompt[..i]) for each,
    // with max(top_logprobs, 0) alternatives; nothing is generated and max_tokens is ignored.
    // The very first token of a context has nothing to condition on and gets 0.
    std::size_t n_scored = 0;
};

struct result {
    std::string text;
    std::vector<std::int32_t> tokens;      // generated, an end-of-generation token excluded
    std::vector<token_logprobs> logprobs;  // per generated token when requested (per scored token when scoring)
    // The end-of-generation token that ended it (finish end_of_text) with its logprobs when
    // they were requested: the text APIs drop it, LMTP reports it as the stream's last token.
    std::optional<token_logprobs> end_token;
    std::size_t n_prompt = 0;              // prompt tokens
    std::size_t n_cached = 0;              // of which came from the slot's cache
    finish_reason finish = finish_reason::none;
    bool cancelled = false;                // the callback asked to stop
    // With a grammar: generation ended because no token of the vocabulary could continue the
    // sentence (or finish it within the tokens left), so `text` is an unfinished sentence. The
    // APIs answer this with an error rather than an incomplete document.
    bool grammar_dead_end = false;
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

    // A slot: one sequence of the shared context, with its own sampler, generator and record of
    // which tokens that sequence's cache holds.
    struct job;
    struct slot {
        explicit slot(std::uint64_t seed) : gen(seed) {}
        server_chain chain;
        s::rng gen;
        std::vector<std::int32_t> cached;  // tokens whose keys/values sequence `index` holds, in order
        std::size_t index = 0;
        bool busy = false;                 // leased (engine lock)
        job* active = nullptr;             // being generated (scheduler lock)
    };

    engine(const Model& m, const tokenizer_t& tok, engine_options opt)
        : m_(m), tok_(tok), opt_(std::move(opt)), ctx_(m, with_sequences(opt_)) {
        for (std::size_t i = 0; i < opt_.n_slots; ++i) {
            slots_.push_back(std::make_unique<slot>(opt_.seed + 0x9e3779b97f4a7c15ull * (i + 1)));
            slots_.back()->index = i;
        }
        logits_.resize(opt_.n_slots * std::size_t(m.n_vocab()));
        pieces_.pieces.resize(tok_.size());
        pieces_.is_end.resize(tok_.size());
        for (std::size_t i = 0; i < tok_.size(); ++i) {
            pieces_.pieces[i] = tok_.piece(static_cast<std::int32_t>(i));
            // Control tokens that open or close tool calls are shown as their text, so that
            // the calls can be read back from the output and a tool-call grammar can take
            // them (llama.cpp "preserves" them the same way); other control tokens stay silent.
            if (pieces_.pieces[i].empty() && !tok_.is_eog(static_cast<std::int32_t>(i))) {
                const std::string& t = tok_.vocabulary().text(static_cast<std::int32_t>(i));
                if (t == "[TOOL_CALLS]" || t == "<tool_call>" || t == "</tool_call>" || t == "<|python_tag|>") pieces_.pieces[i] = t;
            }
            pieces_.is_end[i] = tok_.is_eog(static_cast<std::int32_t>(i));
        }
        scheduler_ = std::thread([this] { schedule(); });
    }
    engine(const engine&) = delete;
    engine& operator=(const engine&) = delete;

    // Why this model cannot follow `g`, or empty: a grammar none of whose first characters the
    // vocabulary can spell (a JSON grammar with a vocabulary that has no '{') would otherwise
    // end at once with an empty "answer". Request parsers turn the reason into a 400.
    std::string grammar_unusable(const std::shared_ptr<const s::grammar>& g) const {
        const s::grammar_matcher m(g);
        if (m.complete()) return {};
        for (std::size_t i = 0; i < pieces_.pieces.size(); ++i)
            if (!pieces_.is_end[i] && !pieces_.pieces[i].empty() && m.accepts(pieces_.pieces[i])) return {};
        return "no token of this model's vocabulary can begin a sentence of the grammar";
    }
    ~engine() {
        {
            std::lock_guard lock(sched_mu_);
            stop_ = true;
        }
        work_cv_.notify_all();
        scheduler_.join();
    }

    const Model& model() const noexcept { return m_; }
    const tokenizer_t& tokenizer() const noexcept { return tok_; }
    std::size_t n_ctx() const noexcept { return ctx_.n_ctx(); }
    std::size_t n_slots() const noexcept { return slots_.size(); }
    std::size_t n_threads() const noexcept { return ctx_.n_threads(); }
    const engine_options& options() const noexcept { return opt_; }
    // Forward passes so far and rows they carried: rows / passes > 1 means slots shared passes.
    std::pair<std::uint64_t, std::uint64_t> batch_stats() const {
        std::lock_guard lock(sched_mu_);
        return {n_passes_, n_rows_};
    }

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

    // Runs one request on a leased slot and blocks until it ends. The scheduler thread does
    // the work, batching this slot's rows with the other slots'; this thread relays what it
    // produces. on_text gets each piece of text that is safe to show (never inside a UTF-8
    // character or a possible stop string) with the logprobs of the tokens generated since
    // the previous call, and is also called with nothing every 100 ms of silence (a long
    // prefill) so the caller can check its client; returning false stops generation
    // (result.cancelled). Throws lmtk::error for a prompt that does not fit.
    result run(slot& sl, const request& rq, const on_text_fn& on_text) {
        if (rq.n_scored > rq.prompt.size())
            fail("cannot score ", rq.n_scored, " tokens of a sequence of ", rq.prompt.size());
        if (const std::string why = context_fit_error(rq.prompt.size(), rq.n_scored > 0 ? 0 : 1, ctx_.n_ctx()); !why.empty())
            fail(why);
        for (const std::int32_t t : rq.prompt)
            if (t < 0 || static_cast<std::size_t>(t) >= tok_.size())
                fail("token id ", t, " is outside the vocabulary of ", tok_.size());
        configure(sl, rq.sampling);  // the slot is ours and idle: the scheduler does not touch it

        job j(rq, sl);
        // A lazy grammar is switched on by step() when its trigger appears.
        sl.chain.template get<s::grammar_constraint>() =
            j.grammar && rq.grammar_trigger.empty() ? s::grammar_constraint{&pieces_, &*j.grammar} : s::grammar_constraint{};
        {
            std::lock_guard lock(sched_mu_);
            sl.active = &j;
        }
        work_cv_.notify_all();

        bool listening = true;
        std::deque<event> got;
        for (;;) {
            bool finished = false;
            {
                std::unique_lock lock(j.mu);
                j.cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return !j.events.empty() || j.done; });
                got.swap(j.events);
                finished = j.done;
            }
            if (got.empty() && !finished && listening && !on_text({}, {})) {
                listening = false;
                j.cancel = true;
            }
            for (const event& e : got)
                if (listening && !on_text(e.text, e.lp)) {
                    listening = false;
                    j.cancel = true;  // the scheduler ends the job at its next step
                }
            got.clear();
            if (finished) break;
        }
        if (j.error) std::rethrow_exception(j.error);
        j.r.cancelled = j.r.cancelled || !listening;
        return std::move(j.r);
    }

    // What the scheduler hands to the requesting thread.
    struct event {
        std::string text;
        std::vector<token_logprobs> lp;
    };

    // One request in flight: its sequence (sequence.hpp decides what it does) and the
    // scheduler's bookkeeping. The scheduler owns everything above the channel; the channel
    // (events, done, error) is shared under `mu`.
    struct job {
        job(const request& r, slot& s)
            : rq(r), sl(s),
              seq(r.prompt, sequence_options{.max_tokens = r.max_tokens, .stop = r.stop, .ignore_eos = r.ignore_eos,
                                             .top_logprobs = r.top_logprobs, .logit_bias = r.sampling.logit_bias}) {
            if (r.grammar) grammar.emplace(r.grammar);
            grammar_on = r.grammar && r.grammar_trigger.empty();
        }
        const request& rq;
        slot& sl;
        sequence seq;
        std::size_t lp_sent = 0;    // seq.logprobs() handed to the requesting thread so far
        std::optional<s::grammar_matcher> grammar;  // what the output holds so far, when it follows a grammar
        // A lazy grammar (request::grammar_trigger): whether it holds yet, and the output's
        // last bytes while it does not (enough to find the trigger across tokens).
        bool grammar_on = false;
        std::string before_trigger;
        // Scoring: logits are wanted at positions [score_from, prompt.size() - 1).
        std::size_t score_from = 0;
        std::size_t pending_fed = 0;  // prompt tokens in the pass being run
        bool started = false;
        stopwatch since_start, since_prefill;
        result r;
        std::atomic<bool> cancel{false};

        std::mutex mu;
        std::condition_variable cv;
        std::deque<event> events;
        bool done = false;
        std::exception_ptr error;
    };

private:
    static model::context_options with_sequences(const engine_options& o) {
        if (o.n_slots == 0) fail("the server needs at least one slot (--parallel 1)");
        model::context_options c = o.context;
        c.n_seq = o.n_slots;
        return c;
    }

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

    // ---- the scheduler: one forward pass per step for every active slot -------------------------
    // Each step takes one row per generating slot (its last sampled token) and fills the rest of
    // n_batch with prompt chunks of slots still prefilling, runs them in one decode_batch (the
    // weights stream once for all), then samples each slot that got logits.
    void schedule() {
        std::vector<model::batch_entry> batch;
        // Whose logits rows come back, in batch order, and for which prompt position (scoring)
        // or npos (the row to sample the next token from).
        std::vector<std::pair<job*, std::size_t>> want;
        std::vector<job*> in_batch;    // every job with rows in this step
        std::vector<job*> jobs;
        std::vector<job*> scored;      // scoring jobs that end with this step
        for (;;) {
            jobs.clear();
            {
                std::unique_lock lock(sched_mu_);
                work_cv_.wait(lock, [&] {
                    if (stop_) return true;
                    for (auto& sp : slots_)
                        if (sp->active) return true;
                    return false;
                });
                if (stop_) return;
                for (auto& sp : slots_)
                    if (sp->active) jobs.push_back(sp->active);
            }
            batch.clear();
            want.clear();
            in_batch.clear();
            for (job*& j : jobs) {
                if (j->cancel) {
                    j->r.cancelled = true;
                    finish(*j, finish_reason::none);
                    j = nullptr;  // its owner may destroy it from now on: never touch it again
                    continue;
                }
                if (!j->started) start(*j);
                if (j->seq.prompt_done() && j->seq.pending() >= 0) {
                    batch.push_back({j->seq.pending(), static_cast<std::uint32_t>(j->sl.index), true});
                    want.emplace_back(j, npos);
                    in_batch.push_back(j);
                }
            }
            // Prompt chunks share what is left of the pass; a minimum keeps prefill moving
            // when many slots are generating.
            std::size_t budget = std::max<std::size_t>(ctx_.n_batch() > batch.size() ? ctx_.n_batch() - batch.size() : 0, 16);
            for (job* j : jobs) {
                if (!j || j->seq.prompt_done() || budget == 0) continue;
                const std::size_t n = std::min(budget, j->seq.unfed().size());
                const bool scoring = j->rq.n_scored > 0;
                for (std::size_t k = 0; k < n; ++k) {
                    const std::size_t pos = j->seq.n_fed() + k;
                    const bool last = pos + 1 == j->rq.prompt.size();
                    const bool logits = scoring ? pos >= j->score_from && !last : last;
                    batch.push_back({j->rq.prompt[pos], static_cast<std::uint32_t>(j->sl.index), logits});
                    if (logits) want.emplace_back(j, scoring ? pos : npos);
                }
                budget -= n;
                j->pending_fed = n;
                in_batch.push_back(j);
            }
            if (batch.empty()) continue;
            if (logits_.size() < want.size() * m_.n_vocab()) logits_.resize(want.size() * m_.n_vocab());
            try {
                const std::size_t rows = ctx_.decode_batch(batch, logits_.data());
                (void)rows;
            } catch (...) {
                // The cache state of these sequences is unknown now: forget it, fail their jobs.
                for (job* j : in_batch) {
                    ctx_.truncate(0, j->sl.index);
                    j->sl.cached.clear();
                    j->error = std::current_exception();
                    finish(*j, finish_reason::none);
                }
                continue;
            }
            {
                std::lock_guard lock(sched_mu_);
                ++n_passes_;
                n_rows_ += batch.size();
            }
            for (job* j : in_batch) {
                // Record what the pass put in this slot's cache.
                if (j->pending_fed) {
                    j->seq.fed(j->pending_fed, j->sl.cached);
                    j->pending_fed = 0;
                    if (j->seq.prompt_done()) {
                        j->r.prompt_ms = j->since_start.ms();
                        j->since_prefill = stopwatch();
                    }
                } else {
                    j->seq.ran_pending(j->sl.cached);
                }
            }
            // Scoring jobs whose sequence is complete end after their rows are read. (Listed
            // first: a generating job that step() finishes may be gone right after.)
            scored.clear();
            for (job* j : in_batch)
                if (j->rq.n_scored > 0 && j->seq.prompt_done()) scored.push_back(j);
            for (std::size_t i = 0; i < want.size(); ++i) {
                const std::span<const float> row(logits_.data() + i * m_.n_vocab(), m_.n_vocab());
                if (want[i].second == npos)
                    step(*want[i].first, row);
                else
                    score(*want[i].first, row, want[i].second);
            }
            for (job* j : scored) finish(*j, finish_reason::none);
        }
    }

    static constexpr std::size_t npos = static_cast<std::size_t>(-1);

    // Scoring: the logits at `pos` give the log-probability of the token after it.
    void score(job& j, std::span<const float> logits, std::size_t pos) {
        const request& rq = j.rq;
        j.r.logprobs.push_back(lmtk::logprobs_of(logits, rq.sampling.logit_bias, rq.prompt[pos + 1], std::max(rq.top_logprobs, 0)));
    }

    // Prefix reuse (sequence::begin): keep the longest prefix this slot's sequence already holds.
    void start(job& j) {
        slot& sl = j.sl;
        const auto& prompt = j.rq.prompt;
        std::size_t keep = sequence::no_limit;
        if (j.rq.n_scored > 0) {
            // The logits of every position before a scored token must be computed afresh.
            const std::size_t first_scored = prompt.size() - j.rq.n_scored;
            j.score_from = first_scored == 0 ? 0 : first_scored - 1;
            keep = j.score_from;
            if (first_scored == 0) {
                token_logprobs unconditioned;
                unconditioned.id = prompt[0];
                j.r.logprobs.push_back(unconditioned);
            }
        }
        const std::size_t common = j.seq.begin(sl.cached, keep);
        ctx_.truncate(common, sl.index);
        j.r.n_cached = common;
        j.r.n_prompt = prompt.size();
        j.r.slot = sl.index;
        j.started = true;
        j.since_start = stopwatch();
    }

    // One step of the job's sequence from fresh logits; the text and logprobs it produced go
    // to the requesting thread.
    void step(job& j, std::span<const float> logits) {
        std::string out;
        if (j.grammar && j.grammar_on) {
            // Tokens this generation may still produce: a grammar closes its sentence within them.
            std::size_t left = ctx_.n_ctx() - std::min(ctx_.n_ctx(), ctx_.n_past(j.sl.index));
            if (j.rq.max_tokens >= 0)
                left = std::min(left, std::size_t(j.rq.max_tokens) - std::min(std::size_t(j.rq.max_tokens), j.seq.tokens().size()));
            j.grammar->set_budget(left);
        }
        const std::size_t before = j.seq.tokens().size();
        const bool goes_on = j.seq.step(
            logits, j.sl.chain, j.sl.gen, [&](std::int32_t id) -> std::string_view { return pieces_.pieces[std::size_t(id)]; },
            [&](std::int32_t id) { return bool(pieces_.is_end[std::size_t(id)]); }, ctx_.n_past(j.sl.index), ctx_.n_ctx(), out);
        if (j.seq.tokens().size() > before) {
            const std::string& piece = pieces_.pieces[std::size_t(j.seq.tokens().back())];
            if (j.grammar && j.grammar_on) j.grammar->accept(piece);
            else if (j.grammar) watch_trigger(j, piece);
        }
        if (!goes_on) {
            // An end token is allowed under a grammar only once the sentence is complete, or as
            // the way out when nothing can continue it: ending incomplete means the latter.
            if (j.grammar && j.grammar_on && !j.grammar->complete() && j.seq.finish() == finish_reason::end_of_text)
                j.r.grammar_dead_end = true;
            return finish(j, j.seq.finish(), std::move(out));
        }
        j.r.text += out;
        if (!out.empty() || j.seq.logprobs().size() > j.lp_sent) emit(j, std::move(out));
    }

    // A lazy grammar's trigger: once the output contains it, the grammar takes the text from the
    // trigger on and holds from the next token. Should the rest of the token that completed the
    // trigger not fit the grammar, it stays off and the output is free text (the caller then
    // finds no well-formed call in it).
    void watch_trigger(job& j, const std::string& piece) {
        const std::string& trigger = j.rq.grammar_trigger;
        j.before_trigger += piece;
        const std::size_t at = j.before_trigger.find(trigger);
        if (at == std::string::npos) {
            if (j.before_trigger.size() >= trigger.size()) j.before_trigger.erase(0, j.before_trigger.size() - (trigger.size() - 1));
            return;
        }
        if (!j.grammar->accept(std::string_view(j.before_trigger).substr(at))) {
            j.before_trigger.clear();
            j.grammar.reset();
            return;
        }
        j.grammar_on = true;
        j.sl.chain.template get<s::grammar_constraint>() = s::grammar_constraint{&pieces_, &*j.grammar};
    }

    std::vector<token_logprobs> unsent_logprobs(job& j) {
        const auto& all = j.seq.logprobs();
        std::vector<token_logprobs> lp(all.begin() + std::ptrdiff_t(j.lp_sent), all.end());
        j.lp_sent = all.size();
        return lp;
    }

    void emit(job& j, std::string text) {
        auto lp = unsent_logprobs(j);
        {
            std::lock_guard lock(j.mu);
            j.events.push_back({std::move(text), std::move(lp)});
        }
        j.cv.notify_all();
    }

    // Last touch of a job by the scheduler: after this the requesting thread may destroy it.
    // `text`: what the step that ended it produced (the sequence flushed its held-back text
    // into it); a job ended from outside (cancelled, failed) flushes here.
    void finish(job& j, finish_reason why, std::string text = {}) {
        j.seq.end(why, text);
        if (j.rq.n_scored == 0) {
            j.r.tokens = j.seq.tokens();
            j.r.logprobs = j.seq.logprobs();
            j.r.end_token = j.seq.end_token();
        }
        j.r.finish = j.seq.finish();
        j.r.text += text;
        j.r.eval_ms = j.seq.prompt_done() ? j.since_prefill.ms() : 0.0;
        if (!j.seq.prompt_done()) j.r.prompt_ms = j.since_start.ms();
        j.r.total_ms = j.since_start.ms();
        auto lp = j.rq.n_scored == 0 ? unsent_logprobs(j) : std::vector<token_logprobs>{};
        {
            std::lock_guard lock(sched_mu_);
            j.sl.active = nullptr;
        }
        {
            std::lock_guard lock(j.mu);
            if (!text.empty() || !lp.empty()) j.events.push_back({std::move(text), std::move(lp)});
            j.done = true;
            // Notified under the lock: once it is released the waiter may destroy the job.
            j.cv.notify_all();
        }
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
    context_type ctx_;                    // one sequence per slot
    std::vector<std::unique_ptr<slot>> slots_;
    std::vector<float> logits_;           // one row per logits row of the pass
    // Every token's bytes (and whether it ends generation), decoded once: the text stream and the
    // JSON constraint read them on every step.
    s::json_vocab pieces_;
    // Admission (engine lock).
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::list<std::uint64_t> line_;       // tickets waiting for a slot, in arrival order
    std::uint64_t next_id_ = 1;
    std::size_t admitted_ = 0, busy_ = 0;
    // Scheduling (scheduler lock): which slots have a job; pass statistics.
    mutable std::mutex sched_mu_;
    std::condition_variable work_cv_;
    bool stop_ = false;
    std::uint64_t n_passes_ = 0, n_rows_ = 0;
    std::thread scheduler_;               // last: starts after everything above exists
};

}  // namespace lmtk::serve
