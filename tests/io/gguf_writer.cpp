// GGUF writer: what it writes, lmtk::gguf::file reads back identically (metadata types and
// values, tensor infos, bytes), and what the reader would refuse it refuses up front.
#include <catch2/catch.hpp>

#include "support/models.hpp"

#include <lmtk/io/gguf.hpp>
#include <lmtk/io/gguf_writer.hpp>

#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <list>
#include <string>
#include <vector>

#include <unistd.h>
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using lmtk::gguf::array_value;
using lmtk::gguf::value;
using lmtk::gguf::value_type;
using lmtk::quant::ggml_type;

namespace {

using lmtk::test::temp_dir;

// Deep equality; floats compare by bits so NaNs and signed zeros must survive too.
bool same(const value& a, const value& b) {
    if (a.type() != b.type()) return false;
    return std::visit(
        [&](const auto& x) -> bool {
            using T = std::decay_t<decltype(x)>;
            const T& y = std::get<T>(b.data);
            if constexpr (std::is_same_v<T, array_value>) {
                if (x.elem_type != y.elem_type || x.items.size() != y.items.size()) return false;
                for (std::size_t i = 0; i < x.items.size(); ++i)
                    if (!same(x.items[i], y.items[i])) return false;
                return true;
            } else if constexpr (std::is_floating_point_v<T>) {
                return std::memcmp(&x, &y, sizeof x) == 0;
            } else {
                return x == y;
            }
        },
        a.data);
}

void require_same_metadata(const lmtk::gguf::file& a, const lmtk::gguf::file& b) {
    REQUIRE(a.metadata().size() == b.metadata().size());
    for (std::size_t i = 0; i < a.metadata().size(); ++i) {
        INFO("key " << a.metadata()[i].key);
        CHECK(a.metadata()[i].key == b.metadata()[i].key);  // order is kept too
        CHECK(same(a.metadata()[i].val, b.metadata()[i].val));
    }
}

void require_same_tensors(const lmtk::gguf::file& a, const lmtk::gguf::file& b) {
    REQUIRE(a.tensors().size() == b.tensors().size());
    for (std::size_t i = 0; i < a.tensors().size(); ++i) {
        const auto& x = a.tensors()[i];
        const auto& y = b.tensors()[i];
        INFO("tensor " << x.name);
        CHECK(x.name == y.name);
        CHECK(x.n_dims == y.n_dims);
        CHECK(x.ne == y.ne);
        CHECK(x.type == y.type);
        CHECK(x.n_elements == y.n_elements);
        CHECK(x.n_bytes == y.n_bytes);
        REQUIRE(x.n_bytes == y.n_bytes);
        CHECK(std::memcmp(x.data, y.data, x.n_bytes) == 0);
    }
}

template <class T>
value make(T v) {
    return value{value::storage(std::in_place_type<T>, v)};
}

array_value array_of(value_type elem, std::vector<value> items) {
    array_value a;
    a.elem_type = elem;
    a.items = std::move(items);
    return a;
}

std::vector<std::byte> random_bytes(std::size_t n, unsigned seed) {
    std::vector<std::byte> b(n);
    std::uint32_t x = seed * 2654435761u + 1;
    for (auto& v : b) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        v = std::byte(x & 0xFF);
    }
    return b;
}

}  // namespace

TEST_CASE("stories260K.gguf round-trips through the writer", "[gguf][writer]") {
    temp_dir tmp;
    const lmtk::gguf::file src(lmtk::test::model_path("stories260K.gguf"));
    const std::string out = tmp.file("copy.gguf");
    {
        lmtk::gguf::writer w;
        w.copy_metadata_from(src);
        for (const auto& t : src.tensors()) w.add_tensor(t);
        CHECK(w.metadata().size() == 19);
        CHECK(w.tensor_count() == 48);
        w.write(out);
    }
    const lmtk::gguf::file back(out);
    CHECK(back.version() == 3);
    CHECK(back.alignment() == 32);
    require_same_metadata(src, back);
    require_same_tensors(src, back);
    // Same layout as ggml writes: same offsets and data section start.
    for (std::size_t i = 0; i < src.tensors().size(); ++i) CHECK(src.tensors()[i].offset == back.tensors()[i].offset);
    CHECK(back.data_offset() == src.data_offset());
    CHECK(tmp.listing() == std::vector<std::string>{"copy.gguf"});
}

