// tinystories-656k (a real HF Llama checkpoint, F32) quantized every way lmtk reads: AWQ and
// GPTQ checkpoints written by tools/pack (our packer, from the spec), and Q8_0 / Q4_K_M GGUF
// files from `lmtk convert` + `lmtk quantize`. The fixture
// tests/reference/make_quantized_models.py writes them to $LMTK_QUANTIZED_MODELS.
//
//  1. Loading an AWQ/GPTQ folder and dequantizing its matrices gives exactly the values the
//     packer quantized to (its .ref.safetensors), act-order permutation included.
//  2. Each quantized model keeps greedy top-1 agreement with F32 over the first 64 generated
//     positions, and its perplexity on TinyStories-style prose stays within a stated factor.
#include <catch2/catch.hpp>

#include "support/models.hpp"

#include <lmtk/io/safetensors.hpp>
#include <lmtk/model/hf.hpp>
#include <lmtk/model/llama.hpp>
#include <lmtk/tokenize/load.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
namespace model = lmtk::model;
using model_t = model::llama<>;

fs::path material() {
    const char* env = std::getenv("LMTK_QUANTIZED_MODELS");
    if (!env || !*env) FAIL("LMTK_QUANTIZED_MODELS is not set (ctest sets it; the fixture writes the models)");
    const fs::path p(env);
    if (!fs::is_regular_file(p / "done")) FAIL("no complete quantized test models in " << p << " (run the fixture)");
    return p;
}

std::string tinystories_dir() { return lmtk::test::model_path("tinystories-656k"); }

std::string sample_text() {
    std::ifstream in(fs::path(__FILE__).parent_path().parent_path() / "data" / "tinystories_sample.txt");
    std::stringstream s;
    s << in.rdbuf();
    REQUIRE(s.str().size() > 1000);
    return s.str();
}

std::int32_t argmax(std::span<const float> v) {
    std::size_t best = 0;
    for (std::size_t i = 1; i < v.size(); ++i)
        if (v[i] > v[best]) best = i;
    return static_cast<std::int32_t>(best);
}

// Logits of every position of `ids`, from a fresh context.
std::vector<float> all_logits(const model_t& m, const std::vector<std::int32_t>& ids) {
    model::llama_context<model_t> ctx(m, {.n_ctx = ids.size(), .n_threads = 2});
    std::vector<float> out(ids.size() * m.n_vocab());
    ctx.decode(ids, out.data());
    return out;
}

// Mean negative log-likelihood of ids[1..] given the prefix, from all_logits.
double perplexity(const model_t& m, const std::vector<std::int32_t>& ids) {
    const std::vector<float> logits = all_logits(m, ids);
    const std::size_t v = m.n_vocab();
    double nll = 0.0;
    for (std::size_t t = 0; t + 1 < ids.size(); ++t) {
        const float* row = &logits[t * v];
        double mx = row[0];
        for (std::size_t i = 1; i < v; ++i) mx = std::max(mx, double(row[i]));
        double sum = 0.0;
        for (std::size_t i = 0; i < v; ++i) sum += std::exp(double(row[i]) - mx);
        nll -= double(row[ids[t + 1]]) - mx - std::log(sum);
    }
    return std::exp(nll / double(ids.size() - 1));
}

const char* const hf_parts[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

const model::weight& bound(const model_t& m, std::size_t layer, std::size_t part) {
    const model::llama_layer& l = m.layer(layer);
    const model::weight* w[] = {&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down};
    return *w[part];
}

}  // namespace

