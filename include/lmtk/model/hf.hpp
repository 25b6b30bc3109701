#pragma once
// A Hugging Face checkpoint folder as a weight_source: config.json for the hyperparameters,
// model.safetensors (or shards named by model.safetensors.index.json) for the weights.
//
// Supported: LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM (Llama with q/k/v biases)
// with F32, F16 or BF16 tensors, and AutoAWQ (GEMM or GEMV, 4-bit) or GPTQ
// (3/4-bit, v1 or v2 zeros, any group, act-order) checkpoints: their quantized linears are
// repacked once, here, into quant::group_layout blocks (see quant/awq.hpp, quant/gptq.hpp). Each HF tensor is presented under its
// GGUF name and in GGUF orientation (ne = the HF shape reversed: [out, in] -> ne = [in, out]),
// so the model binds it exactly like a GGUF tensor. HF keeps Q and K rows in the rotate-half
// layout, so the hyperparameters say rope_kind::neox; nothing is permuted here.
//
// Tensors are used in place from the mapping when their bytes are aligned for their type;
// safetensors gives no alignment guarantee (the header length is arbitrary), so a misaligned
// tensor is copied once, at load, into an aligned buffer this source owns.
#include <lmtk/core/error.hpp>
#include <lmtk/io/gguf.hpp>
#include <lmtk/io/safetensors.hpp>
#include <lmtk/model/hparams.hpp>
#include <lmtk/model/source.hpp>
#include <lmtk/quant/awq.hpp>
#include <lmtk/quant/ggml_type.hpp>
#include <lmtk/quant/gptq.hpp>
#include <lmtk/quant/group_layout.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <filesystem>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lmtk::model {

namespace detail {

// "model.layers.12.self_attn.q_proj.weight" -> "blk.12.attn_q.weight"; nullopt for names that
// are not weights of the Llama family (the caller decides whether that is an error).
inline std::optional<std::string> gguf_name_of(std::string_view hf) {
    if (hf == "model.embed_tokens.weight") return "token_embd.weight";
    if (hf == "model.norm.weight") return "output_norm.weight";
    if (hf == "lm_head.weight") return "output.weight";
    constexpr std::string_view layers = "model.layers.";
    if (!hf.starts_with(layers)) return std::nullopt;
    hf.remove_prefix(layers.size());
    const std::size_t dot = hf.find('.');
    if (dot == 0 || dot == std::string_view::npos) return std::nullopt;
    unsigned layer = 0;
    const auto [p, ec] = std::from_chars(hf.data(), hf.data() + dot, layer);
    if (ec != std::errc() || p != hf.data() + dot) return std::nullopt;
    const std::string_view rest = hf.substr(dot + 1);
    static constexpr std::pair<std::string_view, std::string_view> parts[] = {
        {"input_layernorm.weight", "attn_norm.weight"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"self_attn.q_proj.bias", "attn_q.bias"},
        {"self_attn.k_proj.bias", "attn_k.bias"},
        {"self_attn.v_proj.bias", "attn_v.bias"},
        {"self_attn.o_proj.bias", "attn_output.bias"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
    };
    for (const auto& [from, to] : parts)
        if (rest == from) return "blk." + std::to_string(layer) + "." + std::string(to);
    return std::nullopt;
}

// Buffers for tensors copied out of the mapping; 64-byte aligned like a cache line, which is
// more than any kernel needs.
struct aligned_delete {
    void operator()(std::byte* p) const noexcept { ::operator delete[](p, std::align_val_t{64}); }
};
using aligned_bytes = std::unique_ptr<std::byte[], aligned_delete>;

}  // namespace detail

class hf_source final : public weight_source {
public:
    static constexpr std::string_view supported_architectures = "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM";

    explicit hf_source(const std::string& dir) : dir_(dir), path_(dir) {
        namespace fs = std::filesystem;
        config_path_ = (dir_ / "config.json").string();
        std::error_code ec;
        if (!fs::is_regular_file(config_path_, ec)) fail(path_, ": no config.json in the checkpoint folder");
        {
            const core::mapped_file m(config_path_);
            if (m.size() > safetensors::max_header_bytes) fail(config_path_, ": implausibly large (", m.size(), " bytes)");
            config_ = safetensors::detail::parse_json(
                std::string_view(reinterpret_cast<const char*>(m.data()), m.size()), config_path_);
        }
        if (!config_.is_object()) fail(config_path_, ": not a JSON object");
        read_config();
        weights_ = std::make_unique<safetensors::checkpoint>(dir);
        bind_tensors();
    }

