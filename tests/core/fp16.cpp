// core::fp16 / bf16 conversions: exhaustive over all 65536 16-bit patterns, ties-to-even at
// every rounding midpoint, and bit-for-bit agreement with the F16C instructions where this
// build has them.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include <lmtk/core/fp16.hpp>

#include "support/models.hpp"

#ifdef __F16C__
#include <immintrin.h>
#endif

using lmtk::core::bf16_to_f32;
using lmtk::core::f32_to_bf16;
using lmtk::core::f32_to_fp16;
using lmtk::core::fp16_to_f32;

namespace {

bool is_fp16_nan(std::uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x03ffu) != 0; }
bool is_bf16_nan(std::uint16_t b) { return (b & 0x7f80u) == 0x7f80u && (b & 0x007fu) != 0; }

// The value of a finite half, computed independently of the code under test.
double fp16_value(std::uint16_t h) {
    const int exp = (h >> 10) & 0x1f;
    const int man = h & 0x3ff;
    const double mag = exp == 0 ? std::ldexp(man, -24) : std::ldexp(1024 + man, exp - 25);
    return (h & 0x8000u) ? -mag : mag;
}

}  // namespace

TEST_CASE("fp16: known values", "[core][fp16]") {
    CHECK(fp16_to_f32(0x3c00) == 1.0f);
    CHECK(fp16_to_f32(0xc000) == -2.0f);
    CHECK(fp16_to_f32(0x7bff) == 65504.0f);
    CHECK(fp16_to_f32(0x0400) == 0x1p-14f);
    CHECK(fp16_to_f32(0x0001) == 0x1p-24f);
    CHECK(fp16_to_f32(0x03ff) == 1023 * 0x1p-24f);
    CHECK(std::bit_cast<std::uint32_t>(fp16_to_f32(0x8000)) == 0x80000000u);
    CHECK(fp16_to_f32(0x7c00) == std::numeric_limits<float>::infinity());
    CHECK(fp16_to_f32(0xfc00) == -std::numeric_limits<float>::infinity());
    CHECK(std::isnan(fp16_to_f32(0x7e00)));

    CHECK(f32_to_fp16(1.0f) == 0x3c00);
    CHECK(f32_to_fp16(-0.0f) == 0x8000);
    CHECK(f32_to_fp16(65504.0f) == 0x7bff);
    CHECK(f32_to_fp16(65519.0f) == 0x7bff);   // below the midpoint to 65536
    CHECK(f32_to_fp16(65520.0f) == 0x7c00);   // the midpoint: ties to even = inf
    CHECK(f32_to_fp16(1e10f) == 0x7c00);
    CHECK(f32_to_fp16(0x1p-25f) == 0x0000);   // half the smallest subnormal: tie to even 0
    CHECK(f32_to_fp16(0x1.8p-25f) == 0x0001); // 0.75 of it rounds up
    CHECK(f32_to_fp16(0x1.8p-24f) == 0x0002); // 1.5 of it: tie to even 2
    CHECK(f32_to_fp16(0x1p-26f) == 0x0000);
    CHECK(f32_to_fp16(std::numeric_limits<float>::infinity()) == 0x7c00);
    CHECK(is_fp16_nan(f32_to_fp16(std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("fp16: every half decodes to its value and round-trips", "[core][fp16]") {
    for (std::uint32_t i = 0; i < 0x10000u; ++i) {
        const auto h = static_cast<std::uint16_t>(i);
        const float f = fp16_to_f32(h);
        INFO("half 0x" << std::hex << i);
        if (is_fp16_nan(h)) {
            // NaN: stays NaN with its sign and payload; a signalling NaN comes back quiet
            // (top mantissa bit set), as the hardware conversion does.
            REQUIRE(std::isnan(f));
            REQUIRE(f32_to_fp16(f) == (h | 0x0200u));
            continue;
        }
        if ((h & 0x7fffu) == 0x7c00u) {
            REQUIRE(std::isinf(f));
        } else {
            REQUIRE(static_cast<double>(f) == fp16_value(h));
        }
        REQUIRE(f32_to_fp16(f) == h);
    }
}

TEST_CASE("fp16: every midpoint between adjacent halves rounds to the even one", "[core][fp16]") {
    // For each finite positive half h < max, the exact midpoint to h + 1 is a float (a half has
    // 11 significant bits, a float 24); it must round to whichever of h, h + 1 is even. Just
    // either side of it must round to the nearer one.
    for (std::uint16_t h = 0; h < 0x7bff; ++h) {
        const float lo = fp16_to_f32(h), hi = fp16_to_f32(static_cast<std::uint16_t>(h + 1));
        const float mid = static_cast<float>((static_cast<double>(lo) + hi) / 2);
        REQUIRE(static_cast<double>(mid) == (static_cast<double>(lo) + hi) / 2);
        INFO("half 0x" << std::hex << h);
        const std::uint16_t even = (h & 1u) ? static_cast<std::uint16_t>(h + 1) : h;
        REQUIRE(f32_to_fp16(mid) == even);
        REQUIRE(f32_to_fp16(-mid) == (even | 0x8000u));
        REQUIRE(f32_to_fp16(std::nextafter(mid, 0.0f)) == h);
        REQUIRE(f32_to_fp16(std::nextafter(mid, 1e9f)) == h + 1);
    }
}

#ifdef __F16C__
TEST_CASE("fp16: agrees with the F16C instructions", "[core][fp16][hardware]") {
    for (std::uint32_t i = 0; i < 0x10000u; ++i) {
        const auto h = static_cast<std::uint16_t>(i);
        const float hw = _cvtsh_ss(h), sw = fp16_to_f32(h);
        INFO("half 0x" << std::hex << i);
        if (std::isnan(hw)) {
            REQUIRE(std::isnan(sw));
        } else {
            REQUIRE(std::bit_cast<std::uint32_t>(sw) == std::bit_cast<std::uint32_t>(hw));
        }
    }
    // Floats: a dense stride through all 2^32 patterns (an odd stride hits every low-bit
    // pattern class) plus every float near each half's rounding midpoints.
    std::uint64_t mismatches = 0;
    const auto check = [&](std::uint32_t bits) {
        const float f = std::bit_cast<float>(bits);
        const auto hw = static_cast<std::uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
        const std::uint16_t sw = f32_to_fp16(f);
        if (std::isnan(f) ? !is_fp16_nan(sw) || (sw & 0x8000u) != (hw & 0x8000u) : sw != hw) {
            if (++mismatches < 10) FAIL_CHECK("float 0x" << std::hex << bits << ": hw 0x" << hw << " sw 0x" << sw);
        }
    };
    for (std::uint64_t bits = 0; bits <= 0xffffffffu; bits += 997) check(static_cast<std::uint32_t>(bits));
    for (std::uint32_t h = 0; h < 0x7c00u; ++h) {
        const std::uint32_t mid = std::bit_cast<std::uint32_t>(fp16_to_f32(static_cast<std::uint16_t>(h))) + (1u << 12);
        for (std::uint32_t d = 0; d < 3; ++d) {
            check(mid - d);
            check(mid + d);
            check((mid + d) | 0x80000000u);
        }
    }
    CHECK(mismatches == 0);
}
#endif

TEST_CASE("bf16: every pattern round-trips; NaN stays NaN and quiet", "[core][bf16]") {
    for (std::uint32_t i = 0; i < 0x10000u; ++i) {
        const auto b = static_cast<std::uint16_t>(i);
        const float f = bf16_to_f32(b);
        INFO("bf16 0x" << std::hex << i);
        REQUIRE(std::bit_cast<std::uint32_t>(f) == i << 16);
        if (is_bf16_nan(b))
            REQUIRE(f32_to_bf16(f) == (b | 0x0040u));
        else
            REQUIRE(f32_to_bf16(f) == b);
    }
}

TEST_CASE("bf16: rounds to nearest, ties to even", "[core][bf16]") {
    CHECK(f32_to_bf16(1.0f) == 0x3f80);
    CHECK(f32_to_bf16(std::bit_cast<float>(0x3f808000u)) == 0x3f80);  // tie, even below
    CHECK(f32_to_bf16(std::bit_cast<float>(0x3f818000u)) == 0x3f82);  // tie, even above
    CHECK(f32_to_bf16(std::bit_cast<float>(0x3f808001u)) == 0x3f81);
    CHECK(f32_to_bf16(std::bit_cast<float>(0x3f807fffu)) == 0x3f80);
    CHECK(f32_to_bf16(std::bit_cast<float>(0x7f7fffffu)) == 0x7f80);  // FLT_MAX overflows to inf
    CHECK(f32_to_bf16(std::bit_cast<float>(0x00008000u)) == 0x0000);  // subnormal tie to even 0
    CHECK(f32_to_bf16(std::bit_cast<float>(0x00018000u)) == 0x0002);
    // Every finite float on a dense stride against the exact nearest-even choice in double.
    std::uint64_t mismatches = 0;
    for (std::uint64_t bits = 0; bits <= 0xffffffffu; bits += 4099) {
        const auto x = static_cast<std::uint32_t>(bits);
        const float f = std::bit_cast<float>(x);
        if (!std::isfinite(f)) continue;
        const std::uint32_t down = x & 0xffff0000u, up = down + 0x10000u;
        const double fd = f, lo = std::bit_cast<float>(down);
        const double hi = (up & 0x7fffffffu) == 0x7f800000u ? (std::signbit(f) ? -0x1p128 : 0x1p128)  // past FLT_MAX
                                                             : static_cast<double>(std::bit_cast<float>(up));
        const double dlo = std::fabs(fd - lo), dhi = std::fabs(hi - fd);
        const std::uint32_t expect = dlo < dhi ? down : dhi < dlo ? up : ((down >> 16) & 1u) ? up : down;
        if (f32_to_bf16(f) != (expect >> 16) && ++mismatches < 10)
            FAIL_CHECK("float 0x" << std::hex << x << " -> 0x" << f32_to_bf16(f) << ", expected 0x" << (expect >> 16));
    }
    CHECK(mismatches == 0);
}
