// Each stage on hand-made candidates: exact survivors, penalty math, neutral values, dist's
// empirical distribution. The 128k-vocabulary cases compare against a full-sort reference.
#include <lmtk/sample/stages.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <vector>

namespace s = lmtk::sample;
using s::candidate;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();

std::vector<candidate> make(std::vector<float> logits) {
    std::vector<candidate> c;
    for (std::size_t i = 0; i < logits.size(); ++i)
        c.push_back({static_cast<std::int32_t>(i), logits[i], 0.0f});
    return c;
}

// Logits whose softmax is exactly proportional to `probs`.
std::vector<candidate> from_probs(std::vector<float> probs) {
    for (float& p : probs) p = std::log(p);
    return make(probs);
}

std::vector<std::int32_t> ids(std::span<const candidate> c) {
    std::vector<std::int32_t> out;
    for (const candidate& x : c) out.push_back(x.id);
    return out;
}

std::vector<std::int32_t> sorted_ids(std::span<const candidate> c) {
    auto out = ids(c);
    std::sort(out.begin(), out.end());
    return out;
}

std::vector<candidate> random_vocab(std::size_t n, std::uint32_t seed) {
    std::mt19937 g(seed);
    std::normal_distribution<float> d(0.0f, 3.0f);
    std::vector<float> l(n);
    for (float& x : l) x = d(g);
    return make(l);
}

// Reference ordering for the big cases: full sort, best first, ties by id.
std::vector<candidate> full_sort(std::vector<candidate> c) {
    std::sort(c.begin(), c.end(), [](const candidate& a, const candidate& b) {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    });
    return c;
}

struct fixture {
    std::vector<std::int32_t> history;
    s::rng gen{2024};
    s::context ctx{history, gen};
};

}  // namespace

// ---- greedy ---------------------------------------------------------------------------------

TEST_CASE("greedy picks the argmax, ties to the lowest id", "[sample][greedy]") {
    fixture f;
    auto c = make({0.1f, 2.5f, -1.0f, 2.4f});
    CHECK(s::greedy{}(c, f.ctx) == 1);

    // Equal best logits, the higher id first in the span.
    std::vector<candidate> tie{{7, 1.0f, 0}, {3, 1.0f, 0}, {5, 0.5f, 0}};
    CHECK(s::greedy{}(tie, f.ctx) == 3);
}

TEST_CASE("greedy leaves the softmax in p and draws nothing", "[sample][greedy]") {
    fixture f;
    auto c = make({0.0f, std::log(3.0f)});
    const s::rng before = f.gen;
    s::greedy{}(c, f.ctx);
    CHECK(c[0].p == Approx(0.25f));
    CHECK(c[1].p == Approx(0.75f));
    CHECK(f.gen == before);
}

// ---- top_k ----------------------------------------------------------------------------------

TEST_CASE("top_k keeps the k best, sorted best first", "[sample][top_k]") {
    fixture f;
    auto c = make({0.5f, 3.0f, -1.0f, 2.0f, 2.0f, 0.7f});
    auto kept = s::top_k{3}(c, f.ctx);
    CHECK(ids(kept) == std::vector<std::int32_t>{1, 3, 4});  // 3 and 4 tie: lower id first

    auto c2 = make({0.5f, 3.0f, -1.0f, 2.0f, 2.0f, 0.7f});
    CHECK(ids(s::top_k{1}(c2, f.ctx)) == std::vector<std::int32_t>{1});
}

TEST_CASE("top_k on a 128k vocabulary matches a full sort", "[sample][top_k]") {
    fixture f;
    auto c = random_vocab(128000, 1);
    const auto ref = full_sort(c);
    auto kept = s::top_k{40}(c, f.ctx);
    REQUIRE(kept.size() == 40);
    for (std::size_t i = 0; i < 40; ++i) CHECK(kept[i].id == ref[i].id);
}

// ---- top_p ----------------------------------------------------------------------------------

TEST_CASE("top_p keeps the smallest nucleus reaching p", "[sample][top_p]") {
    fixture f;
    // probabilities 0.1, 0.5, 0.15, 0.25 for ids 0..3; sorted: 1 (0.5), 3 (0.75), 2 (0.9), 0 (1.0)
    const std::vector<float> probs{0.1f, 0.5f, 0.15f, 0.25f};

    auto a = from_probs(probs);
    CHECK(ids(s::top_p{0.7f}(a, f.ctx)) == std::vector<std::int32_t>{1, 3});
    auto b = from_probs(probs);
    CHECK(ids(s::top_p{0.8f}(b, f.ctx)) == std::vector<std::int32_t>{1, 3, 2});
    auto c = from_probs(probs);
    CHECK(ids(s::top_p{0.4f}(c, f.ctx)) == std::vector<std::int32_t>{1});
    auto d = from_probs(probs);
    CHECK(ids(s::top_p{0.95f}(d, f.ctx)) == std::vector<std::int32_t>{1, 3, 2, 0});
}