    const std::string& path() const noexcept override { return path_; }
    const llama_hparams& hparams() const noexcept override { return hp_; }
    // Bytes repacked at load: drop them from memory where they are the mapped safetensors
    // (mapped_file::release ignores ranges outside its file; copies made for alignment stay).
    void release(const std::byte* p, std::size_t n) const noexcept override {
        if (weights_)
            for (const auto& f : weights_->files()) f->mapping().release(p, n);
    }
    const core::mapped_file* mapping_of(const std::byte* p, std::size_t n) const noexcept override {
        if (weights_)
            for (const auto& f : weights_->files())
                if (f->mapping().contains(p, n)) return &f->mapping();
        return nullptr;
    }

    const gguf::tensor_info* find_tensor(std::string_view name) const noexcept override {
        const auto it = index_.find(name);
        return it == index_.end() ? nullptr : &tensors_[it->second];
    }
    const group_tensor* find_group_tensor(std::string_view name) const noexcept override {
        const auto it = group_index_.find(name);
        return it == group_index_.end() ? nullptr : &group_tensors_[it->second];
    }
    // The AWQ/GPTQ matrices, repacked, under their GGUF names (empty for F32/F16/BF16 checkpoints).
    const std::deque<group_tensor>& group_tensors() const noexcept { return group_tensors_; }

    const std::filesystem::path& directory() const noexcept { return dir_; }
    const nlohmann::json& config() const noexcept { return config_; }
    const std::string& architecture() const noexcept { return architecture_; }  // "LlamaForCausalLM"
    bool tied_embeddings() const noexcept { return tied_; }
    // The tensors under their GGUF names, in checkpoint order.
    const std::vector<gguf::tensor_info>& tensors() const noexcept { return tensors_; }
    const safetensors::checkpoint& checkpoint() const noexcept { return *weights_; }
    // config.json values that are not hyperparameters of the forward pass.
    std::optional<std::int64_t> bos_token_id() const { return optional_int("bos_token_id"); }
    std::optional<std::int64_t> eos_token_id() const { return optional_int("eos_token_id"); }
    // tokenizer.json in the folder, if there is one.
    std::optional<std::string> tokenizer_json() const {
        std::error_code ec;
        const auto p = dir_ / "tokenizer.json";
        if (std::filesystem::is_regular_file(p, ec)) return p.string();
        return std::nullopt;
    }

private:
    // --- config.json ------------------------------------------------------------------------
    const nlohmann::json* field(std::string_view key) const {
        const auto it = config_.find(key);
        return it == config_.end() || it->is_null() ? nullptr : &*it;
    }
    std::optional<std::int64_t> optional_int(std::string_view key) const {
        const nlohmann::json* v = field(key);
        if (!v) return std::nullopt;
        if (v->is_array() && v->size() == 1) v = &(*v)[0];  // eos_token_id may be a list
        if (!v->is_number_integer()) return std::nullopt;
        return v->get<std::int64_t>();
    }
    std::uint32_t positive(std::string_view key, std::optional<std::uint32_t> fallback = std::nullopt) const {
        const nlohmann::json* v = field(key);
        if (!v) {
            if (fallback) return *fallback;
            fail(config_path_, ": '", key, "' is missing");
        }
        if (!v->is_number_integer() || v->get<std::int64_t>() <= 0 || v->get<std::int64_t>() > (1 << 30))
            fail(config_path_, ": '", key, "' must be a positive integer, not ", v->dump());
        return static_cast<std::uint32_t>(v->get<std::int64_t>());
    }
    double number(std::string_view key, double fallback) const {
        const nlohmann::json* v = field(key);
        if (!v) return fallback;
        if (!v->is_number() || !std::isfinite(v->get<double>()))
            fail(config_path_, ": '", key, "' must be a number, not ", v->dump());
        return v->get<double>();
    }

