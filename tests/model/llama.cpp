// Loading and running the Llama forward pass on the real stories260K model.
#include <catch2/catch.hpp>

#include "support/models.hpp"
#include "support/temp_dir.hpp"

#include <lmtk/io/gguf_writer.hpp>
#include <lmtk/lmtk.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <sys/mman.h>

using model_t = lmtk::model::llama<>;

TEST_CASE("stories260K hyperparameters come from the GGUF metadata", "[model]") {
    const model_t m(lmtk::test::model_path("stories260K.gguf"));
    const auto& h = m.hparams();
    CHECK(h.n_embd == 64);
    CHECK(h.n_layer == 5);
    CHECK(h.n_head == 8);
    CHECK(h.n_head_kv == 4);
    CHECK(h.n_ff == 172);
    CHECK(h.n_vocab == 512);
    CHECK(h.head_dim == 8);
    CHECK(h.rope_dim == 8);
    CHECK(h.rms_eps == Approx(1e-5f));
    CHECK(m.output().data != m.token_embedding().data);  // separate output tensor
}

TEST_CASE("a vocabulary-only GGUF is refused as a model with a clear error", "[model]") {
    CHECK_THROWS_WITH(model_t(lmtk::test::model_path("vocab/ggml-vocab-llama-spm.gguf")),
                      Catch::Contains("token_embd.weight") && Catch::Contains("missing"));
}

template <class KV>
std::vector<float> logits_one_by_one(const model_t& m, const std::vector<std::int32_t>& ids) {
    lmtk::model::llama_context<model_t, KV> ctx(m, {.n_ctx = 64, .n_threads = 2});
    std::vector<float> all;
    for (const auto id : ids) {
        const auto l = ctx.decode(std::span(&id, 1));
        all.insert(all.end(), l.begin(), l.end());
    }
    return all;
}

TEST_CASE("batched prompt evaluation equals token-by-token evaluation", "[model]") {
    const model_t m(lmtk::test::model_path("stories260K.gguf"));
    const std::vector<std::int32_t> ids = {1, 403, 407, 261, 378, 432, 9, 347, 285, 261, 378, 432, 9, 347};
    lmtk::model::llama_context<model_t> batched(m, {.n_ctx = 64, .n_threads = 2, .n_batch = 5});  // 3 chunks
    const xt::xtensor<float, 2> all = batched.decode_all(ids);
    REQUIRE(all.shape(0) == ids.size());
    REQUIRE(all.shape(1) == m.n_vocab());
    const auto one_flat = logits_one_by_one<lmtk::model::kv_f32>(m, ids);
    REQUIRE(one_flat.size() == all.size());
    const auto one = lmtk::matrix_view(one_flat.data(), ids.size(), m.n_vocab());
    // Same arithmetic in a different grouping: differences are float rounding only.
    const float max_diff = xt::amax(xt::abs(all - one))();
    CHECK(max_diff < 1e-5f);
    // The last row is what decode() leaves as the context's logits.
    const bool last_row_is_logits = xt::row(all, -1) == batched.logits_view();
    CHECK(last_row_is_logits);
}

