#pragma once
// safetensors reader over a memory-mapped file, and Hugging Face checkpoints split into shards
// (model.safetensors.index.json).
//
//   u64le N | N bytes of JSON header | data
//
// The header is untrusted: its length is bounded before anything is read, its JSON nesting depth
// is bounded before the parser (which recurses) sees it, duplicate names are caught while it is
// parsed (a JSON object would silently keep the last one), every dtype must be known, every
// shape must be non-negative integers whose element and byte counts do not overflow, and the
// tensors' [begin, end) ranges, sorted, must tile the data section exactly: start at 0, no holes,
// no overlaps, end at the end of the file, with end - begin equal to the tensor's byte size. A
// broken or hostile file therefore ends in an lmtk::error naming the file, never in a read outside
// the mapping. Tensor bytes are views into the mapping and carry NO alignment guarantee: the
// header length is arbitrary, so copy (or check) before reinterpreting them as wider types.
#include <lmtk/core/error.hpp>
#include <lmtk/core/json.hpp>
#include <lmtk/core/mapped_file.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lmtk::safetensors {

// The reference implementation refuses larger headers; a real header is a few hundred KiB.
inline constexpr std::uint64_t max_header_bytes = 100'000'000;
// A valid header nests three deep (root, tensor entry, shape); anything much deeper is hostile
// and would only exercise the JSON parser's recursion.
inline constexpr std::size_t max_json_depth = 32;

enum class dtype : std::uint8_t {
    boolean, u8, i8, f8_e5m2, f8_e4m3, f8_e8m0, f8_e4m3fnuz, f8_e5m2fnuz,
    i16, u16, f16, bf16, i32, u32, f32, i64, u64, f64, c64, f4, f6_e2m3, f6_e3m2,
};

struct dtype_info {
    dtype type;
    std::string_view name;  // as spelled in the header
    std::uint32_t bits;     // per element; sub-byte types pack, a tensor must fill whole bytes
};

inline constexpr dtype_info dtypes[] = {
    {dtype::boolean, "BOOL", 8},         {dtype::u8, "U8", 8},
    {dtype::i8, "I8", 8},                {dtype::f8_e5m2, "F8_E5M2", 8},
    {dtype::f8_e4m3, "F8_E4M3", 8},      {dtype::f8_e8m0, "F8_E8M0", 8},
    {dtype::f8_e4m3fnuz, "F8_E4M3FNUZ", 8}, {dtype::f8_e5m2fnuz, "F8_E5M2FNUZ", 8},
    {dtype::i16, "I16", 16},             {dtype::u16, "U16", 16},
    {dtype::f16, "F16", 16},             {dtype::bf16, "BF16", 16},
    {dtype::i32, "I32", 32},             {dtype::u32, "U32", 32},
    {dtype::f32, "F32", 32},             {dtype::i64, "I64", 64},
    {dtype::u64, "U64", 64},             {dtype::f64, "F64", 64},
    {dtype::c64, "C64", 64},             {dtype::f4, "F4", 4},
    {dtype::f6_e2m3, "F6_E2M3", 6},      {dtype::f6_e3m2, "F6_E3M2", 6},
};

// info() indexes the table by enum value.
constexpr bool dtype_table_in_order() noexcept {
    for (std::size_t i = 0; i < std::size(dtypes); ++i)
        if (static_cast<std::size_t>(dtypes[i].type) != i) return false;
    return true;
}
static_assert(dtype_table_in_order());

constexpr const dtype_info& info(dtype t) noexcept { return dtypes[static_cast<std::size_t>(t)]; }
constexpr std::string_view dtype_name(dtype t) noexcept { return info(t).name; }

inline std::optional<dtype> dtype_from_name(std::string_view s) noexcept {
    for (const dtype_info& d : dtypes)
        if (d.name == s) return d.type;
    return std::nullopt;
}

struct tensor {
    std::string name;
    dtype type = dtype::f32;
    std::vector<std::uint64_t> shape;     // row-major, outermost first (PyTorch order); [] = scalar
    std::uint64_t n_elements = 1;
    std::uint64_t begin = 0, end = 0;     // data_offsets: relative to the data section
    std::span<const std::byte> bytes;     // into the mapping; any alignment

