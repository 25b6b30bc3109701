#pragma once
// The run of a Llama-family model: a context owns the KV cache of each sequence and every
// activation buffer (its run state, allocated once), and runs the forward pass over the
// weights of a llama<Set, Target> (llama_weights.hpp). decode() and decode_batch() allocate
// nothing.
#include <lmtk/core/error.hpp>
#include <lmtk/core/tensor.hpp>
#include <lmtk/core/thread_pool.hpp>
#include <lmtk/model/attention.hpp>
#include <lmtk/model/hparams.hpp>
#include <lmtk/model/kv_cache.hpp>
#include <lmtk/model/llama_weights.hpp>
#include <lmtk/model/ops.hpp>
#include <lmtk/model/weight.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace lmtk::model {

struct context_options {
    std::size_t n_ctx = 0;       // per sequence; 0: the model's training context, capped at 4096
    std::size_t n_threads = 0;   // 0: one per hardware thread
    // Rows per forward pass (prompt chunks, or tokens of many sequences). 64 keeps a pass's int8
    // activations (64 x 2816 bytes for a 246M model's FFN) in L2 while each packed weight panel
    // streams past them, and the scratch small (about 45 KB a row for that model: peak RSS stays
    // within 1.1x of file + KV cache). Larger batches were no faster with the packed kernels
    // in alternating runs (bench/RESULTS.md), within this machine's +-30% noise.
    std::size_t n_batch = 64;
    std::size_t n_seq = 1;       // sequences with their own KV cache (server slots)
};

// Bytes of memory this machine can still give (MemAvailable), or 0 if unknown.
inline std::size_t available_memory_bytes() {
    std::ifstream in("/proc/meminfo");
    std::string key;
    std::size_t kb = 0;
    std::string unit;
    while (in >> key >> kb >> unit)
        if (key == "MemAvailable:") return kb * 1024;
    return 0;
}

namespace detail {

// Sizes of a context's buffers, as products of a model's widths and the caller's context and
// batch sizes: refused rather than wrapped when they pass 64 bits (a context size of 2^60
// would otherwise wrap to a small, "affordable" cache that decode() writes far past).
inline std::size_t checked_mul(std::size_t a, std::size_t b) {
    std::size_t r = 0;
    if (__builtin_mul_overflow(a, b, &r)) fail("a context of this size does not fit in memory (", a, " x ", b, " overflows)");
    return r;
}
inline std::size_t checked_add(std::size_t a, std::size_t b) {
    std::size_t r = 0;
    if (__builtin_add_overflow(a, b, &r)) fail("a context of this size does not fit in memory (", a, " + ", b, " overflows)");
    return r;
}

}  // namespace detail

// One row of a multi-sequence batch: `token` appended to sequence `seq`.
struct batch_entry {
    std::int32_t token = 0;
    std::uint32_t seq = 0;
    bool want_logits = false;
};

template <class Model, class KV = kv_f32>
class llama_context {
    using arch = typename Model::target::arch;
    static constexpr std::size_t lanes = attention_pass<KV>::max_lanes;

public:
    using kv_type = KV;

