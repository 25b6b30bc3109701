#pragma once
// IEEE binary16 and bfloat16 <-> float32, bit-exact and branch-light. Quant blocks keep their
// scales as raw uint16_t so that host and device share one layout.
#include <bit>
#include <cstdint>

namespace lmtk::core {

constexpr float fp16_to_f32(std::uint16_t h) noexcept {
    // Shift the half into float position, rescale the exponent by 2^112 (15 -> 127 bias), and
    // treat inf/NaN separately; subnormal halves come out exact through the multiply.
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t rest = static_cast<std::uint32_t>(h & 0x7fffu) << 13;
    if ((h & 0x7c00u) == 0x7c00u) return std::bit_cast<float>(sign | 0x7f800000u | rest);
    const float magnitude = std::bit_cast<float>(rest) * 0x1p112f;
    return std::bit_cast<float>(sign | std::bit_cast<std::uint32_t>(magnitude));
}

constexpr std::uint16_t f32_to_fp16(float f) noexcept {
    // Round to nearest even, like the hardware conversion (vcvtps2ph with imm 0).
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    const std::uint32_t sign = (x >> 16) & 0x8000u;
    const std::uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));  // NaN
    if (ax >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // overflow -> inf
    if (ax < 0x38800000u) {  // result is subnormal or zero
        // Add 0.5 so that the float adder rounds the mantissa for us (ties to even).
        const float r = std::bit_cast<float>(ax) + 0.5f;
        return static_cast<std::uint16_t>(sign | (std::bit_cast<std::uint32_t>(r) - 0x3f000000u));
    }
    const std::uint32_t odd = (ax >> 13) & 1u;
    const std::uint32_t rounded = ax + 0xc8000fffu + odd;  // rebias exponent (-112<<23) and round
    return static_cast<std::uint16_t>(sign | (rounded >> 13));
}

constexpr float bf16_to_f32(std::uint16_t b) noexcept {
    return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

constexpr std::uint16_t f32_to_bf16(float f) noexcept {
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // quiet NaN
    return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

}  // namespace lmtk::core
