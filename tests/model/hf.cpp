// Hugging Face checkpoint folders as weight sources: the real TinyStories checkpoint, and small
// generated ones that exercise F16/BF16, misaligned tensor data, shards, and refusals.
#include <catch2/catch.hpp>

#include "support/models.hpp"
#include "support/safetensors_files.hpp"

#include <lmtk/core/fp16.hpp>
#include <lmtk/model/hf.hpp>
#include <lmtk/model/llama.hpp>
#include <lmtk/tokenize/load.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace {

using lmtk::test::as_bytes;
using lmtk::test::scratch_dir;
using lmtk::test::st_tensor;
namespace model = lmtk::model;
using model_t = model::llama<>;

std::string tinystories_dir() { return lmtk::test::model_path("tinystories-656k"); }

void write_text(const std::string& path, const std::string& s) { std::ofstream(path, std::ios::binary) << s; }

// A tiny random Llama in HF layout. Weights are rounded to bf16 precision first, so F32, F16 and
// BF16 copies of the checkpoint hold exactly the same values.
struct tiny_llama {
    static constexpr int hidden = 32, ff = 64, layers = 2, heads = 4, kv_heads = 2, vocab = 64;
    std::map<std::string, std::pair<std::vector<std::uint64_t>, std::vector<float>>> w;

    tiny_llama() {
        std::mt19937 g(11);
        std::normal_distribution<float> nd(0.0f, 0.3f);
        auto add = [&](const std::string& name, std::vector<std::uint64_t> shape, bool norm = false) {
            std::size_t n = 1;
            for (auto d : shape) n *= d;
            std::vector<float> v(n);
            for (float& x : v) x = lmtk::core::bf16_to_f32(lmtk::core::f32_to_bf16(norm ? 1.0f + 0.1f * nd(g) : nd(g)));
            w[name] = {shape, v};
        };
        const std::uint64_t hd = hidden / heads;
        add("model.embed_tokens.weight", {vocab, hidden});
        add("model.norm.weight", {hidden}, true);
        add("lm_head.weight", {vocab, hidden});
        for (int l = 0; l < layers; ++l) {
            const std::string p = "model.layers." + std::to_string(l) + ".";
            add(p + "input_layernorm.weight", {hidden}, true);
            add(p + "post_attention_layernorm.weight", {hidden}, true);
            add(p + "self_attn.q_proj.weight", {heads * hd, hidden});
            add(p + "self_attn.k_proj.weight", {kv_heads * hd, hidden});
            add(p + "self_attn.v_proj.weight", {kv_heads * hd, hidden});
            add(p + "self_attn.o_proj.weight", {hidden, heads * hd});
            add(p + "mlp.gate_proj.weight", {ff, hidden});
            add(p + "mlp.up_proj.weight", {ff, hidden});
            add(p + "mlp.down_proj.weight", {hidden, ff});
        }
    }

    static std::string config(const std::string& extra = "") {
        return R"({"architectures":["LlamaForCausalLM"],"hidden_size":32,"intermediate_size":64,)"
               R"("num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"rms_norm_eps":1e-5,)"
               R"("rope_theta":10000.0,"max_position_embeddings":128,"vocab_size":64,"tie_word_embeddings":false,)"
               R"("hidden_act":"silu")" +
               extra + "}";
    }

    std::vector<st_tensor> tensors(const std::string& dtype) const {
        std::vector<st_tensor> out;
        for (const auto& [name, sv] : w) {
            const auto& [shape, v] = sv;
            st_tensor t{name, dtype, shape, {}};
            if (dtype == "F32") {
                t.bytes = as_bytes(v);
            } else {
                std::vector<std::uint16_t> h(v.size());
                for (std::size_t i = 0; i < v.size(); ++i)
                    h[i] = dtype == "F16" ? lmtk::core::f32_to_fp16(v[i]) : lmtk::core::f32_to_bf16(v[i]);
                t.bytes = as_bytes(h);
            }
            out.push_back(std::move(t));
        }
        return out;
    }

    // Writes the checkpoint into `dir`: one file, or two shards with an index.
    void write(const std::string& dir, const std::string& dtype, std::size_t header_pad = 0, bool sharded = false,
               const std::string& config_extra = "") const {
        write_text(dir + "/config.json", config(config_extra));
        const auto ts = tensors(dtype);
        if (!sharded) {
            lmtk::test::write_safetensors(dir + "/model.safetensors", ts, R"({"format":"pt"})", header_pad);
            return;
        }
        std::vector<st_tensor> a(ts.begin(), ts.begin() + 5), b(ts.begin() + 5, ts.end());
        lmtk::test::write_safetensors(dir + "/model-00001-of-00002.safetensors", a, R"({"format":"pt"})", header_pad);
        lmtk::test::write_safetensors(dir + "/model-00002-of-00002.safetensors", b, R"({"format":"pt"})", header_pad + 3);
        std::string idx = R"({"metadata":{"total_size":0},"weight_map":{)";
        for (std::size_t i = 0; i < ts.size(); ++i)
            idx += (i ? "," : "") + ("\"" + ts[i].name + "\":\"model-0000" + (i < 5 ? "1" : "2") + "-of-00002.safetensors\"");
        write_text(dir + "/model.safetensors.index.json", idx + "}}");
    }
};

