// safetensors reader: the real checkpoint it must read, shards, and hostile or broken files it
// must refuse with an lmtk::error naming the file, never with a crash (run under ASan+UBSan).
#include <catch2/catch.hpp>

#include "support/models.hpp"
#include "support/safetensors_files.hpp"

#include <lmtk/io/safetensors.hpp>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace st = lmtk::safetensors;
using lmtk::test::as_bytes;
using lmtk::test::safetensors_bytes;
using lmtk::test::scratch_dir;
using lmtk::test::st_tensor;
using lmtk::test::write_bytes;
using lmtk::test::write_safetensors;

namespace {

std::string tinystories() { return lmtk::test::model_path("tinystories-656k/model.safetensors"); }

// The load must fail with an lmtk::error whose message names the file and contains `what`.
void require_refused(const std::string& path, const std::string& what) {
    try {
        st::file f(path);
        FAIL("loaded a broken file; expected an error containing '" << what << "'");
    } catch (const lmtk::error& e) {
        const std::string msg = e.what();
        INFO(msg);
        CHECK(msg.find(path) != std::string::npos);
        CHECK(msg.find(what) != std::string::npos);
    }
}

void write_header(const std::string& path, const std::string& header, std::size_t data_bytes) {
    write_bytes(path, safetensors_bytes(header, std::vector<std::byte>(data_bytes, std::byte{0})));
}

}  // namespace

TEST_CASE("safetensors: the TinyStories checkpoint", "[safetensors]") {
    const st::file f(tinystories());
    CHECK(f.metadata().at("format") == "pt");
    // torch's save_model stores tied tensors once and records the alias in __metadata__
    CHECK(f.metadata().at("model.embed_tokens.weight") == "lm_head.weight");
    CHECK(f.find("model.embed_tokens.weight") == nullptr);
    const st::tensor& emb = f.get("lm_head.weight");
    CHECK(emb.type == st::dtype::f32);
    CHECK(emb.shape == std::vector<std::uint64_t>{2048, 128});
    CHECK(emb.n_elements == 2048u * 128u);
    CHECK(emb.bytes.size() == 2048u * 128u * 4u);
    CHECK(f.get("model.layers.1.self_attn.k_proj.weight").shape == std::vector<std::uint64_t>{64, 128});
    // tensors() is in offset order and tiles the data section
    std::uint64_t end = 0;
    for (const st::tensor& t : f.tensors()) {
        CHECK(t.begin == end);
        end = t.end;
    }
    CHECK(8 + f.header_bytes() + end == f.mapping().size());

    const st::checkpoint ck(lmtk::test::model_path("tinystories-656k"));
    CHECK(ck.files().size() == 1);
    CHECK(ck.find("model.norm.weight") != nullptr);
    CHECK(ck.tensors().size() == f.tensors().size());
}

TEST_CASE("safetensors: every dtype, scalars, empty tensors, padding", "[safetensors]") {
    scratch_dir d("st");
    const std::string p = d.file("all.safetensors");
    std::vector<st_tensor> ts;
    for (const auto& di : st::dtypes) {
        // 16 elements fill whole bytes for every bit width (4, 6, 8, ...)
        ts.push_back({std::string("t_") + std::string(di.name), std::string(di.name), {2, 8},
                      std::vector<std::byte>(16 * di.bits / 8, std::byte{1})});
    }
    ts.push_back({"scalar", "F32", {}, as_bytes(std::vector<float>{3.5f})});
    ts.push_back({"empty", "F16", {0, 7}, {}});
    write_safetensors(p, ts, R"({"format":"pt","note":"hi"})", 5);
    const st::file f(p);
    CHECK(f.tensors().size() == ts.size());
    CHECK(f.metadata().at("note") == "hi");
    for (const auto& di : st::dtypes) {
        const st::tensor& t = f.get(std::string("t_") + std::string(di.name));
        CHECK(t.type == di.type);
        CHECK(t.bytes.size() == 16 * di.bits / 8);
    }
    const st::tensor& s = f.get("scalar");
    CHECK(s.n_dims() == 0);
    CHECK(s.n_elements == 1);
    float v;
    std::memcpy(&v, s.bytes.data(), 4);
    CHECK(v == 3.5f);
    CHECK(f.get("empty").n_elements == 0);
    CHECK(f.get("empty").bytes.empty());
}

