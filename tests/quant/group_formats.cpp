// The AWQ/GPTQ group layouts: block packing round-trips, the SIMD dot agrees with the scalar
// decoder on every compiled xsimd architecture, load-time dispatch finds every policy of
// default_set, and the repackers read hand-built AutoAWQ and GPTQ tensors (written here from
// ../shared/spec/quant-formats.md, independently of the Python packer) exactly.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include <xsimd/xsimd.hpp>

#include <lmtk/core/fp16.hpp>
#include <lmtk/quant/cpu_kernels.hpp>
#include <lmtk/quant/quant.hpp>
#include <lmtk/target/cpu.hpp>

using namespace lmtk::quant;
using arch = lmtk::target::cpu<>::arch;

namespace {

template <class L>
std::vector<typename L::block> random_group_blocks(std::size_t n, std::mt19937& g, std::vector<std::uint8_t>* quants = nullptr,
                                                   std::vector<int>* zeros = nullptr, std::vector<float>* scales = nullptr) {
    std::uniform_int_distribution<int> qd(0, int(L::max_q)), zd(0, int(L::max_q) + 1);
    std::uniform_real_distribution<float> sd(1e-3f, 0.1f);
    std::vector<typename L::block> out(n);
    std::uint8_t q[L::block_elems];
    for (std::size_t b = 0; b < n; ++b) {
        for (auto& v : q) v = static_cast<std::uint8_t>(qd(g));
        const int z = zd(g);  // up to max_q + 1: what a GPTQ v1 file's stored max plus one gives
        const std::uint16_t s = lmtk::core::f32_to_fp16(sd(g));
        out[b] = L::pack(q, static_cast<std::uint8_t>(z), s);
        if (quants) quants->insert(quants->end(), q, q + L::block_elems);
        if (zeros) zeros->push_back(z);
        if (scales) scales->push_back(lmtk::core::fp16_to_f32(s));
    }
    return out;
}

std::vector<float> random_inputs(std::size_t n, std::mt19937& g) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> x(n);
    for (auto& v : x) v = d(g);
    return x;
}

void put_word(std::vector<std::byte>& bytes, std::size_t i, std::uint32_t w) { std::memcpy(bytes.data() + 4 * i, &w, 4); }
void put_half(std::vector<std::byte>& bytes, std::size_t i, std::uint16_t h) { std::memcpy(bytes.data() + 2 * i, &h, 2); }

}  // namespace

TEMPLATE_TEST_CASE("group_layout: pack, unpack and dequantize are exact", "[quant][group]", (group_layout<4, 32>),
                   (group_layout<4, 64>), (group_layout<4, 128>), (group_layout<3, 32>), (group_layout<3, 64>),
                   (group_layout<3, 128>)) {
    using L = TestType;
    std::mt19937 g(7);
    std::vector<std::uint8_t> q;
    std::vector<int> z;
    std::vector<float> s;
    const auto w = random_group_blocks<L>(9, g, &q, &z, &s);
    std::vector<float> y(9 * L::block_elems);
    L::dequantize_row(w.data(), y.data(), w.size());
    std::uint8_t back[L::block_elems];
    for (std::size_t b = 0; b < w.size(); ++b) {
        L::unpack(w[b], back);
        for (std::size_t j = 0; j < L::block_elems; ++j) {
            const std::size_t i = b * L::block_elems + j;
            REQUIRE(back[j] == q[i]);
            // (q - z) * s in float is exact: what AWQ and GPTQ define the weight to be.
            REQUIRE(y[i] == static_cast<float>(int(q[i]) - z[b]) * s[b]);
        }
    }
}

TEMPLATE_TEST_CASE("group_layout: dot<Arch> matches the scalar decoder", "[quant][group]", (group_layout<4, 32>),
                   (group_layout<4, 128>), (group_layout<3, 64>), (group_layout<3, 128>)) {
    using L = TestType;
    std::mt19937 g(99);
    for (std::size_t n_blocks : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{33}, 11008 / L::block_elems}) {
        const auto w = random_group_blocks<L>(n_blocks, g);
        const auto x = random_inputs(n_blocks * L::block_elems, g);
        std::vector<float> y(x.size());
        L::dequantize_row(w.data(), y.data(), n_blocks);
        double expect = 0.0, magnitude = 0.0;
        for (std::size_t i = 0; i < y.size(); ++i) {
            expect += double(y[i]) * x[i];
            magnitude += std::fabs(double(y[i]) * x[i]);
        }
        xsimd::supported_architectures::for_each([&](auto a) {
            INFO("arch " << decltype(a)::name() << ", blocks " << n_blocks);
            const float got = L::dot(a, w.data(), x.data(), n_blocks);
            // Float sums in another order than the double reference: within ~100 float ulps of
            // sum |w x| (see conformance.cpp); a decoding bug moves it by whole terms.
            CHECK(std::fabs(got - expect) <= 1e-5 * magnitude + 1e-30);
        });
    }
}