std::vector<float> logits_of(const std::string& path, const std::vector<std::int32_t>& ids) {
    const model_t m(path);
    model::llama_context<model_t> ctx(m, {.n_ctx = 64, .n_threads = 1});
    std::vector<float> all(ids.size() * m.n_vocab());
    ctx.decode(ids, all.data());
    return all;
}

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
    REQUIRE(a.size() == b.size());
    double num = 0, den = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        num = std::max(num, std::fabs(double(a[i]) - b[i]));
        den = std::max(den, std::fabs(double(b[i])));
    }
    return num / den;
}

}  // namespace

TEST_CASE("hf: the TinyStories checkpoint as a weight source", "[model][hf]") {
    const auto src = model::open_weights(tinystories_dir());
    const auto* hf = dynamic_cast<const model::hf_source*>(src.get());
    REQUIRE(hf);
    CHECK(hf->architecture() == "LlamaForCausalLM");
    CHECK(hf->tied_embeddings());
    const model::llama_hparams& h = src->hparams();
    CHECK(h.arch == "llama");
    CHECK(h.rope == model::rope_kind::neox);
    CHECK(h.n_embd == 128);
    CHECK(h.n_ff == 384);
    CHECK(h.n_layer == 2);
    CHECK(h.n_head == 8);
    CHECK(h.n_head_kv == 4);
    CHECK(h.head_dim == 16);
    CHECK(h.rope_dim == 16);
    CHECK(h.n_ctx_train == 512);
    CHECK(h.n_vocab == 2048);
    CHECK(h.rms_eps == Approx(1e-6));
    CHECK(h.rope_freq_base == 10000.0f);
    // The embedding is stored once, as lm_head.weight; it becomes token_embd and output is tied.
    const lmtk::gguf::tensor_info& emb = src->tensor("token_embd.weight");
    CHECK(emb.ne[0] == 128);
    CHECK(emb.ne[1] == 2048);
    CHECK(emb.type == lmtk::quant::ggml_type::f32);
    CHECK(src->find_tensor("output.weight") == nullptr);
    const lmtk::gguf::tensor_info& k = src->tensor("blk.1.attn_k.weight");
    CHECK(k.n_dims == 2);
    CHECK(k.ne[0] == 128);
    CHECK(k.ne[1] == 64);
    CHECK(src->tensor("blk.0.ffn_down.weight").ne[0] == 384);
    CHECK(src->tensor("output_norm.weight").n_dims == 1);
    CHECK(hf->tensors().size() == 2 + 2 * 9);
    CHECK(hf->tokenizer_json().has_value());
    CHECK(hf->bos_token_id() == 1);
    CHECK(hf->eos_token_id() == 2);
}

TEST_CASE("hf: the TinyStories model runs", "[model][hf]") {
    const model_t m(tinystories_dir());
    model::llama_context<model_t> ctx(m, {.n_ctx = 64, .n_threads = 1});
    std::vector<std::int32_t> seq{1};
    for (int step = 0; step < 8; ++step) {
        const auto logits = ctx.decode(std::span(&seq.back(), 1));
        std::int32_t best = 0;
        for (std::int32_t i = 1; i < static_cast<std::int32_t>(logits.size()); ++i)
            if (logits[i] > logits[best]) best = i;
        seq.push_back(best);
    }
    // Greedy from BOS tells a story, as the model card says.
    const auto tok = lmtk::tokenize::load_tokenizer(m.source());
    CHECK(tok.decode(seq).starts_with("Once upon a time"));
}

