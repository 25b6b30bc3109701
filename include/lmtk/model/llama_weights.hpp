#pragma once
// Llama-family weights: every tensor of a GGUF file (or an HF folder, through its source) bound
// in place with its kernels, checked against the hyperparameters before a pointer into it is
// kept; matrices with an interleaved layout repacked once (repack.hpp). Immutable after load
// and shareable between contexts (llama_context.hpp runs the forward pass over them).
//
// Each weight's GGUF type is mapped to a compiled kernel pair (quant::weight_ops) once, here;
// the forward pass calls through those pointers and never switches on a type.
#include <lmtk/core/error.hpp>
#include <lmtk/core/mapped_file.hpp>
#include <lmtk/io/gguf.hpp>
#include <lmtk/model/hparams.hpp>
#include <lmtk/model/repack.hpp>
#include <lmtk/model/source.hpp>
#include <lmtk/model/weight.hpp>
#include <lmtk/quant/cpu_kernels.hpp>
#include <lmtk/quant/quant.hpp>
#include <lmtk/target/cpu.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace lmtk::model {

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
        bind_embedding_lookup();
    }

    const weight_source& source() const noexcept { return *src_; }
    // The kernel level chosen at load (target::cpu_dispatch), else null.
    const quant::kernel_table* kernels() const noexcept { return kernels_; }
    const std::string& path() const noexcept { return src_->path(); }
    const llama_hparams& hparams() const noexcept { return hp_; }
    std::uint32_t n_vocab() const noexcept { return hp_.n_vocab; }

    const weight& token_embedding() const noexcept { return tok_embd_; }
    const weight& output() const noexcept { return output_; }
    std::span<const float> output_norm() const noexcept { return output_norm_; }
    const llama_layer& layer(std::size_t i) const noexcept { return layers_[i]; }
    std::span<const double> rope_inv_freq() const noexcept { return inv_freq_; }

    // The token embedding, read a row at a time (see bind_embedding_lookup()).
    const row_lookup& embedding_lookup() const noexcept { return embedding_; }

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
    // target moves into one buffer in that layout (repack.hpp); the token embedding stays as
    // mapped (it is only read a row at a time) unless the output shares it.
    void interleave() {
        std::vector<weight*> todo;
        const auto consider = [&](weight& w) {
            if (w.ops.interleaved && !w.input_perm && std::find(todo.begin(), todo.end(), &w) == todo.end()) todo.push_back(&w);
        };
        for (llama_layer& l : layers_)
            for (weight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down}) consider(*w);
        // The output may be the token embedding itself (tied weights): the lookup then reads
        // the interleaved copy too.
        const bool tied = output_.data == tok_embd_.data;
        consider(output_);
        repacked_bytes_ = interleave_weights(todo, *src_, repacked_);
        if (tied) tok_embd_ = output_;
    }

    // Token embedding rows: read from the file (row_lookup) when the embedding is a mapped,
    // row-major matrix of its own; read in place when the output shares it (every pass reads
    // all of it anyway) or it lives in memory the source made.
    void bind_embedding_lookup() {
        embedding_.w = tok_embd_;
        embedding_.file = nullptr;
        if (tok_embd_.data != output_.data && !tok_embd_.input_perm && tok_embd_.ops.row_group == 1 &&
            !src_->find_group_tensor("token_embd.weight"))
            embedding_.file = src_->mapping_of(tok_embd_.data, tok_embd_.rows * tok_embd_.row_bytes());
    }

    std::unique_ptr<weight_source> src_;
    const quant::kernel_table* kernels_ = nullptr;  // target::cpu_dispatch: the level chosen at load
    core::anonymous_memory repacked_;  // the interleaved weights (see interleave())
    row_lookup embedding_;             // see bind_embedding_lookup()
    std::size_t repacked_bytes_ = 0;
    llama_hparams hp_;
    weight tok_embd_, output_;
    std::vector<float> output_norm_;
    std::vector<llama_layer> layers_;
    std::vector<double> inv_freq_;
};

}  // namespace lmtk::model
