// The formats after Q8_0/Q4_0 (Q4_1, Q5_0, Q5_1, Q2_K..Q6_K, IQ4_NL, Q8_K): the same contract
// as conformance.cpp (SIMD dot == scalar reference on every arch, dispatch, matmul), measured
// quantizer error bounds, and hand-built blocks whose decoded values were worked out from the
// spec/quant-formats.md 3.4 formulas, independently of the reference decoders they test.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <xsimd/xsimd.hpp>

#include <lmtk/core/fp16.hpp>
#include <lmtk/quant/quant.hpp>
#include <lmtk/target/cpu.hpp>

#include "quant/random_blocks.hpp"
#include "support/models.hpp"

using namespace lmtk::quant;
using arch = lmtk::target::cpu<>::arch;

namespace {

struct reference_dot {
    double value = 0.0;      // sum w*x in double
    double magnitude = 0.0;  // sum |w*x|: the scale of float rounding error
};

template <class P>
reference_dot scalar_dot(const std::vector<typename P::block>& w, const float* x) {
    std::vector<float> y(w.size() * P::block_elems);
    P::dequantize_row(w.data(), y.data(), w.size());
    reference_dot r;
    for (std::size_t i = 0; i < y.size(); ++i) {
        r.value += static_cast<double>(y[i]) * x[i];
        r.magnitude += std::fabs(static_cast<double>(y[i]) * x[i]);
    }
    return r;
}

template <class P>
std::vector<float> decode(const std::vector<typename P::block>& w) {
    std::vector<float> y(w.size() * P::block_elems);
    P::dequantize_row(w.data(), y.data(), w.size());
    return y;
}

// Blocks from raw bytes, as a file holds them.
template <class P>
typename P::block from_bytes(const std::vector<unsigned char>& bytes) {
    typename P::block b;
    REQUIRE(bytes.size() == sizeof b);
    std::memcpy(&b, bytes.data(), sizeof b);
    return b;
}

void put(std::vector<unsigned char>& v, std::uint16_t h) {  // little-endian fp16/u16
    v.push_back(static_cast<unsigned char>(h & 0xFF));
    v.push_back(static_cast<unsigned char>(h >> 8));
}

// Root-mean-square of (y - x) relative to the root-mean-square of x.
double relative_rms_error(const std::vector<float>& x, const std::vector<float>& y) {
    double e = 0.0, s = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        e += (double(y[i]) - x[i]) * (double(y[i]) - x[i]);
        s += double(x[i]) * x[i];
    }
    return std::sqrt(e / s);
}

// Weight-like test data: Gaussian values with a different spread per 256 (so super-block
// scales differ), plus a few outliers of 5-8 sigma as trained weights have.
std::vector<float> gaussian_weights(std::size_t n, std::mt19937& g) {
    std::normal_distribution<float> z(0.0f, 1.0f);
    std::uniform_real_distribution<float> spread(0.005f, 2.0f), u(0.0f, 1.0f);
    std::vector<float> x(n);
    float sigma = 1.0f;
    for (std::size_t i = 0; i < n; ++i) {
        if (i % 256 == 0) sigma = spread(g);
        x[i] = sigma * z(g);
        if (u(g) < 0.002f) x[i] = sigma * (u(g) < 0.5f ? -1.0f : 1.0f) * (5.0f + 3.0f * u(g));
    }
    return x;
}

}  // namespace

#define LMTK_NEW_FORMATS q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, q8_k
#define LMTK_NEW_WEIGHT_FORMATS q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl

// --- contract --------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("k-quants: dot<Arch> matches the scalar dequantize + inner product", "[quant][dot]",
                   LMTK_NEW_FORMATS) {
    using P = TestType;
    std::mt19937 g(1234);
    for (std::size_t n_blocks : std::vector<std::size_t>{1, 2, 3, 7, 16, 4096 / P::block_elems + 1}) {
        const auto w = lmtk::test::random_blocks<P>(n_blocks, g);
        const auto x = lmtk::test::random_floats(n_blocks * P::block_elems, g);
        const reference_dot expect = scalar_dot<P>(w, x.data());
        xsimd::supported_architectures::for_each([&](auto a) {
            INFO("arch " << decltype(a)::name() << ", blocks " << n_blocks);
            const float got = P::dot(a, w.data(), x.data(), n_blocks);
            // Float sums in another order than the double reference (see conformance.cpp): only
            // rounding separates them, far below what a wrong index or bit would cost.
            CHECK(std::fabs(got - expect.value) <= 1e-5 * expect.magnitude + 1e-30);
        });
    }
    CHECK(P::dot(xsimd::default_arch{}, nullptr, nullptr, 0) == 0.0f);
}

TEMPLATE_TEST_CASE("k-quants: resolve, weight_ops::dequantize_row and matmul", "[quant][dispatch]",
                   LMTK_NEW_WEIGHT_FORMATS) {
    using P = TestType;
    STATIC_REQUIRE(default_set::contains(P::type_id));
    const auto ops = resolve<default_set, arch>(P::type_id);
    REQUIRE(ops);
    CHECK(ops->type == P::type_id);
    CHECK(ops->block_elems == traits_of(P::type_id).block_elems);
    CHECK(ops->block_bytes == traits_of(P::type_id).block_bytes);

    std::mt19937 g(99);
    const std::size_t cols = 512, rows = 13, n_blocks = cols / P::block_elems;
    const auto w = lmtk::test::random_blocks<P>(rows * n_blocks, g);
    {
        std::vector<float> a(cols), b(cols, -1.0f);
        P::dequantize_row(w.data() + 5 * n_blocks, a.data(), n_blocks);
        ops->dequantize_row(reinterpret_cast<const std::byte*>(w.data() + 5 * n_blocks), b.data(), cols);
        CHECK(a == b);
    }
    for (std::size_t n_tok : {std::size_t{1}, std::size_t{3}}) {
        const auto x = lmtk::test::random_floats(n_tok * cols, g);
        constexpr float untouched = -12345.0f;
        std::vector<float> y(n_tok * rows, untouched);
        ops->matmul(reinterpret_cast<const std::byte*>(w.data()), cols, 2, 11, x.data(), cols, n_tok, y.data(), rows);
        for (std::size_t t = 0; t < n_tok; ++t) {
            for (std::size_t r = 0; r < rows; ++r) {
                INFO("n_tok " << n_tok << ", token " << t << ", row " << r);
                const float got = y[t * rows + r];
                if (r < 2 || r >= 11) {
                    CHECK(got == untouched);
                    continue;
                }
                const std::vector<typename P::block> row(w.begin() + std::ptrdiff_t(r * n_blocks),
                                                         w.begin() + std::ptrdiff_t((r + 1) * n_blocks));
                const reference_dot expect = scalar_dot<P>(row, x.data() + t * cols);
                CHECK(std::fabs(got - expect.value) <= 1e-5 * expect.magnitude + 1e-30);
            }
        }
    }
}

// --- reference quantizers --------------------------------------------------------------------