TEST_CASE("hf: F32, F16, BF16, misaligned and sharded copies give the same logits", "[model][hf]") {
    const tiny_llama t;
    const std::vector<std::int32_t> ids{1, 5, 9, 33, 2, 63, 0, 17};
    scratch_dir f32("hf"), f16("hf"), bf16("hf"), odd("hf"), shards("hf");
    t.write(f32.dir.string(), "F32");
    t.write(f16.dir.string(), "F16");
    t.write(bf16.dir.string(), "BF16");
    t.write(odd.dir.string(), "F32", 1);  // every tensor's data at an odd address
    t.write(shards.dir.string(), "BF16", 0, true);
    const auto ref = logits_of(f32.dir.string(), ids);
    for (float x : ref) REQUIRE(std::isfinite(x));
    {
        const model::hf_source s(odd.dir.string());
        CHECK(s.find_tensor("token_embd.weight")->type == lmtk::quant::ggml_type::f32);
        CHECK(reinterpret_cast<std::uintptr_t>(s.find_tensor("token_embd.weight")->data) % 4 == 0);
        CHECK(s.find_tensor("output.weight") != nullptr);
        CHECK(s.find_tensor("blk.0.attn_q.weight")->type == lmtk::quant::ggml_type::f32);
    }
    CHECK(logits_of(odd.dir.string(), ids) == ref);  // same values, same kernels: bit-identical
    CHECK(max_rel_diff(logits_of(f16.dir.string(), ids), ref) < 1e-5);
    CHECK(max_rel_diff(logits_of(bf16.dir.string(), ids), ref) < 1e-5);
    CHECK(max_rel_diff(logits_of(shards.dir.string(), ids), ref) < 1e-5);
    CHECK(model::hf_source(f16.dir.string()).find_tensor("blk.1.ffn_up.weight")->type == lmtk::quant::ggml_type::f16);
    CHECK(model::hf_source(shards.dir.string()).checkpoint().files().size() == 2);
}