    std::size_t n_dims() const noexcept { return shape.size(); }
};

namespace detail {

// Parses untrusted JSON text (depth-bounded, duplicate keys refused); `what` names it in messages.
inline nlohmann::json parse_json(std::string_view text, const std::string& what) {
    return core::parse_json_file(text, what, max_json_depth);
}

// a * b, or nullopt on overflow.
inline std::optional<std::uint64_t> mul(std::uint64_t a, std::uint64_t b) noexcept {
    if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return std::nullopt;
    return a * b;
}

}  // namespace detail

// One .safetensors file.
class file {
public:
    explicit file(const std::string& path) : map_(path) { parse(); }

    file(const file&) = delete;
    file& operator=(const file&) = delete;
    file(file&&) noexcept = default;
    file& operator=(file&&) noexcept = default;

    const std::string& path() const noexcept { return map_.path(); }
    const core::mapped_file& mapping() const noexcept { return map_; }
    std::uint64_t header_bytes() const noexcept { return header_bytes_; }
    std::uint64_t data_offset() const noexcept { return 8 + header_bytes_; }

    // "__metadata__" (string -> string), e.g. {"format": "pt"}.
    const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
    // Tensors in data-offset order.
    const std::vector<tensor>& tensors() const noexcept { return tensors_; }

    const tensor* find(std::string_view name) const noexcept {
        const auto it = index_.find(std::string(name));
        return it == index_.end() ? nullptr : &tensors_[it->second];
    }
    const tensor& get(std::string_view name) const {
        const tensor* t = find(name);
        if (!t) fail(path(), ": tensor '", name, "' is missing");
        return *t;
    }

private:
    [[noreturn]] void invalid(auto&&... parts) const {
        fail(path(), ": invalid safetensors: ", std::forward<decltype(parts)>(parts)...);
    }

    void parse() {
        const std::uint64_t size = map_.size();
        if (size < 8) invalid("file of ", size, " bytes is too short for the header length");
        std::uint64_t n = 0;
        std::memcpy(&n, map_.data(), 8);  // little-endian on every target lmtk supports
        if (n > max_header_bytes) invalid("header length ", n, " exceeds the limit of ", max_header_bytes, " bytes");
        if (n > size - 8) invalid("header length ", n, " runs past the end of the file (", size, " bytes; truncated?)");
        header_bytes_ = n;
        const std::string_view text(reinterpret_cast<const char*>(map_.data()) + 8, static_cast<std::size_t>(n));
        if (text.empty() || text[0] != '{') invalid("the header does not start with '{'");

        nlohmann::json j;
        try {
            j = detail::parse_json(text, path() + ": invalid safetensors header");
        } catch (const std::bad_alloc&) {
            invalid("header too large to hold in memory");
        }
        if (!j.is_object()) invalid("the header is not a JSON object");

        const std::uint64_t data_size = size - 8 - n;
        for (auto it = j.begin(); it != j.end(); ++it) {
            if (it.key() == "__metadata__") {
                if (!it->is_object()) invalid("__metadata__ is not an object");
                for (auto m = it->begin(); m != it->end(); ++m) {
                    if (!m->is_string()) invalid("__metadata__ value of '", m.key(), "' is not a string");
                    metadata_.emplace(m.key(), m->get<std::string>());
                }
                continue;
            }
            tensors_.push_back(read_tensor(it.key(), *it, data_size));
        }

        // The data section must be exactly the tensors, back to back, in some order.
        std::sort(tensors_.begin(), tensors_.end(), [](const tensor& a, const tensor& b) {
            return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
        });
        std::uint64_t expect = 0;
        for (const tensor& t : tensors_) {
            if (t.begin < expect)
                invalid("tensor '", t.name, "' data [", t.begin, ", ", t.end, ") overlaps the previous tensor");
            if (t.begin > expect) invalid("a hole in the data section before tensor '", t.name, "' at offset ", expect);
            expect = t.end;
        }
        if (expect != data_size)
            invalid("the tensors cover ", expect, " bytes of a ", data_size, " byte data section",
                    expect < data_size ? " (trailing bytes)" : " (truncated file?)");

        const std::byte* base = map_.data() + 8 + n;
        index_.reserve(tensors_.size());
        for (std::size_t i = 0; i < tensors_.size(); ++i) {
            tensor& t = tensors_[i];
            t.bytes = {base + t.begin, static_cast<std::size_t>(t.end - t.begin)};
            index_.emplace(t.name, i);
        }
    }