// Relative RMS error (rms(y - x) / rms(x)) of quantize -> dequantize on Gaussian weight-like
// data with outliers (gaussian_weights above), and on uniform data. Measured with these
// quantizers (seed 5, 16384 values): Q2_K 0.281, Q3_K 0.157, Q4_0 0.100, Q4_1 0.083,
// IQ4_NL 0.081, Q4_K 0.077, Q5_0 0.049, Q5_1 0.040, Q5_K 0.038, Q6_K 0.0197, Q8_K 0.0113
// (its one scale per 256 is set by the outliers), Q8_0 0.0063. For scale: an ideal uniform
// quantizer of L levels on uniform data has 1/L (2 bits 0.25, 4 bits 0.0625). Each bound sits
// ~15% above the measured value, so a regression in a fit shows while rounding noise does not;
// Q4_0/Q8_0 are measured alongside as the yardstick the K-quants must beat.
TEMPLATE_TEST_CASE("k-quants: quantize -> dequantize relative RMS error is bounded", "[quant][quantize]",
                   LMTK_NEW_FORMATS, q4_0, q8_0) {
    using P = TestType;
    const double bound = [] {
        switch (P::type_id) {
            case ggml_type::q2_k: return 0.32;
            case ggml_type::q3_k: return 0.18;
            case ggml_type::q4_0: return 0.115;
            case ggml_type::q4_1: return 0.095;
            case ggml_type::q4_k: return 0.088;
            case ggml_type::iq4_nl: return 0.094;
            case ggml_type::q5_0: return 0.057;
            case ggml_type::q5_1: return 0.046;
            case ggml_type::q5_k: return 0.044;
            case ggml_type::q6_k: return 0.023;
            case ggml_type::q8_0: return 0.0072;
            case ggml_type::q8_k: return 0.013;
            default: return 0.0;
        }
    }();
    std::mt19937 g(5);
    const std::size_t n = 64 * 256;
    const auto x = gaussian_weights(n, g);
    std::vector<typename P::block> w(n / P::block_elems);
    P::quantize_row(x.data(), w.data(), w.size());
    const double err = relative_rms_error(x, decode<P>(w));
    WARN(std::string(type_name(P::type_id)) << ": relative RMS error " << err << " (bound " << bound << ")");
    CHECK(err <= bound);

    // Uniform data in [-1, 1] too: no outliers, every level used.
    const auto u = lmtk::test::random_floats(n, g);
    P::quantize_row(u.data(), w.data(), w.size());
    CHECK(relative_rms_error(u, decode<P>(w)) <= bound);
}

TEMPLATE_TEST_CASE("k-quants: degenerate inputs quantize to valid blocks", "[quant][quantize]", LMTK_NEW_FORMATS) {
    using P = TestType;
    const std::size_t n = 2 * P::block_elems;
    std::vector<typename P::block> w(2);
    // All zeros decode to zeros.
    std::vector<float> x(n, 0.0f);
    P::quantize_row(x.data(), w.data(), 2);
    for (float v : decode<P>(w)) CHECK(v == 0.0f);
    // A constant block (positive and negative) and a lone spike decode close to the input.
    for (float c : {0.75f, -3.0f}) {
        std::fill(x.begin(), x.end(), c);
        P::quantize_row(x.data(), w.data(), 2);
        for (float v : decode<P>(w)) CHECK(std::fabs(v - c) <= 0.02f * std::fabs(c));
    }
    // Denormal-sized values (a scale whose inverse overflows) still give finite, tiny output.
    for (std::size_t i = 0; i < n; ++i) x[i] = (i % 3 == 0 ? -1.0f : 1.0f) * 1e-39f * static_cast<float>(i % 7);
    P::quantize_row(x.data(), w.data(), 2);
    for (float v : decode<P>(w)) CHECK(std::fabs(v) <= 1e-37f);
    std::fill(x.begin(), x.end(), 0.0f);
    x[37] = 10.0f;
    P::quantize_row(x.data(), w.data(), 2);
    const auto y = decode<P>(w);
    CHECK(std::fabs(y[37] - 10.0f) <= 0.02f * 10.0f);
    for (std::size_t i = 0; i < n; ++i)
        if (i != 37) CHECK(std::fabs(y[i]) <= 0.1f * 10.0f);
}