    void read_config() {
        const nlohmann::json* archs = field("architectures");
        if (!archs || !archs->is_array() || archs->empty() || !(*archs)[0].is_string())
            fail(config_path_, ": no 'architectures' list");
        architecture_ = (*archs)[0].get<std::string>();
        if (architecture_ != "LlamaForCausalLM" && architecture_ != "MistralForCausalLM" && architecture_ != "Qwen2ForCausalLM")
            fail(config_path_, ": architecture '", architecture_, "' is not supported (supported: ", supported_architectures,
                 ")");
        read_quantization_config();
        if (const nlohmann::json* act = field("hidden_act"); act && *act != "silu")
            fail(config_path_, ": hidden_act ", act->dump(), " is not supported (Llama uses silu)");
        // Attention biases are bound when the checkpoint has them (Qwen2's q/k/v, Llama's
        // attention_bias); the feed-forward has none in lmtk's forward pass.
        if (const nlohmann::json* b = field("mlp_bias"); b && *b == true)
            fail(config_path_, ": 'mlp_bias' is true; feed-forward biases are not supported by lmtk's forward pass yet");

        llama_hparams h;
        h.arch = architecture_ == "Qwen2ForCausalLM" ? "qwen2" : "llama";
        h.rope = rope_kind::neox;  // HF's rotate-half layout, unpermuted
        h.n_embd = positive("hidden_size");
        h.n_ff = positive("intermediate_size");
        h.n_layer = positive("num_hidden_layers");
        h.n_head = positive("num_attention_heads");
        h.n_head_kv = positive("num_key_value_heads", h.n_head);
        if (h.n_head % h.n_head_kv != 0)
            fail(config_path_, ": num_attention_heads ", h.n_head, " is not a multiple of num_key_value_heads ", h.n_head_kv);
        if (!field("head_dim") && h.n_embd % h.n_head != 0)
            fail(config_path_, ": hidden_size ", h.n_embd, " is not a multiple of num_attention_heads ", h.n_head);
        h.head_dim = positive("head_dim", h.n_embd / h.n_head);
        if (h.head_dim % 2 != 0) fail(config_path_, ": head_dim ", h.head_dim, " must be even");
        h.rope_dim = h.head_dim;
        h.n_ctx_train = positive("max_position_embeddings", 2048);
        // Sliding-window attention (Mistral v0.1) equals full attention while the context fits in
        // the window, so the default context is capped at the window rather than refused.
        // Qwen2 configs name a window but use it only with use_sliding_window: true.
        const nlohmann::json* use_window = field("use_sliding_window");
        const bool windowed = use_window ? *use_window == true : architecture_ != "Qwen2ForCausalLM";
        if (const nlohmann::json* w = field("sliding_window"); w && w->is_number_integer() && w->get<std::int64_t>() > 0 && windowed)
            h.n_ctx_train = std::min<std::uint32_t>(h.n_ctx_train, static_cast<std::uint32_t>(
                                                                         std::min<std::int64_t>(w->get<std::int64_t>(), 1 << 30)));
        h.rms_eps = static_cast<float>(number("rms_norm_eps", 1e-6));
        if (!(h.rms_eps >= 0.0f)) fail(config_path_, ": rms_norm_eps must not be negative");
        h.rope_freq_base = static_cast<float>(number("rope_theta", 10000.0));
        if (!(h.rope_freq_base > 0.0f)) fail(config_path_, ": rope_theta must be positive");
        if (const nlohmann::json* rs = field("rope_scaling")) {
            if (!rs->is_object()) fail(config_path_, ": rope_scaling must be an object or null");
            std::string type;
            for (const char* k : {"rope_type", "type"})
                if (const auto it = rs->find(k); it != rs->end() && it->is_string()) type = it->get<std::string>();
            if (type == "linear") {
                const auto f = rs->find("factor");
                if (f == rs->end() || !f->is_number() || !(f->get<double>() > 0.0) || !std::isfinite(f->get<double>()))
                    fail(config_path_, ": rope_scaling.factor must be a positive number");
                h.rope_freq_scale = static_cast<float>(1.0 / f->get<double>());
            } else if (type != "default") {
                fail(config_path_, ": rope_scaling type '", type, "' is not supported (supported: linear)");
            }
        }
        const nlohmann::json* tie = field("tie_word_embeddings");
        if (tie && !tie->is_boolean()) fail(config_path_, ": tie_word_embeddings must be true or false");
        tied_ = tie && tie->get<bool>();  // transformers' Llama/Mistral default is false
        h.check_dimensions(config_path_);
        hp_ = h;
    }