TEST_CASE("logits as xtensor views: log_softmax and argmax agree with the sampler's logprobs", "[model]") {
    const model_t m(lmtk::test::model_path("stories260K.gguf"));
    const std::vector<std::int32_t> ids = {1, 403, 407, 261, 378, 432, 9, 347};
    lmtk::model::llama_context<model_t> ctx(m, {.n_ctx = 64, .n_threads = 2});
    ctx.decode(ids);
    const auto view = ctx.logits_view();
    REQUIRE(view.size() == m.n_vocab());
    CHECK(view.data() == ctx.logits().data());  // a view over the context's buffer, not a copy
    const xt::xtensor<float, 1> lp = lmtk::log_softmax(view);
    const float total = xt::sum(xt::exp(lp))();
    CHECK(total == Approx(1.0).epsilon(1e-5));
    const auto best = static_cast<std::int32_t>(xt::argmax(view)());
    const lmtk::token_logprobs ref = lmtk::logprobs_of(ctx.logits(), {}, best, 3);
    const float lp_best = lp(std::size_t(best));
    CHECK(lp_best == Approx(ref.logprob).margin(1e-5));
    REQUIRE(ref.top.size() == 3);
    CHECK(ref.top[0].first == best);
    for (const auto& [id, logprob] : ref.top) {
        const float v = lp(std::size_t(id));
        CHECK(v == Approx(logprob).margin(1e-5));
    }
    // Row-wise over a matrix equals the vector form on each row.
    const xt::xtensor<float, 2> rows = ctx.decode_all(std::vector<std::int32_t>{9, 347});
    const xt::xtensor<float, 2> lps = lmtk::log_softmax(rows);
    const xt::xtensor<float, 1> last = lmtk::log_softmax(xt::xtensor<float, 1>(xt::row(rows, 1)));
    const float row_diff = xt::amax(xt::abs(xt::row(lps, 1) - last))();
    CHECK(row_diff < 1e-6f);
}

TEST_CASE("decoding with more threads than KV heads splits attention groups, same logits", "[model]") {
    // stories260K has 4 KV heads of 2 query heads: one row with 8 threads splits each group.
    const model_t m(lmtk::test::model_path("stories260K.gguf"));
    const std::vector<std::int32_t> ids = {1, 403, 407, 261, 378, 432, 9, 347};
    lmtk::model::llama_context<model_t> wide(m, {.n_ctx = 64, .n_threads = 8});
    std::vector<float> all;
    for (const auto id : ids) {
        const auto l = wide.decode(std::span(&id, 1));
        all.insert(all.end(), l.begin(), l.end());
    }
    const auto two = logits_one_by_one<lmtk::model::kv_f32>(m, ids);
    REQUIRE(all.size() == two.size());
    for (std::size_t i = 0; i < all.size(); ++i) CHECK(all[i] == Approx(two[i]).margin(1e-5));
}

TEST_CASE("an f16 KV cache stays close to the f32 one", "[model]") {
    const model_t m(lmtk::test::model_path("stories260K.gguf"));
    const std::vector<std::int32_t> ids = {1, 403, 407, 261, 378, 432, 9, 347};
    const auto f32 = logits_one_by_one<lmtk::model::kv_f32>(m, ids);
    const auto f16 = logits_one_by_one<lmtk::model::kv_f16>(m, ids);
    // fp16 keeps 11 significant bits (relative rounding 2^-11 ~ 5e-4) of each cached value.
    double max_diff = 0, max_abs = 0;
    for (std::size_t i = 0; i < f32.size(); ++i) {
        max_diff = std::max(max_diff, double(std::abs(f32[i] - f16[i])));
        max_abs = std::max(max_abs, double(std::abs(f32[i])));
    }
    CHECK(max_diff / max_abs < 1e-2);
}

namespace {
// Whether the page holding `p` is mapped into this process now (/proc/self/pagemap bit 63,
// readable without privileges), as opposed to only sitting in the page cache.
bool page_present(const void* p) {
    std::FILE* f = std::fopen("/proc/self/pagemap", "rb");
    if (!f) return true;  // cannot tell: count it as present, so the check fails loudly
    std::uint64_t entry = 0;
    const long page = 4096;
    const bool ok = std::fseek(f, long(reinterpret_cast<std::uintptr_t>(p) / page * sizeof entry), SEEK_SET) == 0 &&
                    std::fread(&entry, sizeof entry, 1, f) == 1;
    std::fclose(f);
    return !ok || (entry >> 63) != 0;
}
}  // namespace

