#pragma once
// GGUF v3 writer: metadata of every value type (nested arrays included) and tensors given as
// bytes or as a callback that streams them, written so that lmtk::gguf::file reads back exactly
// what was set.
//
// Everything that the reader would refuse (an unknown type, a bad shape, a name too long, a
// wrongly typed general.alignment, arrays nested too deeply) is refused here when it is added,
// so a file this writer produces always loads. The file is written under a temporary name in
// the destination folder and renamed over the final name only once it is complete and synced:
// a failed or interrupted write never leaves a half file under the final name, and a file that
// is being read (mapped) while it is replaced keeps its old contents for the reader.
#include <lmtk/core/error.hpp>
#include <lmtk/io/gguf.hpp>
#include <lmtk/quant/ggml_type.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <limits>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace lmtk::gguf {

namespace detail {

// The GGUF value type that stores a C++ type; strings are anything viewable as std::string_view.
template <class T>
constexpr value_type value_type_for() {
    if constexpr (std::is_same_v<T, bool>) return value_type::boolean;
    else if constexpr (std::is_same_v<T, std::uint8_t>) return value_type::u8;
    else if constexpr (std::is_same_v<T, std::int8_t>) return value_type::i8;
    else if constexpr (std::is_same_v<T, std::uint16_t>) return value_type::u16;
    else if constexpr (std::is_same_v<T, std::int16_t>) return value_type::i16;
    else if constexpr (std::is_same_v<T, std::uint32_t>) return value_type::u32;
    else if constexpr (std::is_same_v<T, std::int32_t>) return value_type::i32;
    else if constexpr (std::is_same_v<T, float>) return value_type::f32;
    else if constexpr (std::is_same_v<T, std::uint64_t>) return value_type::u64;
    else if constexpr (std::is_same_v<T, std::int64_t>) return value_type::i64;
    else if constexpr (std::is_same_v<T, double>) return value_type::f64;
    else if constexpr (std::is_same_v<T, array_value>) return value_type::array;
    else if constexpr (std::is_convertible_v<const T&, std::string_view>) return value_type::string;
    else static_assert(sizeof(T) == 0, "no GGUF value type stores this C++ type");
}

// Buffered output to a temporary file next to `final_path`; commit() syncs it and renames it
// into place. Destroyed uncommitted (an exception on the way), it removes the temporary file.
class output_file {
public:
    explicit output_file(std::string final_path) : final_(std::move(final_path)) {
        // The temporary lives in the destination folder so that rename() is atomic (same file
        // system). O_EXCL plus a per-process counter keeps concurrent writers apart; mode 0666
        // lets the umask decide the permissions, as for any new file.
        static std::atomic<unsigned> counter{0};
        for (int attempt = 0; attempt < 100 && fd_ < 0; ++attempt) {
            temp_ = lmtk::detail::concat(final_, ".tmp.", ::getpid(), ".", counter.fetch_add(1));
            fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
            if (fd_ < 0 && errno != EEXIST) fail(final_, ": cannot create ", temp_, ": ", std::strerror(errno));
        }
        if (fd_ < 0) fail(final_, ": cannot create a temporary file next to it");
        buf_.reserve(buf_cap);
    }
    output_file(const output_file&) = delete;
    output_file& operator=(const output_file&) = delete;
    ~output_file() {
        if (fd_ >= 0) {
            ::close(fd_);
            ::unlink(temp_.c_str());
        }
    }

    const std::string& path() const noexcept { return final_; }
    std::uint64_t pos() const noexcept { return pos_; }

    void write(const void* p, std::size_t n) {
        const auto* b = static_cast<const char*>(p);
        pos_ += n;
        if (buf_.size() + n <= buf_cap) {
            buf_.insert(buf_.end(), b, b + n);
            return;
        }
        flush();
        if (n < buf_cap) buf_.insert(buf_.end(), b, b + n);
        else write_all(b, n);  // large tensors go straight to the file, not through the buffer
    }
    void pad_to(std::uint64_t alignment) {
        static constexpr char zeros[256] = {};
        std::uint64_t n = gguf::detail::align_up(pos_, alignment) - pos_;
        while (n > 0) {
            const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(n, sizeof zeros));
            write(zeros, k);
            n -= k;
        }
    }

