#pragma once
// Row-interleaved layouts: 16 rows of a weight matrix stored side by side, so that lane r of a
// 16-lane integer vector is row r. The int8 kernels (interleaved_vnni.hpp) then finish 16 rows
// with each vpdpbusd against 4 activation bytes broadcast from memory, and one convert, scale
// and FMA per block serve all 16 rows: about a quarter of the instructions per weight byte of
// the row-major kernels, which is what lets decode run at the speed memory delivers the weights.
//
// A matrix is repacked into this layout once, at load (model/repack.hpp), or a group at a time
// into a thread-local buffer when a prefill batch multiplies weights that stayed row-major.
// Each group holds exactly the bits of its 16 GGUF rows (rearranged, and for Q8_0 with the sign
// bit of each quant flipped), padded to a 64-byte multiple so that every group starts on a cache
// line; the rows missing from the last group of a matrix whose rows are not a multiple of 16 are
// zeros. pack() writes every byte of a full group's parts and leaves the padding after them
// (under 64 bytes, never read) as it found it.
//
// Within a group the parts are arrays over the blocks (structure of arrays), each starting on a
// 64-byte boundary. "word k of lane r" is 4 consecutive bytes of row r, and the 16 lanes of one
// word are 64 contiguous bytes (one vector):
//
//   Q4_0  q [nb][4][16] u32   word k: bytes 4k..4k+3 of the block's qs (low nibbles: elements
//                             4k.., high nibbles: elements 16 + 4k..), unchanged
//         d [nb][16]   fp16
//   Q8_0  q [nb][8][16] u32   word k: quants 4k..4k+3 as unsigned bytes q + 128
//         d [nb][16]   fp16
//   Q4_K  q [nb][4][8][16] u32  chunk c, word k: bytes 32c + 4k.. of qs (low nibbles: sub-block
//                             2c, high nibbles: sub-block 2c + 1), unchanged
//         s [nb][3][16] u32   the 12 packed scale/min bytes of the super-block, as 3 words
//         d [nb][2][16] fp16  d, then dmin
//   F16   h [cols][16] fp16  column k of the 16 rows: one vector of halves per column
//   Q6_K  u = q + 32 (0..63) of element e; sub-block s = elements 16s..16s+15 = 4 words
//         lo[nb][16][2][16] u32  (s, h): byte j = low 4 bits of u[16s + 8h + j], high nibble the
//                             low 4 bits of u[16s + 8h + 4 + j]
//         hi[nb][16][16] u32  s: byte j, bits 2i..2i+1 = the top 2 bits of u[16s + 4i + j]
//         sc[nb][16][16] i8   sub-block scales
//         d [nb][16]   fp16
//
// The scalar dequantize_row here is the executable spec of each layout; tests check that it
// reproduces the format's reference decoder for every row.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include <lmtk/core/fp16.hpp>
#include <lmtk/quant/f16.hpp>
#include <lmtk/quant/q4_0.hpp>
#include <lmtk/quant/q4_k.hpp>
#include <lmtk/quant/q6_k.hpp>
#include <lmtk/quant/q8_0.hpp>

