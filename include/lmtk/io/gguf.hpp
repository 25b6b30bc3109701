#pragma once
// GGUF v2/v3 reader over a memory-mapped file.
//
// Every read is bounds-checked against the mapping, every count is checked against the bytes
// that remain before anything is allocated for it, and every tensor is checked to lie inside the
// data section, aligned, with a known type and a shape whose byte size does not overflow. A
// broken or hostile file therefore ends in an lmtk::error naming the file and the problem, never
// in undefined behaviour. String values are views into the mapping: the file outlives them.
#include <lmtk/core/error.hpp>
#include <lmtk/core/mapped_file.hpp>
#include <lmtk/quant/ggml_type.hpp>

#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <variant>
#include <vector>

namespace lmtk::gguf {

inline constexpr std::uint32_t magic = 0x46554747;  // "GGUF" read as little-endian u32
inline constexpr std::uint32_t default_alignment = 32;
inline constexpr std::size_t max_dims = 4;
inline constexpr std::size_t max_name_bytes = 63;     // ggml's GGML_MAX_NAME - 1
inline constexpr std::size_t max_array_depth = 16;    // nested arrays deeper than this are refused

enum class value_type : std::uint32_t {
    u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
    string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};

constexpr std::string_view value_type_name(value_type t) noexcept {
    constexpr std::string_view names[] = {"u8",  "i8",  "u16",    "i16",   "u32", "i32", "f32",
                                          "bool", "string", "array", "u64", "i64", "f64"};
    const auto i = static_cast<std::uint32_t>(t);
    return i < std::size(names) ? names[i] : std::string_view("invalid");
}

struct value;
struct array_value {
    value_type elem_type = value_type::u8;
    std::vector<value> items;
};

// One metadata value. Scalars are stored by type; strings view into the mapped file.
struct value {
    using storage = std::variant<std::uint8_t, std::int8_t, std::uint16_t, std::int16_t, std::uint32_t,
                                 std::int32_t, float, bool, std::string_view, array_value, std::uint64_t,
                                 std::int64_t, double>;
    storage data;

    value_type type() const noexcept { return static_cast<value_type>(data.index()); }
    bool is_integer() const noexcept {
        switch (type()) {
            case value_type::u8: case value_type::i8: case value_type::u16: case value_type::i16:
            case value_type::u32: case value_type::i32: case value_type::u64: case value_type::i64:
                return true;
            default:
                return false;
        }
    }
    const array_value* as_array() const noexcept { return std::get_if<array_value>(&data); }
    const std::string_view* as_string() const noexcept { return std::get_if<std::string_view>(&data); }
    // Any integer or bool value as int64 (u64 above INT64_MAX yields nullopt).
    std::optional<std::int64_t> as_int() const noexcept {
        return std::visit(
            [](const auto& v) -> std::optional<std::int64_t> {
                using T = std::decay_t<decltype(v)>;
                if constexpr (std::is_same_v<T, bool>) return v ? 1 : 0;
                else if constexpr (std::is_same_v<T, std::uint64_t>) {
                    if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return std::nullopt;
                    return static_cast<std::int64_t>(v);
                } else if constexpr (std::is_integral_v<T>) return static_cast<std::int64_t>(v);
                else return std::nullopt;
            },
            data);
    }
    // Any numeric value as double.
    std::optional<double> as_number() const noexcept {
        return std::visit(
            [](const auto& v) -> std::optional<double> {
                using T = std::decay_t<decltype(v)>;
                if constexpr (std::is_arithmetic_v<T>) return static_cast<double>(v);
                else return std::nullopt;
            },
            data);
    }
};

struct kv {
    std::string_view key;
    value val;
};

struct tensor_info {
    std::string_view name;
    std::array<std::int64_t, max_dims> ne{1, 1, 1, 1};  // ne[0] is the contiguous dimension
    std::uint32_t n_dims = 0;
    quant::ggml_type type = quant::ggml_type::f32;
    std::uint64_t offset = 0;       // relative to the data section
    std::uint64_t n_elements = 0;
    std::uint64_t n_bytes = 0;
    const std::byte* data = nullptr;  // into the mapping