    llama_context(const Model& model, context_options opt)
        : m_(model), hp_(model.hparams()), pool_(opt.n_threads) {
        using detail::checked_add, detail::checked_mul;
        n_ctx_ = opt.n_ctx ? opt.n_ctx : std::min<std::size_t>(hp_.n_ctx_train ? hp_.n_ctx_train : 2048, 4096);
        const std::size_t n_seq = std::max<std::size_t>(1, opt.n_seq);
        n_batch_ = std::max<std::size_t>(1, std::min(opt.n_batch ? opt.n_batch : context_options{}.n_batch, checked_mul(n_ctx_, n_seq)));
        // Every buffer below is a part of one of these two totals, so once they are computed
        // without overflow, no product sizing a buffer can overflow either. The widths are
        // bounded by llama_hparams::max_width, so the per-row sum cannot.
        const std::size_t kv_bytes = checked_mul(
            n_seq, checked_mul(checked_mul(checked_mul(2 * std::size_t{hp_.n_layer}, n_ctx_), hp_.kv_dim()), sizeof(typename KV::storage)));
        const std::size_t row_floats = 3 * std::size_t{hp_.n_embd} + 2 * hp_.q_dim() + 2 * hp_.kv_dim() + 2 * std::size_t{hp_.n_ff} +
                                       hp_.rope_dim;
        const std::size_t per_thread_floats = checked_mul(n_ctx_, hp_.n_head / hp_.n_head_kv + lanes);  // attention scratch
        const std::size_t scratch = checked_mul(
            sizeof(float), checked_add(checked_add(checked_mul(n_batch_, row_floats), hp_.n_vocab),
                                       checked_mul(pool_.size(), checked_add(per_thread_floats, hp_.head_dim * lanes + lanes * lanes))));
        if (const std::size_t avail = available_memory_bytes(); avail && checked_add(kv_bytes, scratch) > avail)
            fail("a context of ", n_seq, " x ", n_ctx_, " tokens needs ", (kv_bytes + scratch) >> 20, " MiB (KV cache ",
                 kv_bytes >> 20, " MiB), more than the ", avail >> 20, " MiB of memory available; choose a smaller -c");
        for (std::size_t i = 0; i < n_seq; ++i) caches_.emplace_back(hp_.n_layer, n_ctx_, hp_.kv_dim());
        n_past_.assign(n_seq, 0);
        x_.resize(n_batch_ * hp_.n_embd);
        xb_.resize(n_batch_ * hp_.n_embd);
        q_.resize(n_batch_ * hp_.q_dim());
        k_.resize(n_batch_ * hp_.kv_dim());
        v_.resize(n_batch_ * hp_.kv_dim());
        att_.resize(n_batch_ * hp_.q_dim());
        hb_.resize(n_batch_ * hp_.n_ff);
        hb2_.resize(n_batch_ * hp_.n_ff);
        // Prepared (int8) activations of the widest input, 64-byte aligned for the kernels' loads.
        std::size_t act_row = 0;
        for (std::size_t l = 0; l < hp_.n_layer; ++l) {
            const llama_layer& w = m_.layer(l);
            for (const weight* p : {&w.wq, &w.wk, &w.wv, &w.wo, &w.gate, &w.up, &w.down})
                if (p->ops.act_row_bytes) act_row = std::max(act_row, p->ops.act_row_bytes(p->cols));
        }
        if (m_.output().ops.act_row_bytes) act_row = std::max(act_row, m_.output().ops.act_row_bytes(m_.output().cols));
        act_buf_.resize(n_batch_ * act_row + 64);
        // Gathered inputs of act-order weights: up to three orders (q/k/v) of the widest input.
        bool any_perm = false;
        max_cols_ = std::max({std::size_t(hp_.n_embd), std::size_t(hp_.q_dim()), std::size_t(hp_.n_ff)});
        for (std::size_t l = 0; l < hp_.n_layer; ++l) {
            const llama_layer& w = m_.layer(l);
            for (const weight* p : {&w.wq, &w.wk, &w.wv, &w.wo, &w.gate, &w.up, &w.down}) any_perm |= p->input_perm != nullptr;
        }
        any_perm |= m_.output().input_perm != nullptr;
        if (any_perm) perm_x_.resize(3 * n_batch_ * max_cols_);
        act_ = act_buf_.data() + (64 - reinterpret_cast<std::uintptr_t>(act_buf_.data()) % 64) % 64;
        rope_cos_.resize(n_batch_ * hp_.rope_dim / 2);
        rope_sin_.resize(n_batch_ * hp_.rope_dim / 2);
        if constexpr (::lmtk::target::chooses_kernels_at_load<typename Model::target>)
            if (const quant::kernel_table* k = m_.kernels()) attn_ = k->template attention<KV>()(hp_, n_ctx_, n_batch_, pool_);
        if (!attn_) attn_ = std::make_unique<attention<KV, arch>>(hp_, n_ctx_, n_batch_, pool_);
        embd_row_.resize(m_.embedding_lookup().scratch_bytes());
        logits_.resize(hp_.n_vocab);
        row_seq_.resize(n_batch_);
        row_pos_.resize(n_batch_);
        out_rows_.resize(n_batch_);
        seq_fill_.resize(n_seq);
        tokens_.reserve(n_batch_);
    }

