#pragma once
// Repacking at load: the matrices whose format has an interleaved layout on this target
// (quant/interleaved.hpp) move into one buffer in that layout, once, before the first token.
// Shared by every architecture; the forward passes then read only the repacked copies.
#include <lmtk/core/mapped_file.hpp>
#include <lmtk/model/source.hpp>
#include <lmtk/model/weight.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <span>
#include <thread>
#include <vector>

namespace lmtk::model {

// Repacks each matrix of `todo` (distinct, with an interleaved layout and no input
// permutation) into `buffer`, and points it there with the interleaved kernels. Returns the
// bytes repacked. The source's pages of each ~1 MiB chunk are let go as soon as it is done,
// so the peak stays near the file's size even while the largest matrix is repacked.
inline std::size_t interleave_weights(std::span<weight* const> todo, const weight_source& src,
                                      core::anonymous_memory& buffer) {
    if (todo.empty()) return 0;
    // Work in chunks of about 1 MiB of source, shared by two threads (the copy is bound by
    // the kernel zeroing the new pages, which two cores do twice as fast).
    struct chunk {
        weight* w;
        std::size_t offset;  // of the matrix in buffer
        std::size_t g0, g1;
    };
    std::vector<chunk> chunks;
    std::vector<std::size_t> offsets;
    std::size_t total = 0;
    for (weight* w : todo) {
        const std::size_t row_group = w->ops.interleaved->row_group;
        const std::size_t groups = (w->rows + row_group - 1) / row_group;
        const std::size_t per_chunk = std::max<std::size_t>(1, (std::size_t{1} << 20) / (row_group * w->row_bytes()));
        for (std::size_t g = 0; g < groups; g += per_chunk) chunks.push_back({w, total, g, std::min(groups, g + per_chunk)});
        offsets.push_back(total);
        total += w->ops.interleaved_bytes(w->rows, w->cols);
    }
    buffer = core::anonymous_memory(total);
    std::atomic<std::size_t> next{0};
    const auto work = [&]() noexcept {
        for (std::size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < chunks.size();) {
            const chunk& c = chunks[i];
            const weight& w = *c.w;
            for (std::size_t g = c.g0; g < c.g1; ++g) w.ops.interleave_group(w.data, w.rows, w.cols, g, buffer.data() + c.offset);
            const std::size_t group_src = w.ops.interleaved->row_group * w.row_bytes();
            const std::size_t end = std::min(w.rows * w.row_bytes(), c.g1 * group_src);
            src.release(w.data + c.g0 * group_src, end - c.g0 * group_src);
        }
    };
    {
        std::jthread helper(work);
        work();
    }
    for (std::size_t i = 0; i < todo.size(); ++i) {
        weight& w = *todo[i];
        w.data = buffer.data() + offsets[i];
        w.ops = *w.ops.interleaved;
    }
    return total;
}

}  // namespace lmtk::model