    std::int64_t rows() const noexcept { return ne[1] * ne[2] * ne[3]; }
    std::int64_t row_elems() const noexcept { return ne[0]; }
    std::uint64_t row_bytes() const noexcept { return n_elements == 0 ? 0 : n_bytes / static_cast<std::uint64_t>(rows()); }
};

namespace detail {

// Cursor over the header bytes. Every read checks the remaining length first.
class cursor {
public:
    cursor(const std::string& path, const std::byte* base, std::size_t size) : path_(path), base_(base), size_(size) {}

    std::size_t pos() const noexcept { return pos_; }
    std::size_t remaining() const noexcept { return size_ - pos_; }

    [[noreturn]] void error(std::string_view what) const {
        fail(path_, ": invalid GGUF: ", what, " (at byte ", pos_, " of ", size_, ")");
    }

    void need(std::uint64_t n, std::string_view what) const {
        if (n > remaining()) {
            fail(path_, ": invalid GGUF: truncated while reading ", what, " (needs ", n, " bytes at offset ", pos_,
                 ", file has ", size_, ")");
        }
    }

    template <class T>
    T read(std::string_view what) {
        static_assert(std::is_trivially_copyable_v<T>);
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, base_ + pos_, sizeof(T));  // no alignment assumption
        pos_ += sizeof(T);
        return v;
    }

    std::string_view read_string(std::string_view what) {
        const auto len = read<std::uint64_t>(what);
        need(len, what);
        std::string_view s(reinterpret_cast<const char*>(base_ + pos_), static_cast<std::size_t>(len));
        pos_ += static_cast<std::size_t>(len);
        return s;
    }

private:
    const std::string& path_;
    const std::byte* base_;
    std::size_t size_;
    std::size_t pos_ = 0;
};

// Counts are only bounded by the file size, and a parsed element takes far more memory than its
// encoding (a 1-byte u8 item becomes a whole `value`): reserving a claimed count up front would
// let a large hostile file demand tens of times its size before a byte of it is read. Reserve at
// most this much; beyond it, vectors grow only as elements are really parsed.
inline constexpr std::uint64_t max_reserve = std::uint64_t{1} << 16;
inline std::size_t reserve_hint(std::uint64_t count) noexcept {
    return static_cast<std::size_t>(count < max_reserve ? count : max_reserve);
}

// Smallest number of bytes one element of this type can take, to bound counts before allocation.
inline std::uint64_t min_encoded_size(value_type t) noexcept {
    switch (t) {
        case value_type::u8: case value_type::i8: case value_type::boolean: return 1;
        case value_type::u16: case value_type::i16: return 2;
        case value_type::u32: case value_type::i32: case value_type::f32: return 4;
        case value_type::u64: case value_type::i64: case value_type::f64: case value_type::string: return 8;
        case value_type::array: return 12;
    }
    return 1;
}

inline value read_value(cursor& c, value_type t, std::size_t depth, std::string_view key) {
    switch (t) {
        case value_type::u8: return {c.read<std::uint8_t>(key)};
        case value_type::i8: return {c.read<std::int8_t>(key)};
        case value_type::u16: return {c.read<std::uint16_t>(key)};
        case value_type::i16: return {c.read<std::int16_t>(key)};
        case value_type::u32: return {c.read<std::uint32_t>(key)};
        case value_type::i32: return {c.read<std::int32_t>(key)};
        case value_type::f32: return {c.read<float>(key)};
        case value_type::boolean: {
            const auto b = c.read<std::uint8_t>(key);
            if (b > 1) c.error(lmtk::detail::concat("bool value ", int(b), " for key '", key, "'"));
            return {b != 0};
        }
        case value_type::string: return {c.read_string(key)};
        case value_type::u64: return {c.read<std::uint64_t>(key)};
        case value_type::i64: return {c.read<std::int64_t>(key)};
        case value_type::f64: return {c.read<double>(key)};
        case value_type::array: {
            if (depth >= max_array_depth) c.error(lmtk::detail::concat("arrays nested too deeply for key '", key, "'"));
            const auto raw_elem = c.read<std::uint32_t>(key);
            if (raw_elem > static_cast<std::uint32_t>(value_type::f64))
                c.error(lmtk::detail::concat("unknown array element type ", raw_elem, " for key '", key, "'"));
            const auto elem = static_cast<value_type>(raw_elem);
            const auto count = c.read<std::uint64_t>(key);
            // A count the remaining bytes cannot hold is refused before anything is reserved.
            if (count > c.remaining() / min_encoded_size(elem))
                c.error(lmtk::detail::concat("array of ", count, " ", value_type_name(elem), " for key '", key,
                                       "' runs past the end of the file"));
            array_value arr;
            arr.elem_type = elem;
            arr.items.reserve(reserve_hint(count));
            for (std::uint64_t i = 0; i < count; ++i) arr.items.push_back(read_value(c, elem, depth + 1, key));
            return {std::move(arr)};
        }
    }
    c.error(lmtk::detail::concat("unknown value type ", static_cast<std::uint32_t>(t), " for key '", key, "'"));
}

constexpr std::uint64_t align_up(std::uint64_t x, std::uint64_t a) noexcept { return (x + a - 1) / a * a; }

}  // namespace detail

