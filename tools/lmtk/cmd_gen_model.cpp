// lmtk gen-model: random-weight Llama GGUFs of real shapes, for benchmarks. The numbers are
// noise, but the tensor shapes, types and metadata are those of a real model, so both lmtk and
// llama.cpp load the file and do exactly the work they would do for the trained one.
#include "commands.hpp"
#include "common.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace lmtk::cli {

namespace {

struct model_shape {
    const char* name;
    std::uint32_t dim, n_layer, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
};

// "medium" is the 246M model of the llama.cpp comparison in bench/RESULTS.md; "stories15m" has
// the shapes of karpathy's TinyStories 15M.
constexpr model_shape shapes[] = {
    {"medium", 1024, 16, 16, 4, 2816, 32000, 2048},
    {"stories15m", 288, 6, 6, 6, 768, 32000, 256},
};

// xorshift64*: fast enough that 246M values take a second or two, and seeded reproducibly.
struct noise {
    std::uint64_t s;
    float next() noexcept {  // uniform in [-1, 1)
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        const std::uint64_t r = s * 0x2545F4914F6CDD1DULL;
        return static_cast<float>(r >> 40) * (2.0f / 16777216.0f) - 1.0f;
    }
};

// general.file_type (LlamaFileType) of a file whose big tensors are all `t`.
std::uint32_t file_type_of(quant::ggml_type t) {
    switch (t) {
        case quant::ggml_type::f32: return 0;
        case quant::ggml_type::f16: return 1;
        case quant::ggml_type::q4_0: return 2;
        case quant::ggml_type::q8_0: return 7;
        case quant::ggml_type::bf16: return 32;
        default: fail("gen-model: --type must be f32, f16, bf16, q8_0 or q4_0");
    }
}

// Rows of `cols` random values (uniform, standard deviation `stddev`) encoded as policy P.
template <class P>
void fill_rows(gguf::tensor_sink& sink, std::size_t rows, std::size_t cols, float stddev, noise& g) {
    const float a = stddev * std::sqrt(3.0f);
    std::vector<float> x(cols);
    std::vector<typename P::block> out(cols / P::block_elems);
    for (std::size_t r = 0; r < rows; ++r) {
        for (float& v : x) v = a * g.next();
        P::quantize_row(x.data(), out.data(), out.size());
        sink.write(std::span<const typename P::block>(out));
    }
}

}  // namespace