TEST_CASE("quantized checkpoints: dequantized weights equal the packer's exactly", "[model][awq][gptq]") {
    const fs::path dir = material();
    std::ifstream list(dir / "done");
    std::string name;
    std::size_t n_variants = 0;
    while (std::getline(list, name)) {
        if (name.empty()) continue;
        INFO("variant " << name);
        ++n_variants;
        const model_t m((dir / name).string());
        const auto& src = dynamic_cast<const model::hf_source&>(m.source());
        CHECK(src.group_tensors().size() == 7 * m.hparams().n_layer);
        const lmtk::safetensors::file ref((dir / (name + ".ref.safetensors")).string());
        const bool act_order = name.find("-act") != std::string::npos;
        std::size_t permuted = 0;
        for (std::size_t l = 0; l < m.hparams().n_layer; ++l)
            for (std::size_t p = 0; p < 7; ++p) {
                const std::string prefix = "model.layers." + std::to_string(l) + "." + hf_parts[p];
                INFO(prefix);
                const lmtk::safetensors::tensor* t = ref.find(prefix + ".weight");
                REQUIRE(t);
                const model::weight& w = bound(m, l, p);
                REQUIRE(t->shape == std::vector<std::uint64_t>{w.rows, w.cols});
                permuted += w.input_perm != nullptr;
                std::vector<float> row(w.cols), expect(w.cols);
                std::size_t mismatches = 0;
                for (std::size_t r = 0; r < w.rows; ++r) {
                    w.dequantize_row(r, row.data());
                    std::memcpy(expect.data(), t->bytes.data() + r * w.cols * sizeof(float), w.cols * sizeof(float));
                    for (std::size_t c = 0; c < w.cols; ++c) mismatches += row[c] != expect[c];  // bit-exact
                }
                CHECK(mismatches == 0);
            }
        // Act-order files reorder the inputs of every matrix with more than one group (with
        // g128 only ffn_down's 384 inputs are); the others reorder none.
        if (act_order) CHECK(permuted > 0);
        else CHECK(permuted == 0);
    }
    CHECK(n_variants >= 10);
}

TEST_CASE("quantized checkpoints: greedy agreement with F32 and perplexity", "[model][awq][gptq]") {
    const fs::path dir = material();
    const model_t f32(tinystories_dir());
    const auto tok = lmtk::tokenize::load_tokenizer(f32.source());

    // F32 greedy from BOS for 64 steps; every variant is then run on that same sequence
    // (teacher forcing) so one early disagreement does not derail the positions after it.
    std::vector<std::int32_t> seq{tok.bos()};
    {
        model::llama_context<model_t> ctx(f32, {.n_ctx = 80, .n_threads = 2});
        for (int step = 0; step < 64; ++step) seq.push_back(argmax(ctx.decode(std::span(&seq.back(), 1))));
    }
    const std::vector<float> ref = all_logits(f32, seq);
    const std::size_t v = f32.n_vocab();
    std::vector<std::int32_t> ref_top(64);
    for (std::size_t t = 0; t < 64; ++t) ref_top[t] = argmax(std::span(&ref[t * v], v));

    std::vector<std::int32_t> text = tok.encode(sample_text(), true);
    if (text.size() > 512) text.resize(512);
    const double ppl_f32 = perplexity(f32, text);
    INFO("F32 perplexity " << ppl_f32);
    CHECK(ppl_f32 < 50.0);  // far below the 2048 of a uniform guess: the model knows this prose

    // Thresholds: agreement = share of the 64 positions whose top-1 token equals F32's. A
    // 656K-parameter model is fragile (each weight is a large share of each output) and our
    // packer rounds to nearest without GPTQ's error feedback, so the floors sit below what a 7B
    // model would reach. Measured on x86-64 (AVX-512) when this test was written: Q8_0 98.4% /
    // x1.002, Q4_K_M 93.8% / x1.010, AWQ g128 87.5% / x1.041, GPTQ 4-bit g128 act-order
    // 71.9% / x1.095 (act-order groups gather inputs of similar importance, which plain
    // rounding does not exploit), GPTQ 3-bit g128 57.8% / x1.592. The floors leave a few
    // positions of margin for other SIMD widths (a different float summation order can flip a
    // near-tie) while still failing on any real decoding bug, which destroys agreement.
    struct expectation {
        const char* file;
        double min_agreement;
        double max_ppl_factor;
    };
    const expectation cases[] = {
        {"q8_0.gguf", 0.95, 1.01},
        {"q4_k_m.gguf", 0.85, 1.03},
        {"awq-g128", 0.80, 1.08},
        {"gptq4-g128-act", 0.65, 1.15},
        {"gptq3-g128", 0.48, 1.75},
    };
    for (const expectation& e : cases) {
        const model_t m((dir / e.file).string());
        const std::vector<float> logits = all_logits(m, seq);
        std::size_t agree = 0;
        for (std::size_t t = 0; t < 64; ++t) agree += argmax(std::span(&logits[t * v], v)) == ref_top[t];
        const double agreement = double(agree) / 64.0;
        const double ppl = perplexity(m, text);
        INFO(e.file << ": top-1 agreement " << agreement << ", perplexity " << ppl << " (F32 " << ppl_f32 << ")");
        std::printf("%-16s top-1 agreement %5.1f%%  perplexity %.4f  (x%.3f of F32 %.4f)\n", e.file, 100.0 * agreement, ppl,
                    ppl / ppl_f32, ppl_f32);
        CHECK(agreement >= e.min_agreement);
        CHECK(ppl <= e.max_ppl_factor * ppl_f32);
    }
}

