#pragma once
// Llama-family transformer: weights bound in place from a GGUF mapping, and a context that owns
// the KV cache and every activation buffer and runs the forward pass.
//
//   llama<Set, Target>        immutable after load; shareable between contexts
//   llama_context<Model, KV>  one sequence: KV cache + scratch, allocated once; decode() runs
//                             tokens through the network and allocates nothing
//
// Each weight's GGUF type is mapped to a compiled kernel pair (quant::weight_ops) once, at
// load; the forward pass below calls through those pointers and never switches on a type.
#include <lmtk/core/error.hpp>
#include <lmtk/core/mapped_file.hpp>
#include <lmtk/core/thread_pool.hpp>
#include <lmtk/io/gguf.hpp>
#include <lmtk/model/hparams.hpp>
#include <lmtk/model/kv_cache.hpp>
#include <lmtk/model/source.hpp>
#include <lmtk/quant/cpu_kernels.hpp>
#include <lmtk/quant/quant.hpp>
#include <lmtk/target/cpu.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <xsimd/xsimd.hpp>

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

struct llama_layer {
    weight wq, wk, wv, wo;      // attention projections
    weight gate, up, down;      // SwiGLU feed-forward
    std::vector<float> attn_norm, ffn_norm;
    std::vector<float> bq, bk, bv, bo;  // attention biases (Qwen2: q/k/v); empty when absent
};

template <class Set = quant::default_set, class Target = target::cpu<>>
class llama {
public:
    using quant_set = Set;
    using target = Target;

    // Opens a GGUF file (or another source open_weights() knows) and binds every weight.
    explicit llama(const std::string& path, load_options opt = {}) : llama(open_weights(path), opt) {}
    explicit llama(std::unique_ptr<weight_source> src, load_options opt = {}) : src_(std::move(src)) {
        if constexpr (::lmtk::target::chooses_kernels_at_load<Target>) {
            static_assert(std::is_same_v<Set, quant::default_set>,
                          "target::cpu_dispatch: lmtk::cpu_kernels holds the kernels of quant::default_set only");
            kernels_ = &quant::choose_kernels(opt.cpu);
        }
        bind();
        if (opt.interleave) interleave();
    }

    const weight_source& source() const noexcept { return *src_; }
    const std::string& path() const noexcept { return src_->path(); }
    const llama_hparams& hparams() const noexcept { return hp_; }
    std::uint32_t n_vocab() const noexcept { return hp_.n_vocab; }

    const weight& token_embedding() const noexcept { return tok_embd_; }
    const weight& output() const noexcept { return output_; }
    std::span<const float> output_norm() const noexcept { return output_norm_; }
    const llama_layer& layer(std::size_t i) const noexcept { return layers_[i]; }
    std::span<const double> rope_inv_freq() const noexcept { return inv_freq_; }

    // The rows just looked up in a mapped token embedding are not needed again soon: let their
    // pages go. Lookups are scattered and the kernel maps the neighbours of every page it
    // faults in, so without this the whole matrix (a tenth of a small model) soon counts in
    // the process's memory. A page read again is mapped again from the page cache.
    void release_embedding() const noexcept {
        if (embedding_mapped_) src_->release(tok_embd_.data, tok_embd_.rows * tok_embd_.row_bytes());
    }

    // The instruction-set level of the weights' kernels: the one chosen at load for
    // target::cpu_dispatch, else the level Target's Arch was compiled for.
    std::string_view kernel_isa() const noexcept {
        if constexpr (::lmtk::target::chooses_kernels_at_load<Target>) return ::lmtk::target::isa_name(kernels_->isa);
        else return Target::arch::name();
    }

    // Bytes of weights repacked into interleaved layouts at load (0: all used as mapped).
    std::size_t interleaved_bytes() const noexcept { return repacked_bytes_; }

    // Bytes of weight data the forward pass reads per token (all layers plus the output).
    std::size_t weight_bytes() const noexcept {
        std::size_t total = output_.rows * output_.row_bytes();
        for (const auto& l : layers_)
            for (const weight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down}) total += w->rows * w->row_bytes();
        return total;
    }

