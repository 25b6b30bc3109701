#pragma once
// The loops around the group kernels of the 16-row interleaved layouts (interleaved.hpp), for
// the ISAs whose registers are narrower than a group: AVX2 (interleaved_avx2.hpp) and NEON
// (interleaved_neon.hpp). They share everything but the kernels: which matrix rows a call
// covers, tokens four at a time, row-major weights packed a group at a time for prefill, and
// Q6_K's per-16 activation sums. A kernel set K supplies
//   K::acc                                  the accumulators of one token over one group
//   K::group<P, T>(g, args, x, sum16, acc)  one group (16 rows) against T tokens
//   K::store_rows(y, n, acc)                the first n (<= 16) rows' results
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

#include <lmtk/quant/act_q8.hpp>
#include <lmtk/quant/interleaved.hpp>

namespace lmtk::quant::interleaved_driver {

// Prefetch of the weights `ahead` bytes on, a block's share at a time (see interleaved_vnni.hpp).
struct prefetch_plan {
    std::size_t ahead = 0;  // 0: none (a group packed into L1 per call)
    std::size_t step = 0;   // group bytes per block
};
inline void prefetch_block(const std::byte* g, const prefetch_plan& pf, std::size_t b) noexcept {
    if (!pf.ahead) return;
    const std::byte* p = g + pf.ahead + b * pf.step;
    // Locality 2: into L2 (prefetcht1 on x86, PRFM PLDL2KEEP on ARM).
    for (std::size_t off = 0; off < pf.step; off += 64) __builtin_prefetch(p + off, 0, 2);
}

// Sums of every 16 activation quants of n_tok rows (Q6_K's zero point applies per 16 elements),
// in a thread-local buffer reused across calls.
inline const std::int32_t* sums_of_16(const std::byte* xa, std::size_t xa_stride, std::size_t cols, std::size_t n_tok) {
    thread_local std::vector<std::int32_t> sums;
    if (sums.size() < n_tok * cols / 16) sums.resize(n_tok * cols / 16);
    for (std::size_t t = 0; t < n_tok; ++t) {
        const std::int8_t* q = act_q8::view(xa + t * xa_stride, cols).qs;
        std::int32_t* out = sums.data() + t * (cols / 16);
        for (std::size_t s = 0; s < cols / 16; ++s) {
            std::int32_t sum = 0;
            for (std::size_t j = 0; j < 16; ++j) sum += q[16 * s + j];
            out[s] = sum;
        }
    }
    return sums.data();
}

// A thread-local buffer of at least `bytes` bytes on a 64-byte boundary, grown once.
inline std::byte* aligned_scratch(std::size_t bytes) {
    thread_local std::unique_ptr<std::byte[]> buf;
    thread_local std::size_t size = 0;
    if (size < bytes) {
        buf.reset(new std::byte[bytes + 64]);
        size = bytes;
    }
    const auto misalign = reinterpret_cast<std::uintptr_t>(buf.get()) % 64;
    return buf.get() + (misalign ? 64 - misalign : 0);
}

struct group_args {
    std::size_t nb, cols;
    const std::byte* xa;
    std::size_t xa_stride;
    const std::int32_t* sum16;  // Q6_K only
    float* y;                   // y[t * y_stride + r], r counted from the first group's first row
    std::size_t y_stride;
    prefetch_plan pf;
};

template <class K, class P, int T>
void run_group(const std::byte* g, std::size_t row, std::size_t n_rows, std::size_t t0, const group_args& a) noexcept {
    act_q8::row xr[T];
    typename K::acc acc[T];
    const std::int32_t* s16[T] = {};
    for (int j = 0; j < T; ++j) {
        xr[j] = act_q8::view(a.xa + (t0 + std::size_t(j)) * a.xa_stride, a.cols);
        if (a.sum16) s16[j] = a.sum16 + (t0 + std::size_t(j)) * (a.cols / 16);
    }
    K::template group<P, T>(g, a.nb, a.pf, xr, s16, acc);
    for (int j = 0; j < T; ++j) K::store_rows(a.y + (t0 + std::size_t(j)) * a.y_stride + row, n_rows - row, acc[j]);
}

// Every token against one group: tokens 4 at a time (each unpacked weight vector then serves
// four), then one by one.
template <class K, class P>
void run_group_all_tokens(const std::byte* g, std::size_t row, std::size_t n_rows, std::size_t n_tok,
                          const group_args& a) noexcept {
    std::size_t t = 0;
    for (; t + 4 <= n_tok; t += 4) run_group<K, P, 4>(g, row, n_rows, t, a);
    for (; t < n_tok; ++t) run_group<K, P, 1>(g, row, n_rows, t, a);
}

// weight_ops::matmul_act over a matrix in P's interleaved layout (w: its first group; rows
// r0 .. r1, r0 a multiple of 16). Rows past r1 in the last group are computed and not stored.
template <class K, class P>
void matmul_interleaved(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
                        std::size_t xa_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    using L = interleaved<P>;
    const std::size_t nb = cols / P::block_elems, gb = L::group_bytes(nb);
    const std::int32_t* sum16 = std::is_same_v<P, q6_k> ? sums_of_16(xa, xa_stride, cols, n_tok) : nullptr;
    const group_args a{nb, cols, xa, xa_stride, sum16, y + r0, y_stride, {interleave_prefetch_distance, gb / nb}};
    const std::byte* first = w + r0 / interleave_rows * gb;
    const std::size_t n_rows = r1 - r0, groups = (n_rows + interleave_rows - 1) / interleave_rows;
    for (std::size_t i = 0; i < groups; ++i) run_group_all_tokens<K, P>(first + i * gb, i * interleave_rows, n_rows, n_tok, a);
}

// The same over row-major weights (as mapped): each group of 16 rows is interleaved into a
// thread-local buffer first, for a prefill batch of weights that were not repacked at load.
template <class K, class P>
void matmul_packed(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
                   std::size_t xa_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    using L = interleaved<P>;
    const std::size_t nb = cols / P::block_elems;
    std::byte* group = aligned_scratch(L::group_bytes(nb));
    const auto* rows = reinterpret_cast<const typename P::block*>(w);
    const std::int32_t* sum16 = std::is_same_v<P, q6_k> ? sums_of_16(xa, xa_stride, cols, n_tok) : nullptr;
    const group_args a{nb, cols, xa, xa_stride, sum16, y + r0, y_stride, {}};
    for (std::size_t r = r0; r < r1; r += interleave_rows) {
        L::pack(rows + r * nb, nb, nb, std::min(interleave_rows, r1 - r), group);
        run_group_all_tokens<K, P>(group, r - r0, r1 - r0, n_tok, a);
    }
}

}  // namespace lmtk::quant::interleaved_driver
