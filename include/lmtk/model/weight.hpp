#pragma once
// One weight matrix bound to its kernels, shared by every architecture: a forward pass
// multiplies `weight`s through the kernel pointers chosen at load and never looks at a
// tensor's type. Also how a model is loaded (load_options).
#include <lmtk/core/mapped_file.hpp>
#include <lmtk/core/thread_pool.hpp>
#include <lmtk/quant/dispatch.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <utility>

namespace lmtk::model {

// One weight matrix of `rows` x `cols` (GGUF ne = [cols, rows]) with its kernels.
// A GPTQ act-order matrix has its columns in another order than the inputs: column k multiplies
// input input_perm[k], so its input is gathered into that order first (see project()).
struct weight {
    const std::byte* data = nullptr;
    quant::weight_ops ops{};
    std::size_t rows = 0, cols = 0;
    const std::uint32_t* input_perm = nullptr;  // nullptr: column k is input k

    // Bytes of one row in GGUF's row-major layout (an interleaved copy holds the same bits).
    std::size_t row_bytes() const noexcept { return cols / ops.block_elems * ops.block_bytes; }
    // Row r in input order.
    void dequantize_row(std::size_t r, float* out) const noexcept {
        if (!input_perm) {
            ops.dequantize_row_at(data, cols, r, out);
            return;
        }
        const std::span<float> tmp = quant::kernels::decode_scratch(cols);
        if (tmp.empty()) {  // no memory for the scratch: a row of NaN says so without a crash
            std::fill_n(out, cols, std::numeric_limits<float>::quiet_NaN());
            return;
        }
        ops.dequantize_row_at(data, cols, r, tmp.data());
        for (std::size_t k = 0; k < cols; ++k) out[input_perm[k]] = tmp[k];
    }
    // Thread i of n's share of the rows: contiguous, and cut at the layout's row groups.
    std::pair<std::size_t, std::size_t> rows_of_thread(std::size_t i, std::size_t n) const noexcept {
        const std::size_t g = ops.row_group;
        const auto [g0, g1] = core::thread_pool::split((rows + g - 1) / g, i, n);
        return {std::min(rows, g0 * g), std::min(rows, g1 * g)};
    }
};

// A matrix read a row at a time at random (the token embedding): rows of a mapped, row-major
// matrix are read from its file with pread(2) into the caller's scratch, so that a long run
// does not leave every page it ever looked up resident in this process (the kernel maps 64 KiB
// around each page fault, and lookups are scattered over the whole vocabulary). Rows of any
// other matrix are decoded where they are.
struct row_lookup {
    weight w;
    const core::mapped_file* file = nullptr;  // set only for a mapped, row-major, unpermuted matrix

    std::size_t scratch_bytes() const noexcept { return file ? w.row_bytes() : 0; }
    // Row r as floats; `scratch` holds scratch_bytes().
    void row(std::size_t r, std::byte* scratch, float* out) const noexcept {
        const std::size_t rb = w.row_bytes();
        if (file && file->read_at(w.data + r * rb, rb, scratch)) {
            w.ops.dequantize_row_at(scratch, w.cols, 0, out);
            return;
        }
        w.dequantize_row(r, out);  // a failed read (never expected on a regular file) reads the mapping
    }
};

// How a model is loaded.
struct load_options {
    // Repack the weights of formats with an interleaved layout (quant/interleaved.hpp) once,
    // at load, into memory of their own; the mapped file's pages are let go as each matrix is
    // done, so memory use stays that of the file. Off: every weight is used where it is mapped.
    bool interleave = true;
    // For a target that chooses its kernels at load (target::cpu_dispatch): the instruction-set
    // level to use ("avx2", ...); empty: LMTK_CPU, else the highest this CPU runs.
    std::string cpu;
};

}  // namespace lmtk::model