TEST_CASE("q4_1/q5_0/q5_1 quantizers follow ggml's rounding rule", "[quant][quantize]") {
    float x[32];
    for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j) * 0.5f - 4.0f;  // -4 .. 11.5, step 0.5
    {
        q4_1::block b;  // m = -4, d = 15.5 / 15
        q4_1::quantize_row(x, &b, 1);
        CHECK(b.m == lmtk::core::f32_to_fp16(-4.0f));
        CHECK(b.d == lmtk::core::f32_to_fp16(15.5f / 15.0f));
        CHECK((b.qs[0] & 0xF) == 0);
        CHECK((b.qs[15] >> 4) == 15);          // the maximum
        CHECK((b.qs[1] & 0xF) == 0);           // 0.5 / 1.0333 = 0.48 -> 0
        CHECK((b.qs[2] & 0xF) == 1);           // 1.0 / 1.0333 = 0.97 -> 1
    }
    {
        q5_0::block b;  // extreme 11.5 -> d = -11.5 / 16; 11.5 lands on quant 0
        q5_0::quantize_row(x, &b, 1);
        CHECK(b.d == lmtk::core::f32_to_fp16(-11.5f / 16.0f));
        float y[32];
        q5_0::dequantize_row(&b, y, 1);
        CHECK(y[31] == lmtk::core::fp16_to_f32(b.d) * -16.0f);
        // x = -4: -4 / d + 16.5 = 22.07 -> 22, i.e. y = 6 d.
        CHECK(y[0] == lmtk::core::fp16_to_f32(b.d) * 6.0f);
    }
    {
        q5_1::block b;
        q5_1::quantize_row(x, &b, 1);
        float y[32];
        q5_1::dequantize_row(&b, y, 1);
        const float d = lmtk::core::fp16_to_f32(b.d), m = lmtk::core::fp16_to_f32(b.m);
        CHECK(m == -4.0f);
        CHECK(y[31] == 31.0f * d + m);
        for (int j = 0; j < 32; ++j) CHECK(std::fabs(y[j] - x[j]) <= 0.5f * d + 1e-3f);
    }
}

// --- hand-built blocks -----------------------------------------------------------------------

TEST_CASE("block sizes and ids match the GGUF type table (new formats)", "[quant][layout]") {
    STATIC_REQUIRE(sizeof(q4_1::block) == 20);
    STATIC_REQUIRE(sizeof(q5_0::block) == 22);
    STATIC_REQUIRE(sizeof(q5_1::block) == 24);
    STATIC_REQUIRE(sizeof(q2_k::block) == 84);
    STATIC_REQUIRE(sizeof(q3_k::block) == 110);
    STATIC_REQUIRE(sizeof(q4_k::block) == 144);
    STATIC_REQUIRE(sizeof(q5_k::block) == 176);
    STATIC_REQUIRE(sizeof(q6_k::block) == 210);
    STATIC_REQUIRE(sizeof(q8_k::block) == 292);
    STATIC_REQUIRE(sizeof(iq4_nl::block) == 18);
    STATIC_REQUIRE(static_cast<int>(q4_1::type_id) == 3);
    STATIC_REQUIRE(static_cast<int>(q5_0::type_id) == 6);
    STATIC_REQUIRE(static_cast<int>(q5_1::type_id) == 7);
    STATIC_REQUIRE(static_cast<int>(q2_k::type_id) == 10);
    STATIC_REQUIRE(static_cast<int>(q3_k::type_id) == 11);
    STATIC_REQUIRE(static_cast<int>(q4_k::type_id) == 12);
    STATIC_REQUIRE(static_cast<int>(q5_k::type_id) == 13);
    STATIC_REQUIRE(static_cast<int>(q6_k::type_id) == 14);
    STATIC_REQUIRE(static_cast<int>(q8_k::type_id) == 15);
    STATIC_REQUIRE(static_cast<int>(iq4_nl::type_id) == 20);
    // Field order: the K-quants' fp16 d sits at the end for Q2_K/Q3_K/Q6_K, at the start for Q4_K/Q5_K.
    STATIC_REQUIRE(offsetof(q2_k::block, d) == 80);
    STATIC_REQUIRE(offsetof(q3_k::block, d) == 108);
    STATIC_REQUIRE(offsetof(q6_k::block, d) == 208);
    STATIC_REQUIRE(offsetof(q4_k::block, qs) == 16);
    STATIC_REQUIRE(offsetof(q5_k::block, qh) == 16);
    STATIC_REQUIRE(offsetof(q5_k::block, qs) == 48);
    STATIC_REQUIRE(offsetof(q5_0::block, qs) == 6);
    STATIC_REQUIRE(offsetof(q5_1::block, qh) == 4);
    STATIC_REQUIRE(offsetof(q8_k::block, bsums) == 260);
}

