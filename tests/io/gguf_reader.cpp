// GGUF reader: the real files it must read, and hostile or broken files it must refuse with an
// lmtk::error that names the file and the problem, never with a crash (run under ASan+UBSan).
#include <catch2/catch.hpp>

#include "support/models.hpp"

#include <lmtk/io/gguf.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <fcntl.h>
#include <unistd.h>
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using lmtk::gguf::value_type;
using lmtk::quant::ggml_type;

namespace {

using lmtk::test::temp_dir;

std::vector<std::byte> read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in);
    std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> b(c.size());
    std::memcpy(b.data(), c.data(), c.size());
    return b;
}

void write_all(const std::string& path, const std::vector<std::byte>& b) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    REQUIRE(out.good());
}

// Hand-built GGUF bytes: hostile files are written field by field, so each test says exactly
// which field is wrong.
struct bytes {
    std::vector<std::byte> b;
    template <class T>
    bytes& raw(T v) {
        const auto* p = reinterpret_cast<const std::byte*>(&v);
        b.insert(b.end(), p, p + sizeof v);
        return *this;
    }
    bytes& u32(std::uint32_t v) { return raw(v); }
    bytes& i32(std::int32_t v) { return raw(v); }
    bytes& u64(std::uint64_t v) { return raw(v); }
    bytes& i64(std::int64_t v) { return raw(v); }
    bytes& str(std::string_view s) {
        u64(s.size());
        const auto* p = reinterpret_cast<const std::byte*>(s.data());
        b.insert(b.end(), p, p + s.size());
        return *this;
    }
    bytes& header(std::int64_t n_tensors, std::int64_t n_kv, std::uint32_t version = 3) {
        return u32(lmtk::gguf::magic).u32(version).i64(n_tensors).i64(n_kv);
    }
    bytes& kv_u32(std::string_view key, std::uint32_t v) { return str(key).u32(4).u32(v); }
    bytes& tensor(std::string_view name, std::vector<std::int64_t> ne, std::uint32_t type, std::uint64_t offset) {
        str(name).u32(static_cast<std::uint32_t>(ne.size()));
        for (auto e : ne) i64(e);
        return u32(type).u64(offset);
    }
    bytes& pad(std::size_t alignment) {
        while (b.size() % alignment) b.push_back(std::byte{0});
        return *this;
    }
    bytes& zeros(std::size_t n) {
        b.insert(b.end(), n, std::byte{0});
        return *this;
    }
};

// Parsing `path` must throw lmtk::error whose message names the file and contains `word`.
void require_refused(const std::string& path, std::initializer_list<std::string_view> words) {
    try {
        lmtk::gguf::file f(path);
        FAIL("accepted a broken file: " << path);
    } catch (const lmtk::error& e) {
        const std::string what = e.what();
        INFO(what);
        CHECK(what.find(path) != std::string::npos);
        CHECK(std::any_of(words.begin(), words.end(), [&](std::string_view w) { return what.find(w) != std::string::npos; }));
    }
}

void require_refused(const temp_dir& tmp, const std::string& name, const bytes& file, std::string_view word) {
    const std::string path = tmp.file(name);
    write_all(path, file.b);
    require_refused(path, {word});
}

// Encoded size of a metadata value, to locate the tensor infos in the real file independently
// of the reader.
std::uint64_t encoded_size(const lmtk::gguf::value& v) {
    if (const auto* s = v.as_string()) return 8 + s->size();
    if (const auto* a = v.as_array()) {
        std::uint64_t n = 12;
        for (const auto& item : a->items) n += encoded_size(item);
        return n;
    }
    switch (v.type()) {
        case value_type::u8: case value_type::i8: case value_type::boolean: return 1;
        case value_type::u16: case value_type::i16: return 2;
        case value_type::u32: case value_type::i32: case value_type::f32: return 4;
        default: return 8;
    }
}