TEST_CASE("safetensors: sharded checkpoints", "[safetensors]") {
    scratch_dir d("st");
    write_safetensors(d.file("model-00001-of-00002.safetensors"),
                      {{"a", "F32", {2}, as_bytes(std::vector<float>{1, 2})}});
    write_safetensors(d.file("model-00002-of-00002.safetensors"),
                      {{"b", "F32", {1}, as_bytes(std::vector<float>{3})},
                       {"c", "F16", {1}, as_bytes(std::vector<std::uint16_t>{0x3c00})}});
    const std::string index = d.file("model.safetensors.index.json");
    auto write_index = [&](const std::string& map) {
        write_bytes(index, as_bytes(std::vector<char>(map.begin(), map.end())));
    };
    write_index(R"({"metadata":{"total_size":14},"weight_map":{"a":"model-00001-of-00002.safetensors",
        "b":"model-00002-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}})");
    {
        const st::checkpoint ck(d.dir.string());
        CHECK(ck.files().size() == 2);
        CHECK(ck.tensors().size() == 3);
        REQUIRE(ck.find("c"));
        CHECK(ck.find("c")->type == st::dtype::f16);
        CHECK(ck.file_of("a")->path().find("00001") != std::string::npos);
    }
    auto refused = [&](const std::string& map, const std::string& what) {
        write_index(map);
        try {
            st::checkpoint ck(index);
            FAIL("accepted a bad index");
        } catch (const lmtk::error& e) {
            INFO(e.what());
            CHECK(std::string(e.what()).find(what) != std::string::npos);
        }
    };
    refused(R"({"weight_map":{"a":"../model-00001-of-00002.safetensors"}})", "not a file in this folder");
    refused(R"({"weight_map":{"a":"/etc/passwd"}})", "not a file in this folder");
    refused(R"({"weight_map":{"a":"model-00002-of-00002.safetensors"}})", "does not hold it");
    refused(R"({"weight_map":{"a":"missing.safetensors"}})", "cannot open");
    refused(R"({"weight_map":{}})", "no weight_map");
    refused(R"({"weight_map":{"a":1}})", "is not a file name");
    refused(R"({"weight_map":{"a":"x", "a":"y"}})", "duplicate key");
    refused(R"([)", "invalid JSON");
    // the same tensor in two shards
    write_safetensors(d.file("dup.safetensors"), {{"a", "F32", {1}, as_bytes(std::vector<float>{9})}});
    refused(R"({"weight_map":{"a":"model-00001-of-00002.safetensors","b":"dup.safetensors"}})", "also appears in");

    scratch_dir empty("st");
    CHECK_THROWS_WITH(st::checkpoint(empty.dir.string()), Catch::Contains("no model.safetensors"));
}