TEMPLATE_TEST_CASE("resolve_group finds every AWQ/GPTQ policy of default_set", "[quant][group]", awq4<32>, awq4<128>,
                   (gptq<4, 128, true>), (gptq<4, -1, false>), (gptq<3, 128, false>), (gptq<3, 32, true>)) {
    STATIC_REQUIRE(group_policy<TestType>);
    STATIC_REQUIRE(default_set::contains_group(TestType::format));
    std::mt19937 g(5);
    using L = typename TestType::layout;
    const std::size_t rows = 13, cols = 4 * L::block_elems, n_tok = 5;
    const auto w = random_group_blocks<L>(rows * 4, g);
    const auto x = random_inputs(n_tok * cols, g);
    // At every kernel level this CPU runs: the matmul kernel over a row range and several
    // tokens equals double-precision dots of the reference decoder's rows (float sums in another
    // order: within 1e-5 of sum |w x|, see conformance.cpp).
    for (const kernel_table* k : runnable_kernel_tables()) {
        const auto ops = k->resolve_group(TestType::format);
        REQUIRE(ops);
        INFO("kernel level " << lmtk::target::isa_name(k->isa));
        CHECK(ops->type == not_a_gguf_type);
        CHECK(ops->block_elems == TestType::layout::block_elems);
        CHECK(ops->block_bytes == sizeof(typename TestType::layout::block));
        std::vector<float> y(n_tok * rows, -1.0f), row(cols);
        ops->matmul(reinterpret_cast<const std::byte*>(w.data()), cols, 2, 11, x.data(), cols, n_tok, y.data(), rows);
        for (std::size_t t = 0; t < n_tok; ++t)
            for (std::size_t r = 0; r < rows; ++r) {
                if (r < 2 || r >= 11) {
                    CHECK(y[t * rows + r] == -1.0f);  // outside the range: untouched
                    continue;
                }
                L::dequantize_row(w.data() + r * 4, row.data(), 4);
                double want = 0.0, mag = 0.0;
                for (std::size_t j = 0; j < cols; ++j) {
                    want += double(row[j]) * x[t * cols + j];
                    mag += std::fabs(double(row[j]) * x[t * cols + j]);
                }
                CHECK(std::fabs(y[t * rows + r] - want) <= 1e-5 * mag + 1e-30);
            }
    }
    CHECK(resolve_group<default_set, arch>(TestType::format));
}

TEST_CASE("resolve_group is nullopt for formats not compiled in", "[quant][group]") {
    CHECK_FALSE(resolve_group<default_set, arch>({group_method::gptq, 8, 128, false}));
    CHECK_FALSE(resolve_group<default_set, arch>({group_method::awq, 4, -1, false}));
    CHECK_FALSE(resolve_group<set<f32>, arch>({group_method::awq, 4, 128, false}));
    CHECK(format_name({group_method::gptq, 3, -1, true}) == "GPTQ 3-bit g-1 act-order");
}

TEST_CASE("GPTQ 3-bit triples: value v sits at bits 3v..3v+2 of 96", "[quant][group][gptq]") {
    std::mt19937 g(3);
    for (int trial = 0; trial < 50; ++trial) {
        unsigned v[32];
        std::uint32_t w[3] = {0, 0, 0};
        for (unsigned i = 0; i < 32; ++i) {
            v[i] = g() & 7;
            for (unsigned b = 0; b < 3; ++b)
                if ((v[i] >> b) & 1) w[(3 * i + b) / 32] |= 1u << ((3 * i + b) % 32);
        }
        for (unsigned i = 0; i < 32; ++i) REQUIRE(gptq_format::value_of_triple(w[0], w[1], w[2], i) == v[i]);
    }
}