    void commit() {
        flush();
        if (::fsync(fd_) != 0) fail(final_, ": cannot sync ", temp_, ": ", std::strerror(errno));
        const int fd = fd_;
        fd_ = -1;
        if (::close(fd) != 0) {
            const int e = errno;
            ::unlink(temp_.c_str());
            fail(final_, ": cannot close ", temp_, ": ", std::strerror(e));
        }
        if (::rename(temp_.c_str(), final_.c_str()) != 0) {
            const int e = errno;
            ::unlink(temp_.c_str());
            fail(final_, ": cannot rename ", temp_, " to it: ", std::strerror(e));
        }
        // Make the rename itself durable; failing here is harmless for correctness, so ignored.
        std::string dir = std::filesystem::path(final_).parent_path().string();
        if (dir.empty()) dir = ".";
        if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
            (void)::fsync(dfd);
            ::close(dfd);
        }
    }

private:
    static constexpr std::size_t buf_cap = std::size_t{1} << 20;

    void flush() {
        write_all(buf_.data(), buf_.size());
        buf_.clear();
    }
    void write_all(const char* p, std::size_t n) {
        while (n > 0) {
            const ::ssize_t w = ::write(fd_, p, n);
            if (w < 0) {
                if (errno == EINTR) continue;
                fail(final_, ": cannot write ", temp_, ": ", std::strerror(errno));
            }
            p += w;
            n -= static_cast<std::size_t>(w);
        }
    }

    std::string final_;
    std::string temp_;
    int fd_ = -1;
    std::vector<char> buf_;
    std::uint64_t pos_ = 0;
};

}  // namespace detail

// What a tensor callback writes its bytes into, in order. Writing more than the tensor's size
// throws at once; writing less is caught when the callback returns.
class tensor_sink {
public:
    void write(std::span<const std::byte> bytes) { write(bytes.data(), bytes.size()); }
    void write(const void* p, std::size_t n) {
        if (n > remaining_)
            fail(out_.path(), ": tensor '", name_, "': the callback wrote more than the tensor's ", size_, " bytes");
        out_.write(p, n);
        remaining_ -= n;
    }
    // Any trivially copyable values (floats, quant blocks) as their bytes.
    template <class T>
        requires std::is_trivially_copyable_v<T>
    void write(std::span<const T> values) {
        write(values.data(), values.size_bytes());
    }
    std::uint64_t remaining() const noexcept { return remaining_; }

private:
    friend class writer;
    tensor_sink(detail::output_file& out, std::string_view name, std::uint64_t size)
        : out_(out), name_(name), size_(size), remaining_(size) {}

    detail::output_file& out_;
    std::string_view name_;
    std::uint64_t size_;
    std::uint64_t remaining_;
};

// Builds a GGUF v3 file in memory (metadata, tensor descriptions, references to tensor bytes)
// and writes it with write(). Metadata keeps insertion order; setting an existing key replaces
// its value in place. Strings are copied into the writer, so the values passed in may be
// temporaries; tensor bytes given as a span are NOT copied and must stay valid until write().
class writer {
public:
    using fill_fn = std::function<void(tensor_sink&)>;

    // A tensor shape, ne[0] innermost (contiguous), as in GGUF: {64, 512} is 512 rows of 64.
    struct shape {
        std::vector<std::int64_t> ne;
        shape(std::initializer_list<std::int64_t> dims) : ne(dims) {}
        template <std::ranges::input_range R>
            requires std::is_integral_v<std::ranges::range_value_t<R>>
        shape(const R& dims) : ne(std::ranges::begin(dims), std::ranges::end(dims)) {}
    };

    writer() = default;
    // Copying would leave the copy's string views pointing into this writer's storage.
    writer(const writer&) = delete;
    writer& operator=(const writer&) = delete;
    writer(writer&&) noexcept = default;
    writer& operator=(writer&&) noexcept = default;

    // --- metadata -------------------------------------------------------------------------------
    void set(std::string_view key, std::uint8_t v) { put(key, make(v)); }
    void set(std::string_view key, std::int8_t v) { put(key, make(v)); }
    void set(std::string_view key, std::uint16_t v) { put(key, make(v)); }
    void set(std::string_view key, std::int16_t v) { put(key, make(v)); }
    void set(std::string_view key, std::uint32_t v) { put(key, make(v)); }
    void set(std::string_view key, std::int32_t v) { put(key, make(v)); }
    void set(std::string_view key, float v) { put(key, make(v)); }
    void set(std::string_view key, bool v) { put(key, make(v)); }
    void set(std::string_view key, std::uint64_t v) { put(key, make(v)); }
    void set(std::string_view key, std::int64_t v) { put(key, make(v)); }
    void set(std::string_view key, double v) { put(key, make(v)); }
    void set(std::string_view key, std::string_view v) { put(key, make(v)); }
    // Without these a string literal would convert to bool, the one built-in conversion.
    void set(std::string_view key, const char* v) { set(key, std::string_view(v)); }
    void set(std::string_view key, const std::string& v) { set(key, std::string_view(v)); }
    // Any value, arrays nested to any depth the reader accepts; every item of an array must
    // have the array's element type.
    void set(std::string_view key, const value& v) { put(key, v); }
    void set(std::string_view key, const array_value& a) { put(key, value{value::storage(std::in_place_type<array_value>, a)}); }