// Where the tensor infos start and end in a parsed file.
std::pair<std::uint64_t, std::uint64_t> tensor_info_region(const lmtk::gguf::file& f) {
    std::uint64_t pos = 24;
    for (const auto& e : f.metadata()) pos += 8 + e.key.size() + 4 + encoded_size(e.val);
    const std::uint64_t begin = pos;
    for (const auto& t : f.tensors()) pos += 8 + t.name.size() + 4 + 8 * t.n_dims + 4 + 8;
    return {begin, pos};
}

}  // namespace

TEST_CASE("stories260K.gguf: header, metadata and tensors", "[gguf]") {
    const std::string path = lmtk::test::model_path("stories260K.gguf");
    const lmtk::gguf::file f(path);
    CHECK(f.path() == path);
    CHECK(f.version() == 3);
    CHECK(f.alignment() == 32);
    CHECK(f.metadata().size() == 19);
    CHECK(f.tensors().size() == 48);
    CHECK(f.data_offset() % 32 == 0);

    CHECK(f.require<std::string>("general.architecture") == "llama");
    CHECK(f.require<std::string_view>("tokenizer.ggml.model") == "llama");
    CHECK(f.require<std::uint32_t>("llama.embedding_length") == 64);
    CHECK(f.require<int>("llama.block_count") == 5);
    CHECK(f.require<std::int64_t>("llama.feed_forward_length") == 172);
    CHECK(f.require<std::uint32_t>("llama.attention.head_count") == 8);
    CHECK(f.require<std::uint32_t>("llama.attention.head_count_kv") == 4);
    CHECK(f.require<std::uint32_t>("llama.context_length") == 2048);
    CHECK(f.require<float>("llama.attention.layer_norm_rms_epsilon") == Approx(1e-5f));
    CHECK(f.require<std::uint32_t>("tokenizer.ggml.seperator_token_id") == 0xFFFFFFFFu);
    CHECK_THROWS_AS(f.require<std::int32_t>("tokenizer.ggml.seperator_token_id"), lmtk::error);  // out of range
    CHECK_THROWS_AS(f.require<std::string>("llama.block_count"), lmtk::error);                    // wrong type
    CHECK_THROWS_AS(f.require<int>("no.such.key"), lmtk::error);
    CHECK(f.get_or<int>("no.such.key", 7) == 7);

    const auto tokens = f.get_array<std::string>("tokenizer.ggml.tokens");
    REQUIRE(tokens);
    REQUIRE(tokens->size() == 512);
    CHECK((*tokens)[0] == "<unk>");
    CHECK((*tokens)[1] == "<s>");
    CHECK((*tokens)[2] == "</s>");
    const auto* tok_value = f.find("tokenizer.ggml.tokens");
    REQUIRE(tok_value);
    CHECK(tok_value->as_array()->elem_type == value_type::string);
    CHECK(f.get_array<float>("tokenizer.ggml.scores")->size() == 512);
    const auto types = f.get_array<std::int32_t>("tokenizer.ggml.token_type");
    REQUIRE(types);
    CHECK((*types)[0] == 2);
    CHECK((*types)[1] == 3);
    CHECK(f.find("tokenizer.ggml.token_type")->as_array()->elem_type == value_type::i32);

    const auto& emb = f.tensor("token_embd.weight");
    CHECK(emb.type == ggml_type::f32);
    CHECK(emb.n_dims == 2);
    CHECK(emb.ne[0] == 64);
    CHECK(emb.ne[1] == 512);
    CHECK(emb.n_elements == 64 * 512);
    CHECK(emb.n_bytes == 64 * 512 * 4);
    CHECK(emb.rows() == 512);
    CHECK(emb.row_bytes() == 256);
    CHECK(emb.offset == 0);
    const auto& norm = f.tensor("output_norm.weight");
    CHECK(norm.n_dims == 1);
    CHECK(norm.ne[0] == 64);
    CHECK(norm.ne[1] == 1);
    CHECK(f.tensor("blk.4.ffn_down.weight").ne[0] == 172);
    CHECK(f.tensor("blk.4.ffn_down.weight").ne[1] == 64);
    CHECK(f.tensor("blk.0.attn_k.weight").ne[1] == 32);
    CHECK(f.find_tensor("no.such.tensor") == nullptr);
    CHECK_THROWS_AS(f.tensor("no.such.tensor"), lmtk::error);

    // ggml's strict layout: tensors in info order, each at the running aligned sum, inside the file.
    std::uint64_t expect = 0;
    for (const auto& t : f.tensors()) {
        INFO(t.name);
        CHECK(t.type == ggml_type::f32);
        CHECK(t.offset == expect);
        CHECK(t.data == f.mapping().data() + f.data_offset() + t.offset);
        CHECK(f.data_offset() + t.offset + t.n_bytes <= f.mapping().size());
        expect += lmtk::gguf::detail::align_up(t.n_bytes, 32);
    }
    // The first embedding value is a finite float: data points at real weights, not padding.
    float first = 0;
    std::memcpy(&first, emb.data, sizeof first);
    CHECK(std::isfinite(first));

    // The test's own layout computation agrees with the reader's data offset.
    const auto [info_begin, info_end] = tensor_info_region(f);
    CHECK(info_begin < info_end);
    CHECK(lmtk::gguf::detail::align_up(info_end, 32) == f.data_offset());
}