TEST_CASE("q4_1: d = 0.5, m = -2, nibbles low half first", "[quant][layout]") {
    std::vector<unsigned char> bytes;
    put(bytes, 0x3800);  // d = 0.5
    put(bytes, 0xC000);  // m = -2
    for (int j = 0; j < 16; ++j) bytes.push_back(static_cast<unsigned char>(j | ((15 - j) << 4)));
    const auto b = from_bytes<q4_1>(bytes);
    float y[32];
    q4_1::dequantize_row(&b, y, 1);
    CHECK(y[0] == -2.0f);
    CHECK(y[15] == 5.5f);   // 15 * 0.5 - 2
    CHECK(y[16] == 5.5f);
    CHECK(y[31] == -2.0f);
    for (int j = 0; j < 16; ++j) {
        CHECK(y[j] == 0.5f * static_cast<float>(j) - 2.0f);
        CHECK(y[j + 16] == 0.5f * static_cast<float>(15 - j) - 2.0f);
    }
}

TEST_CASE("q5_0: the fifth bit comes from qh, bit j for element j", "[quant][layout]") {
    std::vector<unsigned char> bytes;
    put(bytes, 0x3C00);  // d = 1
    for (unsigned char c : {0xFF, 0xFF, 0x00, 0x00}) bytes.push_back(c);  // h = 0x0000FFFF
    for (int j = 0; j < 16; ++j) bytes.push_back(static_cast<unsigned char>(j | ((15 - j) << 4)));
    const auto b = from_bytes<q5_0>(bytes);
    float y[32];
    q5_0::dequantize_row(&b, y, 1);
    // Elements 0..15: fifth bit set, (j + 16) - 16 = j; elements 16..31: clear, (15 - j) - 16.
    CHECK(y[0] == 0.0f);
    CHECK(y[15] == 15.0f);
    CHECK(y[16] == -1.0f);
    CHECK(y[31] == -16.0f);
    for (int j = 0; j < 16; ++j) {
        CHECK(y[j] == static_cast<float>(j));
        CHECK(y[j + 16] == static_cast<float>(-1 - j));
    }
}

TEST_CASE("q5_1: d = 0.25, m = 1, fifth bits on the second half", "[quant][layout]") {
    std::vector<unsigned char> bytes;
    put(bytes, 0x3400);  // d = 0.25
    put(bytes, 0x3C00);  // m = 1
    for (unsigned char c : {0x00, 0x00, 0xFF, 0xFF}) bytes.push_back(c);  // h = 0xFFFF0000
    for (int j = 0; j < 16; ++j) bytes.push_back(static_cast<unsigned char>(j | ((15 - j) << 4)));
    const auto b = from_bytes<q5_1>(bytes);
    float y[32];
    q5_1::dequantize_row(&b, y, 1);
    CHECK(y[0] == 1.0f);
    CHECK(y[16] == 8.75f);   // (15 + 16) * 0.25 + 1
    CHECK(y[31] == 5.0f);    // (0 + 16) * 0.25 + 1
    for (int j = 0; j < 16; ++j) {
        CHECK(y[j] == 0.25f * static_cast<float>(j) + 1.0f);
        CHECK(y[j + 16] == 0.25f * static_cast<float>(31 - j) + 1.0f);
    }
}