    // --- quantization_config (AWQ, GPTQ) -----------------------------------------------------
    struct quantization {
        quant::group_method method = quant::group_method::gptq;
        unsigned bits = 4;
        int group = 128;
        bool awq_gemv = false;  // AWQ version "gemv" rather than "gemm"
        bool gptq_v1 = true;    // GPTQ checkpoint_format "gptq": zeros stored minus one
    };

    void read_quantization_config() {
        namespace fs = std::filesystem;
        nlohmann::json q;
        std::string where = config_path_;
        if (const nlohmann::json* c = field("quantization_config")) {
            q = *c;
        } else {
            // AutoGPTQ writes quantize_config.json beside config.json instead.
            for (const char* name : {"quantize_config.json", "quant_config.json"}) {
                std::error_code ec;
                const fs::path p = dir_ / name;
                if (!fs::is_regular_file(p, ec)) continue;
                const core::mapped_file m(p.string());
                if (m.size() > safetensors::max_header_bytes) fail(p.string(), ": implausibly large");
                q = safetensors::detail::parse_json(std::string_view(reinterpret_cast<const char*>(m.data()), m.size()),
                                                    p.string());
                where = p.string();
                break;
            }
            if (q.is_null()) return;
        }
        if (!q.is_object()) fail(where, ": quantization_config must be an object");
        const auto str = [&](std::initializer_list<const char*> keys, std::string fallback) {
            for (const char* k : keys)
                if (const auto it = q.find(k); it != q.end() && it->is_string()) {
                    std::string v = it->get<std::string>();
                    for (char& ch : v) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
                    return v;
                }
            return fallback;
        };
        const auto integer = [&](std::initializer_list<const char*> keys, std::int64_t fallback) {
            for (const char* k : keys)
                if (const auto it = q.find(k); it != q.end() && !it->is_null()) {
                    if (!it->is_number_integer()) fail(where, ": quantization_config.", k, " must be an integer, not ", it->dump());
                    return it->get<std::int64_t>();
                }
            return fallback;
        };
        const auto boolean = [&](const char* key, bool fallback) {
            const auto it = q.find(key);
            if (it == q.end() || it->is_null()) return fallback;
            if (!it->is_boolean()) fail(where, ": quantization_config.", key, " must be true or false, not ", it->dump());
            return it->get<bool>();
        };
        const std::string method = str({"quant_method"}, q.contains("w_bit") ? "awq" : "gptq");
        quantization z;
        const std::int64_t bits = integer({"bits", "w_bit"}, 4);
        const std::int64_t group = integer({"group_size", "q_group_size"}, 128);
        if (method == "awq") {
            z.method = quant::group_method::awq;
            if (bits != 4) fail(where, ": AWQ with ", bits, " bits; AutoAWQ checkpoints are 4-bit");
            if (group != 32 && group != 64 && group != 128)
                fail(where, ": AWQ group_size ", group, " is not supported (32, 64 or 128)");
            if (!boolean("zero_point", true)) fail(where, ": AWQ without zero_point is not supported (AutoAWQ's GEMM needs zeros)");
            const std::string version = str({"version"}, "gemm");
            if (version == "gemv") z.awq_gemv = true;
            else if (version != "gemm")
                fail(where, ": AWQ version '", version, "' is not supported (gemm or gemv; gemv_fast and marlin are GPU tile layouts)");
        } else if (method == "gptq") {
            z.method = quant::group_method::gptq;
            if (bits != 3 && bits != 4) fail(where, ": GPTQ with ", bits, " bits is not supported (3 or 4)");
            if (group != 32 && group != 64 && group != 128 && group != -1)
                fail(where, ": GPTQ group_size ", group, " is not supported (32, 64, 128 or -1)");
            if (boolean("is_marlin_format", false)) fail(where, ": GPTQ Marlin checkpoints are not supported (use the gptq format)");
            const std::string format = str({"checkpoint_format", "format"}, "gptq");
            if (format == "gptq_v2") z.gptq_v1 = false;
            else if (format != "gptq") fail(where, ": GPTQ checkpoint_format '", format, "' is not supported (gptq or gptq_v2)");
        } else {
            fail(where, ": quant_method '", method, "' is not supported (awq, gptq; or F32/F16/BF16 weights)");
        }
        z.bits = static_cast<unsigned>(bits);
        z.group = static_cast<int>(group);
        quant_ = z;
    }

