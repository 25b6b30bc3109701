#pragma once
// Causal grouped-query attention over a KV cache per sequence, for the rows of one forward
// pass (a prompt's rows, or one decode row for each of many sequences). Shared by every
// architecture whose attention is softmax(q.k / sqrt(head_dim)) . v over cached positions.
//
// Shapes (hd = head_dim, nh = n_head, nkv = n_head_kv, group = nh / nkv):
//   q    [n][nh][hd]   this pass's queries, RoPE applied
//   att  [n][nh][hd]   output: each query head's mix of cached values
//   caches[seq]        k_row(layer, pos), v_row(layer, pos): [nkv][hd] per position
//   row_seq[t], row_pos[t]: the sequence and position of row t; row t sees positions 0..row_pos[t]
#include <lmtk/core/thread_pool.hpp>
#include <lmtk/model/hparams.hpp>
#include <lmtk/model/kv_cache.hpp>
#include <lmtk/quant/f16.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include <xsimd/xsimd.hpp>

namespace lmtk::model {

// The attention of a context's forward passes, as the context holds it: attention<KV, Arch> of
// the level chosen at load (quant::kernel_table::attention_*, compiled per instruction-set level
// like the weight kernels), or of the program's own Arch. One virtual call per layer and pass.
template <class KV>
class attention_pass {
public:
    // The widest SIMD batch any level uses (AVX-512: 16 floats): what a context budgets the
    // per-thread scratch for before it knows the level.
    static constexpr std::size_t max_lanes = 16;

    virtual ~attention_pass() = default;
    virtual void run(std::size_t layer, std::size_t n, const float* q, float* att, const kv_cache<KV>* caches,
                     const std::uint32_t* row_seq, const std::size_t* row_pos) noexcept = 0;
};

template <class KV, class Arch>
class attention final : public attention_pass<KV> {
    using batch = xsimd::batch<float, Arch>;

public:
    static constexpr std::size_t lanes = batch::size;
    static_assert(lanes <= attention_pass<KV>::max_lanes);

    // Scratch for `n_threads` threads and up to n_batch rows of n_ctx positions.
    attention(const llama_hparams& hp, std::size_t n_ctx, std::size_t n_batch, core::thread_pool& pool)
        : hp_(hp), n_ctx_(n_ctx), pool_(pool) {
        scores_.resize(pool_.size() * (hp_.n_head / hp_.n_head_kv) * n_ctx_);
        // Per thread, for attention over blocks of rows (attention_rows()): a block's queries
        // turned sideways, its scores (a lane per row) and an output tile.
        if (hp_.head_dim % lanes == 0) lane_scratch_.resize(pool_.size() * lane_scratch_floats());
        row_blocks_.reserve(n_batch);
        single_rows_.reserve(n_batch);
    }
    attention(const attention&) = delete;
    attention& operator=(const attention&) = delete;

    // att[t, head h] = softmax(q·k / sqrt(hd)) · v over positions 0..row_pos_[t] of the row's
    // sequence, with kv head h / group. Rows that come in runs of one sequence (a prompt) take
    // attention_rows(), a SIMD lane per row; the others (decode rows of many sequences) take
    // attention_single(), a row and KV head per work item.
    void run(std::size_t layer, std::size_t n, const float* q, float* att, const kv_cache<KV>* caches,
             const std::uint32_t* row_seq, const std::size_t* row_pos) noexcept override {
        q_ = q;
        att_ = att;
        caches_ = caches;
        row_seq_ = row_seq;
        row_pos_ = row_pos;
        row_blocks_.clear();
        single_rows_.clear();
        for (std::size_t t = 0; t < n;) {
            std::size_t e = t + 1;
            while (e < n && e - t < lanes && row_seq_[e] == row_seq_[t]) ++e;
            if (!lane_scratch_.empty() && e - t >= min_lane_rows) row_blocks_.push_back({t, e - t});
            else
                for (std::size_t r = t; r < e; ++r) single_rows_.push_back(r);
            t = e;
        }
        if (!row_blocks_.empty()) attention_rows(layer);
        if (!single_rows_.empty()) attention_single(layer);
    }

private:
    // The rows of single_rows_. One work item is a row and a kv head: the `group` query heads
    // that share it read each cached key and value row once, while it is in L1. When that
    // leaves threads idle (decoding one row of a model with few KV heads), a group is split.
    void attention_single(std::size_t layer) noexcept {
        const std::size_t hd = hp_.head_dim, nh = hp_.n_head, nkv = hp_.n_head_kv, n = single_rows_.size();
        std::size_t work = 0;
        for (const std::size_t t : single_rows_) work += (row_pos_[t] + 1) * nh * hd;
        const std::size_t group = nh / nkv;
        std::size_t parts = 1;
        while (n * nkv * parts < pool_.size() && group % (2 * parts) == 0) parts *= 2;
        const std::size_t heads = group / parts;  // query heads per work item
        const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
        pool_.run_sized(work, [&](std::size_t ti, std::size_t nt) noexcept {
            float* scores = &scores_[ti * group * n_ctx_];  // up to group rows of n_ctx
            const auto [w0, w1] = core::thread_pool::split(n * nkv * parts, ti, nt);
            for (std::size_t item = w0; item < w1; ++item) {
                const std::size_t t = single_rows_[item / (nkv * parts)], g = item / parts % nkv;
                const std::size_t kv_off = g * hd, h0 = g * group + item % parts * heads;
                const std::size_t n_pos = row_pos_[t] + 1;
                const kv_cache<KV>& cache = caches_[row_seq_[t]];
                for (std::size_t p = 0; p < n_pos; ++p) {
                    const typename KV::storage* k = cache.k_row(layer, p) + kv_off;
                    for (std::size_t i = 0; i < heads; ++i)
                        scores[i * n_ctx_ + p] = qk_dot(&q_[(t * nh + h0 + i) * hd], k, hd) * scale;
                }
                for (std::size_t i = 0; i < heads; ++i) softmax_in_place(scores + i * n_ctx_, n_pos);
                float* out = &att_[(t * nh + h0) * hd];  // the item's heads are consecutive
                std::fill_n(out, heads * hd, 0.0f);
                for (std::size_t p = 0; p < n_pos; ++p) {
                    const typename KV::storage* v = cache.v_row(layer, p) + kv_off;
                    std::size_t j = 0;
                    for (; j + batch::size <= hd; j += batch::size) {
                        const batch vj = load_kv(v + j);
                        for (std::size_t i = 0; i < heads; ++i) {
                            float* o = out + i * hd + j;
                            xsimd::fma(batch(scores[i * n_ctx_ + p]), vj, batch::load_unaligned(o)).store_unaligned(o);
                        }
                    }
                    for (; j < hd; ++j)
                        for (std::size_t i = 0; i < heads; ++i) out[i * hd + j] += scores[i * n_ctx_ + p] * KV::load(v[j]);
                }
            }
        });
    }