    const Model& model() const noexcept { return m_; }
    std::size_t n_ctx() const noexcept { return n_ctx_; }
    std::size_t n_seq() const noexcept { return caches_.size(); }
    std::size_t n_batch() const noexcept { return n_batch_; }
    std::size_t n_past(std::size_t seq = 0) const noexcept { return n_past_[seq]; }
    std::size_t n_threads() const noexcept { return pool_.size(); }
    std::uint32_t n_vocab() const noexcept { return hp_.n_vocab; }

    // Forgets the cached positions of a sequence from `n_keep` on (0: start it anew).
    void truncate(std::size_t n_keep, std::size_t seq = 0) noexcept { n_past_[seq] = std::min(n_past_[seq], n_keep); }

    // Runs `tokens` on sequence 0 at positions n_past .. n_past + n - 1 and appends them to its
    // cache. Returns the logits of the last token. With `all_logits_out`, also writes every
    // position's logits (n x n_vocab, row-major) there.
    std::span<const float> decode(std::span<const std::int32_t> tokens, float* all_logits_out = nullptr) {
        if (tokens.empty()) fail("decode: no tokens to evaluate");
        check_room(0, tokens.size());
        for (const std::int32_t t : tokens) check_token(t);
        for (std::size_t start = 0; start < tokens.size(); start += n_batch_) {
            const std::size_t n = std::min(n_batch_, tokens.size() - start);
            const bool last_chunk = start + n == tokens.size();
            std::size_t n_out = 0;
            for (std::size_t t = 0; t < n; ++t) {
                row_seq_[t] = 0;
                row_pos_[t] = n_past_[0] + t;
                if (all_logits_out || (last_chunk && t + 1 == n)) out_rows_[n_out++] = t;
            }
            float* out = all_logits_out ? all_logits_out + start * hp_.n_vocab : logits_.data();
            forward(tokens.subspan(start, n), std::span(out_rows_.data(), n_out), out);
            if (all_logits_out && last_chunk) std::copy_n(out + (n - 1) * hp_.n_vocab, hp_.n_vocab, logits_.data());
            n_past_[0] += n;
        }
        return logits_;
    }

    // Runs rows of several sequences in one forward pass per n_batch rows, so the weights stream
    // once for all of them. Rows of one sequence take its next positions in order. The logits of
    // rows with want_logits are written to `logits_out`, one n_vocab row each, in batch order.
    // Returns the number of logit rows written.
    std::size_t decode_batch(std::span<const batch_entry> batch, float* logits_out) {
        std::fill(seq_fill_.begin(), seq_fill_.end(), 0);
        for (const batch_entry& e : batch) {
            if (e.seq >= caches_.size()) fail("decode_batch: sequence ", e.seq, " does not exist (", caches_.size(), " slots)");
            check_token(e.token);
            ++seq_fill_[e.seq];
        }
        for (std::size_t sq = 0; sq < caches_.size(); ++sq) check_room(sq, seq_fill_[sq]);
        std::size_t written = 0;
        for (std::size_t start = 0; start < batch.size(); start += n_batch_) {
            const std::size_t n = std::min(n_batch_, batch.size() - start);
            std::size_t n_out = 0;
            tokens_.resize(n);  // capacity reserved up front: no allocation here
            for (std::size_t t = 0; t < n; ++t) {
                const batch_entry& e = batch[start + t];
                tokens_[t] = e.token;
                row_seq_[t] = e.seq;
                row_pos_[t] = n_past_[e.seq]++;
                if (e.want_logits) out_rows_[n_out++] = t;
            }
            forward(tokens_, std::span(out_rows_.data(), n_out), logits_out + written * hp_.n_vocab);
            written += n_out;
        }
        return written;
    }

