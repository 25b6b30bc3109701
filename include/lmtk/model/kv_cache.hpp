#pragma once
// Key/value cache of one sequence, allocated once for the whole context. The element type is a
// policy: `kv_f32` stores floats, `kv_f16` stores IEEE halves (half the memory, ~1e-3 relative
// rounding of cached keys/values). Layout per layer: [position][kv_head * head_dim], one row per
// token, so appending a token writes one contiguous row.
#include <lmtk/core/error.hpp>
#include <lmtk/core/fp16.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace lmtk::model {

struct kv_f32 {
    using storage = float;
    static constexpr std::string_view name = "f32";
    static storage store(float v) noexcept { return v; }
    static float load(storage v) noexcept { return v; }
};

struct kv_f16 {
    using storage = std::uint16_t;
    static constexpr std::string_view name = "f16";
    static storage store(float v) noexcept { return core::f32_to_fp16(v); }
    static float load(storage v) noexcept { return core::fp16_to_f32(v); }
};

template <class KV>
class kv_cache {
public:
    using storage = typename KV::storage;

    kv_cache() = default;
    kv_cache(std::size_t n_layer, std::size_t n_ctx, std::size_t kv_dim)
        : n_layer_(n_layer), n_ctx_(n_ctx), kv_dim_(kv_dim),
          k_(n_layer * n_ctx * kv_dim), v_(n_layer * n_ctx * kv_dim) {}

    static std::size_t bytes_needed(std::size_t n_layer, std::size_t n_ctx, std::size_t kv_dim) noexcept {
        return 2 * n_layer * n_ctx * kv_dim * sizeof(storage);
    }

    std::size_t n_ctx() const noexcept { return n_ctx_; }
    std::size_t kv_dim() const noexcept { return kv_dim_; }

    storage* k_row(std::size_t layer, std::size_t pos) noexcept { return k_.data() + (layer * n_ctx_ + pos) * kv_dim_; }
    storage* v_row(std::size_t layer, std::size_t pos) noexcept { return v_.data() + (layer * n_ctx_ + pos) * kv_dim_; }
    const storage* k_row(std::size_t layer, std::size_t pos) const noexcept {
        return k_.data() + (layer * n_ctx_ + pos) * kv_dim_;
    }
    const storage* v_row(std::size_t layer, std::size_t pos) const noexcept {
        return v_.data() + (layer * n_ctx_ + pos) * kv_dim_;
    }

private:
    std::size_t n_layer_ = 0, n_ctx_ = 0, kv_dim_ = 0;
    std::vector<storage> k_, v_;
};

}  // namespace lmtk::model