TEST_CASE("token embedding rows are read from the file, never mapped into the process", "[model]") {
    // stories260K: a separate output matrix, so the embedding (512 x 64 F32, 128 KiB) is read
    // only a row at a time. A first decode of every token faults in the pages of every tensor
    // the forward pass reads. Faults on neighbouring tensors may map pages of the embedding too
    // (fault-around maps a window around each fault: 64 KiB by default, a whole large folio on
    // newer kernels, which is why a first version of this test failed on another machine), so
    // the embedding's own pages are then unmapped (madvise DONTNEED drops page-table entries
    // only) and every token is decoded again: no other page faults now, so none can reach
    // around, and a page of the embedding present afterwards was touched through the mapping.
    const model_t m(lmtk::test::model_path("stories260K.gguf"));
    const lmtk::model::weight& e = m.token_embedding();
    REQUIRE(m.embedding_lookup().file != nullptr);
    lmtk::model::llama_context<model_t> ctx(m, {.n_ctx = 600, .n_threads = 2});
    std::vector<std::int32_t> all(m.n_vocab());
    for (std::size_t i = 0; i < all.size(); ++i) all[i] = std::int32_t(i);
    ctx.decode(all);
    constexpr std::uintptr_t page = 4096;
    const auto begin = (reinterpret_cast<std::uintptr_t>(e.data) + page - 1) / page * page;
    const auto end = (reinterpret_cast<std::uintptr_t>(e.data) + e.rows * e.row_bytes()) / page * page;
    REQUIRE(end > begin);
    // Pages shared with a neighbour (the first and last, when unaligned) are left mapped.
    REQUIRE(::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED) == 0);
    ctx.truncate(0);
    ctx.decode(all);
    std::size_t present = 0, pages = 0;
    for (std::uintptr_t p = begin; p + page <= end; p += page) {
        ++pages;
        present += page_present(reinterpret_cast<const void*>(p));
    }
    CHECK(pages >= 30);
    // Under qemu-user (scripts/test-aarch64 sets QEMU_LD_PREFIX) /proc/self/pagemap describes
    // the emulator's own mappings, not the guest's pages: the residency check means nothing there.
    if (std::getenv("QEMU_LD_PREFIX")) WARN("under qemu-user: the page residency check is skipped");
    else CHECK(present == 0);
    // And the rows read from the file are the mapped rows (read through the mapping last).
    std::vector<std::byte> scratch(m.embedding_lookup().scratch_bytes());
    std::vector<float> a(e.cols), b(e.cols);
    for (std::size_t r = 0; r < e.rows; r += 37) {
        m.embedding_lookup().row(r, scratch.data(), a.data());
        e.dequantize_row(r, b.data());
        CHECK(a == b);
    }
}

TEST_CASE("decode refuses bad token ids and context overflow", "[model]") {
    const model_t m(lmtk::test::model_path("stories260K.gguf"));
    lmtk::model::llama_context<model_t> ctx(m, {.n_ctx = 4, .n_threads = 1});
    const std::vector<std::int32_t> bad = {1, 512};
    CHECK_THROWS_WITH(ctx.decode(bad), Catch::Contains("outside the vocabulary"));
    const std::vector<std::int32_t> five = {1, 2, 3, 4, 5};
    CHECK_THROWS_WITH(ctx.decode(five), Catch::Contains("context is full"));
    const std::vector<std::int32_t> four = {1, 2, 3, 4};
    CHECK_NOTHROW(ctx.decode(four));
    CHECK(ctx.n_past() == 4);
}