    // SIMD lanes over rows: up to `lanes` consecutive rows of one sequence (a block of a
    // prompt) and one query head per work item, row j of the block in lane j. A cached key
    // row then meets all the block's queries in head_dim FMAs that broadcast its elements, with
    // no horizontal sums; each lane's causal limit is a mask, softmax runs down the lanes, and
    // each value row meets all the block's probabilities the same way. Per block, the queries
    // are turned sideways once and the outputs turned back once.
    // Blocks of fewer rows than this take attention_single(): the lanes would run mostly empty.
    static constexpr std::size_t min_lane_rows = 4;
    struct row_block {
        std::size_t t0, count;
    };
    std::size_t lane_scratch_floats() const noexcept { return n_ctx_ * lanes + hp_.head_dim * lanes + lanes * lanes; }

    void attention_rows(std::size_t layer) noexcept {
        const std::size_t hd = hp_.head_dim, nh = hp_.n_head, group = nh / hp_.n_head_kv;
        const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
        std::size_t work = 0;
        for (const row_block& b : row_blocks_) work += (row_pos_[b.t0 + b.count - 1] + 1) * b.count * nh * hd;
        pool_.run_sized(work, [&](std::size_t ti, std::size_t nt) noexcept {
            float* qt = &lane_scratch_[ti * lane_scratch_floats()];  // [hd][lanes]
            float* s = qt + hd * lanes;                                  // [n_pos][lanes]
            float* tile = s + n_ctx_ * lanes;                            // [lanes][lanes]
            const auto [w0, w1] = core::thread_pool::split(row_blocks_.size() * nh, ti, nt);
            for (std::size_t item = w0; item < w1; ++item) {
                const row_block& b = row_blocks_[item / nh];
                const std::size_t h = item % nh, kv_off = h / group * hd;
                const kv_cache<KV>& cache = caches_[row_seq_[b.t0]];
                // Lane limits: row j sees positions 0 .. pos[j]; empty lanes copy lane 0.
                alignas(64) float pos_lane[lanes];
                std::size_t first = row_pos_[b.t0], last = first;
                for (std::size_t j = 0; j < lanes; ++j) {
                    const std::size_t pj = row_pos_[b.t0 + (j < b.count ? j : 0)];
                    pos_lane[j] = static_cast<float>(pj);
                    first = std::min(first, pj);
                    last = std::max(last, pj);
                }
                for (std::size_t d = 0; d < hd; ++d)
                    for (std::size_t j = 0; j < lanes; ++j)
                        qt[d * lanes + j] = j < b.count ? q_[((b.t0 + j) * nh + h) * hd + d] * scale : 0.0f;
                const batch limit = batch::load_aligned(pos_lane);
                const batch minus_inf(-std::numeric_limits<float>::infinity());
                // Scores, 8 positions at a time: eight independent FMA chains per query element.
                batch mx = minus_inf;
                const auto score_rows = [&]<std::size_t P>(std::size_t p) {
                    const typename KV::storage* k[P];
                    for (std::size_t i = 0; i < P; ++i) k[i] = cache.k_row(layer, p + i) + kv_off;
                    batch acc[P];
                    for (std::size_t i = 0; i < P; ++i) acc[i] = batch(0.0f);
                    for (std::size_t d = 0; d < hd; ++d) {
                        const batch qd = batch::load_aligned(qt + d * lanes);
                        for (std::size_t i = 0; i < P; ++i) acc[i] = xsimd::fma(qd, batch(KV::load(k[i][d])), acc[i]);
                    }
                    for (std::size_t i = 0; i < P; ++i) {
                        batch v = acc[i];
                        if (p + i > first) v = xsimd::select(batch(static_cast<float>(p + i)) > limit, minus_inf, v);
                        v.store_aligned(s + (p + i) * lanes);
                        mx = xsimd::max(mx, v);
                    }
                };
                const std::size_t n_pos = last + 1;
                std::size_t p = 0;
                for (; p + 8 <= n_pos; p += 8) score_rows.template operator()<8>(p);
                for (; p < n_pos; ++p) score_rows.template operator()<1>(p);
                // Softmax down each lane.
                batch sum(0.0f);
                for (p = 0; p < n_pos; ++p) {
                    const batch e = xsimd::exp(batch::load_aligned(s + p * lanes) - mx);
                    e.store_aligned(s + p * lanes);
                    sum += e;
                }
                const batch inv = batch(1.0f) / sum;
                // Output, a tile of `lanes` dimensions at a time: acc[i] lane j = dim i of row j.
                for (std::size_t d0 = 0; d0 < hd; d0 += lanes) {
                    batch acc[lanes];
                    for (std::size_t i = 0; i < lanes; ++i) acc[i] = batch(0.0f);
                    for (p = 0; p < n_pos; ++p) {
                        const batch pr = batch::load_aligned(s + p * lanes);
                        const typename KV::storage* v = cache.v_row(layer, p) + kv_off + d0;
                        for (std::size_t i = 0; i < lanes; ++i) acc[i] = xsimd::fma(pr, batch(KV::load(v[i])), acc[i]);
                    }
                    for (std::size_t i = 0; i < lanes; ++i) (acc[i] * inv).store_aligned(tile + i * lanes);
                    for (std::size_t j = 0; j < b.count; ++j) {
                        float* out = &att_[((b.t0 + j) * nh + h) * hd + d0];
                        for (std::size_t i = 0; i < lanes; ++i) out[i] = tile[i * lanes + j];
                    }
                }
            }
        });
    }

