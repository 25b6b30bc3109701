// lmtk quantize IN.gguf OUT.gguf TYPE [-t N] [--pure] [--allow-requantize]: converts the weight
// matrices of a GGUF model to TYPE (one format, or one of llama.cpp's mixed recipes such as
// Q4_K_M) and copies everything else. The mixes follow llama.cpp's llama-quant.cpp (read for
// its facts): which tensors it keeps at higher precision, which fallback it takes when a row
// does not split into whole blocks, and the general.file_type numbers it writes, so that files
// from either tool are alike and load in both.
//
// What is quantized: 2-D (and larger) tensors whose name ends in "weight" and is not a norm;
// 1-D tensors (norms, biases) are copied as they are. The tool streams one tensor at a time
// (the input is mapped, the output written tensor by tensor), quantizing the rows of a tensor
// on -t threads, and prints a progress line per tensor to stderr.
#include "args.hpp"
#include "commands.hpp"

#include <lmtk/core/error.hpp>
#include <lmtk/core/thread_pool.hpp>
#include <lmtk/generate/timings.hpp>
#include <lmtk/io/gguf.hpp>
#include <lmtk/io/gguf_writer.hpp>
#include <lmtk/quant/quant.hpp>
#include <lmtk/target/cpu.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace lmtk::cli {