    std::span<const float> logits() const noexcept { return logits_; }
    // The same logits as a 1-D xtensor view over this context's buffer (no copy; valid until
    // the next decode): lmtk::log_softmax(ctx.logits_view()), xt::argmax(ctx.logits_view()), ...
    auto logits_view() const noexcept { return vector_view(logits_.data(), logits_.size()); }

    // Runs `tokens` on sequence 0 as decode() does and returns every position's logits,
    // [tokens.size()][n_vocab], in a new container (scoring, perplexity, evaluation).
    xt::xtensor<float, 2> decode_all(std::span<const std::int32_t> tokens) {
        xt::xtensor<float, 2> out = xt::empty<float>({tokens.size(), std::size_t{hp_.n_vocab}});
        decode(tokens, out.data());
        return out;
    }

private:
    void check_room(std::size_t seq, std::size_t n) const {
        if (n_past_[seq] + n > n_ctx_)
            fail("the context is full: ", n_past_[seq], " cached + ", n, " new tokens exceed the context size of ", n_ctx_,
                 " (use a larger -c)");
    }
    void check_token(std::int32_t t) const {
        if (t < 0 || static_cast<std::uint32_t>(t) >= hp_.n_vocab)
            fail("token id ", t, " is outside the vocabulary of ", hp_.n_vocab);
    }

    // ---------------------------------------------------------------------------------------
    // The forward pass of n rows: row t is token tokens[t] of sequence row_seq_[t] at position
    // row_pos_[t]. Logits are computed for the rows listed in `out_rows`, into `out`.
    // Reads top-down like the architecture diagram.
    // ---------------------------------------------------------------------------------------
    void forward(std::span<const std::int32_t> tokens, std::span<const std::size_t> out_rows, float* out) noexcept {
        const std::size_t n = tokens.size(), d = hp_.n_embd, kvd = hp_.kv_dim(), ff = hp_.n_ff, half = hp_.rope_dim / 2;
        const bool neox = hp_.rope == rope_kind::neox;

        // Token embeddings: one (possibly quantized) row per token.
        for (std::size_t t = 0; t < n; ++t) m_.embedding_lookup().row(std::size_t(tokens[t]), embd_row_.data(), &x_[t * d]);
        ops::rope_angles(m_.rope_inv_freq(), row_pos_.data(), n, hp_.rope_freq_scale, rope_cos_.data(), rope_sin_.data());

        for (std::size_t l = 0; l < hp_.n_layer; ++l) {
            const llama_layer& w = m_.layer(l);

            // Attention: RMSNorm, Q/K/V projections, RoPE on Q and K, cache K and V.
            ops::rmsnorm(pool_, xb_.data(), x_.data(), w.attn_norm.data(), n, d, hp_.rms_eps);
            matmul3(w.wq, w.wk, w.wv, xb_.data(), n, q_.data(), k_.data(), v_.data());
            ops::add_bias(q_.data(), w.bq, n);
            ops::add_bias(k_.data(), w.bk, n);
            ops::add_bias(v_.data(), w.bv, n);
            ops::apply_rope(q_.data(), n, hp_.n_head, hp_.head_dim, half, neox, rope_cos_.data(), rope_sin_.data());
            ops::apply_rope(k_.data(), n, hp_.n_head_kv, hp_.head_dim, half, neox, rope_cos_.data(), rope_sin_.data());
            for (std::size_t t = 0; t < n; ++t) {
                kv_cache<KV>& cache = caches_[row_seq_[t]];
                typename KV::storage* kr = cache.k_row(l, row_pos_[t]);
                typename KV::storage* vr = cache.v_row(l, row_pos_[t]);
                for (std::size_t i = 0; i < kvd; ++i) {
                    kr[i] = KV::store(k_[t * kvd + i]);
                    vr[i] = KV::store(v_[t * kvd + i]);
                }
            }

            // Causal grouped-query attention over every cached position of the row's sequence,
            // then the output projection and the residual connection.
            attn_->run(l, n, q_.data(), att_.data(), caches_.data(), row_seq_.data(), row_pos_.data());
            matmul(w.wo, att_.data(), n, xb_.data());
            ops::add_bias(xb_.data(), w.bo, n);
            ops::add_in_place(x_.data(), xb_.data(), n * d);

            // Feed-forward: RMSNorm, SwiGLU (silu(gate) * up), down projection, residual.
            ops::rmsnorm(pool_, xb_.data(), x_.data(), w.ffn_norm.data(), n, d, hp_.rms_eps);
            matmul2(w.gate, w.up, xb_.data(), n, hb_.data(), hb2_.data());
            ops::swiglu<arch>(hb_.data(), hb2_.data(), n * ff);
            matmul(w.down, hb_.data(), n, xb_.data());
            ops::add_in_place(x_.data(), xb_.data(), n * d);
        }

        // Final norm and classifier, for the rows whose logits are wanted.
        if (out_rows.empty()) return;
        for (std::size_t i = 0; i < out_rows.size(); ++i)
            if (out_rows[i] != i) std::copy_n(&x_[out_rows[i] * d], d, &x_[i * d]);  // gather (i <= out_rows[i])
        ops::rmsnorm(pool_, xb_.data(), x_.data(), m_.output_norm().data(), out_rows.size(), d, hp_.rms_eps);
        matmul(m_.output(), xb_.data(), out_rows.size(), out);
    }

