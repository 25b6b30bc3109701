#pragma once
// lmtk::sample::rng: xoshiro256** seeded through splitmix64. Small, fast and identical on every
// platform (unlike std::uniform_real_distribution, whose output the standard leaves open), so a
// seed reproduces a run anywhere.
#include <array>
#include <cstdint>
#include <limits>

namespace lmtk::sample {

class rng {
public:
    using result_type = std::uint64_t;  // satisfies std::uniform_random_bit_generator

    explicit rng(std::uint64_t seed = 0) noexcept { reseed(seed); }

    // splitmix64 spreads any seed (0 included) over the 256-bit state, which must not be all zero.
    void reseed(std::uint64_t seed) noexcept {
        for (std::uint64_t& word : s_) {
            seed += 0x9e3779b97f4a7c15ull;
            std::uint64_t z = seed;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            word = z ^ (z >> 31);
        }
    }

    std::uint64_t next() noexcept {
        const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
        const std::uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0];
        s_[3] ^= s_[1];
        s_[1] ^= s_[2];
        s_[0] ^= s_[3];
        s_[2] ^= t;
        s_[3] = rotl(s_[3], 45);
        return result;
    }
    result_type operator()() noexcept { return next(); }
    static constexpr result_type min() noexcept { return 0; }
    static constexpr result_type max() noexcept { return std::numeric_limits<result_type>::max(); }

    // Top 24 bits: every value is exact in a float and strictly below 1.
    float uniform() noexcept { return static_cast<float>(next() >> 40) * 0x1.0p-24f; }
    // Top 53 bits, for sampling from large vocabularies where 2^-24 steps would bias rare tokens.
    double uniform_double() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

    friend bool operator==(const rng&, const rng&) = default;

private:
    static constexpr std::uint64_t rotl(std::uint64_t x, int k) noexcept {
        return (x << k) | (x >> (64 - k));
    }
    std::array<std::uint64_t, 4> s_{};
};

}  // namespace lmtk::sample