TEST_CASE("vocab-only GGUF round-trips: copied metadata outlives the source file", "[gguf][writer]") {
    temp_dir tmp;
    const std::string out = tmp.file("vocab.gguf");
    {
        lmtk::gguf::writer w;
        {
            const lmtk::gguf::file src(lmtk::test::model_path("vocab/ggml-vocab-llama-spm.gguf"));
            w.copy_metadata_from(src);
        }  // unmapped: the writer must hold its own copies of all 32000 token strings
        w.write(out);
    }
    const lmtk::gguf::file src(lmtk::test::model_path("vocab/ggml-vocab-llama-spm.gguf"));
    const lmtk::gguf::file back(out);
    require_same_metadata(src, back);
    CHECK(back.tensors().empty());
}

TEST_CASE("every value type, nested arrays, alignment 64, F16/Q8_0 tensors", "[gguf][writer]") {
    temp_dir tmp;
    const std::string out = tmp.file("synthetic.gguf");

    const auto f16 = random_bytes(2 * 64 * 3, 1);   // [64, 3] F16
    auto q8 = random_bytes(34 * 2 * 4, 2);          // [64, 4] Q8_0: 2 blocks of 34 bytes per row
    const auto q8_copy = q8;
    const float f32_values[] = {1.5f, -0.0f, std::numeric_limits<float>::infinity(), 3.25e-7f};

    std::string temporary = "a string that dies before write()";
    {
        lmtk::gguf::writer w;
        w.set("u8", std::uint8_t{200});
        w.set("i8", std::int8_t{-100});
        w.set("u16", std::uint16_t{65000});
        w.set("i16", std::int16_t{-32000});
        w.set("u32", std::uint32_t{4000000000u});
        w.set("i32", std::int32_t{-2000000000});
        w.set("f32", 0.1f);
        w.set("f32.nan", std::numeric_limits<float>::quiet_NaN());
        w.set("bool.true", true);
        w.set("bool.false", false);
        w.set("string", "hello");
        w.set("string.empty", std::string());
        w.set("string.utf8", std::string_view("h\xC3\xA9llo \xE2\x96\x81 \0 nul", 17));
        w.set("u64", std::uint64_t{0xFFFFFFFFFFFFFFFFull});
        w.set("i64", std::int64_t{std::numeric_limits<std::int64_t>::min()});
        w.set("f64", 3.141592653589793);
        w.set("f64.denormal", std::numeric_limits<double>::denorm_min());
        w.set("temporary", temporary);
        temporary.assign(temporary.size(), 'x');  // the writer copied it

        w.set_array("arr.u8", std::vector<std::uint8_t>{0, 1, 255});
        w.set_array("arr.i8", {std::int8_t{-128}, std::int8_t{127}});
        w.set_array("arr.u16", {std::uint16_t{1}, std::uint16_t{65535}});
        w.set_array("arr.i16", {std::int16_t{-1}});
        w.set_array("arr.u32", {1u, 2u, 3u});
        w.set_array("arr.i32", {-1, 0, 1});
        w.set_array("arr.f32", f32_values);
        w.set_array("arr.bool", std::vector<bool>{true, false, true});
        w.set_array("arr.u64", {std::uint64_t{1} << 63});
        w.set_array("arr.i64", {std::int64_t{-1}, std::int64_t{1} << 40});
        w.set_array("arr.f64", {0.5, -2.0});
        w.set_array("arr.string", std::list<std::string>{"<unk>", "", "\xE2\x96\x81the"});
        w.set_array("arr.cstr", {"a", "bc"});
        w.set_array("arr.empty", std::vector<float>{});

        // [[1, 2], [], [3]] of i32, then an array of arrays of strings, then three levels.
        w.set("nested.i32", array_of(value_type::array,
                                     {value{array_of(value_type::i32, {make(std::int32_t{1}), make(std::int32_t{2})})},
                                      value{array_of(value_type::i32, {})},
                                      value{array_of(value_type::i32, {make(std::int32_t{3})})}}));
        std::vector<array_value> rows;
        for (int r = 0; r < 3; ++r) {
            std::vector<value> items;
            for (int c = 0; c <= r; ++c) items.push_back(make(std::string_view(r == c ? "diag" : "off")));
            rows.push_back(array_of(value_type::string, std::move(items)));
        }
        w.set_array("nested.strings", rows);
        w.set("nested.deep", array_of(value_type::array,
                                      {value{array_of(value_type::array,
                                                      {value{array_of(value_type::f64, {make(1.0), make(2.0)})}})}}));
        w.set("nested.empty", array_of(value_type::array, {}));

        w.set_alignment(64);
        w.add_tensor("f16", ggml_type::f16, {64, 3}, std::span<const std::byte>(f16));
        w.add_tensor("q8", ggml_type::q8_0, {64, 4}, std::move(q8));
        w.add_tensor("odd", ggml_type::i8, {7}, [](lmtk::gguf::tensor_sink& s) {  // 7 bytes: padding follows
            const std::int8_t v[] = {1, 2, 3, 4, 5, 6, 7};
            s.write(std::span<const std::int8_t>(v));
        });
        w.add_tensor("f32.3d", ggml_type::f32, {4, 3, 2}, [](lmtk::gguf::tensor_sink& s) {
            for (int i = 0; i < 24; ++i) {  // streamed one value at a time
                const float x = static_cast<float>(i) * 0.5f;
                s.write(&x, sizeof x);
            }
        });
        w.add_tensor("empty", ggml_type::f32, {0, 5}, std::span<const std::byte>());
        w.add_tensor("scalar", ggml_type::f32, std::vector<std::int64_t>{}, std::vector<std::byte>(4, std::byte{0x3f}));
        w.add_tensor("q4_k.4d", ggml_type::q4_k, {256, 1, 2, 1}, random_bytes(144 * 2, 3));
        w.write(out);
    }

    const lmtk::gguf::file f(out);
    CHECK(f.version() == 3);
    CHECK(f.alignment() == 64);
    CHECK(f.data_offset() % 64 == 0);
    CHECK(f.metadata().size() == 37);

    const auto is = [&](const char* key, value expect) {
        INFO(key);
        const value* v = f.find(key);
        REQUIRE(v);
        CHECK(same(*v, expect));
    };
    is("u8", make(std::uint8_t{200}));
    is("i8", make(std::int8_t{-100}));
    is("u16", make(std::uint16_t{65000}));
    is("i16", make(std::int16_t{-32000}));
    is("u32", make(std::uint32_t{4000000000u}));
    is("i32", make(std::int32_t{-2000000000}));
    is("f32", make(0.1f));
    is("f32.nan", make(std::numeric_limits<float>::quiet_NaN()));
    is("bool.true", make(true));
    is("bool.false", make(false));
    is("string", make(std::string_view("hello")));
    is("string.empty", make(std::string_view()));
    is("string.utf8", make(std::string_view("h\xC3\xA9llo \xE2\x96\x81 \0 nul", 17)));
    is("u64", make(std::uint64_t{0xFFFFFFFFFFFFFFFFull}));
    is("i64", make(std::numeric_limits<std::int64_t>::min()));
    is("f64", make(3.141592653589793));
    is("f64.denormal", make(std::numeric_limits<double>::denorm_min()));
    is("temporary", make(std::string_view("a string that dies before write()")));
    is("general.alignment", make(std::uint32_t{64}));

    is("arr.u8", value{array_of(value_type::u8, {make(std::uint8_t{0}), make(std::uint8_t{1}), make(std::uint8_t{255})})});
    is("arr.i8", value{array_of(value_type::i8, {make(std::int8_t{-128}), make(std::int8_t{127})})});
    is("arr.u16", value{array_of(value_type::u16, {make(std::uint16_t{1}), make(std::uint16_t{65535})})});
    is("arr.i16", value{array_of(value_type::i16, {make(std::int16_t{-1})})});
    is("arr.u32", value{array_of(value_type::u32, {make(1u), make(2u), make(3u)})});
    is("arr.i32", value{array_of(value_type::i32, {make(-1), make(0), make(1)})});
    is("arr.f32", value{array_of(value_type::f32, {make(f32_values[0]), make(f32_values[1]), make(f32_values[2]),
                                                   make(f32_values[3])})});
    is("arr.bool", value{array_of(value_type::boolean, {make(true), make(false), make(true)})});
    is("arr.u64", value{array_of(value_type::u64, {make(std::uint64_t{1} << 63)})});
    is("arr.i64", value{array_of(value_type::i64, {make(std::int64_t{-1}), make(std::int64_t{1} << 40)})});
    is("arr.f64", value{array_of(value_type::f64, {make(0.5), make(-2.0)})});
    is("arr.string", value{array_of(value_type::string, {make(std::string_view("<unk>")), make(std::string_view("")),
                                                         make(std::string_view("\xE2\x96\x81the"))})});
    is("arr.cstr", value{array_of(value_type::string, {make(std::string_view("a")), make(std::string_view("bc"))})});
    is("arr.empty", value{array_of(value_type::f32, {})});
    CHECK(f.get_array<std::string>("arr.string")->at(2) == "\xE2\x96\x81the");

    is("nested.i32", value{array_of(value_type::array,
                                    {value{array_of(value_type::i32, {make(std::int32_t{1}), make(std::int32_t{2})})},
                                     value{array_of(value_type::i32, {})},
                                     value{array_of(value_type::i32, {make(std::int32_t{3})})}})});
    const value* strings = f.find("nested.strings");
    REQUIRE(strings);
    REQUIRE(strings->as_array()->elem_type == value_type::array);
    REQUIRE(strings->as_array()->items.size() == 3);
    const auto& row2 = *strings->as_array()->items[2].as_array();
    CHECK(row2.elem_type == value_type::string);
    REQUIRE(row2.items.size() == 3);
    CHECK(*row2.items[0].as_string() == "off");
    CHECK(*row2.items[2].as_string() == "diag");
    is("nested.deep", value{array_of(value_type::array,
                                     {value{array_of(value_type::array,
                                                     {value{array_of(value_type::f64, {make(1.0), make(2.0)})}})}})});
    is("nested.empty", value{array_of(value_type::array, {})});

    REQUIRE(f.tensors().size() == 7);
    const auto& t16 = f.tensor("f16");
    CHECK(t16.type == ggml_type::f16);
    CHECK(t16.n_dims == 2);
    CHECK(t16.ne[0] == 64);
    CHECK(t16.ne[1] == 3);
    CHECK(t16.n_bytes == f16.size());
    CHECK(std::memcmp(t16.data, f16.data(), f16.size()) == 0);
    const auto& tq = f.tensor("q8");
    CHECK(tq.type == ggml_type::q8_0);
    CHECK(tq.ne[0] == 64);
    CHECK(tq.ne[1] == 4);
    CHECK(tq.row_bytes() == 68);
    REQUIRE(tq.n_bytes == q8_copy.size());
    CHECK(std::memcmp(tq.data, q8_copy.data(), q8_copy.size()) == 0);
    const auto& odd = f.tensor("odd");
    CHECK(odd.type == ggml_type::i8);
    CHECK(odd.n_bytes == 7);
    CHECK(std::to_integer<int>(odd.data[6]) == 7);
    const auto& t3 = f.tensor("f32.3d");
    CHECK(t3.n_dims == 3);
    CHECK(t3.ne[2] == 2);
    CHECK(t3.rows() == 6);
    float last = 0;
    std::memcpy(&last, t3.data + 23 * sizeof(float), sizeof last);
    CHECK(last == 11.5f);
    CHECK(f.tensor("empty").n_bytes == 0);
    CHECK(f.tensor("scalar").n_dims == 0);
    CHECK(f.tensor("scalar").n_bytes == 4);
    CHECK(f.tensor("q4_k.4d").n_dims == 4);
    CHECK(f.tensor("q4_k.4d").n_bytes == 288);
    for (const auto& t : f.tensors()) {
        INFO(t.name);
        CHECK(t.offset % 64 == 0);
    }
    // ggml's strict layout: info order, each at the running sum of sizes rounded to 64.
    std::uint64_t expect = 0;
    for (const auto& t : f.tensors()) {
        CHECK(t.offset == expect);
        expect += lmtk::gguf::detail::align_up(t.n_bytes, 64);
    }
    CHECK(f.data_offset() + expect == f.mapping().size());

    SECTION("and that file round-trips again, byte for byte") {
        const std::string again = tmp.file("again.gguf");
        {
            lmtk::gguf::writer w;
            w.copy_metadata_from(f);
            for (const auto& t : f.tensors()) w.add_tensor(t);
            w.write(again);
        }
        const lmtk::gguf::file g(again);
        require_same_metadata(f, g);
        require_same_tensors(f, g);
        REQUIRE(f.mapping().size() == g.mapping().size());
        CHECK(std::memcmp(f.mapping().data(), g.mapping().data(), f.mapping().size()) == 0);
    }
}

