// Hand-built blocks checked against the layouts of spec/quant-formats.md 3.3/3.4: these pin the
// on-disk format independently of the reference code they test.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <vector>

#include <xsimd/xsimd.hpp>

#include <lmtk/quant/quant.hpp>

#include "support/models.hpp"

using namespace lmtk::quant;

TEST_CASE("block sizes match the GGUF type table", "[quant][layout]") {
    STATIC_REQUIRE(sizeof(f32::block) == 4);
    STATIC_REQUIRE(sizeof(f16::block) == 2);
    STATIC_REQUIRE(sizeof(bf16::block) == 2);
    STATIC_REQUIRE(sizeof(q8_0::block) == 34);
    STATIC_REQUIRE(sizeof(q4_0::block) == 18);
    STATIC_REQUIRE(static_cast<int>(q4_0::type_id) == 2);
    STATIC_REQUIRE(static_cast<int>(q8_0::type_id) == 8);
    STATIC_REQUIRE(static_cast<int>(bf16::type_id) == 30);
}

TEST_CASE("q8_0: d = 1, qs = -128..127 decodes to the integers", "[quant][layout]") {
    // 256 values over 8 blocks, laid out byte by byte as in a file: fp16 d, then 32 int8.
    std::vector<unsigned char> bytes;
    for (int b = 0; b < 8; ++b) {
        bytes.push_back(0x00);  // d = 0x3c00 = 1.0, little-endian
        bytes.push_back(0x3c);
        for (int j = 0; j < 32; ++j) bytes.push_back(static_cast<unsigned char>(static_cast<std::int8_t>(-128 + 32 * b + j)));
    }
    REQUIRE(bytes.size() == 8 * sizeof(q8_0::block));
    std::vector<q8_0::block> w(8);
    std::memcpy(w.data(), bytes.data(), bytes.size());
    std::vector<float> y(256);
    q8_0::dequantize_row(w.data(), y.data(), 8);
    for (int i = 0; i < 256; ++i) CHECK(y[i] == static_cast<float>(i - 128));

    // With x = 1 the dot is sum(-128..127) = -128, exactly representable on every path.
    const std::vector<float> ones(256, 1.0f);
    CHECK(q8_0::dot(xsimd::default_arch{}, w.data(), ones.data(), 8) == -128.0f);
}

TEST_CASE("q8_0: the scale multiplies every quant", "[quant][layout]") {
    q8_0::block b{};
    b.d = 0xb800;  // -0.5
    for (int j = 0; j < 32; ++j) b.qs[j] = static_cast<std::int8_t>(j - 16);
    float y[32];
    q8_0::dequantize_row(&b, y, 1);
    for (int j = 0; j < 32; ++j) CHECK(y[j] == -0.5f * static_cast<float>(j - 16));
}

TEST_CASE("q4_0: d = 0.5, nibbles 0..15 decode to -4..3.5, low nibbles first", "[quant][layout]") {
    std::vector<unsigned char> bytes = {0x00, 0x38};  // d = 0x3800 = 0.5
    // Byte j holds element j in its low nibble and element j + 16 in its high nibble.
    for (int j = 0; j < 16; ++j) bytes.push_back(static_cast<unsigned char>(j | ((15 - j) << 4)));
    q4_0::block b;
    REQUIRE(bytes.size() == sizeof b);
    std::memcpy(&b, bytes.data(), sizeof b);
    float y[32];
    q4_0::dequantize_row(&b, y, 1);
    for (int j = 0; j < 16; ++j) {
        CHECK(y[j] == 0.5f * static_cast<float>(j - 8));        // -4, -3.5, ..., 3.5
        CHECK(y[j + 16] == 0.5f * static_cast<float>(7 - j));   // 3.5, 3, ..., -4
    }
    float x[32];
    for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j + 1);
    float expect = 0.0f;
    for (int j = 0; j < 32; ++j) expect += y[j] * x[j];  // small integers / 2: exact in any order
    CHECK(q4_0::dot(xsimd::default_arch{}, &b, x, 1) == expect);
}

TEST_CASE("q8_0 quantizer: known block", "[quant][quantize]") {
    float x[32];
    for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16) * 0.25f;  // amax = 4 at j = 0
    q8_0::block b;
    q8_0::quantize_row(x, &b, 1);
    CHECK(b.d == lmtk::core::f32_to_fp16(4.0f / 127.0f));
    CHECK(b.qs[0] == -127);
    CHECK(b.qs[16] == 0);
    CHECK(b.qs[24] == 64);  // 2 * 127 / 4 = 63.5 rounds away from zero
    CHECK(b.qs[31] == 119);  // 3.75 * 127 / 4 = 119.06

    float zeros[32] = {};
    q8_0::quantize_row(zeros, &b, 1);
    CHECK(b.d == 0);
    for (int j = 0; j < 32; ++j) CHECK(b.qs[j] == 0);
}

TEST_CASE("q4_0 quantizer: known block, ties and the clamp", "[quant][quantize]") {
    float x[32] = {};
    x[0] = -8.0f;  // largest magnitude, negative: d = -8 / -8 = 1
    for (int j = 1; j < 16; ++j) x[j] = static_cast<float>(j - 8);  // exact quants j
    x[16] = 2.5f;   // tie: 10.5 -> 11 (ties go up, as in ggml)
    x[17] = -2.5f;  // tie: 5.5 -> 6
    x[18] = 7.49f;  // 15.49 -> 15
    x[19] = 8.0f;   // 16 clamps to 15
    q4_0::block b;
    q4_0::quantize_row(x, &b, 1);
    CHECK(b.d == 0x3c00);
    for (int j = 0; j < 16; ++j) CHECK((b.qs[j] & 0xF) == j);
    CHECK((b.qs[0] >> 4) == 11);
    CHECK((b.qs[1] >> 4) == 6);
    CHECK((b.qs[2] >> 4) == 15);
    CHECK((b.qs[3] >> 4) == 15);
    CHECK((b.qs[4] >> 4) == 8);  // zero

    // A positive extreme flips the sign of d: the extreme still takes quant 0.
    float p[32] = {};
    p[5] = 4.0f;
    q4_0::quantize_row(p, &b, 1);
    CHECK(b.d == lmtk::core::f32_to_fp16(-0.5f));
    CHECK((b.qs[5] & 0xF) == 0);
    CHECK((b.qs[0] & 0xF) == 8);
}