TEST_CASE("top_p honours min_keep", "[sample][top_p]") {
    fixture f;
    auto c = from_probs({0.1f, 0.5f, 0.15f, 0.25f});
    CHECK(sorted_ids(s::top_p{0.1f, 3}(c, f.ctx)) == std::vector<std::int32_t>{1, 2, 3});
    auto z = from_probs({0.1f, 0.5f, 0.15f, 0.25f});
    CHECK(ids(s::top_p{0.0f}(z, f.ctx)) == std::vector<std::int32_t>{1});

    // Beyond the small-range sort: one dominant token among 1000, min_keep 10 -> the 10 best.
    auto big = random_vocab(1000, 4);
    big[500].logit = 100.0f;
    const auto ref = full_sort(big);
    auto kept = s::top_p{0.5f, 10}(big, f.ctx);
    REQUIRE(kept.size() == 10);
    CHECK(sorted_ids(kept) == sorted_ids(std::span<const candidate>(ref).first(10)));
}

TEST_CASE("top_p on a 128k vocabulary matches a full-sort reference", "[sample][top_p]") {
    fixture f;
    for (float p : {0.5f, 0.9f, 0.99f}) {
        auto c = random_vocab(128000, 2);
        auto ref = full_sort(c);
        double sum = 0.0;
        const float m = ref.front().logit;
        for (const candidate& x : ref) sum += std::exp(x.logit - m);
        std::size_t expect = ref.size();
        double cum = 0.0;
        for (std::size_t i = 0; i < ref.size(); ++i) {
            cum += std::exp(ref[i].logit - m) / sum;
            if (cum >= p) {
                expect = i + 1;
                break;
            }
        }
        auto kept = s::top_p{p}(c, f.ctx);
        INFO("p = " << p << ", reference nucleus = " << expect << ", kept = " << kept.size());
        // Summation order differs from the reference; the boundary may move by one token.
        REQUIRE(kept.size() + 1 >= expect);
        REQUIRE(kept.size() <= expect + 1);
        // Whatever the size, the survivors are exactly that many best candidates.
        CHECK(sorted_ids(kept) == sorted_ids(std::span<const candidate>(ref).first(kept.size())));

        // Already sorted input (as after top_k) takes the no-sort path and agrees.
        auto pre = full_sort(random_vocab(128000, 2));
        auto kept_sorted = s::top_p{p}(pre, f.ctx);
        CHECK(kept_sorted.size() == kept.size());
        CHECK(ids(kept_sorted) == ids(std::span<const candidate>(ref).first(kept_sorted.size())));
    }
}

// ---- min_p ----------------------------------------------------------------------------------

TEST_CASE("min_p keeps candidates with p >= min_p * p_max, order kept", "[sample][min_p]") {
    fixture f;
    // p_max = 0.5; min_p 0.4 -> threshold 0.2: ids 1 (0.5) and 3 (0.25) survive, in id order.
    auto c = from_probs({0.1f, 0.5f, 0.15f, 0.25f});
    CHECK(ids(s::min_p{0.4f}(c, f.ctx)) == std::vector<std::int32_t>{1, 3});
    // min_p 0.25 -> threshold 0.125: 0.1 is dropped.
    auto d = from_probs({0.1f, 0.5f, 0.15f, 0.25f});
    CHECK(ids(s::min_p{0.25f}(d, f.ctx)) == std::vector<std::int32_t>{1, 2, 3});
}

TEST_CASE("min_p honours min_keep", "[sample][min_p]") {
    fixture f;
    auto c = from_probs({0.1f, 0.5f, 0.15f, 0.25f});
    CHECK(sorted_ids(s::min_p{0.9f, 3}(c, f.ctx)) == std::vector<std::int32_t>{1, 2, 3});
}

// ---- temperature ----------------------------------------------------------------------------

TEST_CASE("temperature divides logits", "[sample][temperature]") {
    fixture f;
    auto c = make({1.0f, -2.0f, 4.0f});
    auto kept = s::temperature{2.0f}(c, f.ctx);
    REQUIRE(kept.size() == 3);
    CHECK(c[0].logit == 0.5f);
    CHECK(c[1].logit == -1.0f);
    CHECK(c[2].logit == 2.0f);
}

