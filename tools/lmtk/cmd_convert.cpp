// lmtk convert: a Hugging Face checkpoint folder -> one GGUF file, runnable by lmtk and loadable
// by llama.cpp.
//
// What is written:
//   - general.* and llama.* hyperparameters from config.json (architecture "llama");
//   - every weight under its GGUF name, in the GGUF orientation. Q and K rows are permuted from
//     HF's rotate-half layout into the interleaved layout GGUF llama files use (what llama.cpp's
//     converter does), so the file runs with "normal" RoPE like any llama GGUF;
//   - matrices in --type (default: the checkpoint's own type, lossless); norms stay F32, and a
//     matrix whose rows are not whole blocks of --type falls back to F16;
//   - the tokenizer from tokenizer.json. A byte-level BPE (GPT-2 style) becomes
//     tokenizer.ggml.model "gpt2" with its merges. A BPE with byte fallback (SentencePiece
//     converted: Llama, Mistral, TinyStories) becomes "llama" with scores derived from the merge
//     ranks (a token made by merge r scores -r) AND the merges themselves: llama.cpp's
//     SentencePiece tokenizer merges by score and so applies the merges in rank order, while
//     lmtk, seeing the merges, runs exact merge-rank BPE and reproduces the folder's tokenizer.
#include "args.hpp"
#include "commands.hpp"
#include "common.hpp"

#include <lmtk/io/gguf_writer.hpp>
#include <lmtk/model/hf.hpp>
#include <lmtk/tokenize/tokenizer_json.hpp>

#include <boost/hana/unpack.hpp>

#include <cstdio>
#include <functional>
#include <filesystem>
#include <string>
#include <vector>