TEST_CASE("writer metadata editing", "[gguf][writer]") {
    lmtk::gguf::writer w;
    w.set("a", 1);
    w.set("b", "x");
    w.set("c", 2.0f);
    w.set("a", std::uint64_t{7});  // replaces in place: the key keeps its position
    REQUIRE(w.metadata().size() == 3);
    CHECK(w.metadata()[0].key == "a");
    CHECK(w.metadata()[0].val.type() == value_type::u64);
    CHECK(w.find("b")->as_string()->compare("x") == 0);
    w.set("d", *w.find("b"));  // a value of the writer itself
    CHECK(*w.find("d")->as_string() == "x");
    CHECK(w.erase("b"));
    CHECK_FALSE(w.erase("b"));
    CHECK(w.find("b") == nullptr);
    REQUIRE(w.metadata().size() == 3);
    CHECK(w.metadata()[1].key == "c");
    CHECK(*w.find("d")->as_string() == "x");
    CHECK(w.alignment() == 32);
    w.set_alignment(128);
    CHECK(w.alignment() == 128);

    lmtk::gguf::writer moved(std::move(w));  // views into its strings survive the move
    CHECK(*moved.find("d")->as_string() == "x");
    CHECK(moved.metadata()[0].key == "a");
}

TEST_CASE("the writer refuses what the reader would refuse", "[gguf][writer]") {
    lmtk::gguf::writer w;
    const auto refused = [](auto&& f, std::string_view word) {
        try {
            f();
            FAIL("accepted");
        } catch (const lmtk::error& e) {
            INFO(e.what());
            CHECK(std::string_view(e.what()).find(word) != std::string_view::npos);
        }
    };
    refused([&] { w.set("", 1); }, "empty");
    refused([&] { w.set("general.alignment", std::uint64_t{32}); }, "u32");
    refused([&] { w.set("general.alignment", 48u); }, "power of two");
    refused([&] { w.set_alignment(0); }, "power of two");
    refused([&] { w.set("mixed", array_of(value_type::i32, {make(std::int32_t{1}), make(1u)})); }, "holds a");
    refused([&] { w.set("badelem", array_of(static_cast<value_type>(13), {})); }, "unknown array element type");
    value deep{array_of(value_type::u8, {})};
    for (std::size_t d = 0; d < lmtk::gguf::max_array_depth; ++d) deep = value{array_of(value_type::array, {deep})};
    refused([&] { w.set("deep", deep); }, "nested deeper");
    CHECK(w.metadata().empty());

    const std::vector<std::byte> four(4);
    refused([&] { w.add_tensor(std::string(64, 'n'), ggml_type::f32, {1}, four); }, "longer than");
    refused([&] { w.add_tensor("t", static_cast<ggml_type>(99), {1}, four); }, "unknown type id");
    refused([&] { w.add_tensor("t", ggml_type::f32, {1, 1, 1, 1, 1}, four); }, "dimensions");
    refused([&] { w.add_tensor("t", ggml_type::f32, {-1}, four); }, "negative");
    refused([&] { w.add_tensor("t", ggml_type::f32, {1ll << 62, 1ll << 62}, four); }, "overflows");
    refused([&] { w.add_tensor("t", ggml_type::f32, {0, 1ll << 62, 1ll << 62}, four); }, "overflows");
    refused([&] { w.add_tensor("t", ggml_type::f64, {1ll << 62}, four); }, "overflows");
    refused([&] { w.add_tensor("t", ggml_type::q8_0, {33}, four); }, "block size");
    refused([&] { w.add_tensor("t", ggml_type::f32, {2}, four); }, "needs 8 bytes, got 4");
    refused([&] { w.add_tensor("t", ggml_type::f32, {1}, lmtk::gguf::writer::fill_fn{}); }, "empty callback");
    CHECK(w.tensor_count() == 0);
    w.add_tensor("t", ggml_type::f32, {1}, four);  // the refused calls left no trace
    refused([&] { w.add_tensor("t", ggml_type::f32, {1}, four); }, "duplicate");
    CHECK(w.tensor_count() == 1);
}