TEST_CASE("AWQ GEMM repack reads the interleaved nibbles", "[quant][group][awq]") {
    // in = 64 inputs, out = 16 outputs, groups of 32: q[o][i] = (o + 3 i) % 16, zero = (o + G) % 16,
    // scale = (o + 1) / 64 for group G. Packed as the spec says: nibble k of word c holds
    // output 8c + order[k], order = 0 2 4 6 1 3 5 7.
    constexpr std::size_t in = 64, out = 16, gs = 32;
    constexpr unsigned order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    const auto qv = [](std::size_t o, std::size_t i) { return unsigned((o + 3 * i) % 16); };
    const auto zv = [](std::size_t o, std::size_t grp) { return unsigned((o + grp) % 16); };
    const auto sv = [](std::size_t o, std::size_t grp) { return float(o + 1) / 64.0f * float(grp + 1); };
    std::vector<std::byte> qweight(in * out / 8 * 4), qzeros(in / gs * out / 8 * 4), scales(in / gs * out * 2);
    for (std::size_t i = 0; i < in; ++i)
        for (std::size_t c = 0; c < out / 8; ++c) {
            std::uint32_t w = 0;
            for (unsigned k = 0; k < 8; ++k) w |= qv(8 * c + order[k], i) << (4 * k);
            put_word(qweight, i * (out / 8) + c, w);
        }
    for (std::size_t grp = 0; grp < in / gs; ++grp) {
        for (std::size_t c = 0; c < out / 8; ++c) {
            std::uint32_t w = 0;
            for (unsigned k = 0; k < 8; ++k) w |= zv(8 * c + order[k], grp) << (4 * k);
            put_word(qzeros, grp * (out / 8) + c, w);
        }
        for (std::size_t o = 0; o < out; ++o) put_half(scales, grp * out + o, lmtk::core::f32_to_fp16(sv(o, grp)));
    }
    const group_matrix m = awq::repack_gemm<32>({qweight.data(), qzeros.data(), scales.data(), in, out, gs});
    CHECK(m.input_perm.empty());
    using L = group_layout<4, 32>;
    const auto* blocks = reinterpret_cast<const L::block*>(m.blocks.data());
    std::vector<float> row(in);
    for (std::size_t o = 0; o < out; ++o) {
        L::dequantize_row(blocks + o * (in / gs), row.data(), in / gs);
        for (std::size_t i = 0; i < in; ++i)
            REQUIRE(row[i] == float(int(qv(o, i)) - int(zv(o, i / gs))) * sv(o, i / gs));
    }
}

TEST_CASE("AWQ GEMV repack reads rows packed along the input dimension", "[quant][group][awq]") {
    // in = 256, out = 3, groups of 32 -> 8 groups; zero words ZW = 1 (g >= 128 would pad to 1
    // too; g = 32 pads to a multiple of 4 words: ZW = 4, scales [out, 32], the rest zero).
    constexpr std::size_t in = 256, out = 3, gs = 32, groups = in / gs, zw = 4;
    const auto qv = [](std::size_t o, std::size_t i) { return unsigned((7 * o + i) % 16); };
    const auto zv = [](std::size_t o, std::size_t grp) { return unsigned((o + 2 * grp) % 16); };
    const auto sv = [](std::size_t o, std::size_t grp) { return float(grp + 1) / 128.0f + float(o); };
    std::vector<std::byte> qweight(out * in / 8 * 4), qzeros(out * zw * 4), scales(out * zw * 8 * 2);
    for (std::size_t o = 0; o < out; ++o) {
        for (std::size_t c = 0; c < in / 8; ++c) {
            std::uint32_t w = 0;
            for (unsigned k = 0; k < 8; ++k) w |= qv(o, 8 * c + k) << (4 * k);
            put_word(qweight, o * (in / 8) + c, w);
        }
        std::uint32_t zwords[zw] = {};
        for (std::size_t grp = 0; grp < groups; ++grp) zwords[grp / 8] |= zv(o, grp) << (4 * (grp % 8));
        for (std::size_t c = 0; c < zw; ++c) put_word(qzeros, o * zw + c, zwords[c]);
        for (std::size_t grp = 0; grp < groups; ++grp) put_half(scales, o * zw * 8 + grp, lmtk::core::f32_to_fp16(sv(o, grp)));
    }
    const group_matrix m = awq::repack_gemv<32>({qweight.data(), qzeros.data(), scales.data(), in, out, gs, zw});
    using L = group_layout<4, 32>;
    std::vector<float> row(in);
    for (std::size_t o = 0; o < out; ++o) {
        L::dequantize_row(reinterpret_cast<const L::block*>(m.blocks.data()) + o * groups, row.data(), groups);
        for (std::size_t i = 0; i < in; ++i)
            REQUIRE(row[i] == float(int(qv(o, i)) - int(zv(o, i / gs))) * lmtk::core::fp16_to_f32(lmtk::core::f32_to_fp16(sv(o, i / gs))));
    }
}