TEST_CASE("vocab-only GGUFs", "[gguf]") {
    SECTION("gpt-2") {
        const lmtk::gguf::file f(lmtk::test::model_path("vocab/ggml-vocab-gpt-2.gguf"));
        CHECK(f.tensors().empty());
        CHECK(f.metadata().size() == 16);
        CHECK(f.require<std::string>("tokenizer.ggml.model") == "gpt2");
        CHECK(f.require<std::string>("general.architecture") == "gpt2");
        CHECK(f.get_array<std::string_view>("tokenizer.ggml.tokens")->size() == 50257);
        const auto merges = f.get_array<std::string>("tokenizer.ggml.merges");
        REQUIRE(merges);
        CHECK(merges->size() == 50000);
        CHECK((*merges)[0] == "\xC4\xA0 t");  // "Ġ t": byte-level BPE spells a space as U+0120
        CHECK(f.require<std::uint32_t>("tokenizer.ggml.eos_token_id") == 50256);
    }
    SECTION("llama-spm") {
        const lmtk::gguf::file f(lmtk::test::model_path("vocab/ggml-vocab-llama-spm.gguf"));
        CHECK(f.tensors().empty());
        CHECK(f.metadata().size() == 22);
        CHECK(f.require<std::string>("tokenizer.ggml.model") == "llama");
        CHECK(f.get_array<std::string>("tokenizer.ggml.tokens")->size() == 32000);
        CHECK(f.get_array<float>("tokenizer.ggml.scores")->size() == 32000);
        CHECK(f.require<bool>("tokenizer.ggml.add_bos_token") == true);
        CHECK(f.require<bool>("tokenizer.ggml.add_eos_token") == false);
        CHECK(f.find("tokenizer.ggml.add_bos_token")->type() == value_type::boolean);
        CHECK(f.require<std::uint32_t>("llama.vocab_size") == 32000);
    }
}