    // An array from any range of one scalar type, of strings, or of array_value (nested).
    template <std::ranges::input_range R>
    void set_array(std::string_view key, const R& items) {
        using T = std::remove_cvref_t<std::ranges::range_value_t<R>>;
        constexpr value_type elem = detail::value_type_for<T>();
        array_value a;
        a.elem_type = elem;
        if constexpr (std::ranges::sized_range<R>) a.items.reserve(std::ranges::size(items));
        for (auto&& x : items) {
            if constexpr (elem == value_type::string) a.items.push_back(make(std::string_view(x)));
            else a.items.push_back(make(static_cast<T>(x)));
        }
        set(key, a);
    }
    template <class T>
    void set_array(std::string_view key, std::initializer_list<T> items) {
        set_array<std::initializer_list<T>>(key, items);
    }

    // general.alignment as the reader wants it: u32, a power of two. Tensor offsets and the
    // data section follow it whenever the key is set, also when copied from another file.
    void set_alignment(std::uint32_t a) {
        if (a == 0 || (a & (a - 1)) != 0) fail("gguf writer: alignment ", a, " is not a power of two");
        set("general.alignment", a);
    }
    std::uint32_t alignment() const {
        const value* v = find("general.alignment");
        return v ? std::get<std::uint32_t>(v->data) : default_alignment;  // put() checked the type
    }

    bool erase(std::string_view key) {
        const auto it = index_.find(key);
        if (it == index_.end()) return false;
        kvs_.erase(kvs_.begin() + static_cast<std::ptrdiff_t>(it->second));
        reindex();
        return true;
    }
    const value* find(std::string_view key) const noexcept {
        const auto it = index_.find(key);
        return it == index_.end() ? nullptr : &kvs_[it->second].val;
    }
    const std::vector<kv>& metadata() const noexcept { return kvs_; }

    // Every key of `f`, in its order, replacing keys already set here. Strings are copied, so
    // `f` may be closed afterwards; only tensors added from it by reference need it open.
    void copy_metadata_from(const file& f) {
        for (const kv& e : f.metadata()) put(e.key, e.val);
    }

    // --- tensors --------------------------------------------------------------------------------
    // `bytes` must be exactly the tensor's size and stay valid until write() returns.
    void add_tensor(std::string_view name, quant::ggml_type type, const shape& ne, std::span<const std::byte> bytes) {
        pending& t = add(name, type, ne);
        check_size(t, bytes.size());
        t.bytes = bytes;
    }
    // The writer keeps the bytes.
    void add_tensor(std::string_view name, quant::ggml_type type, const shape& ne, std::vector<std::byte>&& bytes) {
        pending& t = add(name, type, ne);
        check_size(t, bytes.size());
        t.owned = std::move(bytes);
        t.bytes = t.owned;
    }
    // `fill` streams the tensor's bytes into the sink when write() reaches the tensor, so a
    // converter holds one tensor at a time, not the whole model.
    void add_tensor(std::string_view name, quant::ggml_type type, const shape& ne, fill_fn fill) {
        if (!fill) fail("gguf writer: tensor '", name, "' has an empty callback");
        pending& t = add(name, type, ne);
        t.fill = std::move(fill);
    }
    // A tensor of a file that was read, bytes by reference: the file must stay open until write().
    void add_tensor(const tensor_info& src) {
        add_tensor(src.name, src.type, std::span<const std::int64_t>(src.ne.data(), src.n_dims),
                   std::span<const std::byte>(src.data, static_cast<std::size_t>(src.n_bytes)));
    }

    std::size_t tensor_count() const noexcept { return tensors_.size(); }