namespace lmtk::cli {

namespace {

// n floats (whole blocks) -> n / block_elems blocks of P, as bytes.
template <quant::quant_policy P>
void quantize_bytes(const float* x, std::byte* out, std::size_t n) noexcept {
    P::quantize_row(x, reinterpret_cast<typename P::block*>(out), n / P::block_elems);
}
using quantize_fn = void (*)(const float*, std::byte*, std::size_t) noexcept;

// The reference quantizer of every format compiled into the CLI; nullptr for the others.
template <class Set>
quantize_fn resolve_quantizer(quant::ggml_type t) {
    return boost::hana::unpack(Set::types, [t](auto... p) {
        quantize_fn fn = nullptr;
        static_cast<void>(((decltype(p)::type::type_id == t
                                ? (fn = &quantize_bytes<typename decltype(p)::type>, true)
                                : false) ||
                           ...));
        return fn;
    });
}

// LlamaFileType for a file whose matrices are all of one type (llama.cpp's numbering).
std::uint32_t file_type_of(quant::ggml_type t) {
    using g = quant::ggml_type;
    switch (t) {
        case g::f32: return 0;
        case g::f16: return 1;
        case g::q4_0: return 2;
        case g::q4_1: return 3;
        case g::q8_0: return 7;
        case g::q5_0: return 8;
        case g::q5_1: return 9;
        case g::q2_k: return 10;
        case g::q3_k: return 11;
        case g::q4_k: return 14;
        case g::q5_k: return 16;
        case g::q6_k: return 18;
        case g::iq4_nl: return 25;
        case g::iq4_xs: return 30;
        case g::bf16: return 32;
        default: return 0;
    }
}

// Row `r` of a Q or K matrix in GGUF's interleaved layout comes from this HF row: within each
// head of `head_dim` rows, GGUF row 2i+k is HF row k*head_dim/2 + i (k = 0, 1).
std::size_t unpermuted_row(std::size_t r, std::size_t head_dim) {
    const std::size_t head = r / head_dim, j = r % head_dim, half = head_dim / 2;
    return head * head_dim + (j % 2) * half + j / 2;
}

void write_tokenizer(gguf::writer& w, const tokenize::vocab& v) {
    w.set("tokenizer.ggml.model", v.model());
    if (!v.pre().empty()) w.set("tokenizer.ggml.pre", v.pre());
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<std::int32_t> types;
    tokens.reserve(v.size());
    for (std::int32_t i = 0; i < static_cast<std::int32_t>(v.size()); ++i) {
        tokens.push_back(v.text(i));
        scores.push_back(v.score(i));
        types.push_back(static_cast<std::int32_t>(v.type(i)));
    }
    w.set_array("tokenizer.ggml.tokens", tokens);
    w.set_array("tokenizer.ggml.scores", scores);
    w.set_array("tokenizer.ggml.token_type", types);
    if (!v.merges().empty()) w.set_array("tokenizer.ggml.merges", v.merges());
    const std::pair<const char*, std::int32_t> ids[] = {
        {"tokenizer.ggml.bos_token_id", v.bos()},     {"tokenizer.ggml.eos_token_id", v.eos()},
        {"tokenizer.ggml.unknown_token_id", v.unk()}, {"tokenizer.ggml.padding_token_id", v.pad()},
        {"tokenizer.ggml.eot_token_id", v.eot()},
    };
    for (const auto& [key, id] : ids)
        if (id != tokenize::no_token) w.set(key, static_cast<std::uint32_t>(id));
    w.set("tokenizer.ggml.add_bos_token", v.add_bos());
    w.set("tokenizer.ggml.add_eos_token", v.add_eos());
    w.set("tokenizer.ggml.add_space_prefix", v.add_space_prefix());
}

}  // namespace

int cmd_convert(const argv_t& argv) {
    const args a("convert", argv, {"--type|--outtype", "--name", "-t|--threads"});
    if (a.positional().size() != 2) fail("lmtk convert: expected DIR OUT.gguf (see lmtk --help)");
    const std::string& in = a.positional()[0];
    const std::string& out = a.positional()[1];
    std::error_code ec;
    if (!std::filesystem::is_directory(in, ec))
        fail("lmtk convert: ", in, " is not a folder (expected a Hugging Face checkpoint folder)");

    const stopwatch sw;
    const model::hf_source src(in);
    const tokenize::vocab vocab = tokenize::vocab_from_hf_folder(src.directory());
    if (vocab.size() != src.hparams().n_vocab)
        fail(in, ": the tokenizer has ", vocab.size(), " tokens but the embedding has ", src.hparams().n_vocab, " rows");
    const model::llama_hparams& h = src.hparams();

    // The requested type; "auto" keeps the checkpoint's (the embedding's) type, F16 for AWQ/GPTQ.
    const std::string type_name = a.get("--type").value_or("auto");
    quant::ggml_type target = src.group_tensors().empty() ? src.tensor("token_embd.weight").type : quant::ggml_type::f16;
    if (type_name != "auto") {
        const auto t = quant::type_from_name(type_name);
        if (!t) fail("lmtk convert: unknown --type '", type_name, "'");
        target = *t;
    }
    if (!resolve_quantizer<cli_set>(target))
        fail("lmtk convert: --type ", quant::type_name(target), " is not a format this build can write");

    gguf::writer w;
    std::string name = a.get("--name").value_or(std::filesystem::path(in).lexically_normal().filename().string());
    if (name.empty() || name == ".") name = std::filesystem::absolute(in).lexically_normal().parent_path().filename().string();
    // qwen2 is llama plus q/k/v biases, RoPE rotate-half: its GGUF keys take its own prefix.
    const std::string arch = h.arch;
    w.set("general.architecture", arch);
    w.set("general.name", name);
    w.set("general.file_type", file_type_of(target));
    if (quant::traits_of(target).block_elems > 1) w.set("general.quantization_version", std::uint32_t{2});
    w.set(arch + ".context_length", h.n_ctx_train);
    w.set(arch + ".embedding_length", h.n_embd);
    w.set(arch + ".block_count", h.n_layer);
    w.set(arch + ".feed_forward_length", h.n_ff);
    w.set(arch + ".attention.head_count", h.n_head);
    w.set(arch + ".attention.head_count_kv", h.n_head_kv);
    w.set(arch + ".attention.layer_norm_rms_epsilon", h.rms_eps);
    w.set(arch + ".rope.freq_base", h.rope_freq_base);
    w.set(arch + ".rope.dimension_count", h.rope_dim);
    if (h.head_dim * h.n_head != h.n_embd) {
        w.set(arch + ".attention.key_length", h.head_dim);
        w.set(arch + ".attention.value_length", h.head_dim);
    }
    if (h.rope_freq_scale != 1.0f) {
        w.set(arch + ".rope.scaling.type", "linear");
        w.set(arch + ".rope.scaling.factor", 1.0f / h.rope_freq_scale);
    }
    w.set(arch + ".vocab_size", h.n_vocab);
    write_tokenizer(w, vocab);

    // Tensors in llama.cpp's order: embedding, blocks (biases after their weights), final norm,
    // output.
    std::vector<std::string> order{"token_embd.weight"};
    for (std::uint32_t l = 0; l < h.n_layer; ++l)
        for (const char* part : {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate",
                                 "ffn_up", "ffn_down"}) {
            const std::string base = "blk." + std::to_string(l) + "." + part;
            order.push_back(base + ".weight");
            if (src.find_tensor(base + ".bias")) order.push_back(base + ".bias");
        }
    order.push_back("output_norm.weight");
    if (src.find_tensor("output.weight") || src.find_group_tensor("output.weight")) order.push_back("output.weight");

    // GGUF llama wants Q and K rows (and their biases) in interleaved-RoPE order; HF keeps them
    // rotate-half, which GGUF qwen2 keeps too.
    const bool permute_qk = arch == "llama";
    std::size_t fallbacks = 0;
    for (const std::string& tname : order) {
        // Each row of the source as floats, in input order: a GGUF-like tensor, or an AWQ/GPTQ
        // matrix (dequantized; act-order columns put back in input order).
        std::size_t cols = 0, rows = 0;
        std::vector<std::int64_t> ne;
        std::function<void(std::size_t, float*)> read_row;
        if (const model::group_tensor* g = src.find_group_tensor(tname)) {
            const auto ops = quant::resolve_group<cli_set, cli_target::arch>(g->format);
            if (!ops) fail(in, ": tensor '", tname, "' is ", quant::format_name(g->format), ", which lmtk cannot read");
            cols = g->cols;
            rows = g->rows;
            ne = {static_cast<std::int64_t>(cols), static_cast<std::int64_t>(rows)};
            const model::weight wt{g->data, *ops, rows, cols, g->input_perm};
            read_row = [wt](std::size_t r, float* x) { wt.dequantize_row(r, x); };
        } else {
            const gguf::tensor_info& t = src.tensor(tname);
            const auto src_ops = quant::resolve<cli_set, cli_target::arch>(t.type);
            if (!src_ops) fail(in, ": tensor '", tname, "' has type ", quant::type_name(t.type), ", which lmtk cannot read");
            cols = static_cast<std::size_t>(t.ne[0]);
            rows = static_cast<std::size_t>(t.rows());
            ne.assign(t.ne.begin(), t.ne.begin() + t.n_dims);
            const quant::weight_ops ops = *src_ops;
            const std::byte* data = t.data;
            const std::size_t row_bytes = cols / ops.block_elems * ops.block_bytes;
            read_row = [ops, data, row_bytes, cols](std::size_t r, float* x) { ops.dequantize_row(data + r * row_bytes, x, cols); };
        }
        quant::ggml_type type = ne.size() == 1 ? quant::ggml_type::f32 : target;
        if (cols % quant::traits_of(type).block_elems != 0) {
            type = quant::ggml_type::f16;
            ++fallbacks;
        }
        const quantize_fn quantize = resolve_quantizer<cli_set>(type);
        const bool qk = permute_qk && (tname.find(".attn_q.") != std::string::npos || tname.find(".attn_k.") != std::string::npos);
        const bool qk_rows = qk && ne.size() == 2, qk_bias = qk && ne.size() == 1;
        const std::size_t head_dim = h.head_dim;
        w.add_tensor(tname, type, std::span<const std::int64_t>(ne.data(), ne.size()),
                     [read_row, quantize, type, cols, rows, qk_rows, qk_bias, head_dim](gguf::tensor_sink& sink) {
                         const auto tr = quant::traits_of(type);
                         std::vector<float> x(cols), y(cols);
                         // 8-byte words: suitably aligned for every block struct
                         std::vector<std::uint64_t> buf((cols / tr.block_elems * tr.block_bytes + 7) / 8);
                         for (std::size_t r = 0; r < rows; ++r) {
                             read_row(qk_rows ? unpermuted_row(r, head_dim) : r, x.data());
                             if (qk_bias) {  // a bias's elements follow the rows of its matrix
                                 for (std::size_t i = 0; i < cols; ++i) y[i] = x[unpermuted_row(i, head_dim)];
                                 x.swap(y);
                             }
                             auto* o = reinterpret_cast<std::byte*>(buf.data());
                             quantize(x.data(), o, cols);
                             sink.write(o, cols / tr.block_elems * tr.block_bytes);
                         }
                     });
    }
    w.write(out);
    std::fprintf(stderr, "lmtk: wrote %s: %zu tensors, matrices %.*s%s, tokenizer %s (%zu tokens), %.1f s\n",
                 out.c_str(), order.size(), int(quant::type_name(target).size()), quant::type_name(target).data(),
                 fallbacks ? " (some F16: rows not whole blocks)" : "", vocab.model().c_str(), vocab.size(),
                 sw.ms() / 1000.0);
    return 0;
}

}  // namespace lmtk::cli