TEST_CASE("hand-built minimal files parse", "[gguf]") {
    temp_dir tmp;
    SECTION("empty GGUF: no tensors, no metadata") {
        bytes f;
        f.header(0, 0);
        write_all(tmp.file("empty.gguf"), f.b);
        const lmtk::gguf::file g(tmp.file("empty.gguf"));
        CHECK(g.metadata().empty());
        CHECK(g.tensors().empty());
        CHECK(g.alignment() == 32);
    }
    SECTION("version 2 reads as version 3") {
        bytes f;
        f.header(0, 1, 2).kv_u32("a", 5);
        write_all(tmp.file("v2.gguf"), f.b);
        const lmtk::gguf::file g(tmp.file("v2.gguf"));
        CHECK(g.version() == 2);
        CHECK(g.require<int>("a") == 5);
    }
    SECTION("arrays nested exactly to the depth limit") {
        bytes f;
        f.header(0, 1).str("deep").u32(9);
        for (std::size_t d = 1; d < lmtk::gguf::max_array_depth; ++d) f.u32(9).u64(1);
        f.u32(4).u64(1).u32(42);  // innermost: one u32
        write_all(tmp.file("deep.gguf"), f.b);
        const lmtk::gguf::file g(tmp.file("deep.gguf"));
        const lmtk::gguf::value* v = g.find("deep");
        REQUIRE(v);
        std::size_t depth = 0;
        while (const auto* a = v->as_array()) {
            REQUIRE(a->items.size() == 1);
            v = &a->items[0];
            ++depth;
        }
        CHECK(depth == lmtk::gguf::max_array_depth);
        CHECK(v->as_int() == 42);
    }
    SECTION("zero-sized tensor and a custom alignment") {
        bytes f;
        f.header(2, 1).kv_u32("general.alignment", 64);
        f.tensor("empty", {0, 4}, 0, 0);
        f.tensor("x", {32}, 8, 0);  // one Q8_0 block
        f.pad(64).zeros(34);
        write_all(tmp.file("zero.gguf"), f.b);
        const lmtk::gguf::file g(tmp.file("zero.gguf"));
        CHECK(g.alignment() == 64);
        CHECK(g.data_offset() % 64 == 0);
        CHECK(g.tensor("empty").n_bytes == 0);
        CHECK(g.tensor("empty").row_bytes() == 0);
        CHECK(g.tensor("x").type == ggml_type::q8_0);
        CHECK(g.tensor("x").n_bytes == 34);
    }
}