    // The safetensors tensor `name` with the given dtype and rank, or a clear error.
    const safetensors::tensor& quant_part(const std::string& name, safetensors::dtype type, std::size_t rank) const {
        const safetensors::tensor* t = weights_->find(name);
        if (!t) fail(path_, ": tensor '", name, "' is missing");
        if (t->type != type || t->n_dims() != rank)
            fail(where(*t), ": tensor '", name, "' is ", safetensors::dtype_name(t->type), " with ", t->n_dims(),
                 " dimensions; ", quant::format_name({quant_->method, quant_->bits, quant_->group, false}), " stores it as ",
                 safetensors::dtype_name(type), " with ", rank);
        return *t;
    }

    void expect_shape(const safetensors::tensor& t, std::uint64_t d0, std::uint64_t d1) const {
        if (t.shape[0] != d0 || t.shape[1] != d1)
            fail(where(t), ": tensor '", t.name, "' has shape [", t.shape[0], ", ", t.shape[1], "], expected [", d0, ", ", d1, "]");
    }

    // Repacks the quantized linear `prefix` (its .qweight, .qzeros, .scales, .g_idx) and presents
    // it under `gguf_name`.
    void add_quantized(const std::string& prefix, std::string gguf_name) {
        using safetensors::dtype;
        const quantization& z = *quant_;
        const auto& qw = quant_part(prefix + ".qweight", dtype::i32, 2);
        const auto& qz = quant_part(prefix + ".qzeros", dtype::i32, 2);
        const auto& sc = quant_part(prefix + ".scales", dtype::f16, 2);
        group_tensor g;
        quant::group_matrix m;
        if (z.method == quant::group_method::awq) {
            const std::size_t gsz = static_cast<std::size_t>(z.group);
            if (!z.awq_gemv) {
                const std::uint64_t in = qw.shape[0], out = qw.shape[1] * 8;
                if (in == 0 || in % gsz != 0) fail(where(qw), ": '", qw.name, "' has ", in, " inputs, not whole groups of ", gsz);
                expect_shape(qz, in / gsz, out / 8);
                expect_shape(sc, in / gsz, out);
                const quant::awq::gemm_tensors t{qw.bytes.data(), qz.bytes.data(), sc.bytes.data(), in, out, gsz};
                m = gsz == 32 ? quant::awq::repack_gemm<32>(t) : gsz == 64 ? quant::awq::repack_gemm<64>(t) : quant::awq::repack_gemm<128>(t);
                g.rows = out;
                g.cols = in;
            } else {
                const std::uint64_t out = qw.shape[0], in = qw.shape[1] * 8;
                if (in == 0 || in % gsz != 0) fail(where(qw), ": '", qw.name, "' has ", in, " inputs, not whole groups of ", gsz);
                const std::uint64_t zw = qz.shape[1];
                expect_shape(qz, out, zw);
                expect_shape(sc, out, zw * 8);
                const quant::awq::gemv_tensors t{qw.bytes.data(), qz.bytes.data(), sc.bytes.data(), in, out, gsz, zw};
                m = gsz == 32 ? quant::awq::repack_gemv<32>(t) : gsz == 64 ? quant::awq::repack_gemv<64>(t) : quant::awq::repack_gemv<128>(t);
                g.rows = out;
                g.cols = in;
            }
        } else {
            const std::uint64_t in = qw.shape[0] * 32 / z.bits, out = qw.shape[1];
            if (in == 0 || (qw.shape[0] * 32) % z.bits != 0) fail(where(qw), ": '", qw.name, "' has an impossible row count for ", z.bits, " bits");
            const std::uint64_t gsz = z.group == -1 ? in : std::uint64_t(z.group);
            const std::uint64_t groups = (in + gsz - 1) / gsz;
            if ((out * z.bits) % 32 != 0) fail(where(qw), ": '", qw.name, "' has ", out, " outputs, not whole ", z.bits, "-bit words");
            expect_shape(qz, groups, out * z.bits / 32);
            expect_shape(sc, groups, out);
            const std::byte* g_idx = nullptr;
            if (const safetensors::tensor* gi = weights_->find(prefix + ".g_idx")) {
                if (gi->type != dtype::i32 || gi->n_dims() != 1 || gi->shape[0] != in)
                    fail(where(*gi), ": tensor '", gi->name, "' must be I32 [", in, "]");
                g_idx = gi->bytes.data();
            }
            const quant::gptq_format::tensors t{qw.bytes.data(), qz.bytes.data(), sc.bytes.data(), g_idx, in, out, z.group, z.bits, z.gptq_v1};
            // Per-channel scales (-1) repeat over blocks of 32.
            const std::size_t bs = z.group == -1 ? 32 : static_cast<std::size_t>(z.group);
            if (z.bits == 4)
                m = bs == 32 ? quant::gptq_format::repack<4, 32>(t) : bs == 64 ? quant::gptq_format::repack<4, 64>(t) : quant::gptq_format::repack<4, 128>(t);
            else
                m = bs == 32 ? quant::gptq_format::repack<3, 32>(t) : bs == 64 ? quant::gptq_format::repack<3, 64>(t) : quant::gptq_format::repack<3, 128>(t);
            g.rows = out;
            g.cols = in;
        }
        g.format = {z.method, z.bits, z.group, !m.input_perm.empty()};
        if (!m.input_perm.empty()) {
            // q, k and v of a layer are usually quantized in the same input order: share it, so
            // the forward pass gathers their input once.
            const auto same = std::find_if(perms_.begin(), perms_.end(), [&](const auto& p) { return p == m.input_perm; });
            if (same == perms_.end()) perms_.push_back(std::move(m.input_perm));
            g.input_perm = (same == perms_.end() ? perms_.back() : *same).data();
        }
        blocks_.push_back(std::move(m.blocks));
        g.data = blocks_.back().data();
        names_.push_back(std::move(gguf_name));
        if (group_index_.count(names_.back())) fail(path_, ": two tensors map to '", names_.back(), "'");
        group_index_.emplace(names_.back(), group_tensors_.size());
        group_tensors_.push_back(g);
    }