    tensor read_tensor(const std::string& name, const nlohmann::json& e, std::uint64_t data_size) const {
        if (!e.is_object()) invalid("entry '", name, "' is not an object");
        tensor t;
        t.name = name;
        const auto dt = e.find("dtype");
        if (dt == e.end() || !dt->is_string()) invalid("tensor '", name, "' has no dtype string");
        const auto type = dtype_from_name(dt->get_ref<const std::string&>());
        if (!type) invalid("tensor '", name, "' has unknown dtype '", dt->get_ref<const std::string&>(), "'");
        t.type = *type;

        const auto shape = e.find("shape");
        if (shape == e.end() || !shape->is_array()) invalid("tensor '", name, "' has no shape array");
        // The byte count ties a shape to the file only when no dimension is zero: [0, 2^63] is
        // an empty tensor whose other dimension would still overflow whatever multiplies it
        // (a row count, a GGUF ne, a packed-word count). So the product of the non-zero
        // dimensions must not exceed the elements the data section could hold (at least 1).
        const std::uint64_t max_elements = std::max<std::uint64_t>(
            1, (data_size > std::numeric_limits<std::uint64_t>::max() / 8 ? std::numeric_limits<std::uint64_t>::max() : data_size * 8) /
                   info(t.type).bits);
        std::uint64_t n = 1, nonzero = 1;
        for (const auto& d : *shape) {
            // is_number_unsigned: non-negative integers only (no -1, no 2.5, no "3")
            if (!d.is_number_unsigned()) invalid("tensor '", name, "' has a shape entry that is not a non-negative integer");
            const auto v = d.get<std::uint64_t>();
            if (v != 0) {
                const auto p = detail::mul(nonzero, v);
                if (!p || *p > max_elements)
                    invalid("tensor '", name, "' has dimensions larger than the file could hold (", shape->dump(), ")");
                nonzero = *p;
            }
            n = v == 0 ? 0 : n * v;  // at most `nonzero`: cannot overflow
            t.shape.push_back(v);
        }
        t.n_elements = n;
        const auto bits = detail::mul(n, info(t.type).bits);  // n <= max_elements: cannot overflow
        if (!bits) invalid("tensor '", name, "' byte size overflows");
        if (*bits % 8 != 0) invalid("tensor '", name, "' of ", n, " ", dtype_name(t.type), " values is not whole bytes");

        const auto off = e.find("data_offsets");
        if (off == e.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
            !(*off)[1].is_number_unsigned())
            invalid("tensor '", name, "' data_offsets must be two non-negative integers");
        t.begin = (*off)[0].get<std::uint64_t>();
        t.end = (*off)[1].get<std::uint64_t>();
        if (t.end < t.begin) invalid("tensor '", name, "' data_offsets [", t.begin, ", ", t.end, "] end before they begin");
        if (t.end - t.begin != *bits / 8)
            invalid("tensor '", name, "' data_offsets span ", t.end - t.begin, " bytes, but ", dtype_name(t.type), " ",
                    shape_string(t.shape), " needs ", *bits / 8);
        if (t.end > data_size)
            invalid("tensor '", name, "' data [", t.begin, ", ", t.end, ") lies outside the data section of ", data_size,
                    " bytes (truncated file?)");
        return t;
    }

    static std::string shape_string(const std::vector<std::uint64_t>& s) {
        std::string out = "[";
        for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
        return out + "]";
    }

    core::mapped_file map_;
    std::uint64_t header_bytes_ = 0;
    std::map<std::string, std::string> metadata_;
    std::vector<tensor> tensors_;
    std::unordered_map<std::string, std::size_t> index_;
};