TEST_CASE("several sequences decoded in one batch equal each decoded alone", "[model]") {
    const model_t m(lmtk::test::model_path("stories260K.gguf"));
    const std::vector<std::int32_t> a = {1, 403, 407, 261, 378, 432};
    const std::vector<std::int32_t> b = {1, 347, 285, 9};
    lmtk::model::llama_context<model_t> multi(m, {.n_ctx = 32, .n_threads = 2, .n_batch = 4, .n_seq = 3});
    // Prompt of a on slot 0 and b on slot 2 in one batch (chunked by n_batch = 4); logits for
    // the last row of each.
    std::vector<lmtk::model::batch_entry> batch;
    for (std::size_t i = 0; i < a.size(); ++i) batch.push_back({a[i], 0, i + 1 == a.size()});
    for (std::size_t i = 0; i < b.size(); ++i) batch.push_back({b[i], 2, i + 1 == b.size()});
    std::vector<float> out(2 * m.n_vocab());
    REQUIRE(multi.decode_batch(batch, out.data()) == 2);
    CHECK(multi.n_past(0) == a.size());
    CHECK(multi.n_past(1) == 0);
    CHECK(multi.n_past(2) == b.size());
    // Then one more token for each, interleaved in one batch.
    const std::vector<lmtk::model::batch_entry> step = {{9, 2, true}, {261, 0, true}};
    std::vector<float> out2(2 * m.n_vocab());
    REQUIRE(multi.decode_batch(step, out2.data()) == 2);

    auto alone = [&](std::vector<std::int32_t> ids) {
        lmtk::model::llama_context<model_t> ctx(m, {.n_ctx = 32, .n_threads = 1});
        const auto l = ctx.decode(ids);
        return std::vector<float>(l.begin(), l.end());
    };
    const auto a_last = alone(a), b_last = alone(b);
    auto a2 = a;
    a2.push_back(261);
    auto b2 = b;
    b2.push_back(9);
    const auto a_next = alone(a2), b_next = alone(b2);
    const std::size_t V = m.n_vocab();
    for (std::size_t v = 0; v < V; ++v) {
        CHECK(out[v] == Approx(a_last[v]).margin(1e-5));
        CHECK(out[V + v] == Approx(b_last[v]).margin(1e-5));
        CHECK(out2[v] == Approx(b_next[v]).margin(1e-5));
        CHECK(out2[V + v] == Approx(a_next[v]).margin(1e-5));
    }
    // A full slot refuses more, naming the problem.
    const std::vector<lmtk::model::batch_entry> bad = {{1, 5, false}};
    CHECK_THROWS_WITH(multi.decode_batch(bad, out.data()), Catch::Contains("does not exist"));
}

TEST_CASE("prompt rows attend in SIMD lanes exactly as one by one (tinystories-656k, head_dim 16)", "[model]") {
    // head_dim 16 is a whole number of lanes, so prompt chunks take attention_rows(): rows of
    // one sequence side by side, causal limits as masks. Token-by-token decoding takes the
    // per-row path. Chunks of 20 rows make blocks of 16 and 4 rows (the lanes path's smallest)
    // at positions that do not start at 0; a second sequence in the same batch is cut apart.
    const model_t m(lmtk::test::model_path("tinystories-656k"));
    REQUIRE(m.hparams().head_dim == 16);
    std::vector<std::int32_t> ids;
    for (std::int32_t i = 0; i < 45; ++i) ids.push_back(1 + (i * 37) % 2000);
    lmtk::model::llama_context<model_t> batched(m, {.n_ctx = 64, .n_threads = 2, .n_batch = 20});
    std::vector<float> all(ids.size() * m.n_vocab());
    batched.decode(ids, all.data());
    lmtk::model::llama_context<model_t> single(m, {.n_ctx = 64, .n_threads = 2});
    std::vector<float> one;
    for (const auto id : ids) {
        const auto l = single.decode(std::span(&id, 1));
        one.insert(one.end(), l.begin(), l.end());
    }
    REQUIRE(one.size() == all.size());
    float worst = 0.0f;
    for (std::size_t i = 0; i < all.size(); ++i) worst = std::max(worst, std::fabs(all[i] - one[i]));
    CHECK(worst < 1e-4f);  // float rounding in another order; logits are O(10)

    // Two prompts in one batch: 9 rows of sequence 0, then 7 of sequence 1.
    lmtk::model::llama_context<model_t> multi(m, {.n_ctx = 32, .n_threads = 2, .n_batch = 16, .n_seq = 2});
    std::vector<lmtk::model::batch_entry> batch;
    for (std::size_t i = 0; i < 9; ++i) batch.push_back({ids[i], 0, i == 8});
    for (std::size_t i = 0; i < 7; ++i) batch.push_back({ids[20 + i], 1, i == 6});
    std::vector<float> out(2 * m.n_vocab());
    REQUIRE(multi.decode_batch(batch, out.data()) == 2);
    const auto alone = [&](std::vector<std::int32_t> p) {
        lmtk::model::llama_context<model_t> ctx(m, {.n_ctx = 32, .n_threads = 1, .n_batch = 1});
        const auto l = ctx.decode(p);
        return std::vector<float>(l.begin(), l.end());
    };
    const auto a = alone({ids.begin(), ids.begin() + 9}), b = alone({ids.begin() + 20, ids.begin() + 27});
    for (std::size_t v = 0; v < m.n_vocab(); ++v) {
        CHECK(out[v] == Approx(a[v]).margin(1e-4));
        CHECK(out[m.n_vocab() + v] == Approx(b[v]).margin(1e-4));
    }
}