TEST_CASE("a failed write leaves nothing under the final name", "[gguf][writer]") {
    temp_dir tmp;
    const std::string out = tmp.file("model.gguf");
    const auto writer_with = [](lmtk::gguf::writer::fill_fn fill) {
        lmtk::gguf::writer w;
        w.set("general.architecture", "llama");
        w.add_tensor("t", ggml_type::f32, {1024}, std::move(fill));
        return w;
    };

    SECTION("callback writes too few bytes") {
        auto w = writer_with([](lmtk::gguf::tensor_sink& s) { s.write(std::vector<std::byte>(100).data(), 100); });
        CHECK_THROWS_WITH(w.write(out), Catch::Contains(out) && Catch::Contains("wrote 100 of its 4096 bytes"));
    }
    SECTION("callback writes too many bytes") {
        auto w = writer_with([](lmtk::gguf::tensor_sink& s) {
            const std::vector<std::byte> big(5000);
            s.write(big);
        });
        CHECK_THROWS_WITH(w.write(out), Catch::Contains(out) && Catch::Contains("more than"));
    }
    SECTION("callback throws its own exception") {
        auto w = writer_with([](lmtk::gguf::tensor_sink& s) {
            s.write(std::vector<std::byte>(2048).data(), 2048);
            throw std::runtime_error("quantizer failed");
        });
        CHECK_THROWS_WITH(w.write(out), "quantizer failed");
    }
    CHECK_FALSE(fs::exists(out));
    CHECK(tmp.listing().empty());  // and no temporary file either
}

