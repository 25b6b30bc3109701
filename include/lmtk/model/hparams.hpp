#pragma once
// Llama-family hyperparameters as a GGUF file states them ({arch}.* keys), checked for
// consistency before any buffer is sized from them.
//
// The fields are 32-bit as the files store them, but every product of them (q_dim(), kv_dim(),
// buffer sizes, tensor shapes) is taken in 64 bits: a hostile file can pick head counts and a
// head size whose 32-bit product wraps to a small number that its tensors then match, and the
// forward pass would index with the true head size far past those tensors.
#include <lmtk/core/error.hpp>
#include <lmtk/io/gguf.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace lmtk::model {

// How RoPE pairs dimensions: `normal` rotates (x[2i], x[2i+1]) (GGUF llama, whose converter
// permutes Q/K rows for it); `neox` rotates (x[i], x[i + d/2]) (HF layout, qwen2 and others).
enum class rope_kind { normal, neox };

struct llama_hparams {
    std::string arch;
    std::uint32_t n_vocab = 0;
    std::uint32_t n_embd = 0;
    std::uint32_t n_layer = 0;
    std::uint32_t n_head = 0;
    std::uint32_t n_head_kv = 0;
    std::uint32_t n_ff = 0;
    std::uint32_t n_ctx_train = 0;
    std::uint32_t head_dim = 0;
    std::uint32_t rope_dim = 0;
    float rope_freq_base = 10000.0f;
    float rope_freq_scale = 1.0f;  // positions are multiplied by this (linear scaling)
    float rms_eps = 1e-5f;
    rope_kind rope = rope_kind::normal;

    std::size_t q_dim() const noexcept { return std::size_t{n_head} * head_dim; }
    std::size_t kv_dim() const noexcept { return std::size_t{n_head_kv} * head_dim; }

    // Refuses widths no real model has (the widest today are near 2^16): each width, and the
    // query and KV widths (products), at most max_width, so that a product of two widths, or
    // of a width and a batch or context size, stays far inside 64 bits. The tensors are then
    // checked against these widths (llama::bind), so a width the file cannot back is refused
    // there.
    static constexpr std::uint64_t max_width = std::uint64_t{1} << 28;
    void check_dimensions(std::string_view origin) const {
        const std::pair<const char*, std::uint64_t> widths[] = {
            {"embedding length", n_embd}, {"feed-forward length", n_ff}, {"head dimension", head_dim},
            {"query width (head count x head dimension)", q_dim()},
            {"key/value width (KV head count x head dimension)", kv_dim()}};
        for (const auto& [what, w] : widths)
            if (w == 0 || w > max_width) fail(origin, ": ", what, " ", w, " is outside 1 .. ", max_width);
        if (n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0)
            fail(origin, ": head count ", n_head, " is not a multiple of the KV head count ", n_head_kv);
        if (n_layer == 0) fail(origin, ": the block count is zero");
        // Zero would mean no positional signal at all, no Llama; the forward pass also takes the
        // first cos/sin of every row, which a rope dimension of 0 leaves without any.
        if (rope_dim == 0 || rope_dim > head_dim || rope_dim % 2 != 0)
            fail(origin, ": rope dimension ", rope_dim, " must be even, positive and at most the head dimension ", head_dim);
    }

    static llama_hparams from_gguf(const gguf::file& f) {
        llama_hparams h;
        h.arch = f.require<std::string>("general.architecture");
        // qwen2 is llama with q/k/v biases (bound when present) and rotate-half RoPE.
        if (h.arch != "llama" && h.arch != "qwen2")
            fail(f.path(), ": architecture '", h.arch, "' is not supported yet (supported: llama, qwen2)");
        if (h.arch == "qwen2") h.rope = rope_kind::neox;
        const std::string a = h.arch + ".";
        h.n_embd = f.require<std::uint32_t>(a + "embedding_length");
        h.n_layer = f.require<std::uint32_t>(a + "block_count");
        h.n_head = f.require<std::uint32_t>(a + "attention.head_count");
        h.n_head_kv = f.get_or<std::uint32_t>(a + "attention.head_count_kv", h.n_head);
        h.n_ff = f.require<std::uint32_t>(a + "feed_forward_length");
        h.n_ctx_train = f.get_or<std::uint32_t>(a + "context_length", 2048);
        h.rms_eps = f.get_or<float>(a + "attention.layer_norm_rms_epsilon", 1e-5f);
        h.rope_freq_base = f.get_or<float>(a + "rope.freq_base", 10000.0f);
        if (h.n_head == 0 || h.n_embd == 0 || h.n_layer == 0 || h.n_ff == 0)
            fail(f.path(), ": embedding length, block count, head count and feed-forward length must be non-zero");
        if (h.n_embd % h.n_head != 0)
            fail(f.path(), ": embedding length ", h.n_embd, " is not a multiple of the head count ", h.n_head);
        h.head_dim = f.get_or<std::uint32_t>(a + "attention.key_length", h.n_embd / h.n_head);
        if (h.head_dim == 0 || h.head_dim % 2 != 0) fail(f.path(), ": head dimension ", h.head_dim, " must be even");
        if (f.get_or<std::uint32_t>(a + "attention.value_length", h.head_dim) != h.head_dim)
            fail(f.path(), ": different key and value head sizes are not supported");
        if (h.n_head_kv == 0 || h.n_head % h.n_head_kv != 0)
            fail(f.path(), ": head count ", h.n_head, " is not a multiple of the KV head count ", h.n_head_kv);
        h.rope_dim = f.get_or<std::uint32_t>(a + "rope.dimension_count", h.head_dim);
        if (h.rope_dim == 0 || h.rope_dim > h.head_dim || h.rope_dim % 2 != 0)
            fail(f.path(), ": rope dimension ", h.rope_dim, " must be even, positive and at most the head dimension ", h.head_dim);
        if (!(h.rope_freq_base > 0.0f) || !std::isfinite(h.rope_freq_base))
            fail(f.path(), ": rope.freq_base must be positive");
        if (!(h.rms_eps >= 0.0f) || !std::isfinite(h.rms_eps)) fail(f.path(), ": invalid RMS norm epsilon");
        const std::string scaling = f.get_or<std::string>(a + "rope.scaling.type", "none");
        if (scaling == "linear") {
            const float factor = f.get_or<float>(a + "rope.scaling.factor", 1.0f);
            if (!(factor > 0.0f)) fail(f.path(), ": rope.scaling.factor must be positive");
            h.rope_freq_scale = 1.0f / factor;
        } else if (scaling != "none") {
            fail(f.path(), ": rope scaling '", scaling, "' is not supported yet");
        }
        h.check_dimensions(f.path());
        // The vocabulary size comes from the embedding tensor; the key is optional.
        return h;
    }
};

}  // namespace lmtk::model