TEST_CASE("temperature <= 0 keeps only the argmax", "[sample][temperature]") {
    fixture f;
    for (float t : {0.0f, -1.0f}) {
        std::vector<candidate> c{{4, 1.0f, 0}, {9, 3.0f, 0}, {2, 3.0f, 0}, {0, -1.0f, 0}};
        CHECK(ids(s::temperature{t}(c, f.ctx)) == std::vector<std::int32_t>{2});
    }
}

// ---- repetition_penalty ---------------------------------------------------------------------

TEST_CASE("repetition_penalty: divide positive, multiply negative, once per token", "[sample][penalty]") {
    fixture f;
    f.history = {0, 1, 1, 1, 4};
    f.ctx.history = f.history;
    auto c = make({2.0f, -2.0f, 1.0f, 0.5f, 3.0f});
    s::repetition_penalty{1.5f, 64}(c, f.ctx);
    CHECK(c[0].logit == Approx(2.0f / 1.5f));
    CHECK(c[1].logit == Approx(-3.0f));  // seen 3 times, penalized once
    CHECK(c[2].logit == 1.0f);
    CHECK(c[3].logit == 0.5f);
    CHECK(c[4].logit == Approx(2.0f));
}

TEST_CASE("repetition_penalty: frequency and presence", "[sample][penalty]") {
    fixture f;
    f.history = {0, 1, 1, 1, 4};
    f.ctx.history = f.history;
    auto c = make({2.0f, -2.0f, 1.0f, 0.5f, 3.0f});
    s::repetition_penalty{1.0f, 64, /*frequency*/ 0.5f, /*presence*/ 0.25f}(c, f.ctx);
    CHECK(c[0].logit == Approx(2.0f - 0.5f - 0.25f));
    CHECK(c[1].logit == Approx(-2.0f - 3 * 0.5f - 0.25f));
    CHECK(c[2].logit == 1.0f);
    CHECK(c[4].logit == Approx(3.0f - 0.5f - 0.25f));
}

TEST_CASE("repetition_penalty: last_n window", "[sample][penalty]") {
    fixture f;
    f.history = {0, 1, 4};
    f.ctx.history = f.history;
    auto c = make({2.0f, -2.0f, 1.0f, 0.5f, 3.0f});
    s::repetition_penalty{2.0f, 2}(c, f.ctx);  // sees {1, 4} only
    CHECK(c[0].logit == 2.0f);
    CHECK(c[1].logit == -4.0f);
    CHECK(c[4].logit == 1.5f);

    auto all = make({2.0f, -2.0f, 1.0f, 0.5f, 3.0f});
    s::repetition_penalty{2.0f, -1}(all, f.ctx);  // whole history
    CHECK(all[0].logit == 1.0f);
    CHECK(all[1].logit == -4.0f);
    CHECK(all[4].logit == 1.5f);
}

TEST_CASE("repetition_penalty: reordered candidates and unknown ids", "[sample][penalty]") {
    fixture f;
    f.history = {4, 1, -3, 99, 1};
    f.ctx.history = f.history;
    // Not in id order (as after top_k), and id 0 filtered away.
    std::vector<candidate> c{{4, 3.0f, 0}, {2, 1.0f, 0}, {1, -2.0f, 0}};
    s::repetition_penalty{2.0f, 64, 1.0f, 0.0f}(c, f.ctx);
    CHECK(c[0].logit == Approx(3.0f / 2 - 1));
    CHECK(c[1].logit == 1.0f);
    CHECK(c[2].logit == Approx(-2.0f * 2 - 2));

    // Ascending ids with gaps (as after min_p): the binary-search path.
    std::vector<candidate> gaps{{1, -2.0f, 0}, {2, 1.0f, 0}, {4, 3.0f, 0}};
    s::repetition_penalty{2.0f, 64}(gaps, f.ctx);
    CHECK(gaps[0].logit == -4.0f);
    CHECK(gaps[1].logit == 1.0f);
    CHECK(gaps[2].logit == 1.5f);
}

// ---- logit_bias -----------------------------------------------------------------------------

TEST_CASE("logit_bias adds per token and bans with -inf", "[sample][logit_bias]") {
    fixture f;
    auto c = make({1.0f, 2.0f, 3.0f});
    s::logit_bias bias{{{2, -inf}, {0, 0.5f}, {0, 0.25f}, {17, 5.0f}}};
    bias(c, f.ctx);
    CHECK(c[0].logit == 1.75f);
    CHECK(c[1].logit == 2.0f);
    CHECK(c[2].logit == -inf);
    CHECK(s::greedy{}(c, f.ctx) == 1);
    CHECK(c[2].p == 0.0f);
}