// The tensors of a checkpoint: one .safetensors file, or the shards an index names. Shards are
// opened once each; a tensor name may appear in only one shard.
class checkpoint {
public:
    // `path`: a .safetensors file, a model.safetensors.index.json, or a folder holding either
    // (model.safetensors is preferred when both are there).
    explicit checkpoint(const std::string& path) {
        namespace fs = std::filesystem;
        std::error_code ec;
        if (fs::is_directory(path, ec)) {
            const fs::path dir(path);
            if (fs::is_regular_file(dir / "model.safetensors", ec)) open_single((dir / "model.safetensors").string());
            else if (fs::is_regular_file(dir / "model.safetensors.index.json", ec))
                open_index((dir / "model.safetensors.index.json").string());
            else if (fs::exists(dir / "pytorch_model.bin", ec) || fs::exists(dir / "pytorch_model.bin.index.json", ec))
                fail(path, ": PyTorch .bin checkpoints are not supported (pickle); save the model as safetensors");
            else
                fail(path, ": no model.safetensors or model.safetensors.index.json in the folder");
        } else if (path.ends_with(".json")) {
            open_index(path);
        } else {
            open_single(path);
        }
    }

    const std::vector<std::unique_ptr<file>>& files() const noexcept { return files_; }
    // Every tensor of every shard, shard by shard.
    std::vector<const tensor*> tensors() const {
        std::vector<const tensor*> out;
        for (const auto& f : files_)
            for (const tensor& t : f->tensors()) out.push_back(&t);
        return out;
    }
    const tensor* find(std::string_view name) const noexcept {
        const auto it = where_.find(std::string(name));
        return it == where_.end() ? nullptr : it->second.second;
    }
    // The file a tensor lives in (for error messages), or nullptr.
    const file* file_of(std::string_view name) const noexcept {
        const auto it = where_.find(std::string(name));
        return it == where_.end() ? nullptr : it->second.first;
    }
    // __metadata__ of the first file (HF writes the same in every shard).
    const std::map<std::string, std::string>& metadata() const noexcept { return files_.front()->metadata(); }

private:
    void add(std::unique_ptr<file> f) {
        for (const tensor& t : f->tensors())
            if (!where_.emplace(t.name, std::pair{f.get(), &t}).second)
                fail(f->path(), ": tensor '", t.name, "' also appears in ", where_.at(t.name).first->path());
        files_.push_back(std::move(f));
    }

    void open_single(const std::string& path) { add(std::make_unique<file>(path)); }

    void open_index(const std::string& index_path) {
        namespace fs = std::filesystem;
        const core::mapped_file m(index_path);
        if (m.size() > max_header_bytes) fail(index_path, ": index of ", m.size(), " bytes is implausibly large");
        const nlohmann::json j =
            detail::parse_json(std::string_view(reinterpret_cast<const char*>(m.data()), m.size()), index_path);
        if (!j.is_object()) fail(index_path, ": not a JSON object");
        const auto wm = j.find("weight_map");
        if (wm == j.end() || !wm->is_object() || wm->empty()) fail(index_path, ": no weight_map object");

        const fs::path dir = fs::path(index_path).parent_path();
        std::map<std::string, std::size_t> shard_of_name;  // shard file name -> files_ index
        std::vector<std::pair<std::string, std::string>> entries;
        for (auto it = wm->begin(); it != wm->end(); ++it) {
            if (!it->is_string()) fail(index_path, ": weight_map entry '", it.key(), "' is not a file name");
            const std::string& shard = it->get_ref<const std::string&>();
            // Shards are plain file names next to the index: never a path that leaves the folder.
            if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos ||
                shard.find('\\') != std::string::npos || shard.find('\0') != std::string::npos)
                fail(index_path, ": weight_map entry '", it.key(), "' names '", shard, "', not a file in this folder");
            entries.emplace_back(it.key(), shard);
            if (!shard_of_name.count(shard)) {
                shard_of_name.emplace(shard, files_.size());
                add(std::make_unique<file>((dir / shard).string()));
            }
        }
        for (const auto& [name, shard] : entries) {
            const file& f = *files_[shard_of_name.at(shard)];
            if (!f.find(name)) fail(index_path, ": weight_map puts '", name, "' in ", shard, ", which does not hold it");
        }
    }

    std::vector<std::unique_ptr<file>> files_;
    std::unordered_map<std::string, std::pair<const file*, const tensor*>> where_;
};

}  // namespace lmtk::safetensors