TEST_CASE("broken headers are refused with the path and the reason", "[gguf][hostile]") {
    temp_dir tmp;
    const auto refuse = [&](const std::string& name, const bytes& f, std::string_view word) {
        INFO(name);
        require_refused(tmp, name, f, word);
    };

    SECTION("missing, empty and too short files") {
        require_refused(tmp.file("does-not-exist.gguf"), {"cannot open"});
        refuse("empty.gguf", bytes{}, "too short");
        refuse("three.gguf", bytes{{std::byte{'G'}, std::byte{'G'}, std::byte{'U'}}}, "too short");
        fs::create_directories(tmp.dir / "dir.gguf");
        require_refused(tmp.file("dir.gguf"), {"not a regular file"});
    }
    SECTION("bad magic") {
        bytes f;
        f.u32(0x58554747).u32(3).i64(0).i64(0);  // "GGUX"
        refuse("magic.gguf", f, "magic");
    }
    SECTION("unsupported versions") {
        refuse("v0.gguf", bytes{}.header(0, 0, 0), "version");
        refuse("v1.gguf", bytes{}.header(0, 0, 1), "version");
        refuse("v4.gguf", bytes{}.header(0, 0, 4), "version");
        refuse("big-endian.gguf", bytes{}.header(0, 0, 0x03000000), "big-endian");
        refuse("big-endian-v2.gguf", bytes{}.header(0, 0, 0x02000000), "big-endian");
    }
    SECTION("tensor and metadata counts the file cannot hold") {
        refuse("kv-huge.gguf", bytes{}.header(0, INT64_MAX), "does not fit");
        refuse("kv-big.gguf", bytes{}.header(0, 1 << 20).zeros(64), "does not fit");
        refuse("kv-negative.gguf", bytes{}.header(0, -1), "does not fit");
        refuse("tensors-huge.gguf", bytes{}.header(INT64_MAX, 0), "does not fit");
        refuse("tensors-big.gguf", bytes{}.header(1 << 20, 0).zeros(64), "does not fit");
        refuse("tensors-negative.gguf", bytes{}.header(-5, 0), "does not fit");
        refuse("both-huge.gguf", bytes{}.header(INT64_MAX, INT64_MAX), "does not fit");
    }
    SECTION("strings longer than the file") {
        refuse("key-len.gguf", bytes{}.header(0, 1).u64(1000000).zeros(16), "truncated");
        refuse("key-len-max.gguf", bytes{}.header(0, 1).u64(UINT64_MAX).zeros(16), "truncated");
        refuse("value-len.gguf", bytes{}.header(0, 1).str("k").u32(8).u64(UINT64_MAX - 3).zeros(8), "truncated");
        refuse("name-len.gguf", bytes{}.header(1, 0).u64(1ull << 40).zeros(32), "truncated");
    }
    SECTION("empty key") { refuse("empty-key.gguf", bytes{}.header(0, 1).str("").u32(4).u32(1), "empty"); }
    SECTION("arrays longer than the file") {
        refuse("array-huge.gguf", bytes{}.header(0, 1).str("a").u32(9).u32(4).u64(UINT64_MAX).zeros(16), "past the end");
        refuse("array-big.gguf", bytes{}.header(0, 1).str("a").u32(9).u32(0).u64(1 << 20).zeros(16), "past the end");
        refuse("array-strings.gguf", bytes{}.header(0, 1).str("a").u32(9).u32(8).u64(1ull << 61).zeros(64), "past the end");
        // Each nested empty array takes 12 bytes: a count of arrays beyond that is refused too.
        refuse("array-arrays.gguf", bytes{}.header(0, 1).str("a").u32(9).u32(9).u64(1 << 16).zeros(64), "past the end");
    }
    SECTION("nested array depth bomb") {
        bytes f;
        f.header(0, 1).str("bomb").u32(9);
        for (int d = 0; d < 100000; ++d) f.u32(9).u64(1);
        refuse("bomb.gguf", f, "nested too deeply");
        bytes g;  // one level past the limit
        g.header(0, 1).str("deep").u32(9);
        for (std::size_t d = 0; d < lmtk::gguf::max_array_depth; ++d) g.u32(9).u64(1);
        g.u32(4).u64(0);
        refuse("deep.gguf", g, "nested too deeply");
    }
    SECTION("unknown value types") {
        refuse("type-13.gguf", bytes{}.header(0, 1).str("k").u32(13).u32(0), "unknown value type");
        refuse("type-max.gguf", bytes{}.header(0, 1).str("k").u32(0xFFFFFFFF).u32(0), "unknown value type");
        refuse("elem-13.gguf", bytes{}.header(0, 1).str("k").u32(9).u32(13).u64(0), "unknown array element type");
        refuse("elem-neg.gguf", bytes{}.header(0, 1).str("k").u32(9).u32(0x80000000).u64(1).zeros(8),
               "unknown array element type");
    }
    SECTION("bool that is neither 0 nor 1") {
        refuse("bool.gguf", bytes{}.header(0, 1).str("b").u32(7).raw(std::uint8_t{2}), "bool");
    }
    SECTION("duplicate keys") {
        refuse("dup.gguf", bytes{}.header(0, 2).kv_u32("k", 1).kv_u32("k", 2), "duplicate");
    }
    SECTION("general.alignment of the wrong type or value") {
        refuse("align-u64.gguf", bytes{}.header(0, 1).str("general.alignment").u32(10).u64(32), "must be u32");
        refuse("align-i32.gguf", bytes{}.header(0, 1).str("general.alignment").u32(5).i32(32), "must be u32");
        refuse("align-string.gguf", bytes{}.header(0, 1).str("general.alignment").u32(8).str("32"), "must be u32");
        refuse("align-48.gguf", bytes{}.header(0, 1).kv_u32("general.alignment", 48), "power of two");
        refuse("align-0.gguf", bytes{}.header(0, 1).kv_u32("general.alignment", 0), "power of two");
        refuse("align-odd.gguf", bytes{}.header(0, 1).kv_u32("general.alignment", 0xFFFFFFFF), "power of two");
    }
    SECTION("tensor shapes") {
        const auto one = [](std::vector<std::int64_t> ne, std::uint32_t type = 0, std::uint64_t offset = 0) {
            bytes f;
            f.header(1, 0).tensor("t", std::move(ne), type, offset).pad(32).zeros(64);
            return f;
        };
        refuse("dims-overflow.gguf", one({1ll << 62, 1ll << 62}), "overflows");
        refuse("dims-overflow-4.gguf", one({1 << 16, 1 << 16, 1 << 16, 1 << 16}), "overflows");
        refuse("dims-overflow-zero.gguf", one({0, 1ll << 62, 1ll << 62}), "overflows");  // rows() would overflow
        refuse("bytes-overflow.gguf", one({1ll << 62}, 28), "overflows");  // F64: 2^62 elements of 8 bytes
        refuse("dims-negative.gguf", one({64, -1}), "negative");
        refuse("dims-min.gguf", one({INT64_MIN}), "negative");
        refuse("n-dims-5.gguf", one({1, 1, 1, 1, 1}), "dimensions");
        refuse("n-dims-huge.gguf", bytes{}.header(1, 0).str("t").u32(0xFFFFFFFF).zeros(64), "dimensions");
        refuse("type-99.gguf", one({4}, 99), "unknown type id");
        refuse("type-4.gguf", one({32}, 4), "unknown type id");  // Q4_2: removed, the id stays a gap
        refuse("q4_0-row.gguf", one({33, 2}, 2), "block size");
        refuse("q4_k-row.gguf", one({128}, 12), "block size");
        bytes longname;
        longname.header(1, 0).tensor(std::string(64, 'n'), {4}, 0, 0).pad(32).zeros(32);
        refuse("long-name.gguf", longname, "longer than");
        bytes dup;
        dup.header(2, 0).tensor("t", {4}, 0, 0).tensor("t", {4}, 0, 32).pad(32).zeros(64);
        refuse("dup-tensor.gguf", dup, "duplicate tensor");
    }
    SECTION("tensor data outside the file or misaligned") {
        const auto one = [](std::uint64_t offset, std::size_t data_bytes, std::uint32_t align = 32) {
            bytes f;
            f.header(1, align == 32 ? 0 : 1);
            if (align != 32) f.kv_u32("general.alignment", align);
            f.tensor("t", {8}, 0, offset).pad(align).zeros(data_bytes);
            return f;
        };
        refuse("offset-past.gguf", one(64, 64), "outside the data section");
        refuse("offset-edge.gguf", one(32, 63), "outside the data section");  // 32 bytes needed from 32
        refuse("offset-huge.gguf", one(UINT64_MAX - 31, 64), "outside the data section");
        refuse("offset-2-63.gguf", one(1ull << 63, 64), "outside the data section");
        refuse("misaligned.gguf", one(4, 64), "alignment");
        refuse("misaligned-64.gguf", one(32, 128, 64), "alignment");
        refuse("no-data.gguf", one(0, 0), "truncated");
        bytes cut;  // the file ends inside the padding before the data section
        cut.header(1, 0).tensor("t", {8}, 0, 0);
        refuse("no-data-section.gguf", cut, "truncated");
    }
}