class file {
public:
    explicit file(const std::string& path) : map_(path) { parse(); }
    explicit file(core::mapped_file map) : map_(std::move(map)) { parse(); }

    file(const file&) = delete;
    file& operator=(const file&) = delete;
    file(file&&) noexcept = default;
    file& operator=(file&&) noexcept = default;

    const std::string& path() const noexcept { return map_.path(); }
    std::uint32_t version() const noexcept { return version_; }
    std::uint32_t alignment() const noexcept { return alignment_; }
    std::uint64_t data_offset() const noexcept { return data_offset_; }
    const core::mapped_file& mapping() const noexcept { return map_; }

    const std::vector<kv>& metadata() const noexcept { return kvs_; }
    const std::vector<tensor_info>& tensors() const noexcept { return tensors_; }

    const value* find(std::string_view key) const noexcept {
        const auto it = kv_index_.find(key);
        return it == kv_index_.end() ? nullptr : &kvs_[it->second].val;
    }
    const tensor_info* find_tensor(std::string_view name) const noexcept {
        const auto it = tensor_index_.find(name);
        return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
    }
    const tensor_info& tensor(std::string_view name) const {
        const tensor_info* t = find_tensor(name);
        if (!t) fail(path(), ": tensor '", name, "' is missing");
        return *t;
    }

    // Typed metadata access. Integers convert between widths when the value fits; a wrong type
    // or an out-of-range value is an error naming the key.
    template <class T>
    std::optional<T> get(std::string_view key) const {
        const value* v = find(key);
        if (!v) return std::nullopt;
        return convert<T>(*v, key);
    }
    template <class T>
    T require(std::string_view key) const {
        auto v = get<T>(key);
        if (!v) fail(path(), ": required metadata key '", key, "' is missing");
        return *v;
    }
    template <class T>
    T get_or(std::string_view key, T fallback) const {
        auto v = get<T>(key);
        return v ? *v : fallback;
    }
    // Arrays of scalars or strings as vectors; nullopt when the key is absent.
    template <class T>
    std::optional<std::vector<T>> get_array(std::string_view key) const {
        const value* v = find(key);
        if (!v) return std::nullopt;
        const array_value* a = v->as_array();
        if (!a) fail(path(), ": metadata key '", key, "' is ", value_type_name(v->type()), ", expected an array");
        std::vector<T> out;
        out.reserve(a->items.size());
        for (const value& item : a->items) out.push_back(convert<T>(item, key));
        return out;
    }

private:
    template <class T>
    T convert(const value& v, std::string_view key) const {
        if constexpr (std::is_same_v<T, std::string_view> || std::is_same_v<T, std::string>) {
            if (const auto* s = v.as_string()) return T(*s);
            fail(path(), ": metadata key '", key, "' is ", value_type_name(v.type()), ", expected a string");
        } else if constexpr (std::is_same_v<T, bool>) {
            if (const bool* b = std::get_if<bool>(&v.data)) return *b;
            if (v.is_integer()) return *v.as_int() != 0;
            fail(path(), ": metadata key '", key, "' is ", value_type_name(v.type()), ", expected a bool");
        } else if constexpr (std::is_integral_v<T>) {
            if (v.is_integer()) {
                if (v.type() == value_type::u64) {
                    const auto u = std::get<std::uint64_t>(v.data);
                    if (u <= static_cast<std::uint64_t>(std::numeric_limits<T>::max())) return static_cast<T>(u);
                } else {
                    const std::int64_t i = *v.as_int();
                    if (std::in_range<T>(i)) return static_cast<T>(i);
                }
                fail(path(), ": metadata key '", key, "' value is out of range");
            }
            fail(path(), ": metadata key '", key, "' is ", value_type_name(v.type()), ", expected an integer");
        } else if constexpr (std::is_floating_point_v<T>) {
            if (v.type() != value_type::array && v.type() != value_type::string && v.type() != value_type::boolean)
                return static_cast<T>(*v.as_number());
            fail(path(), ": metadata key '", key, "' is ", value_type_name(v.type()), ", expected a number");
        } else {
            static_assert(sizeof(T) == 0, "unsupported metadata type");
        }
    }