TEST_CASE("quantized GGUF: weights repacked at load hold the mapped values and give the same logits",
          "[model][interleaved]") {
    // Q8_0 and Q4_K_M (its Q4_K, Q6_K and fallback rows) of tinystories-656k, loaded twice: with
    // the default repacking into interleaved layouts, and used where they are mapped.
    const fs::path dir = material();
    const std::vector<std::int32_t> ids = {1, 403, 407, 261, 378, 432, 9, 347, 285, 261, 378, 432};
    for (const char* file : {"q8_0.gguf", "q4_k_m.gguf"}) {
        INFO(file);
        const model_t repacked((dir / file).string());
        const model_t mapped((dir / file).string(), {.interleave = false});
        CHECK(mapped.interleaved_bytes() == 0);
        bool any = false;
        std::vector<float> a, b;
        for (std::size_t l = 0; l < repacked.hparams().n_layer; ++l)
            for (std::size_t part = 0; part < 7; ++part) {
                const model::weight& wr = bound(repacked, l, part);
                const model::weight& wm = bound(mapped, l, part);
                any |= wr.ops.row_group > 1;
                a.resize(wr.cols);
                b.resize(wm.cols);
                for (std::size_t r = 0; r < wr.rows; ++r) {
                    wr.dequantize_row(r, a.data());
                    wm.dequantize_row(r, b.data());
                    REQUIRE(a == b);
                }
            }
        if (!any) {
            WARN("no interleaved layout on this target: nothing repacked");
            continue;
        }
        CHECK(repacked.interleaved_bytes() > 0);
        // One token at a time: the interleaved kernels against the row-major tiles, both on the
        // same int8 activations; only the order of the float sums differs.
        const auto one_by_one = [&](const model_t& m) {
            model::llama_context<model_t> ctx(m, {.n_ctx = 32, .n_threads = 2});
            std::vector<float> all;
            for (const auto id : ids) {
                const auto l = ctx.decode(std::span(&id, 1));
                all.insert(all.end(), l.begin(), l.end());
            }
            return all;
        };
        const auto lr = one_by_one(repacked), lm = one_by_one(mapped);
        REQUIRE(lr.size() == lm.size());
        float worst = 0.0f, scale = 0.0f;
        for (std::size_t i = 0; i < lr.size(); ++i) {
            worst = std::max(worst, std::fabs(lr[i] - lm[i]));
            scale = std::max(scale, std::fabs(lm[i]));
        }
        INFO("max |difference| " << worst << " of max |logit| " << scale);
        CHECK(worst <= 1e-4f * scale);
    }
}
