#pragma once
// Random test data for the quant tests: blocks made by each format's own reference quantizer
// from random floats of a few magnitudes, so every format gets realistic scales.
#include <cstddef>
#include <random>
#include <vector>

#include <lmtk/quant/quant.hpp>

namespace lmtk::test {

inline std::vector<float> random_floats(std::size_t n, std::mt19937& g, float scale = 1.0f) {
    std::uniform_real_distribution<float> u(-scale, scale);
    std::vector<float> v(n);
    for (float& f : v) f = u(g);
    return v;
}

template <class P>
std::vector<typename P::block> random_blocks(std::size_t n_blocks, std::mt19937& g) {
    // A different magnitude per block exercises the per-block scales.
    std::uniform_real_distribution<float> mag(0.01f, 4.0f);
    std::vector<float> x;
    x.reserve(n_blocks * P::block_elems);
    for (std::size_t b = 0; b < n_blocks; ++b) {
        const auto part = random_floats(P::block_elems, g, mag(g));
        x.insert(x.end(), part.begin(), part.end());
    }
    std::vector<typename P::block> w(n_blocks);
    P::quantize_row(x.data(), w.data(), n_blocks);
    return w;
}

}  // namespace lmtk::test