    void parse() {
        // Memory use is bounded by the file size, not by claimed counts, but a huge file with
        // huge metadata can still exhaust memory: report that as a load error like any other.
        try {
            parse_header();
        } catch (const std::bad_alloc&) {
            fail(map_.path(), ": invalid GGUF: metadata too large to hold in memory");
        }
    }

    void parse_header() {
        const std::string& p = map_.path();
        detail::cursor c(p, map_.data(), map_.size());
        if (map_.size() < 4) fail(p, ": not a GGUF file (", map_.size(), " bytes, too short for the magic)");
        const auto m = c.read<std::uint32_t>("magic");
        if (m != magic) fail(p, ": not a GGUF file (bad magic)");
        version_ = c.read<std::uint32_t>("version");
        if (version_ == 0x03000000u || version_ == 0x02000000u)
            fail(p, ": big-endian GGUF files are not supported");
        if (version_ != 2 && version_ != 3)
            fail(p, ": unsupported GGUF version ", version_, " (supported: 2 and 3)");
        const auto n_tensors = c.read<std::int64_t>("tensor count");
        const auto n_kv = c.read<std::int64_t>("metadata count");
        // Each kv takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor info at least 8+4+4+8.
        if (n_kv < 0 || static_cast<std::uint64_t>(n_kv) > c.remaining() / 13)
            c.error(lmtk::detail::concat("metadata count ", n_kv, " does not fit in the file"));
        if (n_tensors < 0 || static_cast<std::uint64_t>(n_tensors) > c.remaining() / 24)
            c.error(lmtk::detail::concat("tensor count ", n_tensors, " does not fit in the file"));

        kvs_.reserve(detail::reserve_hint(static_cast<std::uint64_t>(n_kv)));
        for (std::int64_t i = 0; i < n_kv; ++i) {
            const std::string_view key = c.read_string("metadata key");
            if (key.empty()) c.error("empty metadata key");
            const auto raw_type = c.read<std::uint32_t>(key);
            if (raw_type > static_cast<std::uint32_t>(value_type::f64))
                c.error(lmtk::detail::concat("unknown value type ", raw_type, " for key '", key, "'"));
            value v = detail::read_value(c, static_cast<value_type>(raw_type), 0, key);
            if (!kv_index_.emplace(key, kvs_.size()).second) c.error(lmtk::detail::concat("duplicate metadata key '", key, "'"));
            kvs_.push_back({key, std::move(v)});
        }

        alignment_ = default_alignment;
        if (const value* a = find("general.alignment")) {
            const auto* u = std::get_if<std::uint32_t>(&a->data);
            if (!u) fail(p, ": invalid GGUF: general.alignment must be u32, not ", value_type_name(a->type()));
            if (*u == 0 || (*u & (*u - 1)) != 0) fail(p, ": invalid GGUF: general.alignment ", *u, " is not a power of two");
            alignment_ = *u;
        }

        tensors_.reserve(detail::reserve_hint(static_cast<std::uint64_t>(n_tensors)));
        for (std::int64_t i = 0; i < n_tensors; ++i) tensors_.push_back(read_tensor_info(c));

        data_offset_ = detail::align_up(c.pos(), alignment_);
        if (data_offset_ > map_.size()) {
            if (n_tensors > 0) fail(p, ": invalid GGUF: truncated before the tensor data section");
            data_offset_ = map_.size();
        }
        const std::uint64_t data_size = map_.size() - data_offset_;
        for (tensor_info& t : tensors_) {
            if (t.offset % alignment_ != 0)
                fail(p, ": invalid GGUF: tensor '", t.name, "' data offset ", t.offset, " is not a multiple of the alignment ",
                     alignment_);
            if (t.offset > data_size || t.n_bytes > data_size - t.offset)
                fail(p, ": invalid GGUF: tensor '", t.name, "' data [", t.offset, ", ", t.offset + t.n_bytes,
                     ") lies outside the data section of ", data_size, " bytes (truncated file?)");
            t.data = map_.data() + data_offset_ + t.offset;
        }
    }