TEST_CASE("safetensors: broken headers are refused", "[safetensors][hostile]") {
    scratch_dir d("st");
    const std::string p = d.file("bad.safetensors");
    const std::string ok_entry = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

    write_bytes(p, {});
    require_refused(p, "too short");
    write_bytes(p, std::vector<std::byte>(7, std::byte{0}));
    require_refused(p, "too short");
    {  // a header length beyond the limit, and one beyond the file
        std::vector<std::byte> b(16, std::byte{0});
        const std::uint64_t big = st::max_header_bytes + 1;
        std::memcpy(b.data(), &big, 8);
        write_bytes(p, b);
        require_refused(p, "exceeds the limit");
        const std::uint64_t past = 9;
        std::memcpy(b.data(), &past, 8);
        write_bytes(p, b);
        require_refused(p, "runs past the end");
        const std::uint64_t huge = ~std::uint64_t{0};
        std::memcpy(b.data(), &huge, 8);
        write_bytes(p, b);
        require_refused(p, "exceeds the limit");
    }
    write_header(p, "", 0);
    require_refused(p, "does not start with '{'");
    write_header(p, " {}", 0);
    require_refused(p, "does not start with '{'");
    write_header(p, "{\"w\":", 0);
    require_refused(p, "invalid JSON");
    write_header(p, "{}garbage", 0);
    require_refused(p, "invalid JSON");
    write_header(p, "{" + ok_entry + "," + ok_entry + "}", 8);
    require_refused(p, "duplicate key 'w'");
    write_header(p, std::string(1, '{') + "\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}", 0);
    require_refused(p, "nested more than");
    write_header(p, R"({"w":[]})", 0);
    require_refused(p, "is not an object");
    write_header(p, R"({"w":{"shape":[2],"data_offsets":[0,8]}})", 8);
    require_refused(p, "no dtype");
    write_header(p, R"({"w":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8);
    require_refused(p, "unknown dtype 'F33'");
    write_header(p, R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", 8);
    require_refused(p, "no shape");
    write_header(p, R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8);
    require_refused(p, "not a non-negative integer");
    write_header(p, R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8);
    require_refused(p, "not a non-negative integer");
    write_header(p, R"({"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8);
    require_refused(p, "not a non-negative integer");
    // Element and byte counts past 64 bits, and shapes the data section could not hold, are
    // refused before any count is used.
    write_header(p, R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8);
    require_refused(p, "larger than the file could hold");
    write_header(p, R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]}})", 8);
    require_refused(p, "larger than the file could hold");
    write_header(p, R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})", 8);
    require_refused(p, "larger than the file could hold");
    // An empty tensor still has every other dimension bounded: [0, 2^63] would overflow the
    // row counts and int64 GGUF dimensions the HF loader derives from it.
    write_header(p, R"({"w":{"dtype":"F32","shape":[0,9223372036854775808],"data_offsets":[0,0]},)"
                    R"("x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8);
    require_refused(p, "larger than the file could hold");
    write_header(p, R"({"w":{"dtype":"F32","shape":[4,0,3],"data_offsets":[0,0]},)"
                    R"("x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8);
    require_refused(p, "larger than the file could hold");
    write_header(p, R"({"w":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}})", 2);
    require_refused(p, "not whole bytes");
    write_header(p, R"({"w":{"dtype":"F32","shape":[2]}})", 8);
    require_refused(p, "data_offsets must be");
    write_header(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8);
    require_refused(p, "data_offsets must be");
    write_header(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", 8);
    require_refused(p, "data_offsets must be");
    write_header(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8);
    require_refused(p, "end before they begin");
    write_header(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}})", 12);
    require_refused(p, "needs 8");
    write_header(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551608,0]}})", 8);
    require_refused(p, "end before they begin");
    write_header(p, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", 8);
    require_refused(p, "outside the data section");
    write_header(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 9);
    require_refused(p, "trailing bytes");
    write_header(p, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
    require_refused(p, "a hole");
    write_header(p,
                 R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                 R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                 12);
    require_refused(p, "overlaps");
    write_header(p, R"({"__metadata__":{"format":1},)" + ok_entry + "}", 8);
    require_refused(p, "is not a string");
    write_header(p, R"({"__metadata__":[],)" + ok_entry + "}", 8);
    require_refused(p, "__metadata__ is not an object");
    write_header(p, "[]", 0);
    require_refused(p, "does not start with '{'");
}

TEST_CASE("safetensors: every truncation and random corruption of a real file", "[safetensors][hostile]") {
    scratch_dir d("st");
    const std::vector<std::byte> good = lmtk::test::read_bytes(tinystories());
    const std::string p = d.file("cut.safetensors");
    const std::uint64_t header = [&] {
        std::uint64_t n;
        std::memcpy(&n, good.data(), 8);
        return n;
    }();
    // Truncations: through the header byte by byte (in steps), then through the data.
    std::vector<std::size_t> cuts;
    for (std::size_t n = 0; n < 8 + header + 64; n += (n < 8 + header ? 37 : 1)) cuts.push_back(n);
    for (std::size_t n = 8 + header; n < good.size(); n += good.size() / 50) cuts.push_back(n);
    cuts.push_back(good.size() - 1);
    for (const std::size_t n : cuts) {
        INFO("cut at " << n);
        write_bytes(p, std::vector<std::byte>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n)));
        CHECK_THROWS_AS(st::file(p), lmtk::error);
    }
    // Random byte changes in the header: either a valid file that still tiles its data section,
    // or an lmtk::error. Nothing else (ASan/UBSan watch the rest).
    std::mt19937 g(42);
    std::uniform_int_distribution<std::size_t> pos(0, 8 + header - 1);
    const char alphabet[] = "{}[]\",:0123456789-.eE aFBI_";
    std::uniform_int_distribution<std::size_t> pick(0, sizeof alphabet - 2);
    int refused = 0;
    for (int round = 0; round < 300; ++round) {
        std::vector<std::byte> b = good;
        const int changes = 1 + round % 4;
        for (int c = 0; c < changes; ++c) b[pos(g)] = static_cast<std::byte>(alphabet[pick(g)]);
        write_bytes(p, b);
        try {
            const st::file f(p);
            std::uint64_t end = 0;
            for (const st::tensor& t : f.tensors()) end = std::max(end, t.end);
            CHECK(8 + f.header_bytes() + end == b.size());
        } catch (const lmtk::error& e) {
            ++refused;
            CHECK(std::string(e.what()).find(p) != std::string::npos);
        }
    }
    CHECK(refused > 0);
}