    // y (n x w.rows) = x (n x w.cols) * W^T, rows split across threads.
    void matmul(const weight& w, const float* x, std::size_t n, float* y) noexcept {
        const projection p[] = {{&w, y}};
        project(x, n, p);
    }
    // Two or three projections of the same input share one parallel region.
    void matmul2(const weight& a, const weight& b, const float* x, std::size_t n, float* ya, float* yb) noexcept {
        const projection p[] = {{&a, ya}, {&b, yb}};
        project(x, n, p);
    }
    void matmul3(const weight& a, const weight& b, const weight& c, const float* x, std::size_t n, float* ya, float* yb,
                 float* yc) noexcept {
        const projection p[] = {{&a, ya}, {&b, yb}, {&c, yc}};
        project(x, n, p);
    }

    struct projection {
        const weight* w;
        float* y;
    };
    // Projections of one input x (n rows of w.cols). Weights with a prepared-activation path
    // (int8 x for the quantized formats) get x converted once, into act_, for all of them.
    void project(const float* x, std::size_t n, std::span<const projection> ps) noexcept {
        const std::size_t cols = ps[0].w->cols;
        // Act-order (GPTQ) weights take their input in their own column order: gather it once
        // per distinct order (q/k/v of one layer usually share theirs). At most three orders.
        const std::uint32_t* perms[3] = {};
        const float* permuted[3] = {};
        std::size_t n_perm = 0;
        for (const projection& p : ps) {
            const std::uint32_t* perm = p.w->input_perm;
            if (!perm || std::find(perms, perms + n_perm, perm) != perms + n_perm) continue;
            float* dst = &perm_x_[n_perm * n_batch_ * max_cols_];
            pool_.run_sized(n * cols, [&](std::size_t i, std::size_t nt) noexcept {
                const auto [t0, t1] = core::thread_pool::split(n, i, nt);
                for (std::size_t t = t0; t < t1; ++t)
                    for (std::size_t k = 0; k < cols; ++k) dst[t * cols + k] = x[t * cols + perm[k]];
            });
            perms[n_perm] = perm;
            permuted[n_perm++] = dst;
        }
        const auto input_of = [&](const weight& w) noexcept -> const float* {
            if (!w.input_perm) return x;
            return permuted[std::find(perms, perms + n_perm, w.input_perm) - perms];
        };
        const quant::weight_ops* prep = nullptr;
        for (const projection& p : ps)
            if (p.w->ops.matmul_act) prep = &p.w->ops;
        std::size_t act_stride = 0;
        if (prep) {
            act_stride = prep->act_row_bytes(cols);
            pool_.run_sized(n * cols, [&](std::size_t i, std::size_t nt) noexcept {
                const auto [t0, t1] = core::thread_pool::split(n, i, nt);
                for (std::size_t t = t0; t < t1; ++t) prep->prepare_row(x + t * cols, act_ + t * act_stride, cols);
            });
        }
        std::size_t work = 0;
        for (const projection& p : ps) work += p.w->rows * cols * n;
        pool_.run_sized(work, [&](std::size_t i, std::size_t nt) noexcept {
            for (const projection& p : ps) {
                const weight& w = *p.w;
                const auto [r0, r1] = w.rows_of_thread(i, nt);
                if (r0 >= r1) continue;
                if (w.ops.matmul_act && w.ops.act == prep->act)
                    w.ops.matmul_act(w.data, cols, r0, r1, act_, act_stride, n, p.y, w.rows);
                else
                    w.ops.matmul(w.data, cols, r0, r1, input_of(w), cols, n, p.y, w.rows);
            }
        });
    }