TEST_CASE("a failed write keeps the previous file intact", "[gguf][writer]") {
    temp_dir tmp;
    const std::string out = tmp.file("model.gguf");
    {
        lmtk::gguf::writer w;
        w.set("version", 1);
        w.write(out);
    }
    {
        lmtk::gguf::writer w;
        w.set("version", 2);
        w.add_tensor("t", ggml_type::f32, {4}, [](lmtk::gguf::tensor_sink&) { throw lmtk::error("boom"); });
        CHECK_THROWS_AS(w.write(out), lmtk::error);
    }
    CHECK(lmtk::gguf::file(out).require<int>("version") == 1);
    {
        // Replacing a file that is open (mapped) leaves the reader's view unchanged.
        const lmtk::gguf::file old(out);
        lmtk::gguf::writer w;
        w.set("version", 3);
        w.write(out);
        CHECK(old.require<int>("version") == 1);
        CHECK(lmtk::gguf::file(out).require<int>("version") == 3);
    }
    CHECK(tmp.listing() == std::vector<std::string>{"model.gguf"});
}

TEST_CASE("write errors name the path", "[gguf][writer]") {
    temp_dir tmp;
    lmtk::gguf::writer w;
    w.set("k", 1);
    const std::string missing = tmp.file("no/such/dir/model.gguf");
    CHECK_THROWS_WITH(w.write(missing), Catch::Contains(missing) && Catch::Contains("cannot create"));
    fs::create_directories(tmp.dir / "taken.gguf");
    const std::string dir = tmp.file("taken.gguf");
    CHECK_THROWS_WITH(w.write(dir), Catch::Contains(dir) && Catch::Contains("cannot rename"));
    CHECK(tmp.listing() == std::vector<std::string>{"taken.gguf"});
}
