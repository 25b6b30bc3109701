#pragma once
// Sampling stages: small aggregates with runtime parameters, composed by lmtk::sample::chain.
//
// A filter stage takes the current candidates and returns the survivors as a subspan (usually a
// prefix) of its input; it may reorder them and rewrite their logits. A pick stage comes last and
// returns the chosen token id. Both see a context: the token history and the seeded generator.
//
// The `p` field of a candidate is scratch while filters run (top_p and repetition_penalty use
// it); after a pick stage it holds the softmax of the surviving candidates' final logits, which
// is what chain::last_candidates() exposes for logprobs.
//
// Logits may be -infinity (a banned token) and +infinity; NaN is not allowed (chain turns NaN
// into -infinity before the first stage).
//
// Semantics follow llama.cpp's samplers, so a user's settings mean the same thing here.
#include <lmtk/sample/candidate.hpp>
#include <lmtk/sample/rng.hpp>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

namespace lmtk::sample {

struct context {
    std::span<const std::int32_t> history;  // tokens so far, oldest first, prompt included
    rng& gen;
};

template <class S>
concept filter_stage = std::copy_constructible<S> &&
    requires(const S& s, std::span<candidate> c, context& ctx) {
        { s(c, ctx) } -> std::same_as<std::span<candidate>>;
    };

template <class S>
concept pick_stage = std::copy_constructible<S> &&
    requires(const S& s, std::span<candidate> c, context& ctx) {
        { s(c, ctx) } -> std::same_as<std::int32_t>;
    };

namespace detail {

inline constexpr float inf = std::numeric_limits<float>::infinity();

// Descending logit; equal logits by ascending id, so every stage's survivors are well defined.
inline bool better(const candidate& a, const candidate& b) noexcept {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

inline std::size_t argmax(std::span<const candidate> c) noexcept {
    std::size_t best = 0;
    for (std::size_t i = 1; i < c.size(); ++i)
        if (better(c[i], c[best])) best = i;
    return best;
}

inline float max_logit(std::span<const candidate> c) noexcept {
    float m = -inf;
    for (const candidate& x : c) m = std::max(m, x.logit);
    return m;
}

// Writes p = exp(logit - max) and returns their sum (in double: 128k small terms). Degenerate
// inputs stay finite: if all logits are -inf every candidate weighs 1 (nothing is preferred);
// if some are +inf, only those weigh 1.
inline double exp_weights(std::span<candidate> c) noexcept {
    const float m = max_logit(c);
    if (m == -inf || m == inf) {
        double sum = 0.0;
        for (candidate& x : c) {
            x.p = (x.logit == m) ? 1.0f : 0.0f;
            sum += x.p;
        }
        return sum;
    }
    double sum = 0.0;
    for (candidate& x : c) {
        x.p = std::exp(x.logit - m);
        sum += x.p;
    }
    return sum;
}

// Finds a token among candidates without allocating. A chain's buffer starts in id order
// (c[id].id == id), the common case when a stage runs first; stable filters keep ids ascending,
// which a binary search handles; anything else falls back to a linear scan.
class token_locator {
public:
    explicit token_locator(std::span<candidate> c) noexcept : c_(c) {}

    candidate* find(std::int32_t id) noexcept {
        if (id < 0) return nullptr;
        const auto u = static_cast<std::size_t>(id);
        if (u < c_.size() && c_[u].id == id) return &c_[u];
        if (!order_known_) {
            by_id_ = std::is_sorted(c_.begin(), c_.end(),
                                    [](const candidate& a, const candidate& b) { return a.id < b.id; });
            order_known_ = true;
        }
        if (by_id_) {
            auto it = std::lower_bound(c_.begin(), c_.end(), id,
                                       [](const candidate& a, std::int32_t v) { return a.id < v; });
            return (it != c_.end() && it->id == id) ? &*it : nullptr;
        }
        auto it = std::find_if(c_.begin(), c_.end(), [id](const candidate& a) { return a.id == id; });
        return it != c_.end() ? &*it : nullptr;
    }

private:
    std::span<candidate> c_;
    bool order_known_ = false;
    bool by_id_ = false;
};

inline std::size_t clamp_keep(std::int32_t min_keep, std::size_t n) noexcept {
    return std::min<std::size_t>(static_cast<std::size_t>(std::max<std::int32_t>(min_keep, 1)), n);
}

}  // namespace detail

// Normalized softmax of the current logits into p; for callers and tests.
inline void softmax(std::span<candidate> c) noexcept {
    const double sum = detail::exp_weights(c);
    for (candidate& x : c) x.p = static_cast<float>(x.p / sum);
}

// ---- filters -------------------------------------------------------------------------------

// Adds a bias to chosen tokens' logits; -infinity bans a token. Ids not among the candidates are
// ignored; a repeated id adds up. Servers fill it from a request's logit_bias.
struct token_bias {
    std::int32_t id;
    float bias;
};
struct logit_bias {
    std::vector<token_bias> biases;