    const Model& m_;
    const llama_hparams& hp_;
    core::thread_pool pool_;
    std::size_t n_ctx_ = 0, n_batch_ = 0;
    std::vector<kv_cache<KV>> caches_;       // one per sequence
    std::vector<std::size_t> n_past_;        // cached positions per sequence
    std::unique_ptr<attention_pass<KV>> attn_;  // the load-time level's, else arch's; made once the sizes are checked

    // The run state of one forward pass of n <= n_batch rows (row t: token tokens[t] of
    // sequence row_seq_[t] at position row_pos_[t]); d = n_embd, q_dim = n_head * head_dim,
    // kv_dim = n_head_kv * head_dim, ff = n_ff.
    std::vector<float> x_;                   // [n][d]       the residual stream
    std::vector<float> xb_;                  // [n][d]       a block's normed input, then its output
    std::vector<float> q_;                   // [n][q_dim]   queries
    std::vector<float> k_, v_;               // [n][kv_dim]  this pass's keys and values, before caching
    std::vector<float> att_;                 // [n][q_dim]   attention output per query head
    std::vector<float> hb_, hb2_;            // [n][ff]      gate (then silu(gate) * up) and up
    std::vector<float> rope_cos_, rope_sin_; // [n][rope_dim / 2]
    std::vector<float> logits_;              // [n_vocab]    the last row's logits (decode())
    std::vector<std::byte> embd_row_;        // [row bytes]  a token embedding row read from the file
    std::vector<std::byte> act_buf_;         // [n][act row] prepared (int8) activations (see project())
    std::byte* act_ = nullptr;               //              act_buf_, 64-byte aligned
    std::vector<float> perm_x_;              // [3][n][max_cols_] inputs gathered for act-order weights
    std::size_t max_cols_ = 0;
    std::vector<std::uint32_t> row_seq_;     // [n] per batch row: its sequence
    std::vector<std::size_t> row_pos_;       // [n] per batch row: its position
    std::vector<std::size_t> out_rows_;      // [n] the rows whose logits are wanted
    std::vector<std::size_t> seq_fill_;      // [n_seq] rows per sequence in a decode_batch()
    std::vector<std::int32_t> tokens_;       // [n] a decode_batch() chunk's tokens
};

}  // namespace lmtk::model
