// lmtk::sample::rng: reproducible per seed, distinct across seeds, uniform() in [0, 1).
#include <lmtk/sample/rng.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <vector>

using lmtk::sample::rng;

static_assert(std::uniform_random_bit_generator<rng>);

TEST_CASE("the same seed gives the same stream", "[sample][rng]") {
    rng a(42), b(42);
    for (int i = 0; i < 1000; ++i) REQUIRE(a.next() == b.next());
    a.reseed(7);
    b.reseed(7);
    for (int i = 0; i < 1000; ++i) REQUIRE(a.uniform() == b.uniform());
}

TEST_CASE("different seeds give different streams", "[sample][rng]") {
    rng a(1), b(2);
    int same = 0;
    for (int i = 0; i < 1000; ++i) same += a.next() == b.next();
    CHECK(same == 0);
}

TEST_CASE("seed 0 still produces output (splitmix64 seeding)", "[sample][rng]") {
    rng g(0);
    std::uint64_t ored = 0;
    for (int i = 0; i < 8; ++i) ored |= g.next();
    CHECK(ored != 0);
}

TEST_CASE("uniform() lies in [0, 1) with mean 1/2", "[sample][rng]") {
    rng g(123);
    constexpr int n = 100000;
    double sum = 0.0;
    for (int i = 0; i < n; ++i) {
        const float u = g.uniform();
        REQUIRE(u >= 0.0f);
        REQUIRE(u < 1.0f);
        const double d = g.uniform_double();
        REQUIRE(d >= 0.0);
        REQUIRE(d < 1.0);
        sum += u;
    }
    // Standard error of the mean of U(0,1): sqrt(1/12/n) ~ 0.0009; allow 4 sigma.
    CHECK(sum / n == Approx(0.5).margin(0.0037));
}

TEST_CASE("rng works with <random> distributions", "[sample][rng]") {
    rng g(9);
    std::uniform_int_distribution<int> d(0, 9);
    std::vector<int> hist(10, 0);
    for (int i = 0; i < 10000; ++i) ++hist[static_cast<std::size_t>(d(g))];
    for (int h : hist) CHECK(h > 800);
}