    std::span<candidate> operator()(std::span<candidate> c, context&) const noexcept {
        detail::token_locator find(c);
        for (const token_bias& b : biases)
            if (candidate* x = find.find(b.id)) x->logit += b.bias;
        return c;
    }
};

// Penalizes tokens seen in the last `last_n` history tokens (llama.cpp "penalties"):
// each distinct seen token gets logit > 0 ? logit / penalty : logit * penalty, then
// logit -= count * frequency + presence (OpenAI's frequency and presence penalties).
// last_n == 0 disables it; last_n < 0 looks at the whole history. penalty must be > 0.
struct repetition_penalty {
    float penalty = 1.0f;
    std::int32_t last_n = 64;
    float frequency = 0.0f;
    float presence = 0.0f;

    std::span<candidate> operator()(std::span<candidate> c, context& ctx) const noexcept {
        if (penalty == 1.0f && frequency == 0.0f && presence == 0.0f) return c;
        if (last_n == 0 || ctx.history.empty() || c.empty()) return c;
        const auto window = (last_n < 0 || static_cast<std::size_t>(last_n) >= ctx.history.size())
                                ? ctx.history
                                : ctx.history.last(static_cast<std::size_t>(last_n));
        // Count occurrences in p (scratch), touching only the window's tokens: no pass over the
        // vocabulary and no allocation. The last pass applies each token once and resets its count.
        detail::token_locator find(c);
        for (std::int32_t t : window)
            if (candidate* x = find.find(t)) x->p = 0.0f;
        for (std::int32_t t : window)
            if (candidate* x = find.find(t)) x->p += 1.0f;
        for (std::int32_t t : window) {
            candidate* x = find.find(t);
            if (!x || x->p == 0.0f) continue;
            x->logit = x->logit > 0.0f ? x->logit / penalty : x->logit * penalty;
            x->logit -= x->p * frequency + presence;
            x->p = 0.0f;
        }
        return c;
    }
};

// Divides logits by `value`. 1 is a no-op. value <= 0 means greedy: only the best candidate
// (ties: lowest id) survives, so a following `dist` picks the argmax.
struct temperature {
    float value = 1.0f;

    std::span<candidate> operator()(std::span<candidate> c, context&) const noexcept {
        if (value == 1.0f || c.empty()) return c;
        if (!(value > 0.0f)) {
            std::swap(c[0], c[detail::argmax(c)]);
            return c.first(1);
        }
        for (candidate& x : c) x.logit /= value;
        return c;
    }
};

// Keeps the k best candidates, sorted best first. k <= 0 or k >= size is a no-op (order kept).
// nth_element + sorting the k survivors: O(n + k log k) over a 128k vocabulary.
struct top_k {
    std::int32_t k = 0;

    std::span<candidate> operator()(std::span<candidate> c, context&) const noexcept {
        if (k <= 0 || static_cast<std::size_t>(k) >= c.size()) return c;
        const auto mid = c.begin() + k;
        std::nth_element(c.begin(), mid, c.end(), detail::better);
        std::sort(c.begin(), mid, detail::better);
        return c.first(static_cast<std::size_t>(k));
    }
};

// Nucleus sampling: keeps the smallest set of best candidates whose probability reaches p, and
// at least min_keep. p >= 1 is a no-op. Survivors come in unspecified order (best first when
// the input was sorted, as after top_k).
// Sorts only as needed: sorted input is scanned as is; otherwise a quickselect on the nucleus
// boundary (O(n) expected: halve the range with nth_element, keep the half that crosses p) and a
// sort of the last few dozen candidates. A flat 128k distribution's nucleus can be most of the
// vocabulary, where a sort would cost O(n log n).
struct top_p {
    float p = 1.0f;
    std::int32_t min_keep = 1;