// --- hostile model files -------------------------------------------------------------------
// Small Llama GGUF files written with the GGUF writer, each with one thing wrong. Loading
// (and, where a load succeeds, decoding) must end in lmtk::error, never in a crash (this suite
// runs under ASan+UBSan).
namespace {

struct tiny_llama {
    std::uint32_t n_embd = 16, n_head = 2, n_head_kv = 2, n_ff = 32, n_layer = 1, n_vocab = 8;
    std::optional<std::uint32_t> key_length, rope_dim;
    std::int64_t q_rows = 16, kv_rows = 16;  // attn_q / attn_k / attn_v rows (ne[1]) as written
    std::int64_t layers_written = 1;

    void write(const std::string& path) const {
        lmtk::gguf::writer w;
        w.set("general.architecture", "llama");
        w.set("llama.embedding_length", n_embd);
        w.set("llama.block_count", n_layer);
        w.set("llama.attention.head_count", n_head);
        w.set("llama.attention.head_count_kv", n_head_kv);
        w.set("llama.feed_forward_length", n_ff);
        if (key_length) w.set("llama.attention.key_length", *key_length);
        if (rope_dim) w.set("llama.rope.dimension_count", *rope_dim);
        const auto f32 = [&](const std::string& name, std::vector<std::int64_t> ne) {
            std::int64_t n = 1;
            for (const auto e : ne) n *= e;
            std::vector<float> v(static_cast<std::size_t>(n), 0.01f);
            std::vector<std::byte> b(v.size() * 4);
            std::memcpy(b.data(), v.data(), b.size());
            w.add_tensor(name, lmtk::quant::ggml_type::f32, ne, std::move(b));
        };
        const std::int64_t d = n_embd, ff = n_ff;
        f32("token_embd.weight", {d, n_vocab});
        f32("output_norm.weight", {d});
        for (std::int64_t i = 0; i < layers_written; ++i) {
            const std::string p = "blk." + std::to_string(i) + ".";
            f32(p + "attn_norm.weight", {d});
            f32(p + "attn_q.weight", {d, q_rows});
            f32(p + "attn_k.weight", {d, kv_rows});
            f32(p + "attn_v.weight", {d, kv_rows});
            f32(p + "attn_output.weight", {q_rows, d});
            f32(p + "ffn_norm.weight", {d});
            f32(p + "ffn_gate.weight", {d, ff});
            f32(p + "ffn_up.weight", {d, ff});
            f32(p + "ffn_down.weight", {ff, d});
        }
        w.write(path);
    }
};

// Loads `path` as `lmtk run` would (model, then a context, then one decode step) and returns
// the lmtk::error's message; fails the test if everything succeeds.
std::string load_error(const std::string& path) {
    try {
        const model_t m(path);
        lmtk::model::llama_context<model_t> ctx(m, {.n_ctx = 8, .n_threads = 1});
        const std::vector<std::int32_t> ids = {1, 2};
        ctx.decode(ids);
    } catch (const lmtk::error& e) {
        return e.what();
    }
    FAIL("a hostile model file loaded and ran: " << path);
    return {};
}

}  // namespace