TEST_CASE("stories260K.gguf truncated at every header offset is refused", "[gguf][hostile]") {
    const std::string src = lmtk::test::model_path("stories260K.gguf");
    const auto original = read_all(src);
    std::uint64_t data_offset = 0;
    std::uint64_t last_tensor_end = 0;
    {
        const lmtk::gguf::file f(src);
        data_offset = f.data_offset();
        for (const auto& t : f.tensors()) last_tensor_end = std::max(last_tensor_end, data_offset + t.offset + t.n_bytes);
    }
    REQUIRE(data_offset > 1000);
    REQUIRE(last_tensor_end <= original.size());

    // Every prefix of the header region, then points inside the data section up to one byte
    // short of the last tensor's end. Shrinking one copy with ftruncate, longest first, keeps
    // this fast: no prefix is written out again.
    std::vector<std::uint64_t> lengths;
    for (std::uint64_t cut : {last_tensor_end - 1, last_tensor_end - 4, last_tensor_end - 100,
                              (data_offset + last_tensor_end) / 2, data_offset + 4096, data_offset + 1})
        lengths.push_back(cut);
    for (std::uint64_t n = data_offset + 1; n-- > 0;) lengths.push_back(n);
    std::sort(lengths.begin(), lengths.end(), std::greater<>());

    temp_dir tmp;
    const std::string path = tmp.file("cut.gguf");
    write_all(path, original);
    std::size_t refused = 0;
    for (std::uint64_t n : lengths) {
        REQUIRE(::truncate(path.c_str(), static_cast<off_t>(n)) == 0);
        try {
            lmtk::gguf::file f(path);
            FAIL("a prefix of " << n << " bytes was accepted");
        } catch (const lmtk::error& e) {
            const std::string what = e.what();
            // Not CHECK per prefix: 14,000 assertions would drown a failure report.
            if (what.find(path) == std::string::npos ||
                (what.find("truncated") == std::string::npos && what.find("too short") == std::string::npos &&
                 what.find("does not fit") == std::string::npos && what.find("past the end") == std::string::npos)) {
                FAIL("prefix of " << n << " bytes: unexpected message: " << what);
            }
            ++refused;
        }
    }
    CHECK(refused == lengths.size());
}