namespace {

using quant::ggml_type;

// A target as the user names it: one format for every weight matrix, or a llama.cpp mix of a
// base format with some tensors kept at higher precision (rules in choose_type below).
struct recipe {
    std::string_view name;
    std::uint32_t file_type;  // general.file_type, llama.cpp's LlamaFileType (spec 3.2)
    ggml_type base;
};

constexpr recipe recipes[] = {
    {"F32", 0, ggml_type::f32},       {"F16", 1, ggml_type::f16},       {"BF16", 32, ggml_type::bf16},
    {"Q4_0", 2, ggml_type::q4_0},     {"Q4_1", 3, ggml_type::q4_1},     {"Q5_0", 8, ggml_type::q5_0},
    {"Q5_1", 9, ggml_type::q5_1},     {"Q8_0", 7, ggml_type::q8_0},     {"Q2_K", 10, ggml_type::q2_k},
    {"Q3_K_S", 11, ggml_type::q3_k},  {"Q3_K_M", 12, ggml_type::q3_k},  {"Q3_K_L", 13, ggml_type::q3_k},
    {"Q4_K_S", 14, ggml_type::q4_k},  {"Q4_K_M", 15, ggml_type::q4_k},  {"Q5_K_S", 16, ggml_type::q5_k},
    {"Q5_K_M", 17, ggml_type::q5_k},  {"Q6_K", 18, ggml_type::q6_k},    {"IQ4_NL", 25, ggml_type::iq4_nl},
};

// The plain K names mean their _M mix, as in llama.cpp's quantize tool.
constexpr std::pair<std::string_view, std::string_view> aliases[] = {
    {"Q3_K", "Q3_K_M"}, {"Q4_K", "Q4_K_M"}, {"Q5_K", "Q5_K_M"}};

std::string upper(std::string_view s) {
    std::string u(s);
    for (char& c : u)
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    return u;
}

const recipe& find_recipe(std::string_view name) {
    std::string u = upper(name);
    for (const auto& [alias, target] : aliases)
        if (u == alias) u = target;
    for (const recipe& r : recipes)
        if (r.name == u) return r;
    std::string known;
    for (const recipe& r : recipes) known += lmtk::detail::concat(known.empty() ? "" : ", ", r.name);
    if (u == "Q8_K")
        fail("quantize: Q8_K is an intermediate type for activations, not a weight format; choose one of ", known);
    fail("quantize: unknown type '", name, "'; choose one of ", known, " (Q3_K, Q4_K, Q5_K mean their _M mix)");
}

constexpr bool is_quantized(ggml_type t) noexcept {
    return t != ggml_type::f32 && t != ggml_type::f16 && t != ggml_type::bf16;
}

std::size_t block_elems(ggml_type t) { return quant::traits_of(t).block_elems; }

// Row-wise quantizers of every type the tool writes: a type-erased P::quantize_row.
using quantize_fn = void (*)(const float* x, std::byte* out, std::size_t n_blocks) noexcept;
template <quant::quant_policy P>
void quantize_as(const float* x, std::byte* out, std::size_t n_blocks) noexcept {
    P::quantize_row(x, reinterpret_cast<typename P::block*>(out), n_blocks);
}
template <quant::quant_policy... Ps>
quantize_fn quantizer_among(ggml_type t) noexcept {
    quantize_fn f = nullptr;
    static_cast<void>(((Ps::type_id == t ? (f = &quantize_as<Ps>, true) : false) || ...));
    return f;
}
quantize_fn quantizer_for(ggml_type t) {
    namespace q = quant;
    const quantize_fn f = quantizer_among<q::f32, q::f16, q::bf16, q::q8_0, q::q4_0, q::q4_1, q::q5_0, q::q5_1, q::q2_k,
                                          q::q3_k, q::q4_k, q::q5_k, q::q6_k, q::iq4_nl>(t);
    if (!f) fail("quantize: no quantizer for ", quant::type_name(t));
    return f;
}

// "blk.12.attn_v.weight" -> 12; -1 for tensors outside the blocks.
int layer_of(std::string_view name) {
    if (name.substr(0, 4) != "blk.") return -1;
    int n = 0;
    std::size_t i = 4;
    if (i >= name.size() || name[i] < '0' || name[i] > '9') return -1;
    for (; i < name.size() && name[i] >= '0' && name[i] <= '9'; ++i) n = n * 10 + (name[i] - '0');
    return n;
}

bool contains(std::string_view s, std::string_view part) { return s.find(part) != std::string_view::npos; }

// Facts of the model that the mixes look at.
struct model_facts {
    bool has_output = false;   // output.weight exists (else token_embd doubles as the output)
    int n_attn_v = 0;          // attn_v tensors: the attn_v rules count layers against this
    int n_layer = 0;           // {arch}.block_count: the ffn_down rules count against this
    int n_gqa = 1;             // query heads per KV head
};

// llama.cpp's spread of extra bits over the layers: the first and last eighth and every third
// layer in between (about half of them).
bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

// The type of one weight matrix under recipe r (before the fallback for row sizes).
ggml_type choose_type(const recipe& r, std::string_view name, std::int64_t ne0, const model_facts& m) {
    const ggml_type base = r.base;
    if (!is_quantized(base)) return base;  // F32/F16/BF16 files have no mix
    const std::string_view f = r.name;
    const int layer = std::max(0, layer_of(name));
    if (name == "output.weight" || (!m.has_output && name == "token_embd.weight")) {
        // The output matrix decides every logit: Q6_K unless the file is Q8_0 already, Q8_0 when
        // its rows do not split into blocks of the base type.
        if (ne0 % static_cast<std::int64_t>(block_elems(base)) != 0) return ggml_type::q8_0;
        return base == ggml_type::q8_0 ? base : ggml_type::q6_k;
    }
    if (name == "token_embd.weight") return base;  // only rows of it are ever read
    if (contains(name, "attn_v.weight")) {
        if (f == "Q2_K") return m.n_gqa >= 4 ? ggml_type::q4_k : ggml_type::q3_k;
        if (f == "Q3_K_M") return layer < 2 ? ggml_type::q5_k : ggml_type::q4_k;
        if (f == "Q3_K_L") return ggml_type::q5_k;
        if (f == "IQ4_NL" && m.n_gqa >= 4) return ggml_type::q5_k;
        if ((f == "Q4_K_M" || f == "Q5_K_M") && use_more_bits(layer, m.n_attn_v)) return ggml_type::q6_k;
        if (f == "Q4_K_S" && layer < 4) return ggml_type::q5_k;
        return base;
    }
    if (contains(name, "ffn_down")) {
        const int n = m.n_layer;
        if (f == "Q2_K") return ggml_type::q3_k;
        if (f == "Q3_K_M") return layer < n / 16 ? ggml_type::q5_k : ggml_type::q4_k;
        if (f == "Q3_K_L") return ggml_type::q5_k;
        if (f == "Q4_K_M" && use_more_bits(layer, n)) return ggml_type::q6_k;
        if (f == "IQ4_NL" && layer < n / 8) return ggml_type::q5_k;
        if (f == "Q5_K_M" && use_more_bits(layer, n)) return ggml_type::q6_k;
        if (f == "Q4_K_S" && layer < n / 8) return ggml_type::q5_k;
        return base;
    }
    if (contains(name, "attn_output.weight")) {
        if (f == "Q2_K") return ggml_type::q3_k;
        if (f == "Q3_K_M") return ggml_type::q4_k;
        if (f == "Q3_K_L") return ggml_type::q5_k;
        return base;
    }
    if (contains(name, "attn_qkv.weight")) {
        if (f == "Q3_K_M" || f == "Q3_K_L") return ggml_type::q4_k;
        if (f == "Q4_K_M") return ggml_type::q5_k;
        if (f == "Q5_K_M") return ggml_type::q6_k;
    }
    return base;
}

// A row of ne0 values must be whole blocks. Where it is not, llama.cpp's substitutes: the
// 256-blocks become a 32-block type of about the same size (Q2_K/Q3_K -> IQ4_NL, Q4_K -> Q5_0,
// Q5_K -> Q5_1, Q6_K -> Q8_0), and F16 when even that does not fit.
ggml_type fallback_for(ggml_type t, std::int64_t ne0) {
    const auto fits = [ne0](ggml_type u) { return ne0 % static_cast<std::int64_t>(block_elems(u)) == 0; };
    if (fits(t)) return t;
    ggml_type s = ggml_type::f16;
    switch (t) {
        case ggml_type::q2_k: case ggml_type::q3_k: s = ggml_type::iq4_nl; break;
        case ggml_type::q4_k: s = ggml_type::q5_0; break;
        case ggml_type::q5_k: s = ggml_type::q5_1; break;
        case ggml_type::q6_k: s = ggml_type::q8_0; break;
        default: break;
    }
    return fits(s) ? s : ggml_type::f16;
}

bool quantizable(const gguf::tensor_info& t) {
    const std::string_view n = t.name;
    return n.size() >= 6 && n.substr(n.size() - 6) == "weight" && t.n_dims >= 2 && !contains(n, "_norm.weight") &&
           !contains(n, "ffn_gate_inp.weight");  // MoE router: tiny and sensitive, llama.cpp keeps it
}

struct plan_entry {
    const gguf::tensor_info* src;
    ggml_type type;       // what is written
    bool convert;         // false: the bytes are copied
};

std::string shape_of(const gguf::tensor_info& t) {
    std::string s;
    for (std::uint32_t d = 0; d < t.n_dims; ++d) s += lmtk::detail::concat(d ? " x " : "", t.ne[d]);
    return s;
}

}  // namespace