TEST_CASE("iq4_nl: indices pick the codebook levels", "[quant][layout]") {
    const int K[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    std::vector<unsigned char> bytes;
    put(bytes, 0x4000);  // d = 2
    for (int j = 0; j < 16; ++j) bytes.push_back(static_cast<unsigned char>(j | ((15 - j) << 4)));
    const auto b = from_bytes<iq4_nl>(bytes);
    float y[32];
    iq4_nl::dequantize_row(&b, y, 1);
    CHECK(y[0] == -254.0f);
    CHECK(y[8] == 2.0f);
    CHECK(y[16] == 226.0f);
    for (int j = 0; j < 16; ++j) {
        CHECK(y[j] == 2.0f * static_cast<float>(K[j]));
        CHECK(y[j + 16] == 2.0f * static_cast<float>(K[15 - j]));
    }
    // The quantizer reproduces a block that lies exactly on the codebook.
    iq4_nl::block r;
    iq4_nl::quantize_row(y, &r, 1);
    float z[32];
    iq4_nl::dequantize_row(&r, z, 1);
    for (int j = 0; j < 32; ++j) CHECK(z[j] == y[j]);
}

TEST_CASE("q2_k: 4-bit scale/min pairs, 2-bit quants by shift group", "[quant][layout]") {
    // scales[s]: scale s % 16 in the low nibble, min (s + 3) % 16 in the high nibble.
    // Every qs byte is 0xE4 = 0b11'10'01'00: the quant at shift 2j is j, so element
    // e = 128n + 32j + l has q = j = (e % 128) / 32.
    std::vector<unsigned char> bytes;
    for (int s = 0; s < 16; ++s) bytes.push_back(static_cast<unsigned char>(s | (((s + 3) % 16) << 4)));
    for (int i = 0; i < 64; ++i) bytes.push_back(0xE4);
    put(bytes, 0x3C00);  // d = 1
    put(bytes, 0x3800);  // dmin = 0.5
    const auto b = from_bytes<q2_k>(bytes);
    std::vector<float> y(256);
    q2_k::dequantize_row(&b, y.data(), 1);
    CHECK(y[0] == -1.5f);     // s 0: 0 * 0 - 0.5 * 3
    CHECK(y[40] == -0.5f);    // s 2, q 1: 2 * 1 - 0.5 * 5
    CHECK(y[255] == 44.0f);   // s 15, q 3: 15 * 3 - 0.5 * 2
    for (int e = 0; e < 256; ++e) {
        const int s = e / 16, q = (e % 128) / 32;
        CHECK(y[e] == static_cast<float>(s * q) - 0.5f * static_cast<float>((s + 3) % 16));
    }
}

TEST_CASE("q3_k: signed 6-bit scales, hmask bit 4n + j, clear bit subtracts 4", "[quant][layout]") {
    // Scales k - 8 (k = 0..15) stored as u = k + 24: low nibbles u & 15 of k and k + 8 share
    // byte k (k < 8); the high 2 bits (1 for k < 8, 2 for k >= 8) fill bytes 8..11, bits
    // 2 * (k / 4): 1 | 1 << 2 | 2 << 4 | 2 << 6 = 0xA5 in each.
    const unsigned char scales[12] = {0x08, 0x19, 0x2A, 0x3B, 0x4C, 0x5D, 0x6E, 0x7F, 0xA5, 0xA5, 0xA5, 0xA5};
    for (std::size_t k = 0; k < 16; ++k) CHECK(q3_k::scale(scales, k) == static_cast<int>(k) - 8);
    std::vector<unsigned char> bytes;
    // hmask[l] = 0x0F for l < 16 (high bit set for n = 0), 0xF0 for l >= 16 (set for n = 1).
    for (int l = 0; l < 32; ++l) bytes.push_back(l < 16 ? 0x0F : 0xF0);
    for (int i = 0; i < 64; ++i) bytes.push_back(0xE4);  // low 2 bits of element 128n + 32j + l: j
    for (unsigned char c : scales) bytes.push_back(c);
    put(bytes, 0x3800);  // d = 0.5
    const auto b = from_bytes<q3_k>(bytes);
    std::vector<float> y(256);
    q3_k::dequantize_row(&b, y.data(), 1);
    CHECK(y[0] == -0.0f);      // s 0 (scale -8), j 0, high set: q = 0
    CHECK(y[16] == 14.0f);     // s 1 (scale -7), j 0, l 16, high clear: q = -4 -> 0.5 * -7 * -4
    CHECK(y[100] == -3.0f);    // s 6 (scale -2), j 3, l 4, high set: q = 3
    CHECK(y[255] == 10.5f);    // s 15 (scale 7), n 1, j 3, l 31, high set: q = 3
    for (int e = 0; e < 256; ++e) {
        const int n = e / 128, j = (e % 128) / 32, l = e % 32;
        const bool high = n == 0 ? l < 16 : l >= 16;
        const int q = j - (high ? 0 : 4);
        INFO("element " << e);
        CHECK(y[e] == 0.5f * static_cast<float>(e / 16 - 8) * static_cast<float>(q));
    }
}

namespace {
// Q4_K/Q5_K test scales: sc[k] = 10 + 7k, mn[k] = 63 - 5k, packed by hand (see the test).
constexpr int k4_sc[8] = {10, 17, 24, 31, 38, 45, 52, 59};
constexpr int k4_mn[8] = {63, 58, 53, 48, 43, 38, 33, 28};
// Bytes 0..3: sc[k] | (sc[k + 4] >> 4) << 6; bytes 4..7: mn[k] | (mn[k + 4] >> 4) << 6;
// bytes 8..11: (sc[k + 4] & 15) | (mn[k + 4] & 15) << 4.
constexpr unsigned char k4_scales[12] = {138, 145, 216, 223, 191, 186, 181, 112, 182, 109, 20, 203};
}  // namespace

TEST_CASE("q4_k: packed 6-bit scales and mins, low nibbles then high nibbles per 64", "[quant][layout]") {
    for (std::size_t k = 0; k < 8; ++k) {
        const auto [sc, mn] = lmtk::quant::detail::get_scale_min_k4(k, k4_scales);
        CHECK(sc == k4_sc[k]);
        CHECK(mn == k4_mn[k]);
    }
    std::vector<unsigned char> bytes;
    put(bytes, 0x3C00);  // d = 1
    put(bytes, 0x3400);  // dmin = 0.25
    for (unsigned char c : k4_scales) bytes.push_back(c);
    for (int i = 0; i < 128; ++i) bytes.push_back(static_cast<unsigned char>((i & 15) | ((15 - (i & 15)) << 4)));
    const auto b = from_bytes<q4_k>(bytes);
    std::vector<float> y(256);
    q4_k::dequantize_row(&b, y.data(), 1);
    CHECK(y[0] == -15.75f);    // sub-block 0: 10 * 0 - 0.25 * 63
    CHECK(y[32] == 240.5f);    // sub-block 1, high nibble 15: 17 * 15 - 0.25 * 58
    CHECK(y[255] == -7.0f);    // sub-block 7, high nibble 15 - 15 = 0: -0.25 * 28
    for (int e = 0; e < 256; ++e) {
        const int k = e / 32, l = e % 32, nib = (e % 64) < 32 ? (l & 15) : 15 - (l & 15);
        INFO("element " << e);
        CHECK(y[e] == static_cast<float>(k4_sc[k] * nib) - 0.25f * static_cast<float>(k4_mn[k]));
    }
}

TEST_CASE("q5_k: the fifth bit of sub-block k is bit k of qh[e % 32]", "[quant][layout]") {
    std::vector<unsigned char> bytes;
    put(bytes, 0x3800);  // d = 0.5
    put(bytes, 0x3C00);  // dmin = 1
    for (unsigned char c : k4_scales) bytes.push_back(c);
    // qh[l] = 0x55 for even l (even sub-blocks get +16), 0xAA for odd l (odd sub-blocks).
    for (int l = 0; l < 32; ++l) bytes.push_back(l % 2 ? 0xAA : 0x55);
    for (int i = 0; i < 128; ++i) bytes.push_back(static_cast<unsigned char>((i & 15) | ((15 - (i & 15)) << 4)));
    const auto b = from_bytes<q5_k>(bytes);
    std::vector<float> y(256);
    q5_k::dequantize_row(&b, y.data(), 1);
    CHECK(y[0] == 17.0f);      // sub-block 0, l 0 even: q = 0 + 16 -> 0.5 * 10 * 16 - 63
    CHECK(y[1] == -58.0f);     // l 1 odd: no fifth bit, q = 1 -> 0.5 * 10 * 1 - 63
    CHECK(y[33] == 197.0f);    // sub-block 1, high nibble 14, l 1 odd: q = 30 -> 0.5 * 17 * 30 - 58
    for (int e = 0; e < 256; ++e) {
        const int k = e / 32, l = e % 32, nib = (e % 64) < 32 ? (l & 15) : 15 - (l & 15);
        const int q = nib + ((l % 2) == (k % 2) ? 16 : 0);
        INFO("element " << e);
        CHECK(y[e] == 0.5f * static_cast<float>(k4_sc[k] * q) - static_cast<float>(k4_mn[k]));
    }
}

TEST_CASE("q6_k: ql nibbles, qh 2-bit pairs, int8 scales, offset 32", "[quant][layout]") {
    const int scales[16] = {-128, -100, -64, -32, -8, -1, 0, 1, 2, 8, 16, 32, 64, 100, 120, 127};
    std::vector<unsigned char> bytes;
    // ql[i]: low nibble i % 16, high nibble 15 - i % 16. qh bytes 0xE4: the pair at bits 2k is k.
    for (int i = 0; i < 128; ++i) bytes.push_back(static_cast<unsigned char>((i % 16) | ((15 - i % 16) << 4)));
    for (int i = 0; i < 64; ++i) bytes.push_back(0xE4);
    for (int s : scales) bytes.push_back(static_cast<unsigned char>(static_cast<std::int8_t>(s)));
    put(bytes, 0x3800);  // d = 0.5
    const auto b = from_bytes<q6_k>(bytes);
    std::vector<float> y(256);
    q6_k::dequantize_row(&b, y.data(), 1);
    CHECK(y[0] == 2048.0f);    // q = 0 - 32, scale -128: 0.5 * -128 * -32
    CHECK(y[255] == 1016.0f);  // n 1, k 3, l 31: low 15 - 15 = 0, high 3 -> 48 - 32 = 16; scale 127
    CHECK(y[96] == 0.0f);      // scale index 6 is 0
    for (int e = 0; e < 256; ++e) {
        // e = 128n + 32k + l: low 4 bits are l % 16 for k < 2 (low nibbles), 15 - l % 16 for
        // k >= 2 (high nibbles); the high 2 bits are k.
        const int k = (e % 128) / 32, l = e % 32;
        const int q = ((k < 2 ? l % 16 : 15 - l % 16) | (k << 4)) - 32;
        INFO("element " << e);
        CHECK(y[e] == 0.5f * static_cast<float>(scales[e / 16]) * static_cast<float>(q));
    }
}

TEST_CASE("q8_k: fp32 d times int8 quants; bsums are the quantizer's 16-sums", "[quant][layout]") {
    std::vector<unsigned char> bytes(292, 0);
    const float d = 0.25f;
    std::memcpy(bytes.data(), &d, 4);
    for (int j = 0; j < 256; ++j) bytes[4 + j] = static_cast<unsigned char>(static_cast<std::int8_t>(j - 128));
    const auto b = from_bytes<q8_k>(bytes);
    std::vector<float> y(256);
    q8_k::dequantize_row(&b, y.data(), 1);
    for (int j = 0; j < 256; ++j) CHECK(y[j] == 0.25f * static_cast<float>(j - 128));

    std::mt19937 g(3);
    const auto x = lmtk::test::random_floats(256, g, 3.0f);
    q8_k::block q;
    q8_k::quantize_row(x.data(), &q, 1);
    for (int i = 0; i < 16; ++i) {
        int s = 0;
        for (int j = 0; j < 16; ++j) s += q.qs[16 * i + j];
        CHECK(q.bsums[i] == s);
    }
}