    std::span<candidate> operator()(std::span<candidate> c, context&) const noexcept {
        if (!(p < 1.0f) || c.size() <= 1) return c;
        const std::size_t n = c.size();
        const double target = static_cast<double>(p) * detail::exp_weights(c);
        // [0, lo) is known to be in the nucleus, with weight cum; the boundary lies in [lo, hi].
        std::size_t lo = 0;
        std::size_t hi = n;
        double cum = 0.0;
        if (!std::is_sorted(c.begin(), c.end(), detail::better)) {
            constexpr std::size_t small = 64;
            while (hi - lo > small) {
                const std::size_t mid = lo + (hi - lo) / 2;
                std::nth_element(c.begin() + lo, c.begin() + mid, c.begin() + hi, detail::better);
                double half = 0.0;
                for (std::size_t i = lo; i < mid; ++i) half += c[i].p;
                if (cum + half >= target) {
                    hi = mid;
                } else {
                    cum += half;
                    lo = mid;
                }
            }
            std::sort(c.begin() + lo, c.begin() + hi, detail::better);
        }
        std::size_t m = hi;  // rounding may leave the scan short of target: keep [0, hi)
        for (std::size_t i = lo; i < hi; ++i) {
            cum += c[i].p;
            if (cum >= target) {
                m = i + 1;
                break;
            }
        }
        const std::size_t keep = detail::clamp_keep(min_keep, n);
        if (m < keep) {
            // [0, m) are the best m; bring the next best up to min_keep behind them.
            std::nth_element(c.begin() + m, c.begin() + (keep - 1), c.end(), detail::better);
            m = keep;
        }
        return c.first(m);
    }
};

// Keeps candidates whose probability is at least p times the best one's (llama.cpp min_p),
// and at least min_keep. p <= 0 is a no-op. Compared on logits: logit >= max + log(p), so no
// softmax is needed. Survivors keep their relative order.
struct min_p {
    float p = 0.0f;
    std::int32_t min_keep = 1;

    std::span<candidate> operator()(std::span<candidate> c, context&) const noexcept {
        if (!(p > 0.0f) || c.size() <= 1) return c;
        const float threshold = detail::max_logit(c) + std::log(p);
        const auto below = [threshold](const candidate& x) { return x.logit < threshold; };
        const std::size_t kept = static_cast<std::size_t>(std::count_if(
            c.begin(), c.end(), [&](const candidate& x) { return !below(x); }));
        const std::size_t keep = detail::clamp_keep(min_keep, c.size());
        if (kept >= keep) {
            (void)std::remove_if(c.begin(), c.end(), below);  // stable compaction to the front
            return c.first(kept);
        }
        std::partial_sort(c.begin(), c.begin() + keep, c.end(), detail::better);
        return c.first(keep);
    }
};

// ---- pickers -------------------------------------------------------------------------------
// Callers guarantee at least one candidate (chain does).

// The best candidate; ties go to the lowest id. Leaves p = softmax (for logprobs); draws nothing.
struct greedy {
    std::int32_t operator()(std::span<candidate> c, context&) const noexcept {
        softmax(c);
        return c[detail::argmax(c)].id;
    }
};

// Samples from the softmax of the current logits with ctx.gen; leaves p = that softmax.
// Always consumes exactly one draw, so a seed's stream stays aligned whatever the settings.
// Temperature 0 is handled upstream: `temperature{0}` leaves only the argmax, which dist then
// picks with certainty, so chain<temperature, dist> degrades to greedy.
struct dist {
    std::int32_t operator()(std::span<candidate> c, context& ctx) const noexcept {
        const double sum = detail::exp_weights(c);
        const double u = ctx.gen.uniform_double() * sum;
        // Accumulate in the order sum was formed, so the walk reaches exactly `sum`; rounding of
        // u * sum up to sum falls through to the last candidate with weight.
        std::size_t pick = c.size();
        double acc = 0.0;
        for (std::size_t i = 0; i < c.size(); ++i) {
            acc += c[i].p;
            if (u < acc) {
                pick = i;
                break;
            }
        }
        if (pick == c.size()) {
            pick = c.size() - 1;
            while (pick > 0 && c[pick].p == 0.0f) --pick;
        }
        for (candidate& x : c) x.p = static_cast<float>(x.p / sum);
        return c[pick].id;
    }
};

static_assert(filter_stage<logit_bias> && filter_stage<repetition_penalty> &&
              filter_stage<temperature> && filter_stage<top_k> && filter_stage<top_p> &&
              filter_stage<min_p>);
static_assert(pick_stage<greedy> && pick_stage<dist>);
static_assert(!pick_stage<top_k> && !filter_stage<dist>);

}  // namespace lmtk::sample