int cmd_quantize(const argv_t& argv) {
    const args a("quantize", argv, {"-t|--threads"}, {"--pure", "--allow-requantize"});
    if (a.positional().size() != 3)
        fail("quantize: expected IN.gguf OUT.gguf TYPE (e.g. lmtk quantize model-f16.gguf model-q4_k_m.gguf Q4_K_M)");
    const std::string in_path = a.positional()[0], out_path = a.positional()[1];
    const recipe& r = find_recipe(a.positional()[2]);
    const bool pure = a.has("--pure"), requantize = a.has("--allow-requantize");
    std::size_t n_threads = a.number<std::size_t>("-t", 0);
    if (n_threads == 0) n_threads = std::max(1u, std::thread::hardware_concurrency());
    if (n_threads > 1024) fail("quantize: -t ", n_threads, " is not a sensible thread count");

    const gguf::file in(in_path);
    model_facts m;
    m.has_output = in.find_tensor("output.weight") != nullptr;
    for (const auto& t : in.tensors()) m.n_attn_v += contains(t.name, "attn_v.weight") || contains(t.name, "attn_qkv.weight");
    if (const auto arch = in.get<std::string>("general.architecture")) {
        m.n_layer = in.get_or<int>(*arch + ".block_count", 0);
        const int heads = in.get_or<int>(*arch + ".attention.head_count", 0);
        const int kv = in.get_or<int>(*arch + ".attention.head_count_kv", heads);
        if (heads > 0 && kv > 0) m.n_gqa = heads / kv;
    }
    if (m.n_layer == 0)  // no block_count: count the layers the names mention
        for (const auto& t : in.tensors()) m.n_layer = std::max(m.n_layer, layer_of(t.name) + 1);

    // Decide every tensor's type first, so that fallbacks are reported before the long part.
    std::vector<plan_entry> plan;
    std::size_t n_fallback = 0;
    for (const auto& t : in.tensors()) {
        plan_entry e{&t, t.type, false};
        if (quantizable(t)) {
            ggml_type want = pure ? r.base : choose_type(r, t.name, t.ne[0], m);
            const ggml_type got = fallback_for(want, t.ne[0]);
            if (got != want) {
                ++n_fallback;
                std::fprintf(stderr, "lmtk quantize: %.*s: rows of %lld are not whole %.*s blocks of %zu; using %.*s\n",
                             int(t.name.size()), t.name.data(), static_cast<long long>(t.ne[0]),
                             int(quant::type_name(want).size()), quant::type_name(want).data(), block_elems(want),
                             int(quant::type_name(got).size()), quant::type_name(got).data());
            }
            e.type = got;
            e.convert = got != t.type;
        }
        if (e.convert) {
            if (is_quantized(t.type) && !requantize)
                fail("quantize: ", in_path, ": tensor '", t.name, "' is already ", quant::type_name(t.type),
                     "; requantizing loses precision twice (pass --allow-requantize to do it anyway)");
            if (!quant::resolve<quant::default_set, target::cpu<>::arch>(t.type))
                fail("quantize: ", in_path, ": tensor '", t.name, "' has type ", quant::type_name(t.type),
                     ", which lmtk cannot read");
        }
        plan.push_back(e);
    }

    gguf::writer w;
    w.copy_metadata_from(in);
    w.set("general.file_type", r.file_type);
    w.set("general.quantization_version", std::uint32_t{2});
    for (const char* k : {"split.no", "split.count", "split.tensors.count"}) w.erase(k);  // one file out

    core::thread_pool pool(n_threads);
    const std::size_t n_tensors = plan.size();
    const int width = static_cast<int>(std::to_string(n_tensors).size());
    std::uint64_t bytes_in = 0, bytes_out = 0;
    const stopwatch total;
    for (std::size_t i = 0; i < n_tensors; ++i) {
        const plan_entry e = plan[i];
        const gguf::tensor_info& t = *e.src;
        const std::size_t cols = static_cast<std::size_t>(t.ne[0]), rows = static_cast<std::size_t>(t.rows());
        const std::uint64_t out_bytes = t.n_elements / block_elems(e.type) * quant::traits_of(e.type).block_bytes;
        bytes_in += t.n_bytes;
        bytes_out += out_bytes;
        const std::vector<std::int64_t> shape(t.ne.begin(), t.ne.begin() + t.n_dims);
        w.add_tensor(t.name, e.type, shape, [&, e, i, cols, rows](gguf::tensor_sink& sink) {
            const gguf::tensor_info& src = *e.src;
            const std::string_view from = quant::type_name(src.type), to = quant::type_name(e.type);
            std::fprintf(stderr, "[%*zu/%*zu] %-32.*s %-16s %6.*s -> %-6.*s", width, i + 1, width, n_tensors,
                         int(src.name.size()), src.name.data(), shape_of(src).c_str(), int(from.size()), from.data(),
                         int(to.size()), to.data());
            const stopwatch sw;
            if (!e.convert) {
                sink.write(src.data, static_cast<std::size_t>(src.n_bytes));
                std::fprintf(stderr, " copied\n");
                return;
            }
            const auto reader = *quant::resolve<quant::default_set, target::cpu<>::arch>(src.type);
            const quantize_fn quantize = quantizer_for(e.type);
            const std::size_t in_row = static_cast<std::size_t>(src.row_bytes());
            const std::size_t out_row = cols / block_elems(e.type) * quant::traits_of(e.type).block_bytes;
            std::vector<std::byte> out(rows * out_row);
            std::vector<float> scratch(pool.size() * cols);
            std::atomic<std::size_t> bad_row{rows};  // the first row with a NaN or infinity, if any
            pool.run([&](std::size_t ti, std::size_t nt) noexcept {
                float* x = scratch.data() + ti * cols;
                for (std::size_t row = rows * ti / nt; row < rows * (ti + 1) / nt; ++row) {
                    reader.dequantize_row(src.data + row * in_row, x, cols);
                    // The quantizers assume finite input; a broken checkpoint must not turn into
                    // silently garbled blocks.
                    if (!std::all_of(x, x + cols, [](float v) { return std::isfinite(v); })) {
                        std::size_t cur = bad_row.load();
                        while (row < cur && !bad_row.compare_exchange_weak(cur, row)) {}
                        continue;
                    }
                    quantize(x, out.data() + row * out_row, cols / block_elems(e.type));
                }
            });
            if (bad_row.load() < rows) {
                std::fprintf(stderr, "\n");
                fail("quantize: ", in_path, ": tensor '", src.name, "' row ", bad_row.load(),
                     " holds NaN or infinite values");
            }
            sink.write(std::span<const std::byte>(out));
            std::fprintf(stderr, " %8.2f -> %8.2f MiB %8.1f ms\n", double(src.n_bytes) / (1 << 20),
                         double(out.size()) / (1 << 20), sw.ms());
        });
    }
    w.write(out_path);
    std::fprintf(stderr, "lmtk quantize: %s -> %s (%.*s, general.file_type %u): %.2f MiB -> %.2f MiB in %.2f s, %zu threads\n",
                 in_path.c_str(), out_path.c_str(), int(r.name.size()), r.name.data(), r.file_type,
                 double(bytes_in) / (1 << 20), double(bytes_out) / (1 << 20), total.ms() / 1000.0, pool.size());
    if (n_fallback)
        std::fprintf(stderr, "lmtk quantize: %zu tensor(s) fell back to another type (listed above)\n", n_fallback);
    return 0;
}

}  // namespace lmtk::cli