TEST_CASE("hf: configurations and checkpoints that are refused", "[model][hf]") {
    const tiny_llama t;
    auto refused = [&](const std::string& what, auto&& prepare) {
        scratch_dir d("hf");
        t.write(d.dir.string(), "F32");
        prepare(d.dir.string());
        try {
            model::hf_source s(d.dir.string());
            FAIL("accepted a checkpoint; expected '" << what << "'");
        } catch (const lmtk::error& e) {
            INFO(e.what());
            CHECK(std::string(e.what()).find(what) != std::string::npos);
        }
    };
    auto config = [&](const std::string& json) { return [json](const std::string& dir) { write_text(dir + "/config.json", json); }; };
    auto edit = [&](const std::string& from, const std::string& to) {
        std::string c = tiny_llama::config();
        c.replace(c.find(from), from.size(), to);
        return config(c);
    };
    refused("no config.json", [](const std::string& dir) { std::filesystem::remove(dir + "/config.json"); });
    refused("invalid JSON", config("{"));
    refused("no 'architectures'", config("{}"));
    refused("'mlp_bias' is true", config(tiny_llama::config(R"(,"mlp_bias":true)")));
    refused("'GPT2LMHeadModel' is not supported", edit("LlamaForCausalLM", "GPT2LMHeadModel"));
    refused("'hidden_size' must be a positive integer", edit("\"hidden_size\":32", "\"hidden_size\":-32"));
    refused("'intermediate_size' is missing", edit("\"intermediate_size\":64,", ""));
    refused("not a multiple of num_key_value_heads", edit("\"num_key_value_heads\":2", "\"num_key_value_heads\":3"));
    refused("hidden_act \"gelu\"", edit("\"silu\"", "\"gelu\""));
    refused("rope_scaling type 'yarn'", config(tiny_llama::config(R"(,"rope_scaling":{"type":"yarn","factor":4})")));
    refused("rope_scaling.factor", config(tiny_llama::config(R"(,"rope_scaling":{"type":"linear","factor":0})")));
    const auto quantized = [&](const std::string& q) { return config(tiny_llama::config(R"(,"quantization_config":)" + q)); };
    refused("quant_method 'bitsandbytes' is not supported", quantized(R"({"quant_method":"bitsandbytes"})"));
    refused("AWQ with 3 bits", quantized(R"({"quant_method":"awq","bits":3,"group_size":128})"));
    refused("AWQ version 'gemv_fast'", quantized(R"({"quant_method":"awq","bits":4,"group_size":128,"version":"GEMV_FAST"})"));
    refused("GPTQ with 8 bits", quantized(R"({"quant_method":"gptq","bits":8,"group_size":128})"));
    refused("GPTQ group_size 100", quantized(R"({"quant_method":"gptq","bits":4,"group_size":100})"));
    refused("GPTQ Marlin", quantized(R"({"quant_method":"gptq","bits":4,"group_size":128,"is_marlin_format":true})"));
    refused("checkpoint_format 'marlin'", quantized(R"({"quant_method":"gptq","bits":4,"group_size":128,"checkpoint_format":"marlin"})"));
    refused("group_size must be an integer", quantized(R"({"quant_method":"gptq","bits":4,"group_size":"128"})"));
    // Hostile GPTQ tensors (4-bit, groups of 32): q_proj of 32 inputs x 32 outputs is qweight
    // I32 [4, 32], qzeros I32 [1, 4], scales F16 [1, 32], g_idx I32 [32].
    const auto gptq_q_proj = [&](std::vector<st_tensor> parts) {
        return [&t, parts](const std::string& dir) {
            auto ts = t.tensors("F32");
            std::erase_if(ts, [](const st_tensor& x) { return x.name == "model.layers.0.self_attn.q_proj.weight"; });
            for (const st_tensor& p : parts) ts.push_back(p);
            lmtk::test::write_safetensors(dir + "/model.safetensors", ts);
            write_text(dir + "/config.json", tiny_llama::config(R"(,"quantization_config":{"quant_method":"gptq","bits":4,"group_size":32})"));
        };
    };
    const std::string q = "model.layers.0.self_attn.q_proj.";
    const st_tensor qweight{q + "qweight", "I32", {4, 32}, std::vector<std::byte>(4 * 32 * 4)};
    const st_tensor qzeros{q + "qzeros", "I32", {1, 4}, std::vector<std::byte>(4 * 4)};
    const st_tensor scales{q + "scales", "F16", {1, 32}, std::vector<std::byte>(32 * 2)};
    std::vector<std::int32_t> bad_groups(32, 0);
    bad_groups[7] = 3;
    refused("'model.layers.0.self_attn.q_proj.scales' is missing", gptq_q_proj({qweight, qzeros}));
    refused("has shape [2, 4], expected [1, 4]", gptq_q_proj({qweight, {q + "qzeros", "I32", {2, 4}, std::vector<std::byte>(2 * 4 * 4)}, scales}));
    refused("is F32 with 2 dimensions", gptq_q_proj({qweight, qzeros, {q + "scales", "F32", {1, 32}, std::vector<std::byte>(32 * 4)}}));
    refused("g_idx[7] = 3 is not one of the 1 groups", gptq_q_proj({qweight, qzeros, scales, {q + "g_idx", "I32", {32}, as_bytes(bad_groups)}}));
    refused("must be I32 [32]", gptq_q_proj({qweight, qzeros, scales, {q + "g_idx", "I32", {31}, std::vector<std::byte>(31 * 4)}}));
    refused("vocab_size 65 disagrees", edit("\"vocab_size\":64", "\"vocab_size\":65"));
    refused("lm_head.weight is missing", [&](const std::string& dir) {
        auto ts = t.tensors("F32");
        std::erase_if(ts, [](const st_tensor& x) { return x.name == "lm_head.weight"; });
        lmtk::test::write_safetensors(dir + "/model.safetensors", ts);
    });
    refused("is not part of a LlamaForCausalLM", [&](const std::string& dir) {
        auto ts = t.tensors("F32");
        ts.push_back({"model.layers.0.self_attn.extra.weight", "F32", {1}, as_bytes(std::vector<float>{1})});
        lmtk::test::write_safetensors(dir + "/model.safetensors", ts);
    });
    refused("has dtype I8", [&](const std::string& dir) {
        auto ts = t.tensors("F32");
        for (auto& x : ts)
            if (x.name == "model.norm.weight") x = {x.name, "I8", {32}, std::vector<std::byte>(32)};
        lmtk::test::write_safetensors(dir + "/model.safetensors", ts);
    });
    refused("PyTorch .bin checkpoints", [](const std::string& dir) {
        std::filesystem::remove(dir + "/model.safetensors");
        write_text(dir + "/pytorch_model.bin", "x");
    });
    {  // shapes are checked when the model binds the weights
        scratch_dir d("hf");
        t.write(d.dir.string(), "F32");
        auto ts = t.tensors("F32");
        for (auto& x : ts)
            if (x.name == "model.norm.weight") x = {x.name, "F32", {31}, as_bytes(std::vector<float>(31))};
        lmtk::test::write_safetensors(d.file("model.safetensors"), ts);
        CHECK_THROWS_WITH(model_t(d.dir.string()), Catch::Contains("has shape [31, 1]"));
    }
    // Sliding-window attention (Mistral) caps the default context at the window.
    scratch_dir d("hf");
    t.write(d.dir.string(), "F32", 0, false, R"(,"sliding_window":16)");
    CHECK(model::hf_source(d.dir.string()).hparams().n_ctx_train == 16);
}