    tensor_info read_tensor_info(detail::cursor& c) {
        tensor_info t;
        t.name = c.read_string("tensor name");
        if (t.name.size() > max_name_bytes)
            c.error(lmtk::detail::concat("tensor name of ", t.name.size(), " bytes is longer than ", max_name_bytes));
        t.n_dims = c.read<std::uint32_t>(t.name);
        if (t.n_dims > max_dims)
            c.error(lmtk::detail::concat("tensor '", t.name, "' has ", t.n_dims, " dimensions (at most ", max_dims, ")"));
        // `bound` multiplies the dimensions with zeros counted as ones: a zero-sized tensor such as
        // [0, 2^62, 2^62] must still be refused, or rows() (ne[1]*ne[2]*ne[3]) would overflow.
        constexpr auto i64_max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
        std::uint64_t n = 1;
        std::uint64_t bound = 1;
        for (std::uint32_t d = 0; d < t.n_dims; ++d) {
            const auto ne = c.read<std::int64_t>(t.name);
            if (ne < 0) c.error(lmtk::detail::concat("tensor '", t.name, "' has negative dimension ", ne));
            t.ne[d] = ne;
            if (ne > 1 && bound > i64_max / static_cast<std::uint64_t>(ne))
                c.error(lmtk::detail::concat("tensor '", t.name, "' element count overflows"));
            if (ne > 1) bound *= static_cast<std::uint64_t>(ne);
            n *= static_cast<std::uint64_t>(ne);
        }
        t.n_elements = n;
        const auto raw_type = c.read<std::uint32_t>(t.name);
        const auto traits = quant::traits_of(raw_type);
        if (!traits) c.error(lmtk::detail::concat("tensor '", t.name, "' has unknown type id ", raw_type));
        t.type = traits->type;
        if (t.ne[0] % static_cast<std::int64_t>(traits->block_elems) != 0)
            c.error(lmtk::detail::concat("tensor '", t.name, "' row of ", t.ne[0], " elements is not a multiple of the ",
                                   traits->name, " block size ", traits->block_elems));
        const std::uint64_t blocks = n / traits->block_elems;
        if (blocks > std::numeric_limits<std::uint64_t>::max() / traits->block_bytes)
            c.error(lmtk::detail::concat("tensor '", t.name, "' byte size overflows"));
        t.n_bytes = blocks * traits->block_bytes;
        t.offset = c.read<std::uint64_t>(t.name);
        if (!tensor_index_.emplace(t.name, tensors_.size()).second)
            c.error(lmtk::detail::concat("duplicate tensor name '", t.name, "'"));
        return t;
    }

    core::mapped_file map_;
    std::uint32_t version_ = 0;
    std::uint32_t alignment_ = default_alignment;
    std::uint64_t data_offset_ = 0;
    std::vector<kv> kvs_;
    std::vector<tensor_info> tensors_;
    std::unordered_map<std::string_view, std::size_t> kv_index_;
    std::unordered_map<std::string_view, std::size_t> tensor_index_;
};

}  // namespace lmtk::gguf