private:
    std::optional<quant::weight_ops> resolve(quant::ggml_type t) const noexcept {
        if constexpr (::lmtk::target::chooses_kernels_at_load<Target>) return kernels_->resolve(t);
        else return quant::resolve<Set, typename Target::arch>(t);
    }
    std::optional<quant::weight_ops> resolve_group(const quant::group_format& f) const noexcept {
        if constexpr (::lmtk::target::chooses_kernels_at_load<Target>) return kernels_->resolve_group(f);
        else return quant::resolve_group<Set, typename Target::arch>(f);
    }

    weight bind_weight(const std::string& name, std::size_t cols, std::size_t rows) const {
        if (const group_tensor* g = src_->find_group_tensor(name)) {
            if (g->cols != cols || g->rows != rows)
                fail(path(), ": tensor '", name, "' has shape [", g->cols, ", ", g->rows, "], expected [", cols, ", ", rows, "]");
            const auto ops = resolve_group(g->format);
            if (!ops)
                fail(path(), ": tensor '", name, "' is ", quant::format_name(g->format),
                     ", which this build of lmtk does not include");
            return weight{g->data, *ops, rows, cols, g->input_perm};
        }
        const gguf::tensor_info& t = src_->tensor(name);
        if (static_cast<std::size_t>(t.ne[0]) != cols || static_cast<std::size_t>(t.rows()) != rows)
            fail(path(), ": tensor '", name, "' has shape [", t.ne[0], ", ", t.rows(), "], expected [", cols, ", ",
                 rows, "]");
        const auto ops = resolve(t.type);
        if (!ops)
            fail(path(), ": tensor '", name, "' has type ", quant::type_name(t.type),
                 ", which this build of lmtk does not include");
        return weight{t.data, *ops, rows, cols};
    }

    std::vector<float> bind_vector(const std::string& name, std::size_t n) const {
        const weight w = bind_weight(name, n, 1);
        std::vector<float> v(n);
        w.dequantize_row(0, v.data());
        return v;
    }

    std::vector<float> bind_optional_vector(const std::string& name, std::size_t n) const {
        return src_->find_tensor(name) ? bind_vector(name, n) : std::vector<float>();
    }

    // Every shape below is computed in 64 bits from hyperparameters that check_dimensions()
    // bounded, and each tensor must have exactly that shape before a pointer into it is kept:
    // the forward pass then indexes only inside tensors the file really holds.
    void bind() {
        hp_ = src_->hparams();
        hp_.check_dimensions(path());  // again: a source other than GGUF/HF may not have checked them
        const gguf::tensor_info& emb = src_->tensor("token_embd.weight");
        if (emb.ne[0] != static_cast<std::int64_t>(hp_.n_embd) || emb.rows() <= 0)
            fail(path(), ": token_embd.weight has ", emb.ne[0], " columns, expected the embedding length ", hp_.n_embd);
        // Token ids are int32 everywhere, so the vocabulary must be indexable by one.
        if (emb.rows() > std::numeric_limits<std::int32_t>::max())
            fail(path(), ": token_embd.weight has ", emb.rows(), " rows, more than a vocabulary of int32 ids can have");
        hp_.n_vocab = static_cast<std::uint32_t>(emb.rows());
        if (const gguf::file* f = src_->gguf_file())
            if (auto v = f->get<std::uint32_t>(hp_.arch + ".vocab_size"); v && *v != hp_.n_vocab)
                fail(path(), ": vocab_size ", *v, " disagrees with token_embd.weight's ", hp_.n_vocab, " rows");

        const std::size_t d = hp_.n_embd, q = hp_.q_dim(), kv = hp_.kv_dim(), ff = hp_.n_ff;
        tok_embd_ = bind_weight("token_embd.weight", d, hp_.n_vocab);
        output_ = src_->find_tensor("output.weight") ? bind_weight("output.weight", d, hp_.n_vocab) : tok_embd_;
        output_norm_ = bind_vector("output_norm.weight", d);
        // Layers are appended as their tensors are found, never sized up front from the block
        // count: a file claiming 2^32 blocks fails at the first missing tensor, not in an
        // allocation of that many layers.
        layers_.clear();
        for (std::size_t i = 0; i < hp_.n_layer; ++i) {
            const std::string p = "blk." + std::to_string(i) + ".";
            llama_layer& l = layers_.emplace_back();
            l.attn_norm = bind_vector(p + "attn_norm.weight", d);
            l.wq = bind_weight(p + "attn_q.weight", d, q);
            l.wk = bind_weight(p + "attn_k.weight", d, kv);
            l.wv = bind_weight(p + "attn_v.weight", d, kv);
            l.wo = bind_weight(p + "attn_output.weight", q, d);
            l.bq = bind_optional_vector(p + "attn_q.bias", q);
            l.bk = bind_optional_vector(p + "attn_k.bias", kv);
            l.bv = bind_optional_vector(p + "attn_v.bias", kv);
            l.bo = bind_optional_vector(p + "attn_output.bias", d);
            l.ffn_norm = bind_vector(p + "ffn_norm.weight", d);
            l.gate = bind_weight(p + "ffn_gate.weight", d, ff);
            l.up = bind_weight(p + "ffn_up.weight", d, ff);
            l.down = bind_weight(p + "ffn_down.weight", ff, d);
        }

        // RoPE frequencies: theta_i = base^(-2i/rope_dim), divided by per-dimension factors
        // when the file carries them (Llama 3.1 style rope_freqs.weight).
        const std::size_t half = hp_.rope_dim / 2;
        std::vector<float> factors;
        if (src_->find_tensor("rope_freqs.weight")) factors = bind_vector("rope_freqs.weight", half);
        inv_freq_.resize(half);
        for (std::size_t i = 0; i < half; ++i) {
            double f = std::pow(static_cast<double>(hp_.rope_freq_base), -2.0 * double(i) / double(hp_.rope_dim));
            if (!factors.empty()) f /= factors[i];
            inv_freq_[i] = f;
        }
    }

    // Every matrix the forward pass multiplies whose format has an interleaved layout on this
    // target moves into one buffer in that layout; the token embedding stays as mapped (it is
    // only read a row at a time) unless the output shares it.
    void interleave() {
        std::vector<weight*> todo;
        const auto consider = [&](weight& w) {
            if (w.ops.interleaved && !w.input_perm && std::find(todo.begin(), todo.end(), &w) == todo.end()) todo.push_back(&w);
        };
        for (llama_layer& l : layers_)
            for (weight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down}) consider(*w);
        consider(output_);
        if (todo.empty()) return;
        // Work in chunks of about 1 MiB of source, shared by two threads (the copy is bound by
        // the kernel zeroing the new pages, which two cores do twice as fast). Each chunk lets
        // its source pages go when done, so the peak stays near the file's size even while the
        // largest matrix (the output) is repacked.
        struct chunk {
            weight* w;
            std::size_t offset;  // of the matrix in repacked_
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
        repacked_ = core::anonymous_memory(total);
        std::atomic<std::size_t> next{0};
        const auto work = [&]() noexcept {
            for (std::size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < chunks.size();) {
                const chunk& c = chunks[i];
                const weight& w = *c.w;
                for (std::size_t g = c.g0; g < c.g1; ++g)
                    w.ops.interleave_group(w.data, w.rows, w.cols, g, repacked_.data() + c.offset);
                const std::size_t group_src = w.ops.interleaved->row_group * w.row_bytes();
                const std::size_t end = std::min(w.rows * w.row_bytes(), c.g1 * group_src);
                src_->release(w.data + c.g0 * group_src, end - c.g0 * group_src);
            }
        };
        {
            std::jthread helper(work);
            work();
        }
        for (std::size_t i = 0; i < todo.size(); ++i) {
            weight& w = *todo[i];
            // The output may be the token embedding itself (tied weights): the lookup then
            // reads the interleaved copy too.
            const bool tied = &w == &output_ && output_.data == tok_embd_.data;
            w.data = repacked_.data() + offsets[i];
            w.ops = *w.ops.interleaved;
            if (tied) tok_embd_ = output_;
        }
        // Released only where the mapping is the sole copy and nothing else reads it.
        embedding_mapped_ = tok_embd_.data != output_.data;
        repacked_bytes_ = total;
    }

    std::unique_ptr<weight_source> src_;
    const quant::kernel_table* kernels_ = nullptr;  // target::cpu_dispatch: the level chosen at load
    core::anonymous_memory repacked_;  // the interleaved weights (see interleave())
    bool embedding_mapped_ = false;    // see release_embedding()
    std::size_t repacked_bytes_ = 0;
    llama_hparams hp_;
    weight tok_embd_, output_;
    std::vector<float> output_norm_;
    std::vector<llama_layer> layers_;
    std::vector<double> inv_freq_;
};

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
    using batch = xsimd::batch<float, typename Model::target::arch>;

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
        const std::size_t per_thread_floats = checked_mul(n_ctx_, hp_.n_head / hp_.n_head_kv + lanes);  // scores_, lane_scratch_
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
        scores_.resize(pool_.size() * (hp_.n_head / hp_.n_head_kv) * n_ctx_);
        // Per thread, for attention over blocks of rows (attention_rows()): a block's queries
        // turned sideways, its scores (a lane per row) and an output tile.
        if (hp_.head_dim % lanes == 0)
            lane_scratch_.resize(pool_.size() * lane_scratch_floats());
        row_blocks_.reserve(n_batch_);
        single_rows_.reserve(n_batch_);
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
        const std::size_t n = tokens.size(), d = hp_.n_embd, kvd = hp_.kv_dim(), ff = hp_.n_ff;

        // Token embeddings: one (possibly quantized) row per token.
        for (std::size_t t = 0; t < n; ++t) m_.token_embedding().dequantize_row(std::size_t(tokens[t]), &x_[t * d]);
        m_.release_embedding();
        compute_rope_angles(n);

        for (std::size_t l = 0; l < hp_.n_layer; ++l) {
            const llama_layer& w = m_.layer(l);

            // Attention: RMSNorm, Q/K/V projections, RoPE on Q and K, cache K and V.
            rmsnorm(xb_.data(), x_.data(), w.attn_norm.data(), n);
            matmul3(w.wq, w.wk, w.wv, xb_.data(), n, q_.data(), k_.data(), v_.data());
            add_bias(q_.data(), w.bq, n);
            add_bias(k_.data(), w.bk, n);
            add_bias(v_.data(), w.bv, n);
            apply_rope(q_.data(), n, hp_.n_head);
            apply_rope(k_.data(), n, hp_.n_head_kv);
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
            attention(l, n);
            matmul(w.wo, att_.data(), n, xb_.data());
            add_bias(xb_.data(), w.bo, n);
            add_in_place(x_.data(), xb_.data(), n * d);

            // Feed-forward: RMSNorm, SwiGLU (silu(gate) * up), down projection, residual.
            rmsnorm(xb_.data(), x_.data(), w.ffn_norm.data(), n);
            matmul2(w.gate, w.up, xb_.data(), n, hb_.data(), hb2_.data());
            swiglu(hb_.data(), hb2_.data(), n * ff);
            matmul(w.down, hb_.data(), n, xb_.data());
            add_in_place(x_.data(), xb_.data(), n * d);
        }

        // Final norm and classifier, for the rows whose logits are wanted.
        if (out_rows.empty()) return;
        for (std::size_t i = 0; i < out_rows.size(); ++i)
            if (out_rows[i] != i) std::copy_n(&x_[out_rows[i] * d], d, &x_[i * d]);  // gather (i <= out_rows[i])
        rmsnorm(xb_.data(), x_.data(), m_.output_norm().data(), out_rows.size());
        matmul(m_.output(), xb_.data(), out_rows.size(), out);
    }

    // y[t] = x[t] / rms(x[t]) * g for n rows of n_embd.
    void rmsnorm(float* y, const float* x, const float* g, std::size_t n) noexcept {
        const std::size_t d = hp_.n_embd;
        const float eps = hp_.rms_eps;
        pool_.run_sized(n * d, [&](std::size_t i, std::size_t nt) noexcept {
            const auto [t0, t1] = core::thread_pool::split(n, i, nt);
            for (std::size_t t = t0; t < t1; ++t) {
                const float* xr = x + t * d;
                float* yr = y + t * d;
                double ss = 0.0;  // double: this sum sets the scale of the whole row
                for (std::size_t j = 0; j < d; ++j) ss += double(xr[j]) * xr[j];
                const float scale = static_cast<float>(1.0 / std::sqrt(ss / double(d) + double(eps)));
                for (std::size_t j = 0; j < d; ++j) yr[j] = xr[j] * scale * g[j];
            }
        });
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

    // cos/sin of every (row, frequency) pair of this batch; angles in double because
    // position * frequency loses digits in float at long contexts.
    void compute_rope_angles(std::size_t n) noexcept {
        const std::size_t half = hp_.rope_dim / 2;
        const auto inv = m_.rope_inv_freq();
        for (std::size_t t = 0; t < n; ++t) {
            const double p = double(row_pos_[t]) * double(hp_.rope_freq_scale);
            for (std::size_t i = 0; i < half; ++i) {
                const double a = p * inv[i];
                rope_cos_[t * half + i] = static_cast<float>(std::cos(a));
                rope_sin_[t * half + i] = static_cast<float>(std::sin(a));
            }
        }
    }

    // Rotates the first rope_dim dimensions of each head of n rows of n_heads * head_dim.
    void apply_rope(float* v, std::size_t n, std::size_t n_heads) noexcept {
        const std::size_t hd = hp_.head_dim, half = hp_.rope_dim / 2;
        const bool neox = hp_.rope == rope_kind::neox;
        for (std::size_t t = 0; t < n; ++t) {
            const float* c = &rope_cos_[t * half];
            const float* s = &rope_sin_[t * half];
            for (std::size_t h = 0; h < n_heads; ++h) {
                float* x = v + (t * n_heads + h) * hd;
                for (std::size_t i = 0; i < half; ++i) {
                    // normal: pairs (2i, 2i+1); neox: pairs (i, i + rope_dim/2)
                    const std::size_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
                    const float x0 = x[a], x1 = x[b];
                    x[a] = x0 * c[i] - x1 * s[i];
                    x[b] = x0 * s[i] + x1 * c[i];
                }
            }
        }
    }

    // att[t, head h] = softmax(q·k / sqrt(hd)) · v over positions 0..row_pos_[t] of the row's
    // sequence, with kv head h / group. Rows that come in runs of one sequence (a prompt) take
    // attention_rows(), a SIMD lane per row; the others (decode rows of many sequences) take
    // attention_single(), a row and KV head per work item.
    void attention(std::size_t layer, std::size_t n) noexcept {
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
    static constexpr std::size_t lanes = batch::size;
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
        else return quant::detail::load_fp16<typename Model::target::arch>(p);
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

    // y[t] += b for n rows of b.size(); nothing when the layer has no such bias.
    static void add_bias(float* y, const std::vector<float>& b, std::size_t n) noexcept {
        for (std::size_t t = 0; t < n; ++t)
            for (std::size_t i = 0; i < b.size(); ++i) y[t * b.size() + i] += b[i];
    }
    static void add_in_place(float* x, const float* y, std::size_t n) noexcept {
        for (std::size_t i = 0; i < n; ++i) x[i] += y[i];
    }
    static void swiglu(float* g, const float* u, std::size_t n) noexcept {
        // xsimd's exp keeps this vectorised: std::exp is a call per value, a visible share of a
        // decode step at n_ff = 2816 x 16 layers.
        std::size_t i = 0;
        for (; i + batch::size <= n; i += batch::size) {
            const batch gv = batch::load_unaligned(g + i);
            (gv / (batch(1.0f) + xsimd::exp(-gv)) * batch::load_unaligned(u + i)).store_unaligned(g + i);
        }
        for (; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }

    const Model& m_;
    const llama_hparams& hp_;
    core::thread_pool pool_;
    std::size_t n_ctx_ = 0, n_batch_ = 0;
    std::vector<kv_cache<KV>> caches_;       // one per sequence
    std::vector<std::size_t> n_past_;        // cached positions per sequence
    std::vector<float> x_, xb_, q_, k_, v_, att_, hb_, hb2_, rope_cos_, rope_sin_, scores_, logits_;
    std::vector<float, xsimd::aligned_allocator<float, 64>> lane_scratch_;  // see attention_rows()
    std::vector<row_block> row_blocks_;       // this pass's attention work (see attention())
    std::vector<std::size_t> single_rows_;
    std::vector<std::byte> act_buf_;         // prepared activations (see project())
    std::vector<float> perm_x_;              // inputs gathered for act-order weights (see project())
    std::size_t max_cols_ = 0;
    std::byte* act_ = nullptr;
    std::vector<std::uint32_t> row_seq_;     // per batch row: its sequence
    std::vector<std::size_t> row_pos_;       // per batch row: its position
    std::vector<std::size_t> out_rows_, seq_fill_;
    std::vector<std::int32_t> tokens_;
};

}  // namespace lmtk::model