TEST_CASE("GPTQ repack: v1 and v2 zeros, 3 and 4 bits, act-order", "[quant][group][gptq]") {
    constexpr std::size_t in = 128, out = 32, gs = 32, groups = in / gs;
    for (unsigned bits : {4u, 3u})
        for (bool v1 : {true, false})
            for (bool act_order : {false, true}) {
                INFO("bits " << bits << " v1 " << v1 << " act_order " << act_order);
                std::mt19937 g(bits * 10 + v1 * 2 + act_order);
                const unsigned max_q = (1u << bits) - 1;
                // Act-order: input i belongs to group rank(i) / gs under a random order.
                std::vector<std::uint32_t> order(in), g_idx(in);
                for (std::size_t i = 0; i < in; ++i) order[i] = static_cast<std::uint32_t>(i);
                if (act_order) std::shuffle(order.begin(), order.end(), g);
                for (std::size_t k = 0; k < in; ++k) g_idx[order[k]] = static_cast<std::uint32_t>(k / gs);
                std::vector<unsigned> q(in * out), z(groups * out);
                std::vector<float> s(groups * out);
                for (auto& v : q) v = g() % (max_q + 1);
                for (auto& v : z) v = 1 + g() % max_q;  // >= 1 so that v1 can store z - 1
                for (auto& v : s) v = lmtk::core::fp16_to_f32(lmtk::core::f32_to_fp16(float(g() % 1000 + 1) / 4096.0f));
                // Pack along the input dimension (qweight) and the output dimension (qzeros).
                std::vector<std::byte> qweight(in * bits / 32 * out * 4), qzeros(groups * out * bits / 32 * 4),
                    scales(groups * out * 2), gi(in * 4);
                const auto pack = [&](std::vector<std::byte>& dst, std::size_t word0, std::size_t stride, std::size_t n_vals,
                                      auto value_of) {
                    // n_vals values, value j at bit bits*j of the concatenated words word0, word0 + stride, ...
                    std::vector<std::uint32_t> words(n_vals * bits / 32, 0);
                    for (std::size_t j = 0; j < n_vals; ++j)
                        for (unsigned b = 0; b < bits; ++b)
                            if ((value_of(j) >> b) & 1) words[(bits * j + b) / 32] |= 1u << ((bits * j + b) % 32);
                    for (std::size_t w = 0; w < words.size(); ++w) put_word(dst, word0 + w * stride, words[w]);
                };
                for (std::size_t o = 0; o < out; ++o)
                    for (std::size_t r0 = 0; r0 < in; r0 += 32)
                        pack(qweight, (r0 * bits / 32) * out + o, out, 32, [&](std::size_t j) { return q[(r0 + j) * out + o]; });
                for (std::size_t grp = 0; grp < groups; ++grp) {
                    for (std::size_t o0 = 0; o0 < out; o0 += 32)
                        pack(qzeros, grp * (out * bits / 32) + o0 * bits / 32, 1, 32,
                             [&](std::size_t j) { return z[grp * out + o0 + j] - (v1 ? 1 : 0); });
                    for (std::size_t o = 0; o < out; ++o) put_half(scales, grp * out + o, lmtk::core::f32_to_fp16(s[grp * out + o]));
                }
                for (std::size_t i = 0; i < in; ++i) put_word(gi, i, g_idx[i]);
                const gptq_format::tensors t{qweight.data(), qzeros.data(), scales.data(), gi.data(), in, out, int(gs), bits, v1};
                const group_matrix m = bits == 4 ? gptq_format::repack<4, 32>(t) : gptq_format::repack<3, 32>(t);
                CHECK(m.input_perm.empty() == !act_order);
                std::vector<float> row(in), expect(in);
                for (std::size_t o = 0; o < out; ++o) {
                    if (bits == 4) {
                        using L = group_layout<4, 32>;
                        L::dequantize_row(reinterpret_cast<const L::block*>(m.blocks.data()) + o * (in / 32), row.data(), in / 32);
                    } else {
                        using L = group_layout<3, 32>;
                        L::dequantize_row(reinterpret_cast<const L::block*>(m.blocks.data()) + o * (in / 32), row.data(), in / 32);
                    }
                    for (std::size_t k = 0; k < in; ++k) {
                        const std::size_t i = m.input_perm.empty() ? k : m.input_perm[k];
                        const std::size_t grp = g_idx[i];
                        REQUIRE(row[k] == float(int(q[i * out + o]) - int(z[grp * out + o])) * s[grp * out + o]);
                    }
                }
            }
}

TEST_CASE("GPTQ repack refuses a g_idx out of range or groups that are not whole blocks", "[quant][group][gptq]") {
    constexpr std::size_t in = 64, out = 8;
    std::vector<std::byte> qweight(in / 8 * out * 4), qzeros(2 * out / 8 * 4), scales(2 * out * 2), gi(in * 4);
    for (std::size_t i = 0; i < in; ++i) put_word(gi, i, i < 33 ? 0 : 1);  // 33 + 31: not runs of 32
    gptq_format::tensors t{qweight.data(), qzeros.data(), scales.data(), gi.data(), in, out, 32, 4, true};
    CHECK_THROWS_WITH((gptq_format::repack<4, 32>(t)), Catch::Contains("not runs of 32"));
    put_word(gi, 5, 7);
    CHECK_THROWS_WITH((gptq_format::repack<4, 32>(t)), Catch::Contains("g_idx[5] = 7"));
}