    // s[0..n) = softmax(s), exp vectorised (a call per value was a visible share of long prompts).
    static void softmax_in_place(float* s, std::size_t n) noexcept {
        float mx = -std::numeric_limits<float>::infinity();
        for (std::size_t p = 0; p < n; ++p) mx = std::max(mx, s[p]);
        batch acc(0.0f);
        std::size_t p = 0;
        for (; p + batch::size <= n; p += batch::size) {
            const batch e = xsimd::exp(batch::load_unaligned(s + p) - batch(mx));
            e.store_unaligned(s + p);
            acc += e;
        }
        float sum = xsimd::hadd(acc);
        for (; p < n; ++p) {
            s[p] = std::exp(s[p] - mx);
            sum += s[p];
        }
        const float inv = 1.0f / sum;
        p = 0;
        for (; p + batch::size <= n; p += batch::size) (batch::load_unaligned(s + p) * batch(inv)).store_unaligned(s + p);
        for (; p < n; ++p) s[p] *= inv;
    }

    // batch::size cached keys or values as floats.
    static batch load_kv(const typename KV::storage* p) noexcept {
        if constexpr (std::is_same_v<typename KV::storage, float>) return batch::load_unaligned(p);
        else return quant::detail::load_fp16<Arch>(p);
    }
    // q . k over a head. Vectorised: the scalar loop is one long dependency chain (the compiler
    // must keep the float sum in order), and attention is every score of every cached position.
    static float qk_dot(const float* q, const typename KV::storage* k, std::size_t hd) noexcept {
        batch acc(0.0f);
        std::size_t j = 0;
        for (; j + batch::size <= hd; j += batch::size) acc = xsimd::fma(batch::load_unaligned(q + j), load_kv(k + j), acc);
        float s = xsimd::hadd(acc);
        for (; j < hd; ++j) s += q[j] * KV::load(k[j]);
        return s;
    }


    const llama_hparams& hp_;
    std::size_t n_ctx_ = 0;
    core::thread_pool& pool_;
    std::vector<float> scores_;                                             // see attention_single()
    std::vector<float, xsimd::aligned_allocator<float, 64>> lane_scratch_;  // see attention_rows()
    std::vector<row_block> row_blocks_;  // this pass's work (see run())
    std::vector<std::size_t> single_rows_;
    // The pass being run (set by run()).
    const float* q_ = nullptr;
    float* att_ = nullptr;
    const kv_cache<KV>* caches_ = nullptr;
    const std::uint32_t* row_seq_ = nullptr;
    const std::size_t* row_pos_ = nullptr;
};

}  // namespace lmtk::model