    // Writes the file: header, metadata, tensor infos, then each tensor's bytes padded to the
    // alignment. Errors (I/O, a callback writing the wrong number of bytes, an exception from a
    // callback) propagate and leave no file under `path`; an existing file there is untouched.
    void write(const std::string& path) const {
        const std::uint64_t align = alignment();
        std::vector<std::uint64_t> offsets;
        offsets.reserve(tensors_.size());
        std::uint64_t offset = 0;
        for (const pending& t : tensors_) {
            offsets.push_back(offset);
            offset += gguf::detail::align_up(t.n_bytes, align);
        }

        detail::output_file out(path);
        put_raw(out, magic);
        put_raw(out, std::uint32_t{3});
        put_raw(out, static_cast<std::int64_t>(tensors_.size()));
        put_raw(out, static_cast<std::int64_t>(kvs_.size()));
        for (const kv& e : kvs_) {
            put_string(out, e.key);
            put_raw(out, static_cast<std::uint32_t>(e.val.type()));
            put_value(out, e.val);
        }
        for (std::size_t i = 0; i < tensors_.size(); ++i) {
            const pending& t = tensors_[i];
            put_string(out, t.name);
            put_raw(out, t.n_dims);
            for (std::uint32_t d = 0; d < t.n_dims; ++d) put_raw(out, t.ne[d]);
            put_raw(out, static_cast<std::uint32_t>(t.type));
            put_raw(out, offsets[i]);
        }
        out.pad_to(align);
        const std::uint64_t data_start = out.pos();
        for (std::size_t i = 0; i < tensors_.size(); ++i) {
            const pending& t = tensors_[i];
            if (t.fill) {
                tensor_sink sink(out, t.name, t.n_bytes);
                t.fill(sink);
                if (sink.remaining() != 0)
                    fail(path, ": tensor '", t.name, "': the callback wrote ", t.n_bytes - sink.remaining(), " of its ",
                         t.n_bytes, " bytes");
            } else {
                out.write(t.bytes.data(), t.bytes.size());
            }
            out.pad_to(align);
            // The layout is the one ggml insists on: tensors in info order, each at its offset.
            if (out.pos() - data_start != offsets[i] + gguf::detail::align_up(t.n_bytes, align))
                fail(path, ": internal error: tensor '", t.name, "' ends at the wrong offset");
        }
        out.commit();
    }

private:
    struct pending {
        std::string_view name;
        quant::ggml_type type{};
        std::array<std::int64_t, max_dims> ne{1, 1, 1, 1};
        std::uint32_t n_dims = 0;
        std::uint64_t n_bytes = 0;
        std::span<const std::byte> bytes;
        std::vector<std::byte> owned;
        fill_fn fill;
    };

    template <class T>
    static value make(T v) {
        return value{value::storage(std::in_place_type<T>, v)};
    }

    // Interned strings: a deque never moves its elements, so views into them stay valid as it
    // grows, and moving the writer moves the deque's blocks without relocating them.
    std::string_view intern(std::string_view s) { return strings_.emplace_back(s); }

    // A deep copy of `v` whose strings live in this writer, after checking what the reader checks.
    value own(const value& v, std::string_view key, std::size_t depth) {
        if (const auto* s = v.as_string()) return make(intern(*s));
        const array_value* a = v.as_array();
        if (!a) return v;
        if (depth >= max_array_depth)
            fail("gguf writer: key '", key, "': arrays nested deeper than ", max_array_depth, " levels");
        if (static_cast<std::uint32_t>(a->elem_type) > static_cast<std::uint32_t>(value_type::f64))
            fail("gguf writer: key '", key, "': unknown array element type ", static_cast<std::uint32_t>(a->elem_type));
        array_value copy;
        copy.elem_type = a->elem_type;
        copy.items.reserve(a->items.size());
        for (const value& item : a->items) {
            if (item.type() != a->elem_type)
                fail("gguf writer: key '", key, "': array of ", value_type_name(a->elem_type), " holds a ",
                     value_type_name(item.type()));
            copy.items.push_back(own(item, key, depth + 1));
        }
        return value{value::storage(std::in_place_type<array_value>, std::move(copy))};
    }

    void put(std::string_view key, const value& v) {
        if (key.empty()) fail("gguf writer: empty metadata key");
        if (key == "general.alignment") {
            const auto* u = std::get_if<std::uint32_t>(&v.data);
            if (!u) fail("gguf writer: general.alignment must be u32, not ", value_type_name(v.type()));
            if (*u == 0 || (*u & (*u - 1)) != 0) fail("gguf writer: general.alignment ", *u, " is not a power of two");
        }
        value owned = own(v, key, 0);
        if (const auto it = index_.find(key); it != index_.end()) {
            kvs_[it->second].val = std::move(owned);
            return;
        }
        const std::string_view k = intern(key);
        index_.emplace(k, kvs_.size());
        kvs_.push_back({k, std::move(owned)});
    }