// ---- neutral values -------------------------------------------------------------------------

TEST_CASE("neutral parameters are no-ops", "[sample][neutral]") {
    fixture f;
    f.history = {1, 2, 3, 3};
    f.ctx.history = f.history;
    const auto original = random_vocab(1000, 3);
    auto check_noop = [&](auto stage) {
        auto c = original;
        auto kept = stage(std::span<candidate>(c), f.ctx);
        REQUIRE(kept.data() == c.data());
        REQUIRE(kept.size() == c.size());
        for (std::size_t i = 0; i < c.size(); ++i) {
            REQUIRE(c[i].id == original[i].id);
            REQUIRE(c[i].logit == original[i].logit);
        }
    };
    check_noop(s::temperature{1.0f});
    check_noop(s::temperature{});
    check_noop(s::top_k{0});
    check_noop(s::top_k{-1});
    check_noop(s::top_k{1000});
    check_noop(s::top_k{5000});
    check_noop(s::top_p{1.0f});
    check_noop(s::top_p{});
    check_noop(s::min_p{0.0f});
    check_noop(s::min_p{});
    check_noop(s::repetition_penalty{1.0f, 64});
    check_noop(s::repetition_penalty{});
    check_noop(s::repetition_penalty{1.3f, 0});
    check_noop(s::logit_bias{});
}

// ---- dist -----------------------------------------------------------------------------------

TEST_CASE("dist matches the softmax within 3 sigma over 200k draws", "[sample][dist]") {
    fixture f;
    const std::vector<float> logits{1.0f, 0.0f, 2.0f, -1.0f};
    double z = 0.0;
    for (float l : logits) z += std::exp(l);
    constexpr int n = 200000;
    std::vector<int> counts(logits.size(), 0);
    for (int i = 0; i < n; ++i) {
        auto c = make(logits);
        ++counts[static_cast<std::size_t>(s::dist{}(c, f.ctx))];
    }
    for (std::size_t i = 0; i < logits.size(); ++i) {
        const double p = std::exp(logits[i]) / z;
        // Binomial count: mean n p, sigma sqrt(n p (1 - p)); tolerance 3 sigma (~160 draws for p=0.5).
        const double sigma = std::sqrt(n * p * (1.0 - p));
        INFO("token " << i << ": count " << counts[i] << ", expected " << n * p << " +- " << 3 * sigma);
        CHECK(std::abs(counts[i] - n * p) <= 3.0 * sigma);
    }
}

TEST_CASE("dist leaves normalized p and draws exactly once", "[sample][dist]") {
    fixture f;
    auto c = make({0.0f, std::log(3.0f)});
    s::rng expect = f.gen;
    expect.next();
    s::dist{}(c, f.ctx);
    CHECK(c[0].p == Approx(0.25f));
    CHECK(c[1].p == Approx(0.75f));
    CHECK(f.gen == expect);

    auto one = make({5.0f});
    expect.next();
    CHECK(s::dist{}(one, f.ctx) == 0);
    CHECK(f.gen == expect);
}

TEST_CASE("dist never picks a banned token", "[sample][dist]") {
    fixture f;
    for (int i = 0; i < 2000; ++i) {
        auto c = make({0.0f, -inf, 0.0f, -inf});
        const auto t = s::dist{}(c, f.ctx);
        REQUIRE((t == 0 || t == 2));
    }
}

TEST_CASE("temperature 0 then dist picks the argmax", "[sample][dist][temperature]") {
    fixture f;
    for (int i = 0; i < 100; ++i) {
        auto c = make({0.3f, 1.9f, 1.8f, -0.2f});
        auto kept = s::temperature{0.0f}(c, f.ctx);
        REQUIRE(s::dist{}(kept, f.ctx) == 1);
    }
}

TEST_CASE("degenerate logits stay finite", "[sample][dist]") {
    fixture f;
    auto banned = make({-inf, -inf, -inf});
    const auto t = s::dist{}(banned, f.ctx);
    CHECK((t >= 0 && t < 3));
    for (const candidate& x : banned) CHECK(x.p == Approx(1.0f / 3));

    auto forced = make({0.0f, inf, 1.0f});
    CHECK(s::dist{}(forced, f.ctx) == 1);
    CHECK(forced[1].p == 1.0f);
}