namespace lmtk::quant {

// Rows per group of every interleaved layout: one 32-bit lane each in a 512-bit vector.
inline constexpr std::size_t interleave_rows = 16;

// How far ahead of the group being multiplied the kernels over these layouts prefetch weights
// into L2 at decode: the reads of about a microsecond at one core's bandwidth (tried from 8 to
// 64 KiB with bench/quant_kernels' _stream benchmarks: 8 was too close, the rest alike).
inline constexpr std::size_t interleave_prefetch_distance = 32 * 1024;

// A format with an interleaved layout specialises this (primary: none).
template <class P>
struct interleaved {
    static constexpr bool available = false;
};

namespace detail {

constexpr std::size_t round_up_64(std::size_t n) noexcept { return (n + 63) / 64 * 64; }

// Lane r of word k in an array of [..][16] u32 words: byte offset of its first byte.
constexpr std::size_t lane_offset(std::size_t word, std::size_t lane) noexcept {
    return (word * interleave_rows + lane) * 4;
}

// The common shape: a group is parts of `bytes_per_block * 16` bytes each per block.
template <class P, std::size_t... PartBytes>
struct interleaved_base {
    static constexpr bool available = true;
    using format = P;
    using block = typename P::block;
    static constexpr std::size_t rows = interleave_rows;
    static_assert((PartBytes + ...) == rows * sizeof(block), "an interleaved group holds exactly 16 rows' bytes");
    // Offset of part i (for nb blocks) within a group.
    static constexpr std::size_t part(std::size_t i, std::size_t nb) noexcept {
        constexpr std::size_t sizes[] = {PartBytes...};
        std::size_t off = 0;
        for (std::size_t j = 0; j < i; ++j) off += sizes[j] * nb;
        return off;
    }
    static constexpr std::size_t group_bytes(std::size_t nb) noexcept { return round_up_64(rows * nb * sizeof(block)); }
    // Bytes of a whole matrix of `n_rows` rows of `nb` blocks in this layout.
    static constexpr std::size_t matrix_bytes(std::size_t n_rows, std::size_t nb) noexcept {
        return (n_rows + rows - 1) / rows * group_bytes(nb);
    }
};

}  // namespace detail

template <>
struct interleaved<q4_0> : detail::interleaved_base<q4_0, 256, 32> {
    // n_rows (<= 16) rows of nb blocks, row-major with `stride` blocks per row -> one group.
    static void pack(const block* src, std::size_t stride, std::size_t nb, std::size_t n_rows, std::byte* g) noexcept {
        if (n_rows < rows) std::memset(g, 0, group_bytes(nb));  // padding rows: zero scales
        std::byte* q = g + part(0, nb);
        auto* d = reinterpret_cast<std::uint16_t*>(g + part(1, nb));
        for (std::size_t r = 0; r < n_rows; ++r)
            for (std::size_t b = 0; b < nb; ++b) {
                const block& blk = src[r * stride + b];
                d[b * rows + r] = blk.d;
                for (std::size_t k = 0; k < 4; ++k) std::memcpy(q + b * 256 + detail::lane_offset(k, r), blk.qs + 4 * k, 4);
            }
    }
    static void dequantize_row(const std::byte* g, std::size_t nb, std::size_t r, float* y) noexcept {
        const auto* q = reinterpret_cast<const std::uint8_t*>(g + part(0, nb));
        const auto* d = reinterpret_cast<const std::uint16_t*>(g + part(1, nb));
        for (std::size_t b = 0; b < nb; ++b, y += 32) {
            const float s = core::fp16_to_f32(d[b * rows + r]);
            for (std::size_t j = 0; j < 16; ++j) {
                const std::uint8_t v = q[b * 256 + detail::lane_offset(j / 4, r) + j % 4];
                y[j] = static_cast<float>((v & 0xF) - 8) * s;
                y[j + 16] = static_cast<float>((v >> 4) - 8) * s;
            }
        }
    }
};

template <>
struct interleaved<q8_0> : detail::interleaved_base<q8_0, 512, 32> {
    static void pack(const block* src, std::size_t stride, std::size_t nb, std::size_t n_rows, std::byte* g) noexcept {
        if (n_rows < rows) std::memset(g, 0, group_bytes(nb));  // padding rows: zero scales
        auto* q = reinterpret_cast<std::uint8_t*>(g + part(0, nb));
        auto* d = reinterpret_cast<std::uint16_t*>(g + part(1, nb));
        for (std::size_t r = 0; r < n_rows; ++r)
            for (std::size_t b = 0; b < nb; ++b) {
                const block& blk = src[r * stride + b];
                d[b * rows + r] = blk.d;
                for (std::size_t k = 0; k < 8; ++k) {
                    std::uint32_t v;
                    std::memcpy(&v, blk.qs + 4 * k, 4);
                    v ^= 0x80808080u;  // each byte q + 128: the sign bit flipped
                    std::memcpy(q + b * 512 + detail::lane_offset(k, r), &v, 4);
                }
            }
    }
    static void dequantize_row(const std::byte* g, std::size_t nb, std::size_t r, float* y) noexcept {
        const auto* q = reinterpret_cast<const std::uint8_t*>(g + part(0, nb));
        const auto* d = reinterpret_cast<const std::uint16_t*>(g + part(1, nb));
        for (std::size_t b = 0; b < nb; ++b, y += 32) {
            const float s = core::fp16_to_f32(d[b * rows + r]);
            for (std::size_t j = 0; j < 32; ++j)
                y[j] = s * static_cast<float>(int(q[b * 512 + detail::lane_offset(j / 4, r) + j % 4]) - 128);
        }
    }
};

template <>
struct interleaved<q4_k> : detail::interleaved_base<q4_k, 2048, 192, 64> {
    static void pack(const block* src, std::size_t stride, std::size_t nb, std::size_t n_rows, std::byte* g) noexcept {
        if (n_rows < rows) std::memset(g, 0, group_bytes(nb));  // padding rows: zero scales
        std::byte* q = g + part(0, nb);
        std::byte* s = g + part(1, nb);
        auto* d = reinterpret_cast<std::uint16_t*>(g + part(2, nb));
        for (std::size_t r = 0; r < n_rows; ++r)
            for (std::size_t b = 0; b < nb; ++b) {
                const block& blk = src[r * stride + b];
                for (std::size_t k = 0; k < 32; ++k) std::memcpy(q + b * 2048 + detail::lane_offset(k, r), blk.qs + 4 * k, 4);
                for (std::size_t k = 0; k < 3; ++k) std::memcpy(s + b * 192 + detail::lane_offset(k, r), blk.scales + 4 * k, 4);
                d[(b * 2 + 0) * rows + r] = blk.d;
                d[(b * 2 + 1) * rows + r] = blk.dmin;
            }
    }
    static void dequantize_row(const std::byte* g, std::size_t nb, std::size_t r, float* y) noexcept {
        const auto* q = reinterpret_cast<const std::uint8_t*>(g + part(0, nb));
        const auto* s = reinterpret_cast<const std::uint8_t*>(g + part(1, nb));
        const auto* d = reinterpret_cast<const std::uint16_t*>(g + part(2, nb));
        for (std::size_t b = 0; b < nb; ++b, y += 256) {
            std::uint8_t scales[12];
            for (std::size_t k = 0; k < 3; ++k) std::memcpy(scales + 4 * k, s + b * 192 + detail::lane_offset(k, r), 4);
            const float dd = core::fp16_to_f32(d[(b * 2) * rows + r]), dmin = core::fp16_to_f32(d[(b * 2 + 1) * rows + r]);
            for (std::size_t c = 0; c < 4; ++c) {
                const auto [sc_a, m_a] = detail::get_scale_min_k4(2 * c, scales);
                const auto [sc_b, m_b] = detail::get_scale_min_k4(2 * c + 1, scales);
                for (std::size_t l = 0; l < 32; ++l) {
                    const std::uint8_t v = q[b * 2048 + detail::lane_offset(8 * c + l / 4, r) + l % 4];
                    y[64 * c + l] = dd * static_cast<float>(sc_a) * static_cast<float>(v & 0xF) - dmin * static_cast<float>(m_a);
                    y[64 * c + 32 + l] = dd * static_cast<float>(sc_b) * static_cast<float>(v >> 4) - dmin * static_cast<float>(m_b);
                }
            }
        }
    }
};

template <>
struct interleaved<q6_k> : detail::interleaved_base<q6_k, 2048, 1024, 256, 32> {
    // u = q + 32 of the 256 elements of one Q6_K block (the reference decoder's bit layout).
    static void unsigned_quants(const block& blk, std::uint8_t* u) noexcept {
        for (std::size_t n = 0; n < 2; ++n)
            for (std::size_t l = 0; l < 32; ++l) {
                const std::uint8_t ql0 = blk.ql[64 * n + l], ql1 = blk.ql[64 * n + l + 32], qh = blk.qh[32 * n + l];
                u[128 * n + l] = static_cast<std::uint8_t>((ql0 & 0xF) | ((qh & 3) << 4));
                u[128 * n + l + 32] = static_cast<std::uint8_t>((ql1 & 0xF) | (((qh >> 2) & 3) << 4));
                u[128 * n + l + 64] = static_cast<std::uint8_t>((ql0 >> 4) | (((qh >> 4) & 3) << 4));
                u[128 * n + l + 96] = static_cast<std::uint8_t>((ql1 >> 4) | (((qh >> 6) & 3) << 4));
            }
    }
    static void pack(const block* src, std::size_t stride, std::size_t nb, std::size_t n_rows, std::byte* g) noexcept {
        if (n_rows < rows) std::memset(g, 0, group_bytes(nb));  // padding rows: zero scales
        auto* lo = reinterpret_cast<std::uint8_t*>(g + part(0, nb));
        auto* hi = reinterpret_cast<std::uint8_t*>(g + part(1, nb));
        auto* sc = reinterpret_cast<std::int8_t*>(g + part(2, nb));
        auto* d = reinterpret_cast<std::uint16_t*>(g + part(3, nb));
        for (std::size_t r = 0; r < n_rows; ++r)
            for (std::size_t b = 0; b < nb; ++b) {
                const block& blk = src[r * stride + b];
                std::uint8_t u[256];
                unsigned_quants(blk, u);
                d[b * rows + r] = blk.d;
                for (std::size_t s = 0; s < 16; ++s) {
                    sc[(b * 16 + s) * rows + r] = blk.scales[s];
                    const std::uint8_t* us = u + 16 * s;
                    for (std::size_t j = 0; j < 4; ++j) {
                        for (std::size_t h = 0; h < 2; ++h)
                            lo[b * 2048 + detail::lane_offset(2 * s + h, r) + j] =
                                static_cast<std::uint8_t>((us[8 * h + j] & 0xF) | ((us[8 * h + 4 + j] & 0xF) << 4));
                        std::uint8_t top = 0;
                        for (std::size_t i = 0; i < 4; ++i) top = static_cast<std::uint8_t>(top | ((us[4 * i + j] >> 4) << (2 * i)));
                        hi[b * 1024 + detail::lane_offset(s, r) + j] = top;
                    }
                }
            }
    }
    static void dequantize_row(const std::byte* g, std::size_t nb, std::size_t r, float* y) noexcept {
        const auto* lo = reinterpret_cast<const std::uint8_t*>(g + part(0, nb));
        const auto* hi = reinterpret_cast<const std::uint8_t*>(g + part(1, nb));
        const auto* sc = reinterpret_cast<const std::int8_t*>(g + part(2, nb));
        const auto* d = reinterpret_cast<const std::uint16_t*>(g + part(3, nb));
        for (std::size_t b = 0; b < nb; ++b) {
            const float dd = core::fp16_to_f32(d[b * rows + r]);
            for (std::size_t s = 0; s < 16; ++s, y += 16) {
                const float scale = dd * static_cast<float>(sc[(b * 16 + s) * rows + r]);
                for (std::size_t i = 0; i < 4; ++i)
                    for (std::size_t j = 0; j < 4; ++j) {
                        const std::uint8_t l = lo[b * 2048 + detail::lane_offset(2 * s + i / 2, r) + j];
                        const std::uint8_t h = hi[b * 1024 + detail::lane_offset(s, r) + j];
                        const int u = ((i % 2 ? l >> 4 : l) & 0xF) | (((h >> (2 * i)) & 3) << 4);
                        y[4 * i + j] = scale * static_cast<float>(u - 32);
                    }
            }
        }
    }
};

// F16: the 16 rows' halves of column k side by side (the float kernels broadcast x[k]).
template <>
struct interleaved<f16> : detail::interleaved_base<f16, 32> {
    static void pack(const block* src, std::size_t stride, std::size_t cols, std::size_t n_rows, std::byte* g) noexcept {
        if (n_rows < rows) std::memset(g, 0, group_bytes(cols));
        auto* h = reinterpret_cast<std::uint16_t*>(g);
        for (std::size_t r = 0; r < n_rows; ++r)
            for (std::size_t k = 0; k < cols; ++k) h[k * rows + r] = src[r * stride + k].bits;
    }
    static void dequantize_row(const std::byte* g, std::size_t cols, std::size_t r, float* y) noexcept {
        const auto* h = reinterpret_cast<const std::uint16_t*>(g);
        for (std::size_t k = 0; k < cols; ++k) y[k] = core::fp16_to_f32(h[k * rows + r]);
    }
};

template <class P>
inline constexpr bool has_interleaved = interleaved<P>::available;

}  // namespace lmtk::quant