    void reindex() {
        index_.clear();
        for (std::size_t i = 0; i < kvs_.size(); ++i) index_.emplace(kvs_[i].key, i);
    }

    // Validates a tensor as the reader will, and appends it without bytes yet.
    pending& add(std::string_view name, quant::ggml_type type, const shape& shp) {
        if (name.size() > max_name_bytes)
            fail("gguf writer: tensor name '", name, "' is longer than ", max_name_bytes, " bytes");
        if (tensor_index_.contains(name)) fail("gguf writer: duplicate tensor name '", name, "'");
        const auto traits = quant::traits_of(static_cast<std::uint32_t>(type));
        if (!traits) fail("gguf writer: tensor '", name, "' has unknown type id ", static_cast<std::uint32_t>(type));
        if (shp.ne.size() > max_dims)
            fail("gguf writer: tensor '", name, "' has ", shp.ne.size(), " dimensions (at most ", max_dims, ")");
        pending t;
        t.type = type;
        t.n_dims = static_cast<std::uint32_t>(shp.ne.size());
        constexpr auto i64_max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
        std::uint64_t n = 1, bound = 1;  // bound: zeros counted as ones, as the reader counts them
        for (std::size_t d = 0; d < shp.ne.size(); ++d) {
            const std::int64_t e = shp.ne[d];
            if (e < 0) fail("gguf writer: tensor '", name, "' has negative dimension ", e);
            if (e > 1 && bound > i64_max / static_cast<std::uint64_t>(e))
                fail("gguf writer: tensor '", name, "' element count overflows");
            if (e > 1) bound *= static_cast<std::uint64_t>(e);
            n *= static_cast<std::uint64_t>(e);
            t.ne[d] = e;
        }
        if (t.ne[0] % static_cast<std::int64_t>(traits->block_elems) != 0)
            fail("gguf writer: tensor '", name, "' row of ", t.ne[0], " elements is not a multiple of the ", traits->name,
                 " block size ", traits->block_elems);
        const std::uint64_t blocks = n / traits->block_elems;
        if (blocks > std::numeric_limits<std::uint64_t>::max() / traits->block_bytes)
            fail("gguf writer: tensor '", name, "' byte size overflows");
        t.n_bytes = blocks * traits->block_bytes;
        t.name = intern(name);
        tensor_index_.emplace(t.name, tensors_.size());
        return tensors_.emplace_back(std::move(t));
    }

    void check_size(pending& t, std::size_t got) {
        if (got == t.n_bytes) return;
        const std::string name(t.name);
        const std::uint64_t want = t.n_bytes;
        tensor_index_.erase(t.name);
        tensors_.pop_back();  // refused: the writer stays as it was before the call
        fail("gguf writer: tensor '", name, "' needs ", want, " bytes, got ", got);
    }

    template <class T>
    static void put_raw(detail::output_file& out, T v) {
        static_assert(std::is_trivially_copyable_v<T>);
        out.write(&v, sizeof v);  // GGUF is little-endian, as is every host lmtk supports
    }
    static void put_string(detail::output_file& out, std::string_view s) {
        put_raw(out, static_cast<std::uint64_t>(s.size()));
        out.write(s.data(), s.size());
    }
    static void put_value(detail::output_file& out, const value& v) {
        std::visit(
            [&](const auto& x) {
                using T = std::decay_t<decltype(x)>;
                if constexpr (std::is_same_v<T, std::string_view>) {
                    put_string(out, x);
                } else if constexpr (std::is_same_v<T, array_value>) {
                    put_raw(out, static_cast<std::uint32_t>(x.elem_type));
                    put_raw(out, static_cast<std::uint64_t>(x.items.size()));
                    for (const value& item : x.items) put_value(out, item);
                } else if constexpr (std::is_same_v<T, bool>) {
                    put_raw(out, static_cast<std::uint8_t>(x ? 1 : 0));  // sizeof(bool) is not fixed
                } else {
                    put_raw(out, x);
                }
            },
            v.data);
    }

    std::deque<std::string> strings_;
    std::vector<kv> kvs_;
    std::unordered_map<std::string_view, std::size_t> index_;
    std::deque<pending> tensors_;  // deque: `owned` bytes and their spans never move
    std::unordered_map<std::string_view, std::size_t> tensor_index_;
};

}  // namespace lmtk::gguf