TEST_CASE("random byte corruption of the header never crashes", "[gguf][hostile]") {
    const std::string src = lmtk::test::model_path("stories260K.gguf");
    const auto original = read_all(src);
    std::uint64_t data_offset = 0, info_begin = 0, info_end = 0;
    {
        const lmtk::gguf::file f(src);
        data_offset = f.data_offset();
        std::tie(info_begin, info_end) = tensor_info_region(f);
    }

    temp_dir tmp;
    const std::string path = tmp.file("corrupt.gguf");
    write_all(path, original);
    const int fd = ::open(path.c_str(), O_WRONLY);
    REQUIRE(fd >= 0);

    // Fixed seed: a failure reproduces. Positions favour the structural parts of the header
    // (counts and types up front, the tensor infos) over string bytes, which parse either way.
    std::mt19937_64 rng(20240611);
    std::size_t parsed = 0, refused = 0;
    for (int variant = 0; variant < 2000; ++variant) {
        const int flips = 1 + static_cast<int>(rng() % 4);
        std::vector<std::uint64_t> positions;
        for (int k = 0; k < flips; ++k) {
            std::uint64_t pos = 0;
            switch (rng() % 4) {
                case 0: pos = rng() % data_offset; break;
                case 1: pos = rng() % 256; break;
                default: pos = info_begin + rng() % (info_end - info_begin); break;
            }
            std::byte v{};
            switch (rng() % 3) {
                case 0: v = original[pos] ^ std::byte(1u << (rng() % 8)); break;
                case 1: v = std::byte(static_cast<unsigned char>(rng())); break;
                default: v = (rng() % 2) ? std::byte{0xFF} : std::byte{0x00}; break;
            }
            REQUIRE(::pwrite(fd, &v, 1, static_cast<off_t>(pos)) == 1);
            positions.push_back(pos);
        }
        try {
            lmtk::gguf::file f(path);
            // Accepted: every tensor must lie inside the mapping; touching both ends proves it.
            unsigned sum = 0;
            for (const auto& t : f.tensors()) {
                if (t.n_bytes == 0) continue;
                if (t.data < f.mapping().data() || t.data + t.n_bytes > f.mapping().data() + f.mapping().size())
                    FAIL("variant " << variant << ": tensor " << t.name << " outside the mapping");
                sum += static_cast<unsigned>(t.data[0]) + static_cast<unsigned>(t.data[t.n_bytes - 1]);
                (void)t.rows();
                (void)t.row_bytes();
            }
            for (const auto& e : f.metadata()) (void)e.val.as_number();
            (void)sum;
            ++parsed;
        } catch (const lmtk::error& e) {
            if (std::string(e.what()).find(path) == std::string::npos)
                FAIL("variant " << variant << ": message without the path: " << e.what());
            ++refused;
        }
        for (std::uint64_t pos : positions)  // restore
            REQUIRE(::pwrite(fd, &original[pos], 1, static_cast<off_t>(pos)) == 1);
    }
    ::close(fd);
    INFO("parsed " << parsed << ", refused " << refused);
    CHECK(parsed + refused == 2000);
    CHECK(refused > 500);  // the corruption really reached the structure
}