TEST_CASE("hf: a head count whose 32-bit product with head_dim wraps is refused", "[model][hf][hostile]") {
    // 2^29 + 1 heads of 8 make 2^32 + 8 query dimensions, 8 in 32-bit arithmetic; with Q/K/V
    // tensors of 8 rows the shapes "matched" and attention ran over 2^29 + 1 heads of an
    // 8-float buffer. Widths are products in 64 bits now, and bounded.
    const tiny_llama t;
    scratch_dir d("hf");
    auto ts = t.tensors("F32");
    for (st_tensor& x : ts) {
        const bool qkv = x.name.find("q_proj") != std::string::npos || x.name.find("k_proj") != std::string::npos ||
                         x.name.find("v_proj") != std::string::npos;
        if (qkv) x = {x.name, "F32", {8, 32}, as_bytes(std::vector<float>(8 * 32, 0.01f))};
        if (x.name.find("o_proj") != std::string::npos) x = {x.name, "F32", {32, 8}, as_bytes(std::vector<float>(32 * 8, 0.01f))};
    }
    lmtk::test::write_safetensors(d.file("model.safetensors"), ts);
    std::string c = tiny_llama::config(R"(,"head_dim":8)");
    c.replace(c.find("\"num_attention_heads\":4"), 23, "\"num_attention_heads\":536870913");
    c.replace(c.find("\"num_key_value_heads\":2"), 23, "\"num_key_value_heads\":536870913");
    write_text(d.file("config.json"), c);
    try {
        const model_t m(d.dir.string());
        model::llama_context<model_t> ctx(m, {.n_ctx = 8, .n_threads = 1});
        const std::vector<std::int32_t> ids{1, 2};
        ctx.decode(ids);
        FAIL("a checkpoint with a wrapping query width loaded and ran");
    } catch (const lmtk::error& e) {
        INFO(e.what());
        CHECK(std::string(e.what()).find("query width (head count x head dimension) 4294967304") != std::string::npos);
    }
}

TEST_CASE("hf: an empty tensor with a huge other dimension is refused, not wrapped", "[model][hf][hostile]") {
    // [4, 2^62, 0] holds no bytes, so the byte check alone let it through; binding it as a bias
    // then multiplied its GGUF dimensions into a row count, 4 x 2^62 (signed overflow).
    const tiny_llama t;
    scratch_dir d("hf");
    t.write(d.dir.string(), "F32");
    auto ts = t.tensors("F32");
    ts.push_back({"model.layers.0.self_attn.q_proj.bias", "F32", {4, 4611686018427387904ull, 0}, {}});
    lmtk::test::write_safetensors(d.file("model.safetensors"), ts);
    CHECK_THROWS_WITH(model_t(d.dir.string()), Catch::Contains("larger than the file could hold"));
}