int cmd_gen_model(const argv_t& argv) {
    const args a("gen-model", argv, {"-o|--output", "--shape", "--type", "--seed", "--vocab"});
    const std::string out_path = a.require("-o");
    const std::string shape_name = a.get("--shape").value_or("medium");
    const model_shape* shape = nullptr;
    for (const auto& s : shapes)
        if (shape_name == s.name) shape = &s;
    if (!shape) fail("gen-model: --shape must be medium or stories15m, not '", shape_name, "'");
    const auto type = quant::type_from_name(a.get("--type").value_or("f16"));
    if (!type) fail("gen-model: unknown --type '", a.get("--type").value_or(""), "'");
    const std::uint32_t file_type = file_type_of(*type);
#ifdef LMTK_DEFAULT_VOCAB
    const std::string vocab_path = a.get("--vocab").value_or(LMTK_DEFAULT_VOCAB);
#else
    const std::string vocab_path = a.require("--vocab");
#endif
    noise g{a.number<std::uint64_t>("--seed", 1234) * 2 + 1};

    const gguf::file vocab(vocab_path);
    gguf::writer w;
    w.set("general.architecture", "llama");
    w.set("general.name", std::string("lmtk random ") + shape->name);
    w.set("general.file_type", file_type);
    w.set("general.quantization_version", std::uint32_t{2});
    w.set("llama.context_length", shape->n_ctx);
    w.set("llama.embedding_length", shape->dim);
    w.set("llama.block_count", shape->n_layer);
    w.set("llama.feed_forward_length", shape->n_ff);
    w.set("llama.attention.head_count", shape->n_head);
    w.set("llama.attention.head_count_kv", shape->n_head_kv);
    w.set("llama.attention.layer_norm_rms_epsilon", 1e-5f);
    w.set("llama.rope.dimension_count", shape->dim / shape->n_head);
    w.set("llama.rope.freq_base", 10000.0f);
    w.set("llama.vocab_size", shape->n_vocab);
    std::size_t n_vocab_tokens = 0;
    for (const auto& kv : vocab.metadata()) {
        if (!kv.key.starts_with("tokenizer.")) continue;
        w.set(kv.key, kv.val);
        if (kv.key == "tokenizer.ggml.tokens")
            if (const auto* arr = kv.val.as_array()) n_vocab_tokens = arr->items.size();
    }
    if (n_vocab_tokens != shape->n_vocab)
        fail(vocab_path, ": has ", n_vocab_tokens, " tokens, the ", shape->name, " shape needs ", shape->n_vocab);

    const auto matrix = [&](const std::string& name, std::size_t cols, std::size_t rows, float stddev) {
        const gguf::writer::shape ne{static_cast<std::int64_t>(cols), static_cast<std::int64_t>(rows)};
        w.add_tensor(name, *type, ne, [&, cols, rows, stddev](gguf::tensor_sink& sink) {
            switch (*type) {
                case quant::ggml_type::f32: fill_rows<quant::f32>(sink, rows, cols, stddev, g); break;
                case quant::ggml_type::f16: fill_rows<quant::f16>(sink, rows, cols, stddev, g); break;
                case quant::ggml_type::bf16: fill_rows<quant::bf16>(sink, rows, cols, stddev, g); break;
                case quant::ggml_type::q8_0: fill_rows<quant::q8_0>(sink, rows, cols, stddev, g); break;
                case quant::ggml_type::q4_0: fill_rows<quant::q4_0>(sink, rows, cols, stddev, g); break;
                default: break;  // file_type_of() refused the rest
            }
        });
    };
    // Norm gains of 1 (F32, as converters write them) keep activations of the random network
    // in a sane range.
    const auto ones = [&](const std::string& name, std::size_t n) {
        std::vector<std::byte> bytes(n * sizeof(float));
        for (std::size_t i = 0; i < n; ++i) {
            const float one = 1.0f;
            std::memcpy(bytes.data() + i * sizeof(float), &one, sizeof one);
        }
        w.add_tensor(name, quant::ggml_type::f32, gguf::writer::shape{static_cast<std::int64_t>(n)}, std::move(bytes));
    };

    const std::size_t d = shape->dim, hd = d / shape->n_head, kv = hd * shape->n_head_kv, ff = shape->n_ff;
    const float s = 0.02f;  // the usual initialisation scale
    matrix("token_embd.weight", d, shape->n_vocab, 1.0f);
    for (std::uint32_t l = 0; l < shape->n_layer; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        ones(p + "attn_norm.weight", d);
        matrix(p + "attn_q.weight", d, d, s);
        matrix(p + "attn_k.weight", d, kv, s);
        matrix(p + "attn_v.weight", d, kv, s);
        matrix(p + "attn_output.weight", d, d, s);
        ones(p + "ffn_norm.weight", d);
        matrix(p + "ffn_gate.weight", d, ff, s);
        matrix(p + "ffn_up.weight", d, ff, s);
        matrix(p + "ffn_down.weight", ff, d, s);
    }
    ones("output_norm.weight", d);
    matrix("output.weight", d, shape->n_vocab, s);

    const stopwatch sw;
    w.write(out_path);
    std::fprintf(stderr, "lmtk: wrote %s (%s, %s) in %.1f s\n", out_path.c_str(), shape->name,
                 std::string(quant::type_name(*type)).c_str(), sw.ms() / 1e3);
    return 0;
}

}  // namespace lmtk::cli