TEST_CASE("the tiny model the hostile cases start from loads and runs", "[model][hostile]") {
    // Without this the cases below could pass for a reason other than the one they test.
    const lmtk::test::temp_dir tmp("llama");
    const std::string p = tmp.file("ok.gguf");
    tiny_llama{}.write(p);
    const model_t m(p);
    CHECK(m.hparams().q_dim() == 16);
    lmtk::model::llama_context<model_t> ctx(m, {.n_ctx = 8, .n_threads = 1});
    const std::vector<std::int32_t> ids = {1, 2};
    CHECK(ctx.decode(ids).size() == 8);
}

TEST_CASE("a head size whose 32-bit product with the head count wraps is refused", "[model][hostile]") {
    // The file: 2 heads of 2^31 + 8 dimensions make 2^32 + 16, which wraps to 16 in
    // 32-bit arithmetic and matches 16-row Q/K/V tensors; attention then indexed with the true
    // head size, 2^31 + 8 floats past a 16-float row (SIGSEGV).
    const lmtk::test::temp_dir tmp("llama");
    const std::string p = tmp.file("wrap.gguf");
    tiny_llama t;
    t.key_length = (1u << 31) + 8;
    t.rope_dim = 8;
    t.write(p);
    const std::string e = load_error(p);
    CHECK_THAT(e, Catch::Contains(p) && Catch::Contains("head dimension 2147483656"));
}

TEST_CASE("tensor shapes must match the widths computed in 64 bits", "[model][hostile]") {
    const lmtk::test::temp_dir tmp("llama");
    const std::string p = tmp.file("shape.gguf");
    tiny_llama t;
    t.key_length = 16;  // q = 2 x 16 = 32 rows expected, 16 written
    t.write(p);
    CHECK_THAT(load_error(p), Catch::Contains("attn_q.weight") && Catch::Contains("expected [16, 32]"));
}

TEST_CASE("a block count the file cannot back fails at the first missing layer", "[model][hostile]") {
    // Sizing the layer table from the count first would ask for ~2^32 layers (hundreds of GB,
    // an ASan abort) before noticing that the tensors are not there.
    const lmtk::test::temp_dir tmp("llama");
    const std::string p = tmp.file("layers.gguf");
    tiny_llama t;
    t.n_layer = 0xFFFFFFFFu;
    t.write(p);
    CHECK_THAT(load_error(p), Catch::Contains("blk.1.attn_norm.weight") && Catch::Contains("missing"));
}

TEST_CASE("a context size whose buffers overflow 64 bits is refused", "[model][hostile]") {
    // 2 x 5 layers x 2^62 positions x 32 floats wraps to 0 bytes: an "affordable" empty cache
    // that decode() would then write past.
    const model_t m(lmtk::test::model_path("stories260K.gguf"));
    using ctx_t = lmtk::model::llama_context<model_t>;
    CHECK_THROWS_WITH(ctx_t(m, {.n_ctx = std::size_t{1} << 62, .n_threads = 1}), Catch::Contains("overflows"));
    CHECK_THROWS_WITH(ctx_t(m, {.n_ctx = 64, .n_threads = 1, .n_seq = std::size_t{1} << 60}), Catch::Contains("overflows"));
}

TEST_CASE("a rope dimension of zero is refused", "[model][hostile]") {
    // Found by fuzz_gguf (tests/fuzz/regressions/gguf/rope-dimension-zero.gguf): with no rotated
    // dimensions the forward pass took the first cos/sin of a row from empty tables (UB).
    const lmtk::test::temp_dir tmp("llama");
    const std::string p = tmp.file("rope0.gguf");
    tiny_llama t;
    t.rope_dim = 0;
    t.write(p);
    CHECK_THAT(load_error(p), Catch::Contains("rope dimension 0 must be even, positive"));
}