    // --- tensors ----------------------------------------------------------------------------
    void bind_tensors() {
        const std::vector<const safetensors::tensor*> all = weights_->tensors();
        tensors_.reserve(all.size());
        const bool embed_stored = weights_->find("model.embed_tokens.weight") != nullptr;
        for (const safetensors::tensor* t : all) {
            if (quant_) {
                // Quantized linears come as .qweight + .qzeros + .scales (+ .g_idx): repacked
                // when their .qweight is met, the other parts skipped.
                const std::string_view n = t->name;
                if (n.ends_with(".qzeros") || n.ends_with(".scales") || n.ends_with(".g_idx")) continue;
                if (n.ends_with(".qweight")) {
                    const std::string prefix(n.substr(0, n.size() - std::string_view(".qweight").size()));
                    std::optional<std::string> name = detail::gguf_name_of(prefix + ".weight");
                    if (!name) fail(where(*t), ": tensor '", t->name, "' is not part of a ", architecture_, " lmtk can run");
                    if (*name == "output.weight" && !embed_stored) fail(where(*t), ": a quantized lm_head cannot stand in for the embedding");
                    add_quantized(prefix, std::move(*name));
                    continue;
                }
            }
            std::optional<std::string> name = detail::gguf_name_of(t->name);
            if (!name) {
                // Non-persistent buffers some older checkpoints saved along with the weights.
                if (t->name.ends_with(".rotary_emb.inv_freq")) continue;
                fail(where(*t), ": tensor '", t->name, "' is not part of a ", architecture_, " lmtk can run");
            }
            if (*name == "output.weight") {
                // torch's save_model stores tied weights once, sometimes under lm_head.weight
                // only: then it is the embedding. With both present and tied, the head is dropped.
                if (!embed_stored) name = "token_embd.weight";
                else if (tied_) continue;
            }
            add(*t, std::move(*name));
        }
        if (!find_tensor("token_embd.weight")) fail(path_, ": model.embed_tokens.weight is missing");
        if (!tied_ && !find_tensor("output.weight") && !find_group_tensor("output.weight"))
            fail(path_, ": lm_head.weight is missing and tie_word_embeddings is not true");

        const gguf::tensor_info& emb = *find_tensor("token_embd.weight");
        if (const nlohmann::json* v = field("vocab_size"); v && (!v->is_number_integer() || v->get<std::int64_t>() != emb.ne[1]))
            fail(config_path_, ": vocab_size ", v->dump(), " disagrees with the embedding's ", emb.ne[1], " rows");
        if (emb.ne[1] <= 0 || emb.ne[1] > std::numeric_limits<std::int32_t>::max())
            fail(path_, ": model.embed_tokens.weight has ", emb.ne[1], " rows, not a vocabulary of int32 ids");
        hp_.n_vocab = static_cast<std::uint32_t>(emb.ne[1]);
    }

    std::string where(const safetensors::tensor& t) const {
        const safetensors::file* f = weights_->file_of(t.name);
        return f ? f->path() : path_;
    }

    void add(const safetensors::tensor& t, std::string gguf_name) {
        gguf::tensor_info info;
        switch (t.type) {
            case safetensors::dtype::f32: info.type = quant::ggml_type::f32; break;
            case safetensors::dtype::f16: info.type = quant::ggml_type::f16; break;
            case safetensors::dtype::bf16: info.type = quant::ggml_type::bf16; break;
            default:
                fail(where(t), ": tensor '", t.name, "' has dtype ", safetensors::dtype_name(t.type),
                     "; only F32, F16 and BF16 weights are supported");
        }
        if (t.n_dims() == 0 || t.n_dims() > gguf::max_dims)
            fail(where(t), ": tensor '", t.name, "' has ", t.n_dims(), " dimensions (1 to ", gguf::max_dims, " supported)");
        info.n_dims = static_cast<std::uint32_t>(t.n_dims());
        for (std::size_t d = 0; d < t.n_dims(); ++d) {
            const std::uint64_t v = t.shape[t.n_dims() - 1 - d];
            // safetensors bounds the element count by the file size, so this cannot overflow int64.
            info.ne[d] = static_cast<std::int64_t>(v);
        }
        info.n_elements = t.n_elements;
        info.n_bytes = t.bytes.size();
        info.offset = t.begin;
        const std::size_t align = quant::traits_of(info.type).block_bytes;
        if (reinterpret_cast<std::uintptr_t>(t.bytes.data()) % align == 0) {
            info.data = t.bytes.data();
        } else {
            detail::aligned_bytes copy(static_cast<std::byte*>(::operator new[](t.bytes.size() + 1, std::align_val_t{64})));
            std::memcpy(copy.get(), t.bytes.data(), t.bytes.size());
            info.data = copy.get();
            owned_.push_back(std::move(copy));
        }
        names_.push_back(std::move(gguf_name));
        info.name = names_.back();
        if (index_.count(info.name)) fail(where(t), ": two tensors map to '", info.name, "'");
        index_.emplace(info.name, tensors_.size());
        tensors_.push_back(info);
    }

    std::filesystem::path dir_;
    std::string path_, config_path_;
    nlohmann::json config_;
    std::string architecture_;
    llama_hparams hp_;
    bool tied_ = false;
    std::unique_ptr<safetensors::checkpoint> weights_;
    std::deque<std::string> names_;  // GGUF names; a deque keeps the views in tensors_ valid
    std::vector<gguf::tensor_info> tensors_;
    std::unordered_map<std::string_view, std::size_t> index_;
    std::vector<detail::aligned_bytes> owned_;
    std::optional<quantization> quant_;                  // set for AWQ/GPTQ checkpoints
    std::deque<group_tensor> group_tensors_;
    std::unordered_map<std::string_view, std::size_t> group_index_;
    std::deque<std::vector<std::byte>> blocks_;           // repacked AWQ/GPTQ matrices
    std::deque<std::vector<std::uint32_t>> perms_;        // act-order input orders, shared
};

// Opens a model path: a GGUF file or a Hugging Face checkpoint folder.
inline std::unique_ptr<weight_source> open_weights(const std::string& path) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) return std::make_unique<hf_source>(path);
    return std::make_unique<gguf_source>(path);
}

}  // namespace lmtk::model
