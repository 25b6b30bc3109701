// lmtk single-header edition: generated from include/lmtk/lmtk.hpp by
// tools/amalgamate/amalgamate.py (tools/amalgamate/config.json). Do not edit: edit the headers under
// include/ and run `python3 tools/amalgamate/amalgamate.py` to regenerate single_include/lmtk/lmtk.hpp.
#pragma once
// ---- include/lmtk/lmtk.hpp
// lmtk: header-only toolkit for running large language models locally.
//
//   #include <lmtk/lmtk.hpp>
//
// brings in everything that needs no extra library: GGUF I/O, the tensor formats and their
// kernels, the Llama-family model, the native tokenizer, the samplers and the generation
// pipeline. The sentencepiece adapter (<lmtk/tokenize/sentencepiece.hpp>) is separate because
// it links libsentencepiece (CMake target lmtk::sentencepiece).
// #include <lmtk/core/error.hpp>
// lmtk::error: the one exception type of the library. Load-time and input errors throw it;
// hot-path kernels are noexcept and never see unchecked input.
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace lmtk {

class error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Parts>
std::string concat(Parts&&... parts) {
    std::ostringstream os;
    (os << ... << std::forward<Parts>(parts));
    return os.str();
}
}  // namespace detail

// Throws lmtk::error with the parts streamed together: fail("bad magic in ", path).
template <class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
    throw error(detail::concat(std::forward<Parts>(parts)...));
}

}  // namespace lmtk
// #include <lmtk/core/fp16.hpp>
// IEEE binary16 and bfloat16 <-> float32, bit-exact and branch-light. Quant blocks keep their
// scales as raw uint16_t so that host and device share one layout.
#include <bit>
#include <cstdint>

namespace lmtk::core {

constexpr float fp16_to_f32(std::uint16_t h) noexcept {
    // Shift the half into float position, rescale the exponent by 2^112 (15 -> 127 bias), and
    // treat inf/NaN separately; subnormal halves come out exact through the multiply.
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t rest = static_cast<std::uint32_t>(h & 0x7fffu) << 13;
    if ((h & 0x7c00u) == 0x7c00u) return std::bit_cast<float>(sign | 0x7f800000u | rest);
    const float magnitude = std::bit_cast<float>(rest) * 0x1p112f;
    return std::bit_cast<float>(sign | std::bit_cast<std::uint32_t>(magnitude));
}

constexpr std::uint16_t f32_to_fp16(float f) noexcept {
    // Round to nearest even, like the hardware conversion (vcvtps2ph with imm 0).
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    const std::uint32_t sign = (x >> 16) & 0x8000u;
    const std::uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));  // NaN
    if (ax >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // overflow -> inf
    if (ax < 0x38800000u) {  // result is subnormal or zero
        // Add 0.5 so that the float adder rounds the mantissa for us (ties to even).
        const float r = std::bit_cast<float>(ax) + 0.5f;
        return static_cast<std::uint16_t>(sign | (std::bit_cast<std::uint32_t>(r) - 0x3f000000u));
    }
    const std::uint32_t odd = (ax >> 13) & 1u;
    const std::uint32_t rounded = ax + 0xc8000fffu + odd;  // rebias exponent (-112<<23) and round
    return static_cast<std::uint16_t>(sign | (rounded >> 13));
}

constexpr float bf16_to_f32(std::uint16_t b) noexcept {
    return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

constexpr std::uint16_t f32_to_bf16(float f) noexcept {
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // quiet NaN
    return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

}  // namespace lmtk::core
// #include <lmtk/core/mapped_file.hpp>
// A read-only memory mapping of a whole file: weights are used in place from it, or copied
// once into a layout of their own (anonymous_memory, below) with the mapped pages let go, so
// a model costs no second copy of its tensors.
// #include <lmtk/core/error.hpp>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace lmtk::core {

class mapped_file {
public:
    mapped_file() = default;
    explicit mapped_file(std::string path) : path_(std::move(path)) {
        const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) fail(path_, ": cannot open: ", std::strerror(errno));
        struct stat st {};
        if (::fstat(fd, &st) != 0) {
            const int e = errno;
            ::close(fd);
            fail(path_, ": cannot stat: ", std::strerror(e));
        }
        if (!S_ISREG(st.st_mode)) {
            ::close(fd);
            fail(path_, ": not a regular file");
        }
        size_ = static_cast<std::size_t>(st.st_size);
        if (size_ > 0) {
            void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) {
                const int e = errno;
                ::close(fd);
                fail(path_, ": cannot map ", size_, " bytes: ", std::strerror(e));
            }
            data_ = static_cast<const std::byte*>(p);
        }
        fd_ = fd;  // kept for read_at(): reads that do not map pages into this process
    }
    mapped_file(const mapped_file&) = delete;
    mapped_file& operator=(const mapped_file&) = delete;
    mapped_file(mapped_file&& o) noexcept { swap(o); }
    mapped_file& operator=(mapped_file&& o) noexcept {
        if (this != &o) {
            reset();
            swap(o);
        }
        return *this;
    }
    ~mapped_file() { reset(); }

    const std::byte* data() const noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }
    std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
    const std::string& path() const noexcept { return path_; }

    // Hint that the range will be read soon (weights on first use).
    void will_need(std::size_t offset, std::size_t length) const noexcept {
        if (!data_ || offset >= size_) return;
        const std::size_t page = 4096;
        const std::size_t start = offset / page * page;
        ::madvise(const_cast<std::byte*>(data_) + start, std::min(size_ - start, length + (offset - start)),
                  MADV_WILLNEED);
    }

    // Whether [p, p + length) lies inside this mapping.
    bool contains(const std::byte* p, std::size_t length) const noexcept {
        return data_ && p >= data_ && length <= size_ && static_cast<std::size_t>(p - data_) <= size_ - length;
    }

    // Copies [p, p + length) of the mapping into `out` with pread(2), so that the file's pages
    // stay in the page cache and out of this process's resident set: for rows looked up at
    // random over a long run (token embeddings), where reading through the mapping would
    // leave every page ever touched resident (the kernel maps 64 KiB around each fault).
    // False when the range is not this file's or the read comes up short.
    bool read_at(const std::byte* p, std::size_t length, std::byte* out) const noexcept {
        if (fd_ < 0 || !contains(p, length)) return false;
        std::size_t done = 0;
        while (done < length) {
            const ssize_t r = ::pread(fd_, out + done, length - done, static_cast<off_t>(p - data_ + done));
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) return false;
            done += static_cast<std::size_t>(r);
        }
        return true;
    }

    // Drops the pages of [p, p + length) from this process's resident set, once their bytes
    // have been copied elsewhere (weights repacked at load). The mapping is private and never
    // written, so the file's pages stay in the page cache and a later read of any of them, a
    // neighbour's bytes on a shared page included, maps them again: this is only a promise not
    // to need the range soon, never a loss of data.
    void release(const std::byte* p, std::size_t length) const noexcept {
        if (!data_ || p < data_ || p + length > data_ + size_) return;
        const std::size_t page = 4096;
        const std::size_t begin = static_cast<std::size_t>(p - data_) / page * page;
        const std::size_t end = std::min(size_, (static_cast<std::size_t>(p + length - data_) + page - 1) / page * page);
        if (end > begin) ::madvise(const_cast<std::byte*>(data_) + begin, end - begin, MADV_DONTNEED);
    }

private:
    void reset() noexcept {
        if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
        if (fd_ >= 0) ::close(fd_);
        data_ = nullptr;
        size_ = 0;
        fd_ = -1;
    }
    void swap(mapped_file& o) noexcept {
        std::swap(path_, o.path_);
        std::swap(data_, o.data_);
        std::swap(size_, o.size_);
        std::swap(fd_, o.fd_);
    }
    std::string path_;
    const std::byte* data_ = nullptr;
    std::size_t size_ = 0;
    int fd_ = -1;
};

// Zero-filled, page-aligned memory straight from the kernel, for large buffers that live as
// long as a model (repacked weights): asked for in 2 MiB pages where the system has transparent
// huge pages, since decode streams every byte of it per token and 4 KiB pages would cost a TLB
// miss every 4 KiB.
class anonymous_memory {
public:
    anonymous_memory() = default;
    explicit anonymous_memory(std::size_t bytes) {
        if (bytes == 0) return;
        constexpr std::size_t huge = std::size_t{2} << 20, page = 4096;
        // Over-allocate by one huge page to start on a 2 MiB boundary, then return the slack.
        // The size is not rounded up to huge pages: the tail that does not fill one stays in
        // small pages, so no memory is touched beyond what is asked for.
        const std::size_t want = (bytes + page - 1) / page * page;
        void* p = ::mmap(nullptr, want + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) fail("cannot allocate ", bytes >> 20, " MiB for repacked weights: ", std::strerror(errno));
        auto* base = static_cast<std::byte*>(p);
        const std::size_t lead = (huge - reinterpret_cast<std::uintptr_t>(base) % huge) % huge;
        if (lead) ::munmap(base, lead);
        if (huge - lead) ::munmap(base + lead + want, huge - lead);
        data_ = base + lead;
        size_ = want;
#ifdef MADV_HUGEPAGE
        ::madvise(data_, size_, MADV_HUGEPAGE);
#endif
    }
    anonymous_memory(const anonymous_memory&) = delete;
    anonymous_memory& operator=(const anonymous_memory&) = delete;
    anonymous_memory(anonymous_memory&& o) noexcept { swap(o); }
    anonymous_memory& operator=(anonymous_memory&& o) noexcept {
        if (this != &o) {
            anonymous_memory tmp(std::move(o));
            swap(tmp);
        }
        return *this;
    }
    ~anonymous_memory() {
        if (data_) ::munmap(data_, size_);
    }
    std::byte* data() const noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }

private:
    void swap(anonymous_memory& o) noexcept {
        std::swap(data_, o.data_);
        std::swap(size_, o.size_);
    }
    std::byte* data_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace lmtk::core
// #include <lmtk/core/thread_pool.hpp>
// A fixed pool of worker threads that run one parallel region at a time.
//
// `run(f)` calls f(thread_index, n_threads) on every thread, the caller being thread 0, and
// returns when all have finished. A forward pass issues a few regions per layer, so the hand-off
// must cost far less than a kernel: workers spin on an atomic generation counter for a short
// while before blocking on it (C++20 atomic wait), and the caller spins on the completion count.
// No allocation happens per region: the callable is passed by reference through a type-erased
// pointer pair.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstddef>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace lmtk::core {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#else
    std::this_thread::yield();
#endif
}

class thread_pool {
public:
    // n_threads counts the caller; 0 means one per hardware thread.
    explicit thread_pool(std::size_t n_threads = 0) {
        if (n_threads == 0) n_threads = std::max(1u, std::thread::hardware_concurrency());
        n_threads_ = n_threads;
        workers_.reserve(n_threads - 1);
        for (std::size_t i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
    }
    thread_pool(const thread_pool&) = delete;
    thread_pool& operator=(const thread_pool&) = delete;
    ~thread_pool() {
        stop_.store(true, std::memory_order_relaxed);
        generation_.fetch_add(1, std::memory_order_release);
        wake_workers();
        for (auto& w : workers_) w.join();
    }

    std::size_t size() const noexcept { return n_threads_; }

    // Runs f(i, n) for i in [0, n) concurrently; f must not throw.
    template <class F>
    void run(F&& f) noexcept {
        if (n_threads_ == 1) {
            f(std::size_t{0}, std::size_t{1});
            return;
        }
        using Fn = std::remove_reference_t<F>;
        job_ = const_cast<void*>(static_cast<const void*>(&f));
        invoke_ = [](void* p, std::size_t i, std::size_t n) noexcept { (*static_cast<Fn*>(p))(i, n); };
        pending_.store(n_threads_ - 1, std::memory_order_relaxed);
        generation_.fetch_add(1, std::memory_order_release);
        wake_workers();
        f(std::size_t{0}, n_threads_);
        // Spin while the others finish; yield if they were descheduled (a loaded machine),
        // so that a spinning caller does not hold the core a worker needs.
        for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
            if (spins < 4000) cpu_relax();
            else std::this_thread::yield();
        }
    }

    // Like run(), but on the calling thread alone when the work is too small to repay the
    // hand-off to other threads (a few microseconds).
    template <class F>
    void run_sized(std::size_t work, F&& f) noexcept {
        if (work < min_parallel_work) f(std::size_t{0}, std::size_t{1});
        else run(std::forward<F>(f));
    }
    // Below this many multiply-adds a region runs on one thread.
    static constexpr std::size_t min_parallel_work = std::size_t{1} << 15;

    // Splits [0, total) into n nearly equal contiguous parts; returns part i.
    static std::pair<std::size_t, std::size_t> split(std::size_t total, std::size_t i, std::size_t n) noexcept {
        const std::size_t base = total / n, extra = total % n;
        const std::size_t begin = i * base + std::min(i, extra);
        return {begin, begin + base + (i < extra ? 1 : 0)};
    }

private:
    // Sleeping workers wait on a condition variable, not on generation_ itself: std::atomic's
    // wait/notify keep their waiter table in function-local statics of inline library functions,
    // and the kernels of each instruction-set level (quant/cpu_kernels.hpp), which run regions
    // on this pool too, hold their own renamed copies of those; a notify from there would never
    // reach a worker waiting here. The mutex is taken between the new generation and the notify,
    // so a worker that saw the old generation is either asleep by then or sees the new one.
    void wake_workers() noexcept {
        { const std::lock_guard lock(sleep_mutex_); }
        sleep_.notify_all();
    }

    void worker_loop(std::size_t index) noexcept {
        std::uint64_t seen = 0;
        for (;;) {
            // Spin first: between the regions of one forward pass the gap is microseconds.
            std::uint64_t g = generation_.load(std::memory_order_acquire);
            for (int spins = 0; g == seen && spins < 20000; ++spins) {
                cpu_relax();
                g = generation_.load(std::memory_order_acquire);
            }
            if (g == seen) {
                std::unique_lock lock(sleep_mutex_);
                sleep_.wait(lock, [&] { return (g = generation_.load(std::memory_order_acquire)) != seen; });
            }
            seen = g;
            if (stop_.load(std::memory_order_relaxed)) return;
            invoke_(job_, index, n_threads_);
            pending_.fetch_sub(1, std::memory_order_acq_rel);
        }
    }

    std::size_t n_threads_ = 1;
    std::vector<std::thread> workers_;
    alignas(64) std::atomic<std::uint64_t> generation_{0};
    alignas(64) std::atomic<std::size_t> pending_{0};
    std::atomic<bool> stop_{false};
    std::mutex sleep_mutex_;
    std::condition_variable sleep_;
    void* job_ = nullptr;
    void (*invoke_)(void*, std::size_t, std::size_t) noexcept = nullptr;
};

}  // namespace lmtk::core
// #include <lmtk/core/tensor.hpp>
// Where users touch tensors (logits, log-probabilities, all-position logits for scoring), lmtk
// hands them xtensor expressions: views over lmtk's own buffers without a copy, or xtensor
// containers where the result is new. Users get xtensor's broadcasting, reductions and views
// (xt::argmax, xt::view(..., xt::range(...)), ...) instead of raw pointers and sizes. The hot
// paths inside lmtk stay on plain buffers; nothing here runs per token unless a user asks.
#include <array>
#include <cmath>
#include <cstddef>

#include <xtensor/xadapt.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xsort.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

namespace lmtk {

// n values at p, as a 1-D xtensor view (no copy; p must outlive it).
template <class T>
auto vector_view(T* p, std::size_t n) {
    return xt::adapt(p, n, xt::no_ownership(), std::array<std::size_t, 1>{n});
}

// rows x cols values at p, row-major, as a 2-D xtensor view (no copy; p must outlive it).
template <class T>
auto matrix_view(T* p, std::size_t rows, std::size_t cols) {
    return xt::adapt(p, rows * cols, xt::no_ownership(), std::array<std::size_t, 2>{rows, cols});
}

// log softmax over the last axis of a 1-D or 2-D expression of logits: each row minus its
// maximum, minus the log of the sum of exponentials (computed from the shifted values, so
// that no exp overflows). Returns a new container of the same shape.
template <class E>
auto log_softmax(const xt::xexpression<E>& logits) {
    const auto& x = logits.derived_cast();
    using value_type = typename E::value_type;
    constexpr std::size_t rank = xt::get_rank<E>::value;
    if constexpr (rank == 1) {
        const value_type mx = xt::amax(x)();
        const auto shifted = x - mx;
        const value_type lse = std::log(xt::sum(xt::exp(shifted))());
        return xt::xtensor<value_type, 1>(shifted - lse);
    } else {
        static_assert(rank == 2, "log_softmax: a vector or a matrix of logits");
        const auto mx = xt::eval(xt::amax(x, {1}));
        const auto shifted = xt::eval(x - xt::view(mx, xt::all(), xt::newaxis()));
        const auto lse = xt::eval(xt::log(xt::sum(xt::exp(shifted), {1})));
        return xt::xtensor<value_type, 2>(shifted - xt::view(lse, xt::all(), xt::newaxis()));
    }
}

}  // namespace lmtk
// #include <lmtk/io/gguf.hpp>
// GGUF v2/v3 reader over a memory-mapped file.
//
// Every read is bounds-checked against the mapping, every count is checked against the bytes
// that remain before anything is allocated for it, and every tensor is checked to lie inside the
// data section, aligned, with a known type and a shape whose byte size does not overflow. A
// broken or hostile file therefore ends in an lmtk::error naming the file and the problem, never
// in undefined behaviour. String values are views into the mapping: the file outlives them.
// #include <lmtk/core/error.hpp>
// #include <lmtk/core/mapped_file.hpp>
// #include <lmtk/quant/ggml_type.hpp>
// ggml tensor type ids as stored in GGUF files, and their block geometry. The ids are on-disk
// values: removed formats keep their gaps, nothing is ever renumbered.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace lmtk::quant {

enum class ggml_type : std::uint32_t {
    f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9,
    q2_k = 10, q3_k = 11, q4_k = 12, q5_k = 13, q6_k = 14, q8_k = 15,
    iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21, iq2_s = 22,
    iq4_xs = 23, i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_m = 29, bf16 = 30,
    tq1_0 = 34, tq2_0 = 35,
};

// Geometry of one type: `block_elems` consecutive values along a row take `block_bytes` bytes.
struct type_traits {
    ggml_type type;
    std::string_view name;
    std::size_t block_elems;
    std::size_t block_bytes;
};

inline constexpr type_traits known_types[] = {
    {ggml_type::f32, "F32", 1, 4},         {ggml_type::f16, "F16", 1, 2},
    {ggml_type::q4_0, "Q4_0", 32, 18},     {ggml_type::q4_1, "Q4_1", 32, 20},
    {ggml_type::q5_0, "Q5_0", 32, 22},     {ggml_type::q5_1, "Q5_1", 32, 24},
    {ggml_type::q8_0, "Q8_0", 32, 34},     {ggml_type::q8_1, "Q8_1", 32, 36},
    {ggml_type::q2_k, "Q2_K", 256, 84},    {ggml_type::q3_k, "Q3_K", 256, 110},
    {ggml_type::q4_k, "Q4_K", 256, 144},   {ggml_type::q5_k, "Q5_K", 256, 176},
    {ggml_type::q6_k, "Q6_K", 256, 210},   {ggml_type::q8_k, "Q8_K", 256, 292},
    {ggml_type::iq2_xxs, "IQ2_XXS", 256, 66}, {ggml_type::iq2_xs, "IQ2_XS", 256, 74},
    {ggml_type::iq3_xxs, "IQ3_XXS", 256, 98}, {ggml_type::iq1_s, "IQ1_S", 256, 50},
    {ggml_type::iq4_nl, "IQ4_NL", 32, 18},  {ggml_type::iq3_s, "IQ3_S", 256, 110},
    {ggml_type::iq2_s, "IQ2_S", 256, 82},   {ggml_type::iq4_xs, "IQ4_XS", 256, 136},
    {ggml_type::i8, "I8", 1, 1},            {ggml_type::i16, "I16", 1, 2},
    {ggml_type::i32, "I32", 1, 4},          {ggml_type::i64, "I64", 1, 8},
    {ggml_type::f64, "F64", 1, 8},          {ggml_type::iq1_m, "IQ1_M", 256, 56},
    {ggml_type::bf16, "BF16", 1, 2},        {ggml_type::tq1_0, "TQ1_0", 256, 54},
    {ggml_type::tq2_0, "TQ2_0", 256, 66},
};

// nullopt for an id that no known ggml version defines (a hostile or future file).
constexpr std::optional<type_traits> traits_of(std::uint32_t id) noexcept {
    for (const type_traits& t : known_types)
        if (static_cast<std::uint32_t>(t.type) == id) return t;
    return std::nullopt;
}

constexpr type_traits traits_of(ggml_type t) noexcept { return *traits_of(static_cast<std::uint32_t>(t)); }

constexpr std::string_view type_name(ggml_type t) noexcept {
    const auto tr = traits_of(static_cast<std::uint32_t>(t));
    return tr ? tr->name : std::string_view("unknown");
}

// Parses "Q4_0", "q4_0", "f16"... as written by users on the command line.
inline std::optional<ggml_type> type_from_name(std::string_view s) noexcept {
    for (const type_traits& t : known_types) {
        if (t.name.size() != s.size()) continue;
        bool same = true;
        for (std::size_t i = 0; i < s.size() && same; ++i) {
            char c = s[i];
            if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
            same = c == t.name[i];
        }
        if (same) return t.type;
    }
    return std::nullopt;
}

}  // namespace lmtk::quant

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
// #include <lmtk/io/gguf_writer.hpp>
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
// #include <lmtk/core/error.hpp>
// #include <lmtk/io/gguf.hpp>
// #include <lmtk/quant/ggml_type.hpp>

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
// #include <lmtk/io/safetensors.hpp>
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
// #include <lmtk/core/error.hpp>
// #include <lmtk/core/json.hpp>
// Untrusted JSON text, read safely: nlohmann's parser keeps its own stack, but copying,
// comparing and dumping a value recurse once per level, so a body of 80,000 '[' would end the
// process in a stack overflow long after parsing. The nesting depth is therefore counted
// (outside strings, in one pass that cannot recurse) before the parser sees the text, and text
// nested deeper than a documented limit is refused.
// #include <lmtk/core/error.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <initializer_list>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace lmtk::core {

// Depth allowed in request bodies and LMTP messages: real requests nest 5 to 10 deep (tools'
// JSON schemas the most); 64 leaves room for deep schemas and none for recursion attacks.
inline constexpr std::size_t max_request_json_depth = 64;

// Depth of [ and { nesting outside strings; stops counting once `limit` is passed.
inline std::size_t json_depth(std::string_view s, std::size_t limit) noexcept {
    std::size_t depth = 0, max_depth = 0;
    bool in_string = false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        if (in_string) {
            if (c == '\\') ++i;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth && (max_depth = depth) > limit) return max_depth;
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return max_depth;
}

// Parses untrusted JSON text nested at most `max_depth` deep; nullopt with `why` set when the
// text is not JSON or nests deeper. Never throws for bad input.
inline std::optional<nlohmann::json> try_parse_json(std::string_view text, std::size_t max_depth, std::string* why = nullptr) {
    if (json_depth(text, max_depth) > max_depth) {
        if (why) *why = "JSON nested more than " + std::to_string(max_depth) + " levels deep";
        return std::nullopt;
    }
    nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
        if (why) *why = "not valid JSON";
        return std::nullopt;
    }
    return j;
}

// Some members of a JSON object's text with every object's keys in document order (tools',
// schemas' and messages' keys keep the order the client wrote; nlohmann::json sorts them). Only
// the top-level members named in `keys` are kept; the text must already have passed
// try_parse_json. Ordered objects find keys by linear search, so an object of more than
// `max_keys` keys is refused (lmtk::error): the work stays linear in the text's size.
inline nlohmann::ordered_json ordered_members(std::string_view text, std::initializer_list<std::string_view> keys,
                                              std::size_t max_keys = 1024) {
    struct too_many {};
    bool keep = false;
    std::vector<std::size_t> counts;  // keys of each open object, innermost last
    auto cb = [&](int depth, nlohmann::ordered_json::parse_event_t event, nlohmann::ordered_json& parsed) {
        using ev = nlohmann::ordered_json::parse_event_t;
        if (depth == 0) return true;  // the top object itself
        if (depth == 1 && event == ev::key) {
            keep = false;
            for (const std::string_view k : keys) keep = keep || (parsed.is_string() && parsed.get_ref<const std::string&>() == k);
            return keep;
        }
        if (!keep) return false;
        if (event == ev::object_start) counts.push_back(0);
        else if (event == ev::object_end && !counts.empty()) counts.pop_back();
        else if (event == ev::key && !counts.empty() && ++counts.back() > max_keys) throw too_many{};
        return true;
    };
    nlohmann::ordered_json j;
    try {
        j = nlohmann::ordered_json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/false);
    } catch (const too_many&) {
        fail("an object of more than ", max_keys, " keys");
    }
    if (j.is_discarded() || !j.is_object()) return nlohmann::ordered_json::object();
    return j;
}

// Parses an untrusted JSON file's text. Duplicate keys in any object are errors (nlohmann would
// keep the last one silently); `what` names the text in messages. Throws lmtk::error.
inline nlohmann::json parse_json_file(std::string_view text, const std::string& what, std::size_t max_depth) {
    if (json_depth(text, max_depth) > max_depth) fail(what, ": JSON nested more than ", max_depth, " levels deep");
    // One set of keys per open object, innermost last.
    std::vector<std::set<std::string>> keys;
    std::string duplicate;
    auto cb = [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        using ev = nlohmann::json::parse_event_t;
        if (event == ev::object_start) keys.emplace_back();
        else if (event == ev::object_end && !keys.empty()) keys.pop_back();
        else if (event == ev::key && !keys.empty() && parsed.is_string()) {
            if (!keys.back().insert(parsed.get<std::string>()).second && duplicate.empty())
                duplicate = parsed.get<std::string>();
        }
        return true;
    };
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text.begin(), text.end(), cb);
    } catch (const nlohmann::json::exception& e) {
        fail(what, ": invalid JSON: ", e.what());
    }
    if (!duplicate.empty()) fail(what, ": duplicate key '", duplicate, "'");
    return j;
}

}  // namespace lmtk::core
// #include <lmtk/core/mapped_file.hpp>

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
// #include <lmtk/quant/quant.hpp>
// Every tensor format lmtk knows, and the load-time dispatch over them.
// #include <lmtk/quant/policy.hpp>
// The contract every tensor format meets. A format is a policy type: a block layout, a scalar
// reference (the executable spec), and one SIMD dot kernel written over an xsimd arch tag.
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <xsimd/xsimd.hpp>

// #include <lmtk/quant/ggml_type.hpp>

namespace lmtk::quant {

// P::block is the on-disk unit of P::block_elems values. Its size must agree with the GGUF
// type table, because the loader sizes tensors from that table and the kernels walk blocks.
template <class P>
concept quant_policy =
    std::same_as<std::remove_cv_t<decltype(P::type_id)>, ggml_type> &&
    std::same_as<std::remove_cv_t<decltype(P::block_elems)>, std::size_t> &&
    std::is_trivially_copyable_v<typename P::block> &&
    std::is_standard_layout_v<typename P::block> &&
    P::block_elems == traits_of(P::type_id).block_elems &&
    sizeof(typename P::block) == traits_of(P::type_id).block_bytes &&
    requires(const typename P::block* w, typename P::block* out, const float* x, float* y, std::size_t n_blocks) {
        // Scalar reference decoder: n_blocks blocks -> n_blocks * block_elems floats.
        { P::dequantize_row(w, y, n_blocks) } noexcept;
        // Reference quantizer: n_blocks * block_elems floats -> n_blocks blocks.
        { P::quantize_row(x, out, n_blocks) } noexcept;
        // sum_i w[i] * x[i] over n_blocks blocks; one body for every xsimd architecture.
        { P::dot(xsimd::default_arch{}, w, x, n_blocks) } noexcept -> std::same_as<float>;
    };

namespace detail {

#if defined(__GNUC__)
// An integer vector of n lanes -> the same values in lanes of `bytes` bytes. GCC 12 lowers a
// conversion that more than doubles the lane size (int8 -> int32) to scalar code, but each
// doubling to one instruction (vpmovsxbw, vpmovsxwd, sxtl, ...), so widen a doubling at a time.
template <std::size_t bytes, std::size_t n, class Vector>
auto widen_to_size(const Vector& v) noexcept {
    using lane = std::remove_cvref_t<decltype(v[0])>;
    if constexpr (sizeof(lane) == bytes) {
        return v;
    } else {
        using twice = std::conditional_t<sizeof(lane) == 1, std::int16_t,
                                         std::conditional_t<sizeof(lane) == 2, std::int32_t, std::int64_t>>;
        using next = std::conditional_t<std::is_signed_v<lane>, twice, std::make_unsigned_t<twice>>;
        using next_vector [[gnu::vector_size(n * sizeof(next))]] = next;
        return widen_to_size<bytes, n>(__builtin_convertvector(v, next_vector));
    }
}
#endif

// batch<To, Arch>::size values at p, each converted from From (a narrower integer) to To.
// xsimd 8.1 does such a load through a stack buffer filled by a scalar copy, which compiles to
// narrow stores and a wide reload that stalls on store forwarding (Q8_0 ran at a third of its
// speed). GCC and Clang's generic vectors convert in registers on every target instead.
template <class To, class Arch, class From>
xsimd::batch<To, Arch> load_widened(const From* p) noexcept {
    using batch = xsimd::batch<To, Arch>;
#if defined(__GNUC__)
    constexpr std::size_t n = batch::size;
    using from_vector [[gnu::vector_size(n * sizeof(From))]] = From;
    using to_vector [[gnu::vector_size(n * sizeof(To))]] = To;
    static_assert(sizeof(to_vector) == sizeof(typename batch::register_type));
    from_vector narrow;
    std::memcpy(&narrow, p, sizeof narrow);
    return batch(std::bit_cast<typename batch::register_type>(
        __builtin_convertvector(widen_to_size<sizeof(To), n>(narrow), to_vector)));
#else
    return batch::load_unaligned(p);
#endif
}

// v << n in every 32-bit lane, spelled as a multiply by 2^n: xsimd 8.1's AVX-512 immediate shift
// trips a false GCC 12 -Wuninitialized inside <avx512fintrin.h> in every TU that uses it.
template <unsigned n, class Arch>
xsimd::batch<std::uint32_t, Arch> shift_left(const xsimd::batch<std::uint32_t, Arch>& v) noexcept {
    static_assert(n < 32);
    return v * xsimd::batch<std::uint32_t, Arch>(std::uint32_t{1} << n);
}

// Dot product for the one-value-per-block formats (F32, F16, BF16): `load(i)` yields weights
// i .. i+batch::size-1 as floats, `at(i)` the single weight i for the scalar tail. Four
// independent accumulators keep the FMA units busy: one chain would stall on FMA latency.
template <class Arch, class Load, class At>
float elementwise_dot(std::size_t n, const float* x, Load load, At at) noexcept {
    using batch = xsimd::batch<float, Arch>;
    constexpr std::size_t width = batch::size;
    batch acc0(0.0f), acc1(0.0f), acc2(0.0f), acc3(0.0f);
    std::size_t i = 0;
    for (; i + 4 * width <= n; i += 4 * width) {
        acc0 = xsimd::fma(load(i), batch::load_unaligned(x + i), acc0);
        acc1 = xsimd::fma(load(i + width), batch::load_unaligned(x + i + width), acc1);
        acc2 = xsimd::fma(load(i + 2 * width), batch::load_unaligned(x + i + 2 * width), acc2);
        acc3 = xsimd::fma(load(i + 3 * width), batch::load_unaligned(x + i + 3 * width), acc3);
    }
    for (; i + width <= n; i += width) acc0 = xsimd::fma(load(i), batch::load_unaligned(x + i), acc0);
    float sum = xsimd::hadd((acc0 + acc1) + (acc2 + acc3));
    for (; i < n; ++i) sum += at(i) * x[i];
    return sum;
}

}  // namespace detail

}  // namespace lmtk::quant
// #include <lmtk/quant/f32.hpp>
// F32 (GGUF id 0): plain IEEE binary32 values; a "block" is one value.
#include <cstddef>
#include <cstring>
#include <type_traits>

#include <xsimd/xsimd.hpp>

// #include <lmtk/quant/ggml_type.hpp>
// #include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

struct f32 {
    static constexpr ggml_type type_id = ggml_type::f32;
    static constexpr std::size_t block_elems = 1;
    struct block {
        float value;
    };
    static_assert(sizeof(block) == 4, "f32: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference: y[i] = w[i].
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t i = 0; i < n_blocks; ++i) y[i] = w[i].value;
    }

    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t i = 0; i < n_blocks; ++i) out[i].value = x[i];
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        // block is standard layout with one float member, so the array is an array of floats.
        const float* v = reinterpret_cast<const float*>(w);
        return detail::elementwise_dot<Arch>(
            n_blocks, x, [v](std::size_t i) { return xsimd::batch<float, Arch>::load_unaligned(v + i); },
            [v](std::size_t i) { return v[i]; });
    }
};
static_assert(quant_policy<f32>);

}  // namespace lmtk::quant
// #include <lmtk/quant/f16.hpp>
// F16 (GGUF id 1): IEEE binary16 values stored as raw bits; a "block" is one value.
#include <cstddef>
#include <cstdint>
#include <type_traits>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include <xsimd/xsimd.hpp>

// #include <lmtk/core/fp16.hpp>
// #include <lmtk/quant/ggml_type.hpp>
// #include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

namespace detail {

// batch::size halves at p -> floats, the same bit manipulation as core::fp16_to_f32 done lane-wise
// with integer batches, so it vectorises on every xsimd arch (F16C is x86-only and xsimd 8.1 does
// not expose it).
template <class Arch>
xsimd::batch<float, Arch> load_fp16(const std::uint16_t* p) noexcept {
    using u32 = xsimd::batch<std::uint32_t, Arch>;
    using f32 = xsimd::batch<float, Arch>;
#if defined(__F16C__) && defined(__AVX512F__)
    // x86 converts halves in one instruction (vcvtph2ps); it makes F16 decode memory-bound where
    // the bit manipulation below costs ~10 instructions per vector (bench/quant_kernels.cpp).
    if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>)
        return f32(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#endif
#if defined(__F16C__) && defined(__AVX__)
    if constexpr (std::is_base_of_v<xsimd::avx, Arch> && f32::size == 8)
        return f32(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#endif
    const u32 h = load_widened<std::uint32_t, Arch>(p);  // each half zero-extended into a lane
    const u32 sign = shift_left<16>(h & u32(0x8000u));
    const u32 rest = shift_left<13>(h & u32(0x7fffu));
    // Rebias the exponent (15 -> 127) by a multiply: subnormal halves come out exact too.
    const u32 finite = xsimd::bitwise_cast<u32>(xsimd::bitwise_cast<f32>(rest) * f32(0x1p112f));
    const u32 inf_nan = rest | u32(0x7f800000u);
    const auto is_inf_nan = (h & u32(0x7c00u)) == u32(0x7c00u);
    return xsimd::bitwise_cast<f32>(xsimd::select(is_inf_nan, inf_nan, finite) | sign);
}

}  // namespace detail

struct f16 {
    static constexpr ggml_type type_id = ggml_type::f16;
    static constexpr std::size_t block_elems = 1;
    struct block {
        std::uint16_t bits;  // binary16
    };
    static_assert(sizeof(block) == 2, "f16: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference: y[i] = h2f(w[i]).
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t i = 0; i < n_blocks; ++i) y[i] = core::fp16_to_f32(w[i].bits);
    }

    // Round to nearest even; out-of-range values become +-inf.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t i = 0; i < n_blocks; ++i) out[i].bits = core::f32_to_fp16(x[i]);
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        const std::uint16_t* h = reinterpret_cast<const std::uint16_t*>(w);
        return detail::elementwise_dot<Arch>(
            n_blocks, x, [h](std::size_t i) { return detail::load_fp16<Arch>(h + i); },
            [h](std::size_t i) { return core::fp16_to_f32(h[i]); });
    }
};
static_assert(quant_policy<f16>);

}  // namespace lmtk::quant
// #include <lmtk/quant/bf16.hpp>
// BF16 (GGUF id 30): the top 16 bits of an IEEE binary32; a "block" is one value.
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

// #include <lmtk/core/fp16.hpp>
// #include <lmtk/quant/ggml_type.hpp>
// #include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

struct bf16 {
    static constexpr ggml_type type_id = ggml_type::bf16;
    static constexpr std::size_t block_elems = 1;
    struct block {
        std::uint16_t bits;  // bfloat16
    };
    static_assert(sizeof(block) == 2, "bf16: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference: y[i] = float(bits << 16).
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t i = 0; i < n_blocks; ++i) y[i] = core::bf16_to_f32(w[i].bits);
    }

    // Round to nearest even, NaN kept quiet.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t i = 0; i < n_blocks; ++i) out[i].bits = core::f32_to_bf16(x[i]);
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using f32 = xsimd::batch<float, Arch>;
        const std::uint16_t* b = reinterpret_cast<const std::uint16_t*>(w);
        return detail::elementwise_dot<Arch>(
            n_blocks, x,
            [b](std::size_t i) { return xsimd::bitwise_cast<f32>(detail::shift_left<16>(detail::load_widened<std::uint32_t, Arch>(b + i))); },
            [b](std::size_t i) { return core::bf16_to_f32(b[i]); });
    }
};
static_assert(quant_policy<bf16>);

}  // namespace lmtk::quant
// #include <lmtk/quant/q8_0.hpp>
// Q8_0 (GGUF id 8): 32 weights share one fp16 scale; w[j] = d * qs[j].
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

// #include <lmtk/core/fp16.hpp>
// #include <lmtk/quant/ggml_type.hpp>
// #include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

struct q8_0 {
    static constexpr ggml_type type_id = ggml_type::q8_0;
    static constexpr std::size_t block_elems = 32;
    struct block {
        std::uint16_t d;  // scale, fp16 bits
        std::int8_t qs[block_elems];
    };
    static_assert(sizeof(block) == sizeof(std::uint16_t) + block_elems, "q8_0: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec: y[j] = d * qs[j].
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b) {
            const float d = core::fp16_to_f32(w[b].d);
            for (std::size_t j = 0; j < block_elems; ++j) *y++ = d * static_cast<float>(w[b].qs[j]);
        }
    }

    // Reference quantizer (x finite): d = amax / 127, q = round(x / d), ties away from zero.
    // Like ggml, the quants are computed against the unrounded d (as x * (1/d)) and only then
    // is d stored as fp16, so files quantized here match ggml's bit for bit.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            float amax = 0.0f;
            for (std::size_t j = 0; j < block_elems; ++j) amax = std::max(amax, std::fabs(x[j]));
            const float d = amax / 127.0f;
            const float inv_d = d != 0.0f ? 1.0f / d : 0.0f;
            out[b].d = core::f32_to_fp16(d);
            for (std::size_t j = 0; j < block_elems; ++j) {
                // |x * inv_d| <= 127 up to one rounding, so the clamp only guards the cast.
                const float q = std::clamp(std::round(x[j] * inv_d), -127.0f, 127.0f);
                out[b].qs[j] = static_cast<std::int8_t>(q);
            }
        }
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        constexpr std::size_t width = batch::size;
        static_assert(block_elems % width == 0, "q8_0: a block must be whole batches");
        // Each block's partial sum is scaled into a running vector sum; the horizontal add is
        // paid once per row. Two block accumulators break the cross-block dependency chain.
        const auto block_sum = [](const block& b, const float* xb) noexcept {
            batch s(0.0f);
            for (std::size_t j = 0; j < block_elems; j += width)
                s = xsimd::fma(detail::load_widened<float, Arch>(b.qs + j), batch::load_unaligned(xb + j), s);
            return s;
        };
        batch acc0(0.0f), acc1(0.0f);
        std::size_t b = 0;
        for (; b + 2 <= n_blocks; b += 2, x += 2 * block_elems) {
            acc0 = xsimd::fma(batch(core::fp16_to_f32(w[b].d)), block_sum(w[b], x), acc0);
            acc1 = xsimd::fma(batch(core::fp16_to_f32(w[b + 1].d)), block_sum(w[b + 1], x + block_elems), acc1);
        }
        if (b < n_blocks) acc0 = xsimd::fma(batch(core::fp16_to_f32(w[b].d)), block_sum(w[b], x), acc0);
        return xsimd::hadd(acc0 + acc1);
    }
};
static_assert(quant_policy<q8_0>);

}  // namespace lmtk::quant
// #include <lmtk/quant/q4_0.hpp>
// Q4_0 (GGUF id 2): 32 weights share one fp16 scale, 4 bits each with an implicit offset of 8.
// Low nibbles hold the first half of the block, high nibbles the second half (not pairs):
// w[j] = ((qs[j] & 0xF) - 8) * d, w[j + 16] = ((qs[j] >> 4) - 8) * d, j < 16.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

// #include <lmtk/core/fp16.hpp>
// #include <lmtk/quant/ggml_type.hpp>
// #include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

struct q4_0 {
    static constexpr ggml_type type_id = ggml_type::q4_0;
    static constexpr std::size_t block_elems = 32;
    static constexpr std::size_t half = block_elems / 2;
    struct block {
        std::uint16_t d;  // scale, fp16 bits
        std::uint8_t qs[half];
    };
    static_assert(sizeof(block) == sizeof(std::uint16_t) + half, "q4_0: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec.
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, y += block_elems) {
            const float d = core::fp16_to_f32(w[b].d);
            for (std::size_t j = 0; j < half; ++j) {
                y[j] = static_cast<float>((w[b].qs[j] & 0xF) - 8) * d;
                y[j + half] = static_cast<float>((w[b].qs[j] >> 4) - 8) * d;
            }
        }
    }

    // Reference quantizer (x finite). The value m of largest magnitude (sign kept) sets
    // d = m / -8, so m itself lands exactly on quant 0 (-8 after the offset) and the full
    // negative range is used; values of the other sign reach +8, which clamps to 15.
    // q = min(15, floor(x / d + 8.5)): rounding to nearest with ties up, and x / d computed as
    // x * (1/d) against the unrounded d, as ggml's reference does, so the bits match ggml's.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            float amax = 0.0f, m = 0.0f;
            for (std::size_t j = 0; j < block_elems; ++j) {
                if (std::fabs(x[j]) > amax) {
                    amax = std::fabs(x[j]);
                    m = x[j];
                }
            }
            const float d = m / -8.0f;
            const float inv_d = d != 0.0f ? 1.0f / d : 0.0f;
            out[b].d = core::f32_to_fp16(d);
            const auto quant = [inv_d](float v) noexcept {
                return static_cast<std::uint8_t>(std::clamp(std::floor(v * inv_d + 8.5f), 0.0f, 15.0f));
            };
            for (std::size_t j = 0; j < half; ++j)
                out[b].qs[j] = static_cast<std::uint8_t>(quant(x[j]) | (quant(x[j + half]) << 4));
        }
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        constexpr std::size_t width = batch::size;
        static_assert(block_elems % width == 0, "q4_0: a block must be whole batches");
        batch acc0(0.0f), acc1(0.0f);
        const auto block_sum = [](const block& b, const float* xb) noexcept {
            // Unpack to signed bytes first (a fixed-length byte loop the compiler vectorises),
            // then widen to float as Q8_0 does.
            alignas(64) std::int8_t q[block_elems];
            for (std::size_t j = 0; j < half; ++j) {
                q[j] = static_cast<std::int8_t>((b.qs[j] & 0xF) - 8);
                q[j + half] = static_cast<std::int8_t>((b.qs[j] >> 4) - 8);
            }
            batch s(0.0f);
            for (std::size_t j = 0; j < block_elems; j += width)
                s = xsimd::fma(detail::load_widened<float, Arch>(q + j), batch::load_unaligned(xb + j), s);
            return s;
        };
        std::size_t b = 0;
        for (; b + 2 <= n_blocks; b += 2, x += 2 * block_elems) {
            acc0 = xsimd::fma(batch(core::fp16_to_f32(w[b].d)), block_sum(w[b], x), acc0);
            acc1 = xsimd::fma(batch(core::fp16_to_f32(w[b + 1].d)), block_sum(w[b + 1], x + block_elems), acc1);
        }
        if (b < n_blocks) acc0 = xsimd::fma(batch(core::fp16_to_f32(w[b].d)), block_sum(w[b], x), acc0);
        return xsimd::hadd(acc0 + acc1);
    }
};
static_assert(quant_policy<q4_0>);

}  // namespace lmtk::quant
// #include <lmtk/quant/q4_1.hpp>
// Q4_1 (GGUF id 3): 32 weights share an fp16 scale d and an fp16 offset m, 4 bits each.
// Low nibbles hold the first half of the block, high nibbles the second half:
// w[j] = (qs[j] & 0xF) * d + m, w[j + 16] = (qs[j] >> 4) * d + m, j < 16.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

// #include <lmtk/core/fp16.hpp>
// #include <lmtk/quant/block_common.hpp>
// Pieces shared by the block formats beyond Q8_0/Q4_0 (Q4_1 ... Q6_K, IQ4_NL, Q8_K): the dot
// kernels' inner loop over unpacked quants, and the scale searches of the reference quantizers.
//
// Every dot kernel here works the same way: unpack a block's quants to signed bytes (a fixed-
// length byte loop the compiler vectorises), widen them to float in registers and fma against
// the activations one sub-block at a time; the sub-block's scale (and min) multiply the
// sub-block's partial sums, never each term.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include <xsimd/xsimd.hpp>

// #include <lmtk/quant/policy.hpp>

namespace lmtk::quant::detail {

// sum_j q[j] * x[j] for j < n, n a multiple of the batch size, as a vector of lane sums.
template <class Arch>
xsimd::batch<float, Arch> dot_i8(const std::int8_t* q, const float* x, std::size_t n) noexcept {
    using batch = xsimd::batch<float, Arch>;
    batch s(0.0f);
    for (std::size_t j = 0; j < n; j += batch::size)
        s = xsimd::fma(load_widened<float, Arch>(q + j), batch::load_unaligned(x + j), s);
    return s;
}

// Both sum_j q[j] * x[j] and sum_j x[j]: formats with a per-sub-block minimum pay it once per
// sub-block as min * sum(x) rather than once per weight.
template <class Arch>
void dot_i8_and_sum(const std::int8_t* q, const float* x, std::size_t n, xsimd::batch<float, Arch>& qx,
                    xsimd::batch<float, Arch>& sx) noexcept {
    using batch = xsimd::batch<float, Arch>;
    qx = batch(0.0f);
    sx = batch(0.0f);
    for (std::size_t j = 0; j < n; j += batch::size) {
        const batch xv = batch::load_unaligned(x + j);
        qx = xsimd::fma(load_widened<float, Arch>(q + j), xv, qx);
        sx += xv;
    }
}

// sum over sub-blocks k < n_sub of scale[k] * sum_j q[sub k + j] x[sub k + j], added to acc.
// Two named accumulators in turn (an array of batches indexed at run time lands on the stack):
// one would serialise the sub-blocks on the fma latency.
template <class Arch, std::size_t sub, std::size_t n_sub>
xsimd::batch<float, Arch> scaled_dot(const std::int8_t* q, const float* x, const float* scale,
                                     xsimd::batch<float, Arch> acc) noexcept {
    using batch = xsimd::batch<float, Arch>;
    static_assert(n_sub % 2 == 0);
    batch acc1(0.0f);
    for (std::size_t k = 0; k < n_sub; k += 2) {
        acc = xsimd::fma(batch(scale[k]), dot_i8<Arch>(q + sub * k, x + sub * k, sub), acc);
        acc1 = xsimd::fma(batch(scale[k + 1]), dot_i8<Arch>(q + sub * (k + 1), x + sub * (k + 1), sub), acc1);
    }
    return acc + acc1;
}

// The same minus min[k] * sum_j x[sub k + j] per sub-block (the K-quants with a minimum).
template <class Arch, std::size_t sub, std::size_t n_sub>
xsimd::batch<float, Arch> scaled_dot_min(const std::int8_t* q, const float* x, const float* scale, const float* min,
                                         xsimd::batch<float, Arch> acc) noexcept {
    using batch = xsimd::batch<float, Arch>;
    batch mins(0.0f);
    for (std::size_t k = 0; k < n_sub; ++k) {
        batch qx, sx;
        dot_i8_and_sum<Arch>(q + sub * k, x + sub * k, sub, qx, sx);
        acc = xsimd::fma(batch(scale[k]), qx, acc);
        mins = xsimd::fma(batch(min[k]), sx, mins);
    }
    return acc - mins;
}

// The sub-block sizes below (16 and 32) must be whole batches on every arch the dot is built for.
template <class Arch>
inline constexpr bool whole_batches(std::size_t n) noexcept {
    return n % xsimd::batch<float, Arch>::size == 0;
}

// --- reference quantizer helpers -----------------------------------------------------------------

// Round to nearest, ties to even (the current rounding mode, round-to-nearest by default); the
// callers clamp afterwards, so only finite inputs in int range matter.
inline int round_int(float v) noexcept { return static_cast<int>(std::lrintf(v)); }

// 1 / d, or 0 where that is not a finite number (d = 0, or d so small that 1 / d overflows):
// the quantizers then map every value to the zero point instead of computing 0 * inf = NaN,
// whose conversion to an integer is undefined. Only all-zero or denormal blocks take this path.
inline float safe_inverse(float d) noexcept {
    const float inv = d != 0.0f ? 1.0f / d : 0.0f;
    return std::isfinite(inv) ? inv : 0.0f;
}

// Relative steps around the plain max-based scale that the searches try: a scale a little off
// the one that maps the extreme onto the end of the grid often fits the other values better.
inline constexpr int search_steps = 10;
inline constexpr float search_step = 0.1f;

// Symmetric fit x[j] ~= s * q[j] with integers q in [-nmax, nmax - 1], by least squares over a
// few candidate grids: for each candidate, quantize, then take the s that minimises
// sum (x - s q)^2 for those q (s = sum(xq) / sum(q^2)); keep the candidate with the smallest
// error (the largest sum(xq)^2 / sum(q^2)). The candidates map the value of largest magnitude
// to about -nmax (the end of the grid with room), so s takes the opposite sign of that value.
// Returns s (0 for an all-zero input) and writes q.
inline float fit_symmetric(const float* x, std::size_t n, int nmax, std::int8_t* q) noexcept {
    float amax = 0.0f, extreme = 0.0f;
    for (std::size_t j = 0; j < n; ++j) {
        if (std::fabs(x[j]) > amax) {
            amax = std::fabs(x[j]);
            extreme = x[j];
        }
    }
    if (amax == 0.0f) {
        std::fill(q, q + n, std::int8_t{0});
        return 0.0f;
    }
    float best_s = 0.0f, best_gain = -1.0f;
    std::int8_t trial[256];
    for (int t = -search_steps; t <= search_steps; ++t) {
        const float iscale = -(static_cast<float>(nmax) + search_step * static_cast<float>(t)) / extreme;
        double sxq = 0.0, sqq = 0.0;
        for (std::size_t j = 0; j < n; ++j) {
            const int v = std::clamp(round_int(iscale * x[j]), -nmax, nmax - 1);
            trial[j] = static_cast<std::int8_t>(v);
            sxq += static_cast<double>(x[j]) * v;
            sqq += static_cast<double>(v) * v;
        }
        if (sqq == 0.0) continue;
        const double gain = sxq * sxq / sqq;  // the error is sum(x^2) - gain
        if (gain > best_gain) {
            best_gain = static_cast<float>(gain);
            best_s = static_cast<float>(sxq / sqq);
            std::copy(trial, trial + n, q);
        }
    }
    return best_s;
}

// The same once s is fixed (after it was rounded into the block's own scale format).
inline void quantize_symmetric(const float* x, std::size_t n, float s, int nmax, std::int8_t* q) noexcept {
    const float inv = safe_inverse(s);
    for (std::size_t j = 0; j < n; ++j) q[j] = static_cast<std::int8_t>(std::clamp(round_int(x[j] * inv), -nmax, nmax - 1));
}

struct scale_min {
    float scale;  // >= 0
    float min;    // >= 0: the decoded value is scale * q - min
};

// Affine fit x[j] ~= scale * q[j] - min with integers q in [0, qmax], scale >= 0 and min >= 0
// (the K-quants store both unsigned; min >= 0 means the grid always reaches down to <= 0, so a
// sub-block of positive values keeps 0 representable). For each of a few candidate grids over
// [min(x, 0), max(x)], quantize, then fit scale and min by two-parameter least squares for
// those q (one-parameter when the fitted min comes out negative); keep the smallest error.
inline scale_min fit_affine(const float* x, std::size_t n, int qmax, std::uint8_t* q) noexcept {
    float lo = x[0], hi = x[0];
    for (std::size_t j = 1; j < n; ++j) {
        lo = std::min(lo, x[j]);
        hi = std::max(hi, x[j]);
    }
    lo = std::min(lo, 0.0f);
    if (hi <= lo) {  // every value is the same non-positive number: q = 0 and min = -x
        std::fill(q, q + n, std::uint8_t{0});
        return {0.0f, -lo};
    }
    double sx = 0.0;
    for (std::size_t j = 0; j < n; ++j) sx += x[j];
    // Start from the plain min/max grid: scale = (hi - lo) / qmax, min = -lo.
    scale_min best{(hi - lo) / static_cast<float>(qmax), -lo};
    double best_err = 0.0;
    {
        const float inv = safe_inverse(best.scale);
        for (std::size_t j = 0; j < n; ++j) {
            const int v = std::clamp(round_int((x[j] - lo) * inv), 0, qmax);
            q[j] = static_cast<std::uint8_t>(v);
            const double e = static_cast<double>(best.scale) * v - best.min - x[j];
            best_err += e * e;
        }
    }
    std::uint8_t trial[256];
    for (int t = -search_steps; t <= search_steps; ++t) {
        const float iscale = (static_cast<float>(qmax) + search_step * static_cast<float>(t)) / (hi - lo);
        double sq = 0.0, sqq = 0.0, sxq = 0.0;
        for (std::size_t j = 0; j < n; ++j) {
            const int v = std::clamp(round_int((x[j] - lo) * iscale), 0, qmax);
            trial[j] = static_cast<std::uint8_t>(v);
            sq += v;
            sqq += static_cast<double>(v) * v;
            sxq += static_cast<double>(v) * x[j];
        }
        const double nn = static_cast<double>(n), det = nn * sqq - sq * sq;
        if (det <= 0.0) continue;  // all q equal: no line to fit
        double a = (nn * sxq - sq * sx) / det;  // x ~= a q + b
        double b = (sqq * sx - sq * sxq) / det;
        if (b > 0.0) {  // min would be negative: fit through the origin instead
            b = 0.0;
            a = sxq / sqq;
        }
        if (!(a > 0.0)) continue;
        double err = 0.0;
        for (std::size_t j = 0; j < n; ++j) {
            const double e = a * trial[j] + b - x[j];
            err += e * e;
        }
        if (err < best_err) {
            best_err = err;
            best = {static_cast<float>(a), static_cast<float>(-b)};
            std::copy(trial, trial + n, q);
        }
    }
    return best;
}

// The same once scale and min are fixed: q = round((x + min) / scale) in [0, qmax].
inline void quantize_affine(const float* x, std::size_t n, float scale, float min, int qmax, std::uint8_t* q) noexcept {
    const float inv = safe_inverse(scale);
    for (std::size_t j = 0; j < n; ++j)
        q[j] = static_cast<std::uint8_t>(std::clamp(round_int((x[j] + min) * inv), 0, qmax));
}

// Non-negative sub-block values v[k] -> unsigned integers of `bits` bits against one super-block
// step d = max(v) / (2^bits - 1): returns d (0 when every v is 0) and writes the integers.
inline float quantize_unsigned_scales(const float* v, std::size_t n, int bits, std::uint8_t* out) noexcept {
    const int top = (1 << bits) - 1;
    float vmax = 0.0f;
    for (std::size_t k = 0; k < n; ++k) vmax = std::max(vmax, v[k]);
    if (!(vmax > 0.0f)) {
        std::fill(out, out + n, std::uint8_t{0});
        return 0.0f;
    }
    const float inv = static_cast<float>(top) / vmax;
    for (std::size_t k = 0; k < n; ++k) out[k] = static_cast<std::uint8_t>(std::clamp(round_int(v[k] * inv), 0, top));
    return vmax / static_cast<float>(top);
}

// Signed sub-block scales s[k] -> integers in [-half, half - 1] against one super-block step d
// that maps the scale of largest magnitude onto -half (so d has the opposite sign of it).
inline float quantize_signed_scales(const float* s, std::size_t n, int half, int* out) noexcept {
    float amax = 0.0f, extreme = 0.0f;
    for (std::size_t k = 0; k < n; ++k) {
        if (std::fabs(s[k]) > amax) {
            amax = std::fabs(s[k]);
            extreme = s[k];
        }
    }
    if (amax == 0.0f) {
        std::fill(out, out + n, 0);
        return 0.0f;
    }
    const float iscale = -static_cast<float>(half) / extreme;
    for (std::size_t k = 0; k < n; ++k) out[k] = std::clamp(round_int(s[k] * iscale), -half, half - 1);
    return 1.0f / iscale;
}

}  // namespace lmtk::quant::detail
// #include <lmtk/quant/ggml_type.hpp>
// #include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

struct q4_1 {
    static constexpr ggml_type type_id = ggml_type::q4_1;
    static constexpr std::size_t block_elems = 32;
    static constexpr std::size_t half = block_elems / 2;
    struct block {
        std::uint16_t d;  // scale, fp16 bits
        std::uint16_t m;  // offset (the block minimum), fp16 bits
        std::uint8_t qs[half];
    };
    static_assert(sizeof(block) == 2 * sizeof(std::uint16_t) + half, "q4_1: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec.
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, y += block_elems) {
            const float d = core::fp16_to_f32(w[b].d), m = core::fp16_to_f32(w[b].m);
            for (std::size_t j = 0; j < half; ++j) {
                y[j] = static_cast<float>(w[b].qs[j] & 0xF) * d + m;
                y[j + half] = static_cast<float>(w[b].qs[j] >> 4) * d + m;
            }
        }
    }

    // Reference quantizer (x finite), ggml's rule so files match llama.cpp's bit for bit:
    // m = min(x), d = (max(x) - m) / 15, q = min(15, trunc((x - m) / d + 0.5)), with the quants
    // computed against the unrounded d and m before both are stored as fp16.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            const auto [lo, hi] = std::minmax_element(x, x + block_elems);
            const float mn = *lo, d = (*hi - mn) / 15.0f;
            const float inv_d = detail::safe_inverse(d);
            out[b].d = core::f32_to_fp16(d);
            out[b].m = core::f32_to_fp16(mn);
            const auto quant = [&](float v) noexcept {
                return static_cast<std::uint8_t>(std::min(15.0f, std::trunc((v - mn) * inv_d + 0.5f)));
            };
            for (std::size_t j = 0; j < half; ++j)
                out[b].qs[j] = static_cast<std::uint8_t>(quant(x[j]) | (quant(x[j + half]) << 4));
        }
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(block_elems), "q4_1: a block must be whole batches");
        // sum (q d + m) x = d * sum(q x) + m * sum(x), both per block.
        batch acc(0.0f);
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            alignas(64) std::int8_t q[block_elems];
            for (std::size_t j = 0; j < half; ++j) {
                q[j] = static_cast<std::int8_t>(w[b].qs[j] & 0xF);
                q[j + half] = static_cast<std::int8_t>(w[b].qs[j] >> 4);
            }
            batch qx, sx;
            detail::dot_i8_and_sum<Arch>(q, x, block_elems, qx, sx);
            acc = xsimd::fma(batch(core::fp16_to_f32(w[b].d)), qx, acc);
            acc = xsimd::fma(batch(core::fp16_to_f32(w[b].m)), sx, acc);
        }
        return xsimd::hadd(acc);
    }
};
static_assert(quant_policy<q4_1>);

}  // namespace lmtk::quant
// #include <lmtk/quant/q5_0.hpp>
// Q5_0 (GGUF id 6): 32 weights share one fp16 scale, 5 bits each with an implicit offset of 16.
// The low 4 bits sit in nibbles as in Q4_0 (low nibbles: elements 0..15, high: 16..31); bit j
// of the little-endian u32 qh is the fifth bit of element j:
// w[j] = (((qs[j] & 0xF) | ((h >> j) & 1) << 4) - 16) * d,
// w[j + 16] = (((qs[j] >> 4) | ((h >> (j + 16)) & 1) << 4) - 16) * d, j < 16.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <xsimd/xsimd.hpp>

// #include <lmtk/core/fp16.hpp>
// #include <lmtk/quant/block_common.hpp>
// #include <lmtk/quant/ggml_type.hpp>
// #include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

namespace detail {

// The 32 fifth bits of a Q5 block (a u32 stored as 4 bytes, so the block needs no 4-byte
// alignment) -> bit j of the result is element j's.
inline std::uint32_t load_qh(const std::uint8_t* qh) noexcept {
    std::uint32_t h;
    std::memcpy(&h, qh, sizeof h);  // GGUF is little-endian, as is every host lmtk supports
    return h;
}

// 5-bit quants 0..31 of one Q5_0/Q5_1 block, in element order: the nibbles first, then the
// fifth bits or-ed in from the u32 as a separate loop over 32-bit lanes (one variable shift
// per lane); fused into one byte loop the compiler left it scalar.
inline void unpack_q5(const std::uint8_t* qs, const std::uint8_t* qh, std::uint8_t* q) noexcept {
    for (std::size_t j = 0; j < 16; ++j) {
        q[j] = static_cast<std::uint8_t>(qs[j] & 0xF);
        q[j + 16] = static_cast<std::uint8_t>(qs[j] >> 4);
    }
    const std::uint32_t h = load_qh(qh);
    std::uint32_t high[32];
    for (std::uint32_t j = 0; j < 32; ++j) high[j] = ((h >> j) & 1u) << 4;
    for (std::size_t j = 0; j < 32; ++j) q[j] = static_cast<std::uint8_t>(q[j] | high[j]);
}

// The inverse: 32 quants 0..31 -> nibbles and fifth bits.
inline void pack_q5(const std::uint8_t* q, std::uint8_t* qs, std::uint8_t* qh) noexcept {
    std::uint32_t h = 0;
    for (std::size_t j = 0; j < 16; ++j) {
        qs[j] = static_cast<std::uint8_t>((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
        h |= static_cast<std::uint32_t>(q[j] >> 4) << j;
        h |= static_cast<std::uint32_t>(q[j + 16] >> 4) << (j + 16);
    }
    std::memcpy(qh, &h, sizeof h);
}

}  // namespace detail

struct q5_0 {
    static constexpr ggml_type type_id = ggml_type::q5_0;
    static constexpr std::size_t block_elems = 32;
    struct block {
        std::uint16_t d;       // scale, fp16 bits
        std::uint8_t qh[4];    // fifth bits, u32 little-endian
        std::uint8_t qs[16];   // low 4 bits
    };
    static_assert(sizeof(block) == sizeof(std::uint16_t) + 4 + 16, "q5_0: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec.
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, y += block_elems) {
            const float d = core::fp16_to_f32(w[b].d);
            const std::uint32_t h = detail::load_qh(w[b].qh);
            for (std::size_t j = 0; j < 16; ++j) {
                const int lo = (w[b].qs[j] & 0xF) | static_cast<int>(((h >> j) & 1u) << 4);
                const int hi = (w[b].qs[j] >> 4) | static_cast<int>(((h >> (j + 16)) & 1u) << 4);
                y[j] = static_cast<float>(lo - 16) * d;
                y[j + 16] = static_cast<float>(hi - 16) * d;
            }
        }
    }

    // Reference quantizer (x finite), ggml's rule as for Q4_0: the value m of largest magnitude
    // sets d = m / -16 (m lands on quant 0), q = min(31, floor(x / d + 16.5)) against the
    // unrounded d, so the bits match llama.cpp's.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            float amax = 0.0f, m = 0.0f;
            for (std::size_t j = 0; j < block_elems; ++j) {
                if (std::fabs(x[j]) > amax) {
                    amax = std::fabs(x[j]);
                    m = x[j];
                }
            }
            const float d = m / -16.0f;
            const float inv_d = detail::safe_inverse(d);
            out[b].d = core::f32_to_fp16(d);
            std::uint8_t q[block_elems];
            for (std::size_t j = 0; j < block_elems; ++j)
                q[j] = static_cast<std::uint8_t>(std::clamp(std::floor(x[j] * inv_d + 16.5f), 0.0f, 31.0f));
            detail::pack_q5(q, out[b].qs, out[b].qh);
        }
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(block_elems), "q5_0: a block must be whole batches");
        batch acc(0.0f);
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            alignas(64) std::uint8_t u[block_elems];
            alignas(64) std::int8_t q[block_elems];
            detail::unpack_q5(w[b].qs, w[b].qh, u);
            for (std::size_t j = 0; j < block_elems; ++j) q[j] = static_cast<std::int8_t>(u[j] - 16);
            acc = xsimd::fma(batch(core::fp16_to_f32(w[b].d)), detail::dot_i8<Arch>(q, x, block_elems), acc);
        }
        return xsimd::hadd(acc);
    }
};
static_assert(quant_policy<q5_0>);

}  // namespace lmtk::quant
// #include <lmtk/quant/q5_1.hpp>
// Q5_1 (GGUF id 7): 32 weights share an fp16 scale d and an fp16 offset m, 5 bits each, laid
// out as Q5_0 (nibbles + a u32 of fifth bits) without the -16: w = q * d + m.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

// #include <lmtk/core/fp16.hpp>
// #include <lmtk/quant/block_common.hpp>
// #include <lmtk/quant/ggml_type.hpp>
// #include <lmtk/quant/policy.hpp>
// #include <lmtk/quant/q5_0.hpp>

namespace lmtk::quant {

struct q5_1 {
    static constexpr ggml_type type_id = ggml_type::q5_1;
    static constexpr std::size_t block_elems = 32;
    struct block {
        std::uint16_t d;      // scale, fp16 bits
        std::uint16_t m;      // offset (the block minimum), fp16 bits
        std::uint8_t qh[4];   // fifth bits, u32 little-endian
        std::uint8_t qs[16];  // low 4 bits
    };
    static_assert(sizeof(block) == 2 * sizeof(std::uint16_t) + 4 + 16, "q5_1: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec.
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, y += block_elems) {
            const float d = core::fp16_to_f32(w[b].d), m = core::fp16_to_f32(w[b].m);
            const std::uint32_t h = detail::load_qh(w[b].qh);
            for (std::size_t j = 0; j < 16; ++j) {
                const int lo = (w[b].qs[j] & 0xF) | static_cast<int>(((h >> j) & 1u) << 4);
                const int hi = (w[b].qs[j] >> 4) | static_cast<int>(((h >> (j + 16)) & 1u) << 4);
                y[j] = static_cast<float>(lo) * d + m;
                y[j + 16] = static_cast<float>(hi) * d + m;
            }
        }
    }

    // Reference quantizer (x finite), ggml's rule: m = min(x), d = (max(x) - m) / 31,
    // q = min(31, trunc((x - m) / d + 0.5)) against the unrounded d and m.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            const auto [lo, hi] = std::minmax_element(x, x + block_elems);
            const float mn = *lo, d = (*hi - mn) / 31.0f;
            const float inv_d = detail::safe_inverse(d);
            out[b].d = core::f32_to_fp16(d);
            out[b].m = core::f32_to_fp16(mn);
            std::uint8_t q[block_elems];
            for (std::size_t j = 0; j < block_elems; ++j)
                q[j] = static_cast<std::uint8_t>(std::min(31.0f, std::trunc((x[j] - mn) * inv_d + 0.5f)));
            detail::pack_q5(q, out[b].qs, out[b].qh);
        }
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(block_elems), "q5_1: a block must be whole batches");
        batch acc(0.0f);
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            alignas(64) std::uint8_t u[block_elems];
            detail::unpack_q5(w[b].qs, w[b].qh, u);
            batch qx, sx;
            detail::dot_i8_and_sum<Arch>(reinterpret_cast<const std::int8_t*>(u), x, block_elems, qx, sx);  // 0..31 fit
            acc = xsimd::fma(batch(core::fp16_to_f32(w[b].d)), qx, acc);
            acc = xsimd::fma(batch(core::fp16_to_f32(w[b].m)), sx, acc);
        }
        return xsimd::hadd(acc);
    }
};
static_assert(quant_policy<q5_1>);

}  // namespace lmtk::quant
// #include <lmtk/quant/q2_k.hpp>
// Q2_K (GGUF id 10): super-blocks of 256 weights = 16 sub-blocks of 16. Each sub-block has a
// 4-bit scale and a 4-bit min (one byte: scale low, min high) against the super-block's fp16
// d and dmin; each weight is 2 bits: w = d * sc * q - dmin * m, q in 0..3.
// Element e = 128n + 32j + l (n < 2, j < 4, l < 32) is bits 2j..2j+1 of qs[32n + l]; its
// sub-block is e / 16.
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include <xsimd/xsimd.hpp>

// #include <lmtk/core/fp16.hpp>
// #include <lmtk/quant/block_common.hpp>
// #include <lmtk/quant/ggml_type.hpp>
// #include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

struct q2_k {
    static constexpr ggml_type type_id = ggml_type::q2_k;
    static constexpr std::size_t block_elems = 256;
    static constexpr std::size_t sub_elems = 16;
    static constexpr std::size_t n_sub = block_elems / sub_elems;
    struct block {
        std::uint8_t scales[n_sub];  // low nibble: scale, high nibble: min
        std::uint8_t qs[block_elems / 4];
        std::uint16_t d;     // super-block scale of the scales, fp16 bits
        std::uint16_t dmin;  // super-block scale of the mins, fp16 bits
    };
    static_assert(sizeof(block) == n_sub + block_elems / 4 + 2 * sizeof(std::uint16_t), "q2_k: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // The 2-bit quant of element e (0..255).
    static int quant(const block& b, std::size_t e) noexcept {
        const std::size_t n = e / 128, j = (e % 128) / 32, l = e % 32;
        return (b.qs[32 * n + l] >> (2 * j)) & 3;
    }

    // Reference decoder, the executable spec (spec 3.4's loop).
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b) {
            const float d = core::fp16_to_f32(w[b].d), dmin = core::fp16_to_f32(w[b].dmin);
            for (std::size_t n = 0; n < 2; ++n) {
                const std::uint8_t* q = w[b].qs + 32 * n;
                for (std::size_t j = 0; j < 4; ++j) {
                    const std::size_t is = 8 * n + 2 * j;
                    for (std::size_t half = 0; half < 2; ++half) {
                        const std::uint8_t sc = w[b].scales[is + half];
                        const float dl = d * static_cast<float>(sc & 0xF), ml = dmin * static_cast<float>(sc >> 4);
                        for (std::size_t l = 0; l < 16; ++l)
                            *y++ = dl * static_cast<float>((q[l + 16 * half] >> (2 * j)) & 3) - ml;
                    }
                }
            }
        }
    }

    // Reference quantizer (x finite): per sub-block an affine least-squares fit (scale, min),
    // then the 16 scales and 16 mins to 4 bits against d = max scale / 15, dmin = max min / 15,
    // then every weight requantized against its sub-block's decoded scale and min.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            float scales[n_sub], mins[n_sub];
            std::uint8_t q[block_elems];
            for (std::size_t s = 0; s < n_sub; ++s) {
                const detail::scale_min f = detail::fit_affine(x + s * sub_elems, sub_elems, 3, q + s * sub_elems);
                scales[s] = f.scale;
                mins[s] = f.min;
            }
            std::uint8_t sc[n_sub], mn[n_sub];
            block& o = out[b];
            o.d = core::f32_to_fp16(detail::quantize_unsigned_scales(scales, n_sub, 4, sc));
            o.dmin = core::f32_to_fp16(detail::quantize_unsigned_scales(mins, n_sub, 4, mn));
            const float d = core::fp16_to_f32(o.d), dmin = core::fp16_to_f32(o.dmin);
            for (std::size_t s = 0; s < n_sub; ++s) {
                o.scales[s] = static_cast<std::uint8_t>(sc[s] | (mn[s] << 4));
                detail::quantize_affine(x + s * sub_elems, sub_elems, d * sc[s], dmin * mn[s], 3, q + s * sub_elems);
            }
            for (std::size_t i = 0; i < block_elems / 4; ++i) o.qs[i] = 0;
            for (std::size_t e = 0; e < block_elems; ++e) {
                const std::size_t n = e / 128, j = (e % 128) / 32, l = e % 32;
                o.qs[32 * n + l] = static_cast<std::uint8_t>(o.qs[32 * n + l] | (q[e] << (2 * j)));
            }
        }
    }

    // The quants of elements 128n + 32j + l, l < 32. n and j are template arguments so that
    // every shift is a constant (see Q3_K).
    template <std::size_t n, std::size_t j>
    static void unpack_group(const block& b, std::int8_t* q) noexcept {
        for (std::size_t l = 0; l < 32; ++l)
            q[128 * n + 32 * j + l] = static_cast<std::int8_t>((b.qs[32 * n + l] >> (2 * j)) & 3);
    }
    static void unpack(const block& b, std::int8_t* q) noexcept {
        [&]<std::size_t... g>(std::index_sequence<g...>) {
            (unpack_group<g / 4, g % 4>(b, q), ...);
        }(std::make_index_sequence<8>{});
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(sub_elems), "q2_k: a sub-block must be whole batches");
        batch acc(0.0f);
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            alignas(64) std::int8_t q[block_elems];
            unpack(w[b], q);
            const float d = core::fp16_to_f32(w[b].d), dmin = core::fp16_to_f32(w[b].dmin);
            float scale[n_sub], min[n_sub];
            for (std::size_t s = 0; s < n_sub; ++s) {
                scale[s] = d * static_cast<float>(w[b].scales[s] & 0xF);
                min[s] = dmin * static_cast<float>(w[b].scales[s] >> 4);
            }
            acc = detail::scaled_dot_min<Arch, sub_elems, n_sub>(q, x, scale, min, acc);
        }
        return xsimd::hadd(acc);
    }
};
static_assert(quant_policy<q2_k>);

}  // namespace lmtk::quant
// #include <lmtk/quant/q3_k.hpp>
// Q3_K (GGUF id 11): super-blocks of 256 weights = 16 sub-blocks of 16 with signed 6-bit
// scales against one fp16 d; each weight is 3 bits, q in -4..3: w = d * (sc - 32) * q.
// Element e = 128n + 32j + l (n < 2, j < 4, l < 32): its low two bits are bits 2j..2j+1 of
// qs[32n + l]; its high bit is bit 4n + j of hmask[l], and a *clear* high bit subtracts 4
// (q = low2 + 4 * high - 4). Scale k (the sub-block e / 16) is 6 bits stored with +32: the low
// 4 bits in scales[k] (k < 8, low nibble) or scales[k - 8] (high nibble), the high 2 bits in
// bits 2 * (k / 4) of scales[8 + k % 4].
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include <xsimd/xsimd.hpp>

// #include <lmtk/core/fp16.hpp>
// #include <lmtk/quant/block_common.hpp>
// #include <lmtk/quant/ggml_type.hpp>
// #include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

struct q3_k {
    static constexpr ggml_type type_id = ggml_type::q3_k;
    static constexpr std::size_t block_elems = 256;
    static constexpr std::size_t sub_elems = 16;
    static constexpr std::size_t n_sub = block_elems / sub_elems;
    struct block {
        std::uint8_t hmask[block_elems / 8];  // high bits
        std::uint8_t qs[block_elems / 4];     // low 2 bits
        std::uint8_t scales[12];              // 16 x 6-bit scales, +32
        std::uint16_t d;                      // super-block scale, fp16 bits
    };
    static_assert(sizeof(block) == block_elems / 8 + block_elems / 4 + 12 + sizeof(std::uint16_t), "q3_k: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Sub-block k's signed scale, -32..31 (spec 3.4's scale(k)).
    static int scale(const std::uint8_t* scales, std::size_t k) noexcept {
        const int low4 = k < 8 ? (scales[k] & 0xF) : (scales[k - 8] >> 4);
        const int high2 = (scales[8 + k % 4] >> (2 * (k / 4))) & 3;
        return (low4 | (high2 << 4)) - 32;
    }
    // The inverse over all 16: sc[k] in -32..31.
    static void pack_scales(const int* sc, std::uint8_t* scales) noexcept {
        for (std::size_t i = 0; i < 12; ++i) scales[i] = 0;
        for (std::size_t k = 0; k < n_sub; ++k) {
            const auto u = static_cast<unsigned>(sc[k] + 32);
            if (k < 8) scales[k] = static_cast<std::uint8_t>(scales[k] | (u & 0xF));
            else scales[k - 8] = static_cast<std::uint8_t>(scales[k - 8] | ((u & 0xF) << 4));
            scales[8 + k % 4] = static_cast<std::uint8_t>(scales[8 + k % 4] | ((u >> 4) << (2 * (k / 4))));
        }
    }

    // Reference decoder, the executable spec (spec 3.4's loop).
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b) {
            const float d = core::fp16_to_f32(w[b].d);
            unsigned m = 1;  // the hmask bit of this 32-element group; hmask itself never advances
            for (std::size_t n = 0; n < 2; ++n) {
                const std::uint8_t* q = w[b].qs + 32 * n;
                for (std::size_t j = 0; j < 4; ++j, m <<= 1) {
                    for (std::size_t half = 0; half < 2; ++half) {
                        const float dl = d * static_cast<float>(scale(w[b].scales, 8 * n + 2 * j + half));
                        for (std::size_t l = 16 * half; l < 16 * half + 16; ++l) {
                            const int v = ((q[l] >> (2 * j)) & 3) - ((w[b].hmask[l] & m) ? 0 : 4);
                            *y++ = dl * static_cast<float>(v);
                        }
                    }
                }
            }
        }
    }

    // Reference quantizer (x finite): per sub-block a symmetric least-squares scale for
    // q in -4..3, the 16 scales to signed 6 bits against d (the largest scale maps to -32),
    // then every weight requantized against its sub-block's decoded scale.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            float s[n_sub];
            std::int8_t q[block_elems];
            for (std::size_t k = 0; k < n_sub; ++k) s[k] = detail::fit_symmetric(x + k * sub_elems, sub_elems, 4, q + k * sub_elems);
            int sc[n_sub];
            block& o = out[b];
            o.d = core::f32_to_fp16(detail::quantize_signed_scales(s, n_sub, 32, sc));
            pack_scales(sc, o.scales);
            const float d = core::fp16_to_f32(o.d);
            for (std::size_t k = 0; k < n_sub; ++k)
                detail::quantize_symmetric(x + k * sub_elems, sub_elems, d * static_cast<float>(sc[k]), 4, q + k * sub_elems);
            for (std::size_t i = 0; i < sizeof o.hmask; ++i) o.hmask[i] = 0;
            for (std::size_t i = 0; i < sizeof o.qs; ++i) o.qs[i] = 0;
            for (std::size_t e = 0; e < block_elems; ++e) {
                const std::size_t n = e / 128, j = (e % 128) / 32, l = e % 32;
                const auto v = static_cast<unsigned>(q[e] + 4);  // 0..7
                o.qs[32 * n + l] = static_cast<std::uint8_t>(o.qs[32 * n + l] | ((v & 3) << (2 * j)));
                if (v & 4) o.hmask[l] = static_cast<std::uint8_t>(o.hmask[l] | (1u << (4 * n + j)));
            }
        }
    }

    // The quants -4..3 of elements 128n + 32j + l, l < 32. n and j are template arguments so
    // that every shift is a constant: x86 has no per-lane variable shift of bytes, and with a
    // variable one the compiler gives up vectorising the loop.
    template <std::size_t n, std::size_t j>
    static void unpack_group(const block& b, std::int8_t* q) noexcept {
        for (std::size_t l = 0; l < 32; ++l)
            q[128 * n + 32 * j + l] = static_cast<std::int8_t>(((b.qs[32 * n + l] >> (2 * j)) & 3) +
                                                               (((b.hmask[l] >> (4 * n + j)) & 1) << 2) - 4);
    }
    static void unpack(const block& b, std::int8_t* q) noexcept {
        [&]<std::size_t... g>(std::index_sequence<g...>) {
            (unpack_group<g / 4, g % 4>(b, q), ...);
        }(std::make_index_sequence<8>{});
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(sub_elems), "q3_k: a sub-block must be whole batches");
        batch acc(0.0f);
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            alignas(64) std::int8_t q[block_elems];
            unpack(w[b], q);
            const float d = core::fp16_to_f32(w[b].d);
            float sc[n_sub];
            for (std::size_t k = 0; k < n_sub; ++k) sc[k] = d * static_cast<float>(scale(w[b].scales, k));
            acc = detail::scaled_dot<Arch, sub_elems, n_sub>(q, x, sc, acc);
        }
        return xsimd::hadd(acc);
    }
};
static_assert(quant_policy<q3_k>);

}  // namespace lmtk::quant
// #include <lmtk/quant/q4_k.hpp>
// Q4_K (GGUF id 12): super-blocks of 256 weights = 8 sub-blocks of 32. Each sub-block has a
// 6-bit scale and a 6-bit min against the super-block's fp16 d and dmin; each weight is 4 bits:
// w = d * sc * q - dmin * m, q in 0..15. Element 64c + l (c < 4, l < 32) is the low nibble of
// qs[32c + l] (sub-block 2c), element 64c + 32 + l its high nibble (sub-block 2c + 1).
// The 8 scales and 8 mins share 12 bytes (get_scale_min below; also used by Q5_K).
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include <xsimd/xsimd.hpp>

// #include <lmtk/core/fp16.hpp>
// #include <lmtk/quant/block_common.hpp>
// #include <lmtk/quant/ggml_type.hpp>
// #include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

namespace detail {

// Sub-block k's (scale, min), each 6 bits, from the 12 packed bytes of Q4_K/Q5_K: k < 4 keep
// both whole in the low 6 bits of bytes k and k + 4; k >= 4 keep their low 4 bits in the
// nibbles of byte k + 4 and their high 2 bits in the top bits of bytes k - 4 and k.
inline std::pair<int, int> get_scale_min_k4(std::size_t k, const std::uint8_t* s) noexcept {
    if (k < 4) return {s[k] & 63, s[k + 4] & 63};
    return {(s[k + 4] & 0xF) | ((s[k - 4] >> 6) << 4), (s[k + 4] >> 4) | ((s[k] >> 6) << 4)};
}

// The inverse: sc[k], mn[k] in 0..63 -> 12 bytes.
inline void pack_scale_min_k4(const std::uint8_t* sc, const std::uint8_t* mn, std::uint8_t* s) noexcept {
    for (std::size_t k = 0; k < 4; ++k) {
        s[k] = static_cast<std::uint8_t>((sc[k] & 63) | ((sc[k + 4] >> 4) << 6));
        s[k + 4] = static_cast<std::uint8_t>((mn[k] & 63) | ((mn[k + 4] >> 4) << 6));
        s[k + 8] = static_cast<std::uint8_t>((sc[k + 4] & 0xF) | ((mn[k + 4] & 0xF) << 4));
    }
}

// The affine K-quant recipe shared by Q4_K and Q5_K: fit each 32-element sub-block, quantize
// the 8 scales and 8 mins to 6 bits against d and dmin, and requantize every weight against
// its decoded scale and min. Returns the quants 0..qmax of the 256 elements in q.
inline void quantize_k4_scales(const float* x, int qmax, std::uint16_t& d_out, std::uint16_t& dmin_out,
                               std::uint8_t* scales, std::uint8_t* q) noexcept {
    constexpr std::size_t n_sub = 8, sub = 32;
    float fs[n_sub], fm[n_sub];
    for (std::size_t k = 0; k < n_sub; ++k) {
        const scale_min f = fit_affine(x + k * sub, sub, qmax, q + k * sub);
        fs[k] = f.scale;
        fm[k] = f.min;
    }
    std::uint8_t sc[n_sub], mn[n_sub];
    d_out = core::f32_to_fp16(quantize_unsigned_scales(fs, n_sub, 6, sc));
    dmin_out = core::f32_to_fp16(quantize_unsigned_scales(fm, n_sub, 6, mn));
    pack_scale_min_k4(sc, mn, scales);
    const float d = core::fp16_to_f32(d_out), dmin = core::fp16_to_f32(dmin_out);
    for (std::size_t k = 0; k < n_sub; ++k)
        quantize_affine(x + k * sub, sub, d * sc[k], dmin * mn[k], qmax, q + k * sub);
}

// sum over one Q4_K/Q5_K super-block of (d sc q - dmin m) x, given its quants in element order.
template <class Arch>
xsimd::batch<float, Arch> dot_k4_block(const std::int8_t* q, const float* x, float d, float dmin,
                                       const std::uint8_t* scales, xsimd::batch<float, Arch> acc) noexcept {
    float scale[8], min[8];
    for (std::size_t k = 0; k < 8; ++k) {
        const auto [sc, mn] = get_scale_min_k4(k, scales);
        scale[k] = d * static_cast<float>(sc);
        min[k] = dmin * static_cast<float>(mn);
    }
    acc = scaled_dot_min<Arch, 32, 8>(q, x, scale, min, acc);
    return acc;
}

}  // namespace detail

struct q4_k {
    static constexpr ggml_type type_id = ggml_type::q4_k;
    static constexpr std::size_t block_elems = 256;
    struct block {
        std::uint16_t d;     // super-block scale of the scales, fp16 bits
        std::uint16_t dmin;  // super-block scale of the mins, fp16 bits
        std::uint8_t scales[12];
        std::uint8_t qs[block_elems / 2];
    };
    static_assert(sizeof(block) == 2 * sizeof(std::uint16_t) + 12 + block_elems / 2, "q4_k: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec (spec 3.4's loop).
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b) {
            const float d = core::fp16_to_f32(w[b].d), dmin = core::fp16_to_f32(w[b].dmin);
            for (std::size_t c = 0; c < 4; ++c) {
                const std::uint8_t* q = w[b].qs + 32 * c;
                const auto [s1, m1] = detail::get_scale_min_k4(2 * c, w[b].scales);
                const auto [s2, m2] = detail::get_scale_min_k4(2 * c + 1, w[b].scales);
                for (std::size_t l = 0; l < 32; ++l) *y++ = d * static_cast<float>(s1) * static_cast<float>(q[l] & 0xF) - dmin * static_cast<float>(m1);
                for (std::size_t l = 0; l < 32; ++l) *y++ = d * static_cast<float>(s2) * static_cast<float>(q[l] >> 4) - dmin * static_cast<float>(m2);
            }
        }
    }

    // Reference quantizer (x finite): affine least-squares fits per 32-element sub-block, 6-bit
    // scales and mins against d = max scale / 63 and dmin = max min / 63, then requantization.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            std::uint8_t q[block_elems];
            detail::quantize_k4_scales(x, 15, out[b].d, out[b].dmin, out[b].scales, q);
            for (std::size_t c = 0; c < 4; ++c)
                for (std::size_t l = 0; l < 32; ++l)
                    out[b].qs[32 * c + l] = static_cast<std::uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
        }
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(32), "q4_k: a sub-block must be whole batches");
        batch acc(0.0f);
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            alignas(64) std::int8_t q[block_elems];
            for (std::size_t c = 0; c < 4; ++c)
                for (std::size_t l = 0; l < 32; ++l) {
                    q[64 * c + l] = static_cast<std::int8_t>(w[b].qs[32 * c + l] & 0xF);
                    q[64 * c + 32 + l] = static_cast<std::int8_t>(w[b].qs[32 * c + l] >> 4);
                }
            acc = detail::dot_k4_block<Arch>(q, x, core::fp16_to_f32(w[b].d), core::fp16_to_f32(w[b].dmin), w[b].scales, acc);
        }
        return xsimd::hadd(acc);
    }
};
static_assert(quant_policy<q4_k>);

}  // namespace lmtk::quant
// #include <lmtk/quant/q5_k.hpp>
// Q5_K (GGUF id 13): Q4_K plus a fifth bit per weight, q in 0..31: w = d * sc * q - dmin * m.
// Nibbles and the packed 6-bit scales/mins as Q4_K; the fifth bit of element e (sub-block
// k = e / 32) is bit k of qh[e % 32] (qh is shared by all sub-blocks, never advanced).
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include <xsimd/xsimd.hpp>

// #include <lmtk/core/fp16.hpp>
// #include <lmtk/quant/block_common.hpp>
// #include <lmtk/quant/ggml_type.hpp>
// #include <lmtk/quant/policy.hpp>
// #include <lmtk/quant/q4_k.hpp>

namespace lmtk::quant {

struct q5_k {
    static constexpr ggml_type type_id = ggml_type::q5_k;
    static constexpr std::size_t block_elems = 256;
    struct block {
        std::uint16_t d;     // super-block scale of the scales, fp16 bits
        std::uint16_t dmin;  // super-block scale of the mins, fp16 bits
        std::uint8_t scales[12];
        std::uint8_t qh[block_elems / 8];  // fifth bits
        std::uint8_t qs[block_elems / 2];  // low 4 bits
    };
    static_assert(sizeof(block) == 2 * sizeof(std::uint16_t) + 12 + block_elems / 8 + block_elems / 2, "q5_k: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec.
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b) {
            const float d = core::fp16_to_f32(w[b].d), dmin = core::fp16_to_f32(w[b].dmin);
            for (std::size_t c = 0; c < 4; ++c) {
                const std::uint8_t* q = w[b].qs + 32 * c;
                const auto [s1, m1] = detail::get_scale_min_k4(2 * c, w[b].scales);
                const auto [s2, m2] = detail::get_scale_min_k4(2 * c + 1, w[b].scales);
                const unsigned u1 = 1u << (2 * c), u2 = 1u << (2 * c + 1);
                for (std::size_t l = 0; l < 32; ++l) {
                    const int v = (q[l] & 0xF) + ((w[b].qh[l] & u1) ? 16 : 0);
                    *y++ = d * static_cast<float>(s1) * static_cast<float>(v) - dmin * static_cast<float>(m1);
                }
                for (std::size_t l = 0; l < 32; ++l) {
                    const int v = (q[l] >> 4) + ((w[b].qh[l] & u2) ? 16 : 0);
                    *y++ = d * static_cast<float>(s2) * static_cast<float>(v) - dmin * static_cast<float>(m2);
                }
            }
        }
    }

    // Reference quantizer (x finite): Q4_K's recipe with q in 0..31.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            std::uint8_t q[block_elems];
            detail::quantize_k4_scales(x, 31, out[b].d, out[b].dmin, out[b].scales, q);
            for (std::size_t l = 0; l < 32; ++l) out[b].qh[l] = 0;
            for (std::size_t c = 0; c < 4; ++c)
                for (std::size_t l = 0; l < 32; ++l) {
                    const std::uint8_t lo = q[64 * c + l], hi = q[64 * c + 32 + l];
                    out[b].qs[32 * c + l] = static_cast<std::uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
                    out[b].qh[l] = static_cast<std::uint8_t>(out[b].qh[l] | ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
                }
        }
    }

    // The quants 0..31 of elements 64c .. 64c + 63. c is a template argument so that every shift
    // is a constant: bytes have no per-lane variable shift on x86, and with one the compiler
    // gives up vectorising the loop.
    template <std::size_t c>
    static void unpack_group(const block& b, std::int8_t* q) noexcept {
        for (std::size_t l = 0; l < 32; ++l) {
            const std::uint8_t h = b.qh[l], v = b.qs[32 * c + l];
            q[64 * c + l] = static_cast<std::int8_t>((v & 0xF) | (((h >> (2 * c)) & 1) << 4));
            q[64 * c + 32 + l] = static_cast<std::int8_t>((v >> 4) | (((h >> (2 * c + 1)) & 1) << 4));
        }
    }
    static void unpack(const block& b, std::int8_t* q) noexcept {
        [&]<std::size_t... c>(std::index_sequence<c...>) { (unpack_group<c>(b, q), ...); }(std::make_index_sequence<4>{});
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(32), "q5_k: a sub-block must be whole batches");
        batch acc(0.0f);
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            alignas(64) std::int8_t q[block_elems];
            unpack(w[b], q);
            acc = detail::dot_k4_block<Arch>(q, x, core::fp16_to_f32(w[b].d), core::fp16_to_f32(w[b].dmin), w[b].scales, acc);
        }
        return xsimd::hadd(acc);
    }
};
static_assert(quant_policy<q5_k>);

}  // namespace lmtk::quant
// #include <lmtk/quant/q6_k.hpp>
// Q6_K (GGUF id 14): super-blocks of 256 weights = 16 sub-blocks of 16 with int8 scales
// against one fp16 d; each weight is 6 bits with an offset of 32: w = d * sc * (q - 32).
// Element e = 128n + 32k + l (n < 2, k < 4, l < 32): its low 4 bits are the low (k < 2) or
// high (k >= 2) nibble of ql[64n + 32(k % 2) + l], its high 2 bits are bits 2k..2k+1 of
// qh[32n + l]; its scale is scales[e / 16].
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

// #include <lmtk/core/fp16.hpp>
// #include <lmtk/quant/block_common.hpp>
// #include <lmtk/quant/ggml_type.hpp>
// #include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

struct q6_k {
    static constexpr ggml_type type_id = ggml_type::q6_k;
    static constexpr std::size_t block_elems = 256;
    static constexpr std::size_t sub_elems = 16;
    static constexpr std::size_t n_sub = block_elems / sub_elems;
    struct block {
        std::uint8_t ql[block_elems / 2];  // low 4 bits
        std::uint8_t qh[block_elems / 4];  // high 2 bits
        std::int8_t scales[n_sub];
        std::uint16_t d;  // super-block scale, fp16 bits
    };
    static_assert(sizeof(block) == block_elems / 2 + block_elems / 4 + n_sub + sizeof(std::uint16_t), "q6_k: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec (spec 3.4's loop).
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, y += block_elems) {
            const float d = core::fp16_to_f32(w[b].d);
            for (std::size_t n = 0; n < 2; ++n) {
                const std::uint8_t* ql = w[b].ql + 64 * n;
                const std::uint8_t* qh = w[b].qh + 32 * n;
                const std::int8_t* sc = w[b].scales + 8 * n;
                float* yn = y + 128 * n;
                for (std::size_t l = 0; l < 32; ++l) {
                    const std::size_t is = l / 16;
                    const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    yn[l] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
                    yn[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
                    yn[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
                    yn[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
                }
            }
        }
    }

    // Reference quantizer (x finite): per sub-block a symmetric least-squares scale for
    // q - 32 in -32..31, the 16 scales to int8 against d (the largest scale maps to -128), then
    // every weight requantized against its sub-block's decoded scale.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            float s[n_sub];
            std::int8_t q[block_elems];
            for (std::size_t k = 0; k < n_sub; ++k) s[k] = detail::fit_symmetric(x + k * sub_elems, sub_elems, 32, q + k * sub_elems);
            int sc[n_sub];
            block& o = out[b];
            o.d = core::f32_to_fp16(detail::quantize_signed_scales(s, n_sub, 128, sc));
            const float d = core::fp16_to_f32(o.d);
            for (std::size_t k = 0; k < n_sub; ++k) {
                o.scales[k] = static_cast<std::int8_t>(sc[k]);
                detail::quantize_symmetric(x + k * sub_elems, sub_elems, d * static_cast<float>(sc[k]), 32, q + k * sub_elems);
            }
            for (std::size_t i = 0; i < sizeof o.ql; ++i) o.ql[i] = 0;
            for (std::size_t i = 0; i < sizeof o.qh; ++i) o.qh[i] = 0;
            for (std::size_t e = 0; e < block_elems; ++e) {
                const std::size_t n = e / 128, k = (e % 128) / 32, l = e % 32;
                const auto v = static_cast<unsigned>(q[e] + 32);  // 0..63
                std::uint8_t& lo = o.ql[64 * n + 32 * (k % 2) + l];
                lo = static_cast<std::uint8_t>(lo | ((v & 0xF) << (4 * (k / 2))));
                o.qh[32 * n + l] = static_cast<std::uint8_t>(o.qh[32 * n + l] | ((v >> 4) << (2 * k)));
            }
        }
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(sub_elems), "q6_k: a sub-block must be whole batches");
        batch acc(0.0f);
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            alignas(64) std::int8_t q[block_elems];
            for (std::size_t n = 0; n < 2; ++n) {
                const std::uint8_t* ql = w[b].ql + 64 * n;
                const std::uint8_t* qh = w[b].qh + 32 * n;
                std::int8_t* qn = q + 128 * n;
                for (std::size_t l = 0; l < 32; ++l) {
                    qn[l] = static_cast<std::int8_t>(((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
                    qn[l + 32] = static_cast<std::int8_t>(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                    qn[l + 64] = static_cast<std::int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                    qn[l + 96] = static_cast<std::int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
                }
            }
            const float d = core::fp16_to_f32(w[b].d);
            float sc[n_sub];
            for (std::size_t k = 0; k < n_sub; ++k) sc[k] = d * static_cast<float>(w[b].scales[k]);
            acc = detail::scaled_dot<Arch, sub_elems, n_sub>(q, x, sc, acc);
        }
        return xsimd::hadd(acc);
    }
};
static_assert(quant_policy<q6_k>);

}  // namespace lmtk::quant
// #include <lmtk/quant/q8_k.hpp>
// Q8_K (GGUF id 15): 256 int8 quants with one fp32 scale, plus the sums of each 16 quants.
// ggml uses it for activations inside K-quant dot products, not for weights in model files;
// it is here so that files and tools that carry it can be read and produced.
// w[j] = d * qs[j]; bsums[i] = sum of qs[16i .. 16i + 15].
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

// #include <lmtk/quant/block_common.hpp>
// #include <lmtk/quant/ggml_type.hpp>
// #include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

struct q8_k {
    static constexpr ggml_type type_id = ggml_type::q8_k;
    static constexpr std::size_t block_elems = 256;
    struct block {
        float d;  // scale, fp32 (not fp16, unlike every other block format)
        std::int8_t qs[block_elems];
        std::int16_t bsums[block_elems / 16];
    };
    static_assert(sizeof(block) == sizeof(float) + block_elems + block_elems / 16 * sizeof(std::int16_t), "q8_k: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec: bsums do not enter it.
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b)
            for (std::size_t j = 0; j < block_elems; ++j) *y++ = w[b].d * static_cast<float>(w[b].qs[j]);
    }

    // Reference quantizer (x finite): d = amax / 127, q = round(x / d); bsums filled in.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            float amax = 0.0f;
            for (std::size_t j = 0; j < block_elems; ++j) amax = std::max(amax, std::fabs(x[j]));
            const float d = amax / 127.0f;
            const float inv_d = detail::safe_inverse(d);
            out[b].d = d;
            for (std::size_t j = 0; j < block_elems; ++j)
                out[b].qs[j] = static_cast<std::int8_t>(std::clamp(detail::round_int(x[j] * inv_d), -127, 127));
            for (std::size_t i = 0; i < block_elems / 16; ++i) {
                int s = 0;
                for (std::size_t j = 0; j < 16; ++j) s += out[b].qs[16 * i + j];
                out[b].bsums[i] = static_cast<std::int16_t>(s);
            }
        }
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(block_elems), "q8_k: a block must be whole batches");
        batch acc(0.0f);
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems)
            acc = xsimd::fma(batch(w[b].d), detail::dot_i8<Arch>(w[b].qs, x, block_elems), acc);
        return xsimd::hadd(acc);
    }
};
static_assert(quant_policy<q8_k>);

}  // namespace lmtk::quant
// #include <lmtk/quant/iq4_nl.hpp>
// IQ4_NL (GGUF id 20): 32 weights share one fp16 scale; each 4-bit index picks one of 16
// non-uniform levels (denser near zero, where trained weights cluster). Nibble layout as Q4_0:
// w[j] = d * K[qs[j] & 0xF], w[j + 16] = d * K[qs[j] >> 4], j < 16.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <xsimd/xsimd.hpp>

// #include <lmtk/core/fp16.hpp>
// #include <lmtk/quant/block_common.hpp>
// #include <lmtk/quant/ggml_type.hpp>
// #include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

struct iq4_nl {
    static constexpr ggml_type type_id = ggml_type::iq4_nl;
    static constexpr std::size_t block_elems = 32;
    static constexpr std::size_t half = block_elems / 2;
    // The codebook (spec 3.4), ascending; int8 so the dot can widen it like any quant.
    static constexpr std::array<std::int8_t, 16> levels = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                           1,    13,   25,  38,  53,  69,  89,  113};
    struct block {
        std::uint16_t d;  // scale, fp16 bits
        std::uint8_t qs[half];
    };
    static_assert(sizeof(block) == sizeof(std::uint16_t) + half, "iq4_nl: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec.
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, y += block_elems) {
            const float d = core::fp16_to_f32(w[b].d);
            for (std::size_t j = 0; j < half; ++j) {
                y[j] = d * static_cast<float>(levels[w[b].qs[j] & 0xF]);
                y[j + half] = d * static_cast<float>(levels[w[b].qs[j] >> 4]);
            }
        }
    }

    // The index of the level nearest to v (in units of d).
    static int nearest_level(float v) noexcept {
        const auto it = std::lower_bound(levels.begin(), levels.end(), v,
                                         [](std::int8_t l, float x) { return static_cast<float>(l) < x; });
        if (it == levels.begin()) return 0;
        if (it == levels.end()) return 15;
        const auto i = static_cast<int>(it - levels.begin());
        return v - static_cast<float>(levels[i - 1]) <= static_cast<float>(levels[i]) - v ? i - 1 : i;
    }

    // Reference quantizer (x finite). The levels are not evenly spaced, so no formula gives
    // the best d: try candidate scales that put the value of largest magnitude at or near
    // either end of the codebook, pick the nearest level for every value, refit d by least
    // squares for those levels (d = sum(x K) / sum(K^2)), and keep the candidate with the
    // smallest squared error; the levels are then chosen again against the fp16-rounded d.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            float amax = 0.0f, extreme = 0.0f;
            for (std::size_t j = 0; j < block_elems; ++j) {
                if (std::fabs(x[j]) > amax) {
                    amax = std::fabs(x[j]);
                    extreme = x[j];
                }
            }
            float best_d = 0.0f;
            double best_gain = -1.0;
            if (amax > 0.0f) {
                for (const float end : {static_cast<float>(levels.front()), static_cast<float>(levels.back())}) {
                    for (int t = -detail::search_steps; t <= detail::search_steps; ++t) {
                        // The extreme maps to `end` scaled by 1 +- up to 10%.
                        const float inv = end * (1.0f + 0.01f * static_cast<float>(t)) / extreme;
                        double sxk = 0.0, skk = 0.0;
                        for (std::size_t j = 0; j < block_elems; ++j) {
                            const float k = levels[static_cast<std::size_t>(nearest_level(x[j] * inv))];
                            sxk += static_cast<double>(x[j]) * k;
                            skk += static_cast<double>(k) * k;
                        }
                        const double gain = sxk * sxk / skk;  // skk > 0: no level is 0
                        if (gain > best_gain) {
                            best_gain = gain;
                            best_d = static_cast<float>(sxk / skk);
                        }
                    }
                }
            }
            out[b].d = core::f32_to_fp16(best_d);
            const float d = core::fp16_to_f32(out[b].d);
            const float inv_d = detail::safe_inverse(d);
            const auto index = [&](float v) noexcept { return static_cast<std::uint8_t>(nearest_level(v * inv_d)); };
            for (std::size_t j = 0; j < half; ++j)
                out[b].qs[j] = static_cast<std::uint8_t>(index(x[j]) | (index(x[j + half]) << 4));
        }
    }

    // The levels of the 32 indices of one block, in element order.
    static void unpack(const block& b, std::int8_t* q) noexcept {
#if defined(__GNUC__) && !defined(__clang__)
        // A 16-entry byte table lookup is one byte shuffle (pshufb, tbl) on every SIMD target;
        // GCC lowers __builtin_shuffle with a variable selector to it. A scalar lookup per
        // index ran at a quarter of Q4_0's speed.
        using bytes16 [[gnu::vector_size(16)]] = std::int8_t;
        using ubytes16 [[gnu::vector_size(16)]] = std::uint8_t;
        bytes16 table;
        std::memcpy(&table, levels.data(), sizeof table);
        ubytes16 packed;
        std::memcpy(&packed, b.qs, sizeof packed);
        const bytes16 lo = __builtin_shuffle(table, packed & 0xF), hi = __builtin_shuffle(table, packed >> 4);
        std::memcpy(q, &lo, sizeof lo);
        std::memcpy(q + half, &hi, sizeof hi);
#else
        for (std::size_t j = 0; j < half; ++j) {
            q[j] = levels[b.qs[j] & 0xF];
            q[j + half] = levels[b.qs[j] >> 4];
        }
#endif
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(block_elems), "iq4_nl: a block must be whole batches");
        batch acc0(0.0f), acc1(0.0f);  // two chains: each fma waits on the previous one's result
        std::size_t b = 0;
        alignas(64) std::int8_t q[block_elems];
        for (; b + 2 <= n_blocks; b += 2, x += 2 * block_elems) {
            unpack(w[b], q);
            acc0 = xsimd::fma(batch(core::fp16_to_f32(w[b].d)), detail::dot_i8<Arch>(q, x, block_elems), acc0);
            unpack(w[b + 1], q);
            acc1 = xsimd::fma(batch(core::fp16_to_f32(w[b + 1].d)), detail::dot_i8<Arch>(q, x + block_elems, block_elems), acc1);
        }
        if (b < n_blocks) {
            unpack(w[b], q);
            acc0 = xsimd::fma(batch(core::fp16_to_f32(w[b].d)), detail::dot_i8<Arch>(q, x, block_elems), acc0);
        }
        return xsimd::hadd(acc0 + acc1);
    }
};
static_assert(quant_policy<iq4_nl>);

}  // namespace lmtk::quant
// #include <lmtk/quant/group_layout.hpp>
// The in-memory layout lmtk repacks AWQ and GPTQ weights into at load.
//
// Both tools store w = s * (q - z) with one fp16 scale s and one integer zero z per (output row,
// group of g inputs), but pack q across rows (AWQ along the output dimension, GPTQ along the
// input dimension with a group index per input) in layouts built for GPU GEMMs. lmtk's kernels
// walk one output row at a time, so at load each group of each row becomes one block here: its
// scale, its zero and its g quants, rows contiguous like a GGUF tensor. The forward pass then
// treats an AWQ or GPTQ matrix exactly like a Q4_1 one. Dequantization stays exact: (q - z) is
// a small integer and s an fp16 value, so (q - z) * s is representable in float.
//
// 4-bit blocks keep ggml's nibble order (low nibbles the first half of the group, high nibbles
// the second); 3-bit blocks split each quant into two low bits (four quarters of the group,
// one per bit pair of a byte) and a high bit (eight eighths, one per bit), so that both unpack
// with fixed-length byte loops the compiler vectorises.
#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <xsimd/xsimd.hpp>

// #include <lmtk/core/fp16.hpp>
// #include <lmtk/quant/block_common.hpp>
// #include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

template <unsigned Bits, std::size_t G>
struct group_block;

template <std::size_t G>
struct group_block<4, G> {
    std::uint16_t scale;  // fp16 bits
    std::uint8_t zero;    // 0..16 (GPTQ v1 files can say 16; see gptq.hpp)
    std::uint8_t reserved;
    std::uint8_t qs[G / 2];
};

template <std::size_t G>
struct group_block<3, G> {
    std::uint16_t scale;
    std::uint8_t zero;
    std::uint8_t reserved;
    std::uint8_t ql[G / 4];  // bits 0-1 of quant j: bits 2*(j / (G/4)) of ql[j % (G/4)]
    std::uint8_t qh[G / 8];  // bit 2 of quant j: bit j / (G/8) of qh[j % (G/8)]
};

// One output row's group of G inputs per block. Bits: 3 or 4; G: 32, 64 or 128.
template <unsigned Bits, std::size_t G>
struct group_layout {
    static_assert(Bits == 3 || Bits == 4, "group_layout: 3 or 4 bits");
    static_assert(G == 32 || G == 64 || G == 128, "group_layout: groups of 32, 64 or 128");
    static constexpr unsigned bits = Bits;
    static constexpr std::size_t block_elems = G;
    static constexpr unsigned max_q = (1u << Bits) - 1;
    using block = group_block<Bits, G>;
    static_assert(sizeof(block) == 4 + G * Bits / 8, "group_layout: padding in the block");
    static_assert(std::is_trivially_copyable_v<block> && std::is_standard_layout_v<block>);

    // q[j] (0 .. max_q) of one block.
    static void unpack(const block& b, std::uint8_t* q) noexcept {
        if constexpr (Bits == 4) {
            for (std::size_t j = 0; j < G / 2; ++j) {
                q[j] = b.qs[j] & 0xF;
                q[j + G / 2] = b.qs[j] >> 4;
            }
        } else {
            constexpr std::size_t quarter = G / 4, eighth = G / 8;
            for (std::size_t k = 0; k < 4; ++k)
                for (std::size_t j = 0; j < quarter; ++j) q[k * quarter + j] = (b.ql[j] >> (2 * k)) & 3;
            for (std::size_t k = 0; k < 8; ++k)
                for (std::size_t j = 0; j < eighth; ++j)
                    q[k * eighth + j] = static_cast<std::uint8_t>(q[k * eighth + j] | (((b.qh[j] >> k) & 1) << 2));
        }
    }

    // The inverse: a block from G quants (each <= max_q), a zero and an fp16 scale.
    static block pack(const std::uint8_t* q, std::uint8_t zero, std::uint16_t scale_fp16) noexcept {
        block b{};
        b.scale = scale_fp16;
        b.zero = zero;
        if constexpr (Bits == 4) {
            for (std::size_t j = 0; j < G / 2; ++j)
                b.qs[j] = static_cast<std::uint8_t>((q[j] & 0xF) | ((q[j + G / 2] & 0xF) << 4));
        } else {
            constexpr std::size_t quarter = G / 4, eighth = G / 8;
            for (std::size_t j = 0; j < G; ++j) {
                b.ql[j % quarter] = static_cast<std::uint8_t>(b.ql[j % quarter] | ((q[j] & 3) << (2 * (j / quarter))));
                b.qh[j % eighth] = static_cast<std::uint8_t>(b.qh[j % eighth] | (((q[j] >> 2) & 1) << (j / eighth)));
            }
        }
        return b;
    }

    // Reference decoder, the executable spec: w = (q - z) * s.
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        std::uint8_t q[G];
        for (std::size_t b = 0; b < n_blocks; ++b, y += G) {
            unpack(w[b], q);
            const float s = core::fp16_to_f32(w[b].scale);
            for (std::size_t j = 0; j < G; ++j) y[j] = static_cast<float>(int(q[j]) - int(w[b].zero)) * s;
        }
    }

    // Round-to-nearest quantizer with AWQ's rule (min/max of the group, asymmetric), for tests and
    // benchmarks; checkpoints come from AWQ/GPTQ tools or tools/pack.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += G) {
            float mn = x[0], mx = x[0];
            for (std::size_t j = 1; j < G; ++j) mn = std::min(mn, x[j]), mx = std::max(mx, x[j]);
            const float s = std::max((mx - mn) / float(max_q), 1e-5f);
            const std::uint16_t s16 = core::f32_to_fp16(s);
            const float sr = core::fp16_to_f32(s16);
            const int z = std::clamp(-detail::round_int(mn / sr), 0, int(max_q));
            std::uint8_t q[G];
            for (std::size_t j = 0; j < G; ++j) q[j] = static_cast<std::uint8_t>(std::clamp(detail::round_int(x[j] / sr) + z, 0, int(max_q)));
            out[b] = pack(q, static_cast<std::uint8_t>(z), s16);
        }
    }

    // sum_j w[j] x[j] = sum over blocks of s * sum_j (q[j] - z) x[j]; q - z fits a signed byte.
    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(G), "group_layout: a group must be whole batches");
        batch acc0(0.0f), acc1(0.0f);
        alignas(64) std::uint8_t q[G];
        alignas(64) std::int8_t c[G];
        std::size_t b = 0;
        const auto one = [&](std::size_t i, batch& acc) {
            unpack(w[i], q);
            const int z = w[i].zero;
            for (std::size_t j = 0; j < G; ++j) c[j] = static_cast<std::int8_t>(int(q[j]) - z);
            acc = xsimd::fma(batch(core::fp16_to_f32(w[i].scale)), detail::dot_i8<Arch>(c, x + i * G, G), acc);
        };
        for (; b + 2 <= n_blocks; b += 2) {
            one(b, acc0);
            one(b + 1, acc1);
        }
        if (b < n_blocks) one(b, acc0);
        return xsimd::hadd(acc0 + acc1);
    }
};

// What a checkpoint's quantization_config says about one matrix, after load: the runtime value
// that load-time dispatch maps onto one compiled group policy.
enum class group_method : std::uint8_t { awq, gptq };

struct group_format {
    group_method method = group_method::gptq;
    unsigned bits = 4;
    int group = 128;         // -1: one group over the whole input dimension
    bool act_order = false;  // GPTQ desc_act: inputs permuted at load (see gptq.hpp)
    friend constexpr bool operator==(const group_format&, const group_format&) = default;
};

// "AWQ 4-bit g128", "GPTQ 3-bit g-1 act-order": how tools and errors name a format.
inline std::string format_name(const group_format& f) {
    std::string s = f.method == group_method::awq ? "AWQ " : "GPTQ ";
    s += std::to_string(f.bits) + "-bit g" + std::to_string(f.group);
    if (f.act_order) s += " act-order";
    return s;
}

// A format read from AWQ or GPTQ checkpoints: a group_format naming it and the layout its weights
// are repacked into.
template <class P>
concept group_policy = requires {
    { P::format } -> std::convertible_to<group_format>;
    typename P::layout;
} && requires(const typename P::layout::block* w, const float* x, float* y, std::size_t n) {
    { P::layout::dequantize_row(w, y, n) } noexcept;
    { P::layout::dot(xsimd::default_arch{}, w, x, n) } noexcept -> std::same_as<float>;
};

namespace detail {

// Little-endian words and fp16 bits from checkpoint bytes of any alignment (safetensors does
// not align tensors).
inline std::uint32_t word_at(const std::byte* p, std::size_t i) noexcept {
    std::uint32_t v;
    std::memcpy(&v, p + 4 * i, 4);
    return v;
}
inline std::uint16_t half_at(const std::byte* p, std::size_t i) noexcept {
    std::uint16_t v;
    std::memcpy(&v, p + 2 * i, 2);
    return v;
}

}  // namespace detail

// The repacked matrix of one linear layer: `out` rows of `in / G` blocks, and, for GPTQ
// act-order files, the order in which the blocks' columns take the inputs (input_perm[k] is the
// original input index of column k; empty when it is the identity).
struct group_matrix {
    std::vector<std::byte> blocks;
    std::vector<std::uint32_t> input_perm;
};

}  // namespace lmtk::quant
// #include <lmtk/quant/awq.hpp>
// AutoAWQ checkpoints, GEMM layout (version "gemm", the common one): 4-bit, a zero point and an
// fp16 scale per (output channel, group of g inputs), w = (q - z) * s with zeros stored as is.
// On disk (../shared/spec/quant-formats.md, 1.3), per linear layer with in inputs, out outputs:
//   qweight int32 [in, out/8]    eight outputs per word, interleaved: nibble k of word c holds
//                                output 8c + order[k], order = 0 2 4 6 1 3 5 7
//   qzeros  int32 [in/g, out/8]  the same packing
//   scales  fp16  [in/g, out]
// The GEMV layout (packed along the input dimension, one row per output) is read too.
// Both are repacked at load into group_layout<4, g>, one block per (output, group).
#include <cstddef>
#include <cstdint>
#include <vector>

// #include <lmtk/core/error.hpp>
// #include <lmtk/quant/group_layout.hpp>

namespace lmtk::quant {

// AutoAWQ 4-bit with groups of Group inputs (32, 64 or 128).
template <int Group>
struct awq4 {
    static_assert(Group == 32 || Group == 64 || Group == 128, "awq4: AutoAWQ groups are 32, 64 or 128");
    static constexpr group_format format{group_method::awq, 4, Group, false};
    using layout = group_layout<4, std::size_t(Group)>;
};

namespace awq {

// Nibble of each output 8c + j within word c: the inverse of the packing order above.
inline constexpr unsigned nibble_of_output[8] = {0, 4, 1, 5, 2, 6, 3, 7};

// The three tensors of one GEMM-layout linear layer, as mapped bytes (shapes checked by the
// caller against in, out and group).
struct gemm_tensors {
    const std::byte* qweight;
    const std::byte* qzeros;
    const std::byte* scales;
    std::size_t in, out, group;
};

template <std::size_t G>
group_matrix repack_gemm(const gemm_tensors& t) {
    using L = group_layout<4, G>;
    if (t.group != G || t.in % G != 0 || t.out % 8 != 0)
        fail("AWQ: a ", t.in, " x ", t.out, " matrix does not split into groups of ", G, " and words of 8 outputs");
    const std::size_t words = t.out / 8, n_blocks = t.in / G;
    group_matrix m;
    m.blocks.resize(t.out * n_blocks * sizeof(typename L::block));
    auto* out = reinterpret_cast<typename L::block*>(m.blocks.data());
    // Eight outputs (one word column) at a time: their quants for every input, then their blocks.
    std::vector<std::uint8_t> q(8 * t.in);
    for (std::size_t c = 0; c < words; ++c) {
        for (std::size_t i = 0; i < t.in; ++i) {
            const std::uint32_t w = detail::word_at(t.qweight, i * words + c);
            for (std::size_t j = 0; j < 8; ++j) q[j * t.in + i] = (w >> (4 * nibble_of_output[j])) & 0xF;
        }
        for (std::size_t b = 0; b < n_blocks; ++b) {
            const std::uint32_t zw = detail::word_at(t.qzeros, b * words + c);
            for (std::size_t j = 0; j < 8; ++j) {
                const std::size_t o = 8 * c + j;
                const auto z = static_cast<std::uint8_t>((zw >> (4 * nibble_of_output[j])) & 0xF);
                out[o * n_blocks + b] = L::pack(&q[j * t.in + b * G], z, detail::half_at(t.scales, b * t.out + o));
            }
        }
    }
    return m;
}

// GEMV layout (../shared/spec/quant-formats.md, 1.4): qweight int32 [out, in/8] natural order,
// qzeros int32 [out, zw] (nibble k of word c: zero of group 8c + k), scales fp16 [out, 8 zw].
struct gemv_tensors {
    const std::byte* qweight;
    const std::byte* qzeros;
    const std::byte* scales;
    std::size_t in, out, group, zero_words;
};

template <std::size_t G>
group_matrix repack_gemv(const gemv_tensors& t) {
    using L = group_layout<4, G>;
    if (t.group != G || t.in % G != 0 || t.in % 8 != 0 || t.zero_words * 8 < t.in / G)
        fail("AWQ GEMV: a ", t.in, " x ", t.out, " matrix does not match groups of ", G);
    const std::size_t n_blocks = t.in / G, in_words = t.in / 8;
    group_matrix m;
    m.blocks.resize(t.out * n_blocks * sizeof(typename L::block));
    auto* out = reinterpret_cast<typename L::block*>(m.blocks.data());
    std::vector<std::uint8_t> q(t.in);
    for (std::size_t o = 0; o < t.out; ++o) {
        for (std::size_t c = 0; c < in_words; ++c) {
            const std::uint32_t w = detail::word_at(t.qweight, o * in_words + c);
            for (std::size_t k = 0; k < 8; ++k) q[8 * c + k] = (w >> (4 * k)) & 0xF;
        }
        for (std::size_t b = 0; b < n_blocks; ++b) {
            const std::uint32_t zw = detail::word_at(t.qzeros, o * t.zero_words + b / 8);
            const auto z = static_cast<std::uint8_t>((zw >> (4 * (b % 8))) & 0xF);
            out[o * n_blocks + b] = L::pack(&q[b * G], z, detail::half_at(t.scales, o * t.zero_words * 8 + b));
        }
    }
    return m;
}

}  // namespace awq
}  // namespace lmtk::quant
// #include <lmtk/quant/gptq.hpp>
// GPTQ checkpoints (AutoGPTQ, GPTQModel, transformers/optimum), 4-bit and 3-bit:
// w = s * (q - z) per (output channel, group), see ../shared/spec/quant-formats.md, 2. On disk,
// per linear layer with in inputs, out outputs and groups of g (g = -1: one group of all inputs):
//   qweight int32 [in*bits/32, out]         packed along the INPUT dimension
//   qzeros  int32 [groups, out*bits/32]     packed along the OUTPUT dimension
//   scales  fp16  [groups, out]
//   g_idx   int32 [in]                      the group of each input (i / g unless act-order)
// 4-bit packs 8 values per word from bit 0; 3-bit packs 32 values in 3 words, value v at bits
// 3v .. 3v+2 of the 96-bit little-endian triple. checkpoint_format "gptq" (v1, every AutoGPTQ
// file) stores z - 1, "gptq_v2" (GPTQModel) stores z.
//
// Act-order (desc_act) files quantized inputs in an order of their own, so the inputs of one
// group are scattered. At load the columns are sorted by group (a stable argsort of g_idx, once),
// which makes every group whole blocks again; the forward pass gathers the activations into the
// same order (one pass over the input vector, shared by every row) instead of looking up a
// group per weight.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

// #include <lmtk/core/error.hpp>
// #include <lmtk/quant/group_layout.hpp>

namespace lmtk::quant {

// GPTQ with Bits (3 or 4) and groups of Group inputs (32, 64, 128, or -1 for one group per
// output channel); ActOrder: the inputs are permuted (desc_act with a non-trivial g_idx).
// Per-channel scales are repacked into blocks of 32 that repeat the channel's scale and zero.
template <unsigned Bits, int Group, bool ActOrder>
struct gptq {
    static_assert(Bits == 3 || Bits == 4, "gptq: 3 or 4 bits");
    static_assert(Group == 32 || Group == 64 || Group == 128 || Group == -1, "gptq: groups of 32, 64, 128 or -1");
    static constexpr group_format format{group_method::gptq, Bits, Group, ActOrder};
    using layout = group_layout<Bits, Group == -1 ? 32 : std::size_t(Group)>;
};
// The names of the design card.
template <int Group, bool ActOrder = false>
using gptq4 = gptq<4, Group, ActOrder>;
template <int Group, bool ActOrder = false>
using gptq3 = gptq<3, Group, ActOrder>;

namespace gptq_format {

// Value v (0..31) of a 3-bit triple of words.
inline unsigned value_of_triple(std::uint32_t w0, std::uint32_t w1, std::uint32_t w2, unsigned v) noexcept {
    const std::uint64_t lo = std::uint64_t(w0) | (std::uint64_t(w1) << 32);
    const unsigned bit = 3 * v;
    if (bit + 3 <= 64) return static_cast<unsigned>((lo >> bit) & 7);
    if (bit >= 64) return (w2 >> (bit - 64)) & 7;
    return static_cast<unsigned>(((lo >> bit) | (std::uint64_t(w2) << (64 - bit))) & 7);  // straddles w1/w2
}

struct tensors {
    const std::byte* qweight;
    const std::byte* qzeros;
    const std::byte* scales;
    const std::byte* g_idx;  // nullptr: i / group
    std::size_t in, out;
    int group;               // -1: one group
    unsigned bits;
    bool v1;                 // checkpoint_format "gptq": stored zeros are z - 1
};

inline std::size_t group_size(const tensors& t) noexcept { return t.group == -1 ? t.in : std::size_t(t.group); }
inline std::size_t n_groups(const tensors& t) noexcept { return (t.in + group_size(t) - 1) / group_size(t); }

// The group of every input, checked against the number of groups.
inline std::vector<std::uint32_t> groups_of_inputs(const tensors& t) {
    std::vector<std::uint32_t> g(t.in);
    const std::size_t gs = group_size(t), ng = n_groups(t);
    for (std::size_t i = 0; i < t.in; ++i) {
        if (!t.g_idx) {
            g[i] = static_cast<std::uint32_t>(i / gs);
            continue;
        }
        const auto v = static_cast<std::int32_t>(detail::word_at(t.g_idx, i));
        if (v < 0 || std::size_t(v) >= ng) fail("GPTQ: g_idx[", i, "] = ", v, " is not one of the ", ng, " groups");
        g[i] = static_cast<std::uint32_t>(v);
    }
    return g;
}

// True when g_idx is not plain i / group, i.e. the columns must be reordered (act-order).
inline bool needs_reorder(const tensors& t, const std::vector<std::uint32_t>& g) noexcept {
    const std::size_t gs = group_size(t);
    for (std::size_t i = 0; i < g.size(); ++i)
        if (g[i] != i / gs) return true;
    return false;
}

template <unsigned Bits, std::size_t G>
group_matrix repack(const tensors& t) {
    using L = group_layout<Bits, G>;
    if (t.bits != Bits) fail("GPTQ: ", t.bits, "-bit tensors given to the ", Bits, "-bit repacker");
    if (t.in % G != 0 || (Bits == 4 && t.out % 8 != 0) || (Bits == 3 && (t.in % 32 != 0 || t.out % 32 != 0)))
        fail("GPTQ: a ", t.in, " x ", t.out, " matrix does not fit ", Bits, "-bit words and blocks of ", G);
    const std::vector<std::uint32_t> g = groups_of_inputs(t);
    group_matrix m;
    std::vector<std::uint32_t> order(t.in);
    std::iota(order.begin(), order.end(), 0u);
    if (needs_reorder(t, g)) {
        std::stable_sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) { return g[a] < g[b]; });
        m.input_perm = order;
    }
    const std::size_t n_blocks = t.in / G;
    // Every block of G sorted columns must be one group: a scale per block.
    for (std::size_t b = 0; b < n_blocks; ++b)
        for (std::size_t j = 1; j < G; ++j)
            if (g[order[b * G + j]] != g[order[b * G]])
                fail("GPTQ: the groups of g_idx are not runs of ", G, " inputs (group ", g[order[b * G]], " has ",
                     std::count(g.begin(), g.end(), g[order[b * G]]), ")");

    const std::size_t zero_words = t.out * Bits / 32;
    const auto zero_of = [&](std::size_t grp, std::size_t o) -> unsigned {
        const std::byte* row = t.qzeros + 4 * grp * zero_words;
        unsigned z;
        if constexpr (Bits == 4) {
            z = (detail::word_at(row, o / 8) >> (4 * (o % 8))) & 0xF;
        } else {
            const std::size_t c = 3 * (o / 32);
            z = value_of_triple(detail::word_at(row, c), detail::word_at(row, c + 1), detail::word_at(row, c + 2),
                                static_cast<unsigned>(o % 32));
        }
        // v1 stores z - 1 (the masked field plus one, as AutoGPTQ's CUDA kernels read it).
        return t.v1 ? z + 1 : z;
    };

    m.blocks.resize(t.out * n_blocks * sizeof(typename L::block));
    auto* out = reinterpret_cast<typename L::block*>(m.blocks.data());
    // Sixteen outputs (one cache line of each qweight row) at a time: their quants for every
    // input, then their blocks.
    constexpr std::size_t chunk = 16;
    std::vector<std::uint8_t> q(chunk * t.in), sorted(G);
    for (std::size_t o0 = 0; o0 < t.out; o0 += chunk) {
        const std::size_t n_o = std::min(chunk, t.out - o0);
        if constexpr (Bits == 4) {
            for (std::size_t r = 0; r < t.in / 8; ++r)
                for (std::size_t j = 0; j < n_o; ++j) {
                    const std::uint32_t w = detail::word_at(t.qweight, r * t.out + o0 + j);
                    for (std::size_t k = 0; k < 8; ++k) q[j * t.in + 8 * r + k] = (w >> (4 * k)) & 0xF;
                }
        } else {
            for (std::size_t r = 0; r < t.in / 32; ++r)
                for (std::size_t j = 0; j < n_o; ++j) {
                    const std::size_t o = o0 + j;
                    const std::uint32_t w0 = detail::word_at(t.qweight, (3 * r) * t.out + o),
                                        w1 = detail::word_at(t.qweight, (3 * r + 1) * t.out + o),
                                        w2 = detail::word_at(t.qweight, (3 * r + 2) * t.out + o);
                    for (unsigned v = 0; v < 32; ++v)
                        q[j * t.in + 32 * r + v] = static_cast<std::uint8_t>(value_of_triple(w0, w1, w2, v));
                }
        }
        for (std::size_t j = 0; j < n_o; ++j) {
            const std::size_t o = o0 + j;
            for (std::size_t b = 0; b < n_blocks; ++b) {
                const std::uint32_t grp = g[order[b * G]];
                for (std::size_t k = 0; k < G; ++k) sorted[k] = q[j * t.in + order[b * G + k]];
                out[o * n_blocks + b] = L::pack(sorted.data(), static_cast<std::uint8_t>(zero_of(grp, o)),
                                                detail::half_at(t.scales, grp * t.out + o));
            }
        }
    }
    return m;
}

}  // namespace gptq_format
}  // namespace lmtk::quant
// #include <lmtk/quant/dispatch.hpp>
// Load-time dispatch: a GGUF tensor's ggml_type -> the compiled kernels of its format, resolved
// once per tensor into plain function pointers so the forward pass has no type switches.
#include <algorithm>
#include <cstddef>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <type_traits>

#include <boost/hana/ext/std/integral_constant.hpp>
#include <boost/hana/tuple.hpp>
#include <boost/hana/type.hpp>
#include <boost/hana/unpack.hpp>

// #include <lmtk/quant/act_q8.hpp>
// Activations quantized to int8 in blocks of 32 ("Q8 blocks of x"): the second operand of the
// integer matmul kernels of the quantized weight formats. llama.cpp does the same (its Q8_0 and
// Q4_0 dot products multiply against q8_0 activations), so int8 activations cost no more
// accuracy than the reference runtime accepts. F32/F16/BF16 weights never take this path:
// their results are checked against a float reference at 1e-4, which int8 x would not meet.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace lmtk::quant {

// Which activations a weight's fast matmul wants; the forward pass prepares each kind once per
// input and shares it between the projections that read the same input.
enum class activation_kind : std::uint8_t { f32, q8 };

struct act_q8 {
    static constexpr std::size_t block_elems = 32;
    static constexpr std::size_t align = 64;  // one cache line; every part below starts on one

    // One row of `cols` values (cols % 32 == 0), nb = cols / 32 blocks:
    //   int8_t  qs[cols]   quants: x[j] ~= d[j / 32] * qs[j]
    //   float   d[nb]      block scales
    //   float   ds[nb]     d * sum(qs) of each block: weights stored as unsigned quants u = q + z
    //                      need sum(u * x) - z * sum(x), and this is the second term's factor
    //   int32_t sum[nb]    sum(qs): the same correction for kernels that apply it in integers
    // The quants come first and contiguous so that a kernel loads 64 of them with one load.
    struct row {
        const std::int8_t* qs;
        const float* d;
        const float* ds;
        const std::int32_t* sum;
    };

    static constexpr std::size_t round_up(std::size_t n) noexcept { return (n + align - 1) / align * align; }
    static constexpr std::size_t row_bytes(std::size_t cols) noexcept {
        return round_up(cols) + 3 * round_up(cols / block_elems * 4);
    }

    static row view(const std::byte* p, std::size_t cols) noexcept {
        const std::size_t part = round_up(cols / block_elems * 4);
        const std::byte* scales = p + round_up(cols);
        return row{reinterpret_cast<const std::int8_t*>(p), reinterpret_cast<const float*>(scales),
                   reinterpret_cast<const float*>(scales + part), reinterpret_cast<const std::int32_t*>(scales + 2 * part)};
    }

    // d = amax / 127 and q = round(x / d) per block of 32, as ggml's quantize_row_q8_0 (but the
    // scale stays a float: it never goes to disk). Written as plain loops over fixed-size
    // blocks, which GCC and Clang vectorise.
    static void quantize_row(const float* x, std::byte* out, std::size_t cols) noexcept {
        const std::size_t nb = cols / block_elems, part = round_up(nb * 4);
        auto* qs = reinterpret_cast<std::int8_t*>(out);
        auto* d = reinterpret_cast<float*>(out + round_up(cols));
        auto* ds = reinterpret_cast<float*>(out + round_up(cols) + part);
        auto* sum = reinterpret_cast<std::int32_t*>(out + round_up(cols) + 2 * part);
        for (std::size_t b = 0; b < nb; ++b, x += block_elems, qs += block_elems) {
            float amax = 0.0f;
            for (std::size_t j = 0; j < block_elems; ++j) amax = std::max(amax, std::fabs(x[j]));
            const float scale = amax / 127.0f;
            const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
            std::int32_t s = 0;
            for (std::size_t j = 0; j < block_elems; ++j) {
                const auto q = static_cast<std::int32_t>(std::nearbyint(x[j] * inv));  // |q| <= 127
                qs[j] = static_cast<std::int8_t>(q);
                s += q;
            }
            d[b] = scale;
            ds[b] = scale * static_cast<float>(s);
            sum[b] = s;
        }
    }
};

}  // namespace lmtk::quant
// #include <lmtk/quant/awq.hpp>
// #include <lmtk/quant/bf16.hpp>
// #include <lmtk/quant/f16.hpp>
// #include <lmtk/quant/f32.hpp>
// #include <lmtk/quant/ggml_type.hpp>
// #include <lmtk/quant/gptq.hpp>
// #include <lmtk/quant/group_layout.hpp>
// #include <lmtk/quant/interleaved.hpp>
// Row-interleaved layouts: 16 rows of a weight matrix stored side by side, so that lane r of a
// 16-lane integer vector is row r. The int8 kernels (interleaved_vnni.hpp) then finish 16 rows
// with each vpdpbusd against 4 activation bytes broadcast from memory, and one convert, scale
// and FMA per block serve all 16 rows: about a quarter of the instructions per weight byte of
// the row-major kernels, which is what lets decode run at the speed memory delivers the weights.
//
// A matrix is repacked into this layout once, at load (model/repack.hpp), or a group at a time
// into a thread-local buffer when a prefill batch multiplies weights that stayed row-major.
// Each group holds exactly the bits of its 16 GGUF rows (rearranged, and for Q8_0 with the sign
// bit of each quant flipped), padded to a 64-byte multiple so that every group starts on a cache
// line; the rows missing from the last group of a matrix whose rows are not a multiple of 16 are
// zeros. pack() writes every byte of a full group's parts and leaves the padding after them
// (under 64 bytes, never read) as it found it.
//
// Within a group the parts are arrays over the blocks (structure of arrays), each starting on a
// 64-byte boundary. "word k of lane r" is 4 consecutive bytes of row r, and the 16 lanes of one
// word are 64 contiguous bytes (one vector):
//
//   Q4_0  q [nb][4][16] u32   word k: bytes 4k..4k+3 of the block's qs (low nibbles: elements
//                             4k.., high nibbles: elements 16 + 4k..), unchanged
//         d [nb][16]   fp16
//   Q8_0  q [nb][8][16] u32   word k: quants 4k..4k+3 as unsigned bytes q + 128
//         d [nb][16]   fp16
//   Q4_K  q [nb][4][8][16] u32  chunk c, word k: bytes 32c + 4k.. of qs (low nibbles: sub-block
//                             2c, high nibbles: sub-block 2c + 1), unchanged
//         s [nb][3][16] u32   the 12 packed scale/min bytes of the super-block, as 3 words
//         d [nb][2][16] fp16  d, then dmin
//   F16   h [cols][16] fp16  column k of the 16 rows: one vector of halves per column
//   Q6_K  u = q + 32 (0..63) of element e; sub-block s = elements 16s..16s+15 = 4 words
//         lo[nb][16][2][16] u32  (s, h): byte j = low 4 bits of u[16s + 8h + j], high nibble the
//                             low 4 bits of u[16s + 8h + 4 + j]
//         hi[nb][16][16] u32  s: byte j, bits 2i..2i+1 = the top 2 bits of u[16s + 4i + j]
//         sc[nb][16][16] i8   sub-block scales
//         d [nb][16]   fp16
//
// The scalar dequantize_row here is the executable spec of each layout; tests check that it
// reproduces the format's reference decoder for every row.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

// #include <lmtk/core/fp16.hpp>
// #include <lmtk/quant/f16.hpp>
// #include <lmtk/quant/q4_0.hpp>
// #include <lmtk/quant/q4_k.hpp>
// #include <lmtk/quant/q6_k.hpp>
// #include <lmtk/quant/q8_0.hpp>

namespace lmtk::quant {

// Rows per group of every interleaved layout: one 32-bit lane each in a 512-bit vector.
inline constexpr std::size_t interleave_rows = 16;

// How far ahead of the group being multiplied the kernels over these layouts prefetch weights
// into L2 at decode: the reads of about a microsecond at one core's bandwidth (tried from 8 to
// 64 KiB with bench/quant_kernels' _stream benchmarks: 8 was too close, the rest alike).
inline constexpr std::size_t interleave_prefetch_distance = 32 * 1024;

// A format with an interleaved layout specialises this (primary: none).
template <class P>
struct interleaved {
    static constexpr bool available = false;
};

namespace detail {

constexpr std::size_t round_up_64(std::size_t n) noexcept { return (n + 63) / 64 * 64; }

// Lane r of word k in an array of [..][16] u32 words: byte offset of its first byte.
constexpr std::size_t lane_offset(std::size_t word, std::size_t lane) noexcept {
    return (word * interleave_rows + lane) * 4;
}

// The common shape: a group is parts of `bytes_per_block * 16` bytes each per block.
template <class P, std::size_t... PartBytes>
struct interleaved_base {
    static constexpr bool available = true;
    using format = P;
    using block = typename P::block;
    static constexpr std::size_t rows = interleave_rows;
    static_assert((PartBytes + ...) == rows * sizeof(block), "an interleaved group holds exactly 16 rows' bytes");
    // Offset of part i (for nb blocks) within a group.
    static constexpr std::size_t part(std::size_t i, std::size_t nb) noexcept {
        constexpr std::size_t sizes[] = {PartBytes...};
        std::size_t off = 0;
        for (std::size_t j = 0; j < i; ++j) off += sizes[j] * nb;
        return off;
    }
    static constexpr std::size_t group_bytes(std::size_t nb) noexcept { return round_up_64(rows * nb * sizeof(block)); }
    // Bytes of a whole matrix of `n_rows` rows of `nb` blocks in this layout.
    static constexpr std::size_t matrix_bytes(std::size_t n_rows, std::size_t nb) noexcept {
        return (n_rows + rows - 1) / rows * group_bytes(nb);
    }
};

}  // namespace detail

template <>
struct interleaved<q4_0> : detail::interleaved_base<q4_0, 256, 32> {
    // n_rows (<= 16) rows of nb blocks, row-major with `stride` blocks per row -> one group.
    static void pack(const block* src, std::size_t stride, std::size_t nb, std::size_t n_rows, std::byte* g) noexcept {
        if (n_rows < rows) std::memset(g, 0, group_bytes(nb));  // padding rows: zero scales
        std::byte* q = g + part(0, nb);
        auto* d = reinterpret_cast<std::uint16_t*>(g + part(1, nb));
        for (std::size_t r = 0; r < n_rows; ++r)
            for (std::size_t b = 0; b < nb; ++b) {
                const block& blk = src[r * stride + b];
                d[b * rows + r] = blk.d;
                for (std::size_t k = 0; k < 4; ++k) std::memcpy(q + b * 256 + detail::lane_offset(k, r), blk.qs + 4 * k, 4);
            }
    }
    static void dequantize_row(const std::byte* g, std::size_t nb, std::size_t r, float* y) noexcept {
        const auto* q = reinterpret_cast<const std::uint8_t*>(g + part(0, nb));
        const auto* d = reinterpret_cast<const std::uint16_t*>(g + part(1, nb));
        for (std::size_t b = 0; b < nb; ++b, y += 32) {
            const float s = core::fp16_to_f32(d[b * rows + r]);
            for (std::size_t j = 0; j < 16; ++j) {
                const std::uint8_t v = q[b * 256 + detail::lane_offset(j / 4, r) + j % 4];
                y[j] = static_cast<float>((v & 0xF) - 8) * s;
                y[j + 16] = static_cast<float>((v >> 4) - 8) * s;
            }
        }
    }
};

template <>
struct interleaved<q8_0> : detail::interleaved_base<q8_0, 512, 32> {
    static void pack(const block* src, std::size_t stride, std::size_t nb, std::size_t n_rows, std::byte* g) noexcept {
        if (n_rows < rows) std::memset(g, 0, group_bytes(nb));  // padding rows: zero scales
        auto* q = reinterpret_cast<std::uint8_t*>(g + part(0, nb));
        auto* d = reinterpret_cast<std::uint16_t*>(g + part(1, nb));
        for (std::size_t r = 0; r < n_rows; ++r)
            for (std::size_t b = 0; b < nb; ++b) {
                const block& blk = src[r * stride + b];
                d[b * rows + r] = blk.d;
                for (std::size_t k = 0; k < 8; ++k) {
                    std::uint32_t v;
                    std::memcpy(&v, blk.qs + 4 * k, 4);
                    v ^= 0x80808080u;  // each byte q + 128: the sign bit flipped
                    std::memcpy(q + b * 512 + detail::lane_offset(k, r), &v, 4);
                }
            }
    }
    static void dequantize_row(const std::byte* g, std::size_t nb, std::size_t r, float* y) noexcept {
        const auto* q = reinterpret_cast<const std::uint8_t*>(g + part(0, nb));
        const auto* d = reinterpret_cast<const std::uint16_t*>(g + part(1, nb));
        for (std::size_t b = 0; b < nb; ++b, y += 32) {
            const float s = core::fp16_to_f32(d[b * rows + r]);
            for (std::size_t j = 0; j < 32; ++j)
                y[j] = s * static_cast<float>(int(q[b * 512 + detail::lane_offset(j / 4, r) + j % 4]) - 128);
        }
    }
};

template <>
struct interleaved<q4_k> : detail::interleaved_base<q4_k, 2048, 192, 64> {
    static void pack(const block* src, std::size_t stride, std::size_t nb, std::size_t n_rows, std::byte* g) noexcept {
        if (n_rows < rows) std::memset(g, 0, group_bytes(nb));  // padding rows: zero scales
        std::byte* q = g + part(0, nb);
        std::byte* s = g + part(1, nb);
        auto* d = reinterpret_cast<std::uint16_t*>(g + part(2, nb));
        for (std::size_t r = 0; r < n_rows; ++r)
            for (std::size_t b = 0; b < nb; ++b) {
                const block& blk = src[r * stride + b];
                for (std::size_t k = 0; k < 32; ++k) std::memcpy(q + b * 2048 + detail::lane_offset(k, r), blk.qs + 4 * k, 4);
                for (std::size_t k = 0; k < 3; ++k) std::memcpy(s + b * 192 + detail::lane_offset(k, r), blk.scales + 4 * k, 4);
                d[(b * 2 + 0) * rows + r] = blk.d;
                d[(b * 2 + 1) * rows + r] = blk.dmin;
            }
    }
    static void dequantize_row(const std::byte* g, std::size_t nb, std::size_t r, float* y) noexcept {
        const auto* q = reinterpret_cast<const std::uint8_t*>(g + part(0, nb));
        const auto* s = reinterpret_cast<const std::uint8_t*>(g + part(1, nb));
        const auto* d = reinterpret_cast<const std::uint16_t*>(g + part(2, nb));
        for (std::size_t b = 0; b < nb; ++b, y += 256) {
            std::uint8_t scales[12];
            for (std::size_t k = 0; k < 3; ++k) std::memcpy(scales + 4 * k, s + b * 192 + detail::lane_offset(k, r), 4);
            const float dd = core::fp16_to_f32(d[(b * 2) * rows + r]), dmin = core::fp16_to_f32(d[(b * 2 + 1) * rows + r]);
            for (std::size_t c = 0; c < 4; ++c) {
                const auto [sc_a, m_a] = detail::get_scale_min_k4(2 * c, scales);
                const auto [sc_b, m_b] = detail::get_scale_min_k4(2 * c + 1, scales);
                for (std::size_t l = 0; l < 32; ++l) {
                    const std::uint8_t v = q[b * 2048 + detail::lane_offset(8 * c + l / 4, r) + l % 4];
                    y[64 * c + l] = dd * static_cast<float>(sc_a) * static_cast<float>(v & 0xF) - dmin * static_cast<float>(m_a);
                    y[64 * c + 32 + l] = dd * static_cast<float>(sc_b) * static_cast<float>(v >> 4) - dmin * static_cast<float>(m_b);
                }
            }
        }
    }
};

template <>
struct interleaved<q6_k> : detail::interleaved_base<q6_k, 2048, 1024, 256, 32> {
    // u = q + 32 of the 256 elements of one Q6_K block (the reference decoder's bit layout).
    static void unsigned_quants(const block& blk, std::uint8_t* u) noexcept {
        for (std::size_t n = 0; n < 2; ++n)
            for (std::size_t l = 0; l < 32; ++l) {
                const std::uint8_t ql0 = blk.ql[64 * n + l], ql1 = blk.ql[64 * n + l + 32], qh = blk.qh[32 * n + l];
                u[128 * n + l] = static_cast<std::uint8_t>((ql0 & 0xF) | ((qh & 3) << 4));
                u[128 * n + l + 32] = static_cast<std::uint8_t>((ql1 & 0xF) | (((qh >> 2) & 3) << 4));
                u[128 * n + l + 64] = static_cast<std::uint8_t>((ql0 >> 4) | (((qh >> 4) & 3) << 4));
                u[128 * n + l + 96] = static_cast<std::uint8_t>((ql1 >> 4) | (((qh >> 6) & 3) << 4));
            }
    }
    static void pack(const block* src, std::size_t stride, std::size_t nb, std::size_t n_rows, std::byte* g) noexcept {
        if (n_rows < rows) std::memset(g, 0, group_bytes(nb));  // padding rows: zero scales
        auto* lo = reinterpret_cast<std::uint8_t*>(g + part(0, nb));
        auto* hi = reinterpret_cast<std::uint8_t*>(g + part(1, nb));
        auto* sc = reinterpret_cast<std::int8_t*>(g + part(2, nb));
        auto* d = reinterpret_cast<std::uint16_t*>(g + part(3, nb));
        for (std::size_t r = 0; r < n_rows; ++r)
            for (std::size_t b = 0; b < nb; ++b) {
                const block& blk = src[r * stride + b];
                std::uint8_t u[256];
                unsigned_quants(blk, u);
                d[b * rows + r] = blk.d;
                for (std::size_t s = 0; s < 16; ++s) {
                    sc[(b * 16 + s) * rows + r] = blk.scales[s];
                    const std::uint8_t* us = u + 16 * s;
                    for (std::size_t j = 0; j < 4; ++j) {
                        for (std::size_t h = 0; h < 2; ++h)
                            lo[b * 2048 + detail::lane_offset(2 * s + h, r) + j] =
                                static_cast<std::uint8_t>((us[8 * h + j] & 0xF) | ((us[8 * h + 4 + j] & 0xF) << 4));
                        std::uint8_t top = 0;
                        for (std::size_t i = 0; i < 4; ++i) top = static_cast<std::uint8_t>(top | ((us[4 * i + j] >> 4) << (2 * i)));
                        hi[b * 1024 + detail::lane_offset(s, r) + j] = top;
                    }
                }
            }
    }
    static void dequantize_row(const std::byte* g, std::size_t nb, std::size_t r, float* y) noexcept {
        const auto* lo = reinterpret_cast<const std::uint8_t*>(g + part(0, nb));
        const auto* hi = reinterpret_cast<const std::uint8_t*>(g + part(1, nb));
        const auto* sc = reinterpret_cast<const std::int8_t*>(g + part(2, nb));
        const auto* d = reinterpret_cast<const std::uint16_t*>(g + part(3, nb));
        for (std::size_t b = 0; b < nb; ++b) {
            const float dd = core::fp16_to_f32(d[b * rows + r]);
            for (std::size_t s = 0; s < 16; ++s, y += 16) {
                const float scale = dd * static_cast<float>(sc[(b * 16 + s) * rows + r]);
                for (std::size_t i = 0; i < 4; ++i)
                    for (std::size_t j = 0; j < 4; ++j) {
                        const std::uint8_t l = lo[b * 2048 + detail::lane_offset(2 * s + i / 2, r) + j];
                        const std::uint8_t h = hi[b * 1024 + detail::lane_offset(s, r) + j];
                        const int u = ((i % 2 ? l >> 4 : l) & 0xF) | (((h >> (2 * i)) & 3) << 4);
                        y[4 * i + j] = scale * static_cast<float>(u - 32);
                    }
            }
        }
    }
};

// F16: the 16 rows' halves of column k side by side (the float kernels broadcast x[k]).
template <>
struct interleaved<f16> : detail::interleaved_base<f16, 32> {
    static void pack(const block* src, std::size_t stride, std::size_t cols, std::size_t n_rows, std::byte* g) noexcept {
        if (n_rows < rows) std::memset(g, 0, group_bytes(cols));
        auto* h = reinterpret_cast<std::uint16_t*>(g);
        for (std::size_t r = 0; r < n_rows; ++r)
            for (std::size_t k = 0; k < cols; ++k) h[k * rows + r] = src[r * stride + k].bits;
    }
    static void dequantize_row(const std::byte* g, std::size_t cols, std::size_t r, float* y) noexcept {
        const auto* h = reinterpret_cast<const std::uint16_t*>(g);
        for (std::size_t k = 0; k < cols; ++k) y[k] = core::fp16_to_f32(h[k * rows + r]);
    }
};

template <class P>
inline constexpr bool has_interleaved = interleaved<P>::available;

}  // namespace lmtk::quant
// #include <lmtk/quant/interleaved_avx2.hpp>
// AVX2 kernels over the 16-row interleaved layouts of interleaved.hpp: Q4_0, Q8_0, Q4_K and Q6_K
// against int8 activations (act_q8), F16 against float activations. The same layouts as the
// AVX-512 kernels (interleaved_vnni.hpp, interleaved_f16.hpp), so a model repacks its weights
// the same way whichever level it runs, and one scalar spec (interleaved<P>::dequantize_row)
// checks both.
//
// Lane r of a layout's 64-byte word vector is row r; AVX2 holds it as two 256-bit halves, rows
// 0-7 and rows 8-15, each multiplied on its own against the same broadcast activation words.
// AVX2 has no vpdpbusd: vpmaddubsw multiplies the unsigned weight bytes by the signed activation
// bytes and adds neighbouring products into int16 lanes, saturating, and vpmaddwd against ones
// adds those pairs into the int32 lane of the row. Where the int16 sums cannot saturate they
// are added first and widened once:
//   Q4_0, Q4_K: u <= 15, |x| <= 127: a pair is at most 3810, 8 pairs (a 32-element sub-block)
//               at most 30480 < 32767: one vpmaddwd per sub-block and row half;
//   Q6_K:       u <= 63: a pair is at most 16002, two pairs 32004: one vpmaddwd per two words;
//   Q8_0:       u = q + 128 would overflow a pair (2 * 255 * 127); the signed quant q meets
//               sign(x, q) as |q| instead (at most 2 * 128 * 127 = 32512 per pair), with no
//               zero-point correction, and each word is widened on its own.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

// #include <lmtk/quant/intrinsics_warnings.hpp>
// LMTK_INTRINSICS_WARNINGS_OFF / _ON bracket code written with AVX-512 intrinsics.
//
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() (`__m512 __Y = __Y;`), which it
// then reports as uninitialised in every function they are inlined into: a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#define LMTK_INTRINSICS_WARNINGS_OFF                                   \
    _Pragma("GCC diagnostic push")                                     \
    _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")              \
    _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define LMTK_INTRINSICS_WARNINGS_ON _Pragma("GCC diagnostic pop")
#else
#define LMTK_INTRINSICS_WARNINGS_OFF
#define LMTK_INTRINSICS_WARNINGS_ON
#endif
// #include <lmtk/quant/act_q8.hpp>
// #include <lmtk/quant/interleaved.hpp>
// #include <lmtk/quant/interleaved_driver.hpp>
// The loops around the group kernels of the 16-row interleaved layouts (interleaved.hpp), for
// the ISAs whose registers are narrower than a group: AVX2 (interleaved_avx2.hpp) and NEON
// (interleaved_neon.hpp). They share everything but the kernels: which matrix rows a call
// covers, tokens four at a time, row-major weights packed a group at a time for prefill, and
// Q6_K's per-16 activation sums. A kernel set K supplies
//   K::acc                                  the accumulators of one token over one group
//   K::group<P, T>(g, args, x, sum16, acc)  one group (16 rows) against T tokens
//   K::store_rows(y, n, acc)                the first n (<= 16) rows' results
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

// #include <lmtk/quant/act_q8.hpp>
// #include <lmtk/quant/interleaved.hpp>

namespace lmtk::quant::interleaved_driver {

// Prefetch of the weights `ahead` bytes on, a block's share at a time (see interleaved_vnni.hpp).
struct prefetch_plan {
    std::size_t ahead = 0;  // 0: none (a group packed into L1 per call)
    std::size_t step = 0;   // group bytes per block
};
inline void prefetch_block(const std::byte* g, const prefetch_plan& pf, std::size_t b) noexcept {
    if (!pf.ahead) return;
    const std::byte* p = g + pf.ahead + b * pf.step;
    // Locality 2: into L2 (prefetcht1 on x86, PRFM PLDL2KEEP on ARM).
    for (std::size_t off = 0; off < pf.step; off += 64) __builtin_prefetch(p + off, 0, 2);
}

// Sums of every 16 activation quants of n_tok rows (Q6_K's zero point applies per 16 elements),
// in a thread-local buffer reused across calls.
inline const std::int32_t* sums_of_16(const std::byte* xa, std::size_t xa_stride, std::size_t cols, std::size_t n_tok) {
    thread_local std::vector<std::int32_t> sums;
    if (sums.size() < n_tok * cols / 16) sums.resize(n_tok * cols / 16);
    for (std::size_t t = 0; t < n_tok; ++t) {
        const std::int8_t* q = act_q8::view(xa + t * xa_stride, cols).qs;
        std::int32_t* out = sums.data() + t * (cols / 16);
        for (std::size_t s = 0; s < cols / 16; ++s) {
            std::int32_t sum = 0;
            for (std::size_t j = 0; j < 16; ++j) sum += q[16 * s + j];
            out[s] = sum;
        }
    }
    return sums.data();
}

// A thread-local buffer of at least `bytes` bytes on a 64-byte boundary, grown once.
inline std::byte* aligned_scratch(std::size_t bytes) {
    thread_local std::unique_ptr<std::byte[]> buf;
    thread_local std::size_t size = 0;
    if (size < bytes) {
        buf.reset(new std::byte[bytes + 64]);
        size = bytes;
    }
    const auto misalign = reinterpret_cast<std::uintptr_t>(buf.get()) % 64;
    return buf.get() + (misalign ? 64 - misalign : 0);
}

struct group_args {
    std::size_t nb, cols;
    const std::byte* xa;
    std::size_t xa_stride;
    const std::int32_t* sum16;  // Q6_K only
    float* y;                   // y[t * y_stride + r], r counted from the first group's first row
    std::size_t y_stride;
    prefetch_plan pf;
};

template <class K, class P, int T>
void run_group(const std::byte* g, std::size_t row, std::size_t n_rows, std::size_t t0, const group_args& a) noexcept {
    act_q8::row xr[T];
    typename K::acc acc[T];
    const std::int32_t* s16[T] = {};
    for (int j = 0; j < T; ++j) {
        xr[j] = act_q8::view(a.xa + (t0 + std::size_t(j)) * a.xa_stride, a.cols);
        if (a.sum16) s16[j] = a.sum16 + (t0 + std::size_t(j)) * (a.cols / 16);
    }
    K::template group<P, T>(g, a.nb, a.pf, xr, s16, acc);
    for (int j = 0; j < T; ++j) K::store_rows(a.y + (t0 + std::size_t(j)) * a.y_stride + row, n_rows - row, acc[j]);
}

// Every token against one group: tokens 4 at a time (each unpacked weight vector then serves
// four), then one by one.
template <class K, class P>
void run_group_all_tokens(const std::byte* g, std::size_t row, std::size_t n_rows, std::size_t n_tok,
                          const group_args& a) noexcept {
    std::size_t t = 0;
    for (; t + 4 <= n_tok; t += 4) run_group<K, P, 4>(g, row, n_rows, t, a);
    for (; t < n_tok; ++t) run_group<K, P, 1>(g, row, n_rows, t, a);
}

// weight_ops::matmul_act over a matrix in P's interleaved layout (w: its first group; rows
// r0 .. r1, r0 a multiple of 16). Rows past r1 in the last group are computed and not stored.
template <class K, class P>
void matmul_interleaved(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
                        std::size_t xa_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    using L = interleaved<P>;
    const std::size_t nb = cols / P::block_elems, gb = L::group_bytes(nb);
    const std::int32_t* sum16 = std::is_same_v<P, q6_k> ? sums_of_16(xa, xa_stride, cols, n_tok) : nullptr;
    const group_args a{nb, cols, xa, xa_stride, sum16, y + r0, y_stride, {interleave_prefetch_distance, gb / nb}};
    const std::byte* first = w + r0 / interleave_rows * gb;
    const std::size_t n_rows = r1 - r0, groups = (n_rows + interleave_rows - 1) / interleave_rows;
    for (std::size_t i = 0; i < groups; ++i) run_group_all_tokens<K, P>(first + i * gb, i * interleave_rows, n_rows, n_tok, a);
}

// The same over row-major weights (as mapped): each group of 16 rows is interleaved into a
// thread-local buffer first, for a prefill batch of weights that were not repacked at load.
template <class K, class P>
void matmul_packed(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
                   std::size_t xa_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    using L = interleaved<P>;
    const std::size_t nb = cols / P::block_elems;
    std::byte* group = aligned_scratch(L::group_bytes(nb));
    const auto* rows = reinterpret_cast<const typename P::block*>(w);
    const std::int32_t* sum16 = std::is_same_v<P, q6_k> ? sums_of_16(xa, xa_stride, cols, n_tok) : nullptr;
    const group_args a{nb, cols, xa, xa_stride, sum16, y + r0, y_stride, {}};
    for (std::size_t r = r0; r < r1; r += interleave_rows) {
        L::pack(rows + r * nb, nb, nb, std::min(interleave_rows, r1 - r), group);
        run_group_all_tokens<K, P>(group, r - r0, r1 - r0, n_tok, a);
    }
}

}  // namespace lmtk::quant::interleaved_driver

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define LMTK_QUANT_AVX2_INTERLEAVED 1
#include <immintrin.h>
#endif

namespace lmtk::quant::avx2x16 {

// The formats these kernels cover with int8 activations.
template <class P>
inline constexpr bool int8_format =
    std::is_same_v<P, q4_0> || std::is_same_v<P, q8_0> || std::is_same_v<P, q4_k> || std::is_same_v<P, q6_k>;

#if LMTK_QUANT_AVX2_INTERLEAVED

LMTK_INTRINSICS_WARNINGS_OFF

namespace detail {

// 4 activation bytes at p in every 32-bit lane.
inline __m256i broadcast_word(const std::int8_t* p) noexcept {
    std::int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

// Half h (rows 8h .. 8h + 7) of the 64-byte word vector at p.
inline __m256i load_half(const std::byte* p, int h) noexcept {
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(p + 32 * h));
}
inline __m256 fp16_half(const std::byte* p, int h) noexcept {
    return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(p + 16 * h)));
}

// An empty asm that claims to change v, after each step of a running sum: the compiler must
// then hold the sum in a register at that point, and cannot rewrite a block's chain of adds
// into a tree over all the products (which GCC 12 does once the loops are unrolled, spilling
// most of the products to the stack and reading them back).
inline void keep_in_register(__m256i& v) noexcept { asm("" : "+x"(v)); }

// int16 lanes -> int32 lanes, each the sum of its pair.
inline __m256i widen_pairs(__m256i v) noexcept { return _mm256_madd_epi16(v, _mm256_set1_epi16(1)); }

#if defined(__AVXVNNI__)
// With AVX-VNNI one instruction does both steps, without the int16 saturation.
inline __m256i dot_u8i8(__m256i acc, __m256i u, __m256i x) noexcept { return _mm256_dpbusd_avx_epi32(acc, u, x); }
#endif

using interleaved_driver::prefetch_block;
using interleaved_driver::prefetch_plan;

// Each kernel runs one group (16 rows) against T tokens: out[t][h] lane i = dot(row 8h + i,
// token t). It runs as one or two passes over the group's blocks (group_passes below); a pass
// covers NH halves starting at h0 and keeps its accumulators in local variables, written to
// `out` once at the end. (They used to be updated in `out` itself, and since the activations are
// read through int8_t pointers, which may alias anything, the compiler stored every accumulator
// to memory and read it back around every load: most of the kernels' time went there.) Within
// a block the loops run word by word, tokens innermost, so that each unpacked weight vector is
// used by every token while it is in a register, and each token's int32 (or int16) sums stay in
// registers until the block's float step.

// Decode (T == 1) multiplies both halves in one pass: the weights stream once from memory, with
// the prefetch ahead of them. Prefill passes once per half: T tokens' accumulators of one half
// fit in AVX2's 16 registers, and half a group is half the bytes, so it stays in L1 while the
// tokens reread it.
template <int T, class Pass>
void group_passes(Pass&& pass) noexcept {
    if constexpr (T == 1) {
        pass.template operator()<2>(0);
    } else {
        pass.template operator()<1>(0);
        pass.template operator()<1>(1);
    }
}

template <int T, int NH>
void q4_0_pass(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T], int h0,
               __m256 (&out)[T][2]) noexcept {
    using L = interleaved<q4_0>;
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    __m256 acc[T][NH];
    for (int t = 0; t < T; ++t)
        for (int hh = 0; hh < NH; ++hh) acc[t][hh] = _mm256_setzero_ps();
    for (std::size_t b = 0; b < nb; ++b) {
        if (h0 == 0) prefetch_block(g, pf, b);
        const std::byte* q = g + L::part(0, nb) + b * 256;
        const std::byte* d = g + L::part(1, nb) + b * 32;
        // Low nibbles are elements 4k.., high nibbles 16 + 4k..; 8 pairs per int16 lane at most
        // 8 * 2 * 15 * 127 = 30480, so one widening per block.
        __m256i s[T][NH];
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
            for (int hh = 0; hh < NH; ++hh) {
                const __m256i v = load_half(q + 64 * k, h0 + hh);
                const __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
                for (int t = 0; t < T; ++t) {
                    const std::int8_t* xq = x[t].qs + b * 32;
#if defined(__AVXVNNI__)
                    __m256i p = dot_u8i8(k ? s[t][hh] : _mm256_setzero_si256(), lo, broadcast_word(xq + 4 * k));
                    s[t][hh] = dot_u8i8(p, hi, broadcast_word(xq + 16 + 4 * k));
#else
                    const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, broadcast_word(xq + 4 * k)),
                                                       _mm256_maddubs_epi16(hi, broadcast_word(xq + 16 + 4 * k)));
                    s[t][hh] = k ? _mm256_add_epi16(s[t][hh], p) : p;
#endif
                    keep_in_register(s[t][hh]);
                }
            }
        }
        for (int hh = 0; hh < NH; ++hh) {
            const __m256 dw = fp16_half(d, h0 + hh);
            for (int t = 0; t < T; ++t) {
#if defined(__AVXVNNI__)
                const __m256i dot = _mm256_add_epi32(s[t][hh], _mm256_set1_epi32(-8 * x[t].sum[b]));
#else
                const __m256i dot = _mm256_add_epi32(widen_pairs(s[t][hh]), _mm256_set1_epi32(-8 * x[t].sum[b]));
#endif
                acc[t][hh] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(dw, _mm256_set1_ps(x[t].d[b])), acc[t][hh]);
            }
        }
    }
    for (int t = 0; t < T; ++t)
        for (int hh = 0; hh < NH; ++hh) out[t][h0 + hh] = acc[t][hh];
}

// The layout stores u = q + 128; flipping the top bit gives q back (|q| meets sign(x, q): see
// the top of this file).
template <int T, int NH>
void q8_0_pass(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T], int h0,
               __m256 (&out)[T][2]) noexcept {
    using L = interleaved<q8_0>;
    const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
    __m256 acc[T][NH];
    for (int t = 0; t < T; ++t)
        for (int hh = 0; hh < NH; ++hh) acc[t][hh] = _mm256_setzero_ps();
    for (std::size_t b = 0; b < nb; ++b) {
        if (h0 == 0) prefetch_block(g, pf, b);
        const std::byte* q = g + L::part(0, nb) + b * 512;
        const std::byte* d = g + L::part(1, nb) + b * 32;
        __m256i s[T][NH];
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) {
            for (int hh = 0; hh < NH; ++hh) {
                const __m256i w = _mm256_xor_si256(load_half(q + 64 * k, h0 + hh), flip);
                const __m256i mag = _mm256_abs_epi8(w);
                for (int t = 0; t < T; ++t) {
                    const __m256i xs = _mm256_sign_epi8(broadcast_word(x[t].qs + b * 32 + 4 * k), w);
#if defined(__AVXVNNI__)
                    s[t][hh] = dot_u8i8(k ? s[t][hh] : _mm256_setzero_si256(), mag, xs);
#else
                    const __m256i p = widen_pairs(_mm256_maddubs_epi16(mag, xs));
                    s[t][hh] = k ? _mm256_add_epi32(s[t][hh], p) : p;
#endif
                    keep_in_register(s[t][hh]);
                }
            }
        }
        for (int hh = 0; hh < NH; ++hh) {
            const __m256 dw = fp16_half(d, h0 + hh);
            for (int t = 0; t < T; ++t)
                acc[t][hh] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t][hh]), _mm256_mul_ps(dw, _mm256_set1_ps(x[t].d[b])),
                                             acc[t][hh]);
        }
    }
    for (int t = 0; t < T; ++t)
        for (int hh = 0; hh < NH; ++hh) out[t][h0 + hh] = acc[t][hh];
}

// Q4_K's 6-bit scale (Min = false) or min (Min = true) of sub-block J in every lane, from the
// 3 words a, b, c of the packed 12 bytes (the layout get_scale_min_k4 reads).
template <int J, bool Min>
__m256i k4_scale(__m256i a, __m256i b, __m256i c) noexcept {
    const __m256i six = _mm256_set1_epi32(63);
    if constexpr (J < 4) {
        return _mm256_and_si256(_mm256_srli_epi32(Min ? b : a, 8 * J), six);
    } else {
        const __m256i low = _mm256_and_si256(_mm256_srli_epi32(c, 8 * (J - 4) + (Min ? 4 : 0)), _mm256_set1_epi32(0x0F));
        const __m256i high = _mm256_and_si256(_mm256_srli_epi32(Min ? b : a, 8 * (J - 4) + 2), _mm256_set1_epi32(0x30));
        return _mm256_or_si256(low, high);
    }
}

// Each 32-element sub-block j (low nibbles of chunk j / 2 for even j, high for odd) is one int16
// sum per token (8 pairs of 15 * 127: at most 30480), widened once and scaled in floats by its
// own scale and min. The super-block's 8 scales and mins are decoded to floats once per half.
template <int T, int NH>
void q4_k_pass(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T], int h0,
               __m256 (&out)[T][2]) noexcept {
    using L = interleaved<q4_k>;
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    __m256 acc[T][NH];
    for (int t = 0; t < T; ++t)
        for (int hh = 0; hh < NH; ++hh) acc[t][hh] = _mm256_setzero_ps();
    for (std::size_t b = 0; b < nb; ++b) {
        if (h0 == 0) prefetch_block(g, pf, b);
        const std::byte* s = g + L::part(1, nb) + b * 192;
        const std::byte* d = g + L::part(2, nb) + b * 64;
        __m256 scale[NH][8], min[NH][8];
        for (int hh = 0; hh < NH; ++hh) {
            const int h = h0 + hh;
            const __m256i sa = load_half(s, h), sb = load_half(s + 64, h), sc = load_half(s + 128, h);
            const __m256 dd = fp16_half(d, h), dmin = fp16_half(d + 32, h);
            const auto decode = [&]<int J>() {
                scale[hh][J] = _mm256_mul_ps(_mm256_cvtepi32_ps(k4_scale<J, false>(sa, sb, sc)), dd);
                min[hh][J] = _mm256_mul_ps(_mm256_cvtepi32_ps(k4_scale<J, true>(sa, sb, sc)), dmin);
            };
            [&]<int... J>(std::integer_sequence<int, J...>) { (decode.template operator()<J>(), ...); }(
                std::make_integer_sequence<int, 8>{});
        }
        for (int j = 0; j < 8; ++j) {
            const std::byte* q = g + L::part(0, nb) + b * 2048 + std::size_t(j / 2) * 512;
            const int shift = (j % 2) * 4;
            const std::size_t a = b * 8 + std::size_t(j);  // the activation block of sub-block j
            __m256i sum[T][NH];
#pragma GCC unroll 8
            for (int k = 0; k < 8; ++k) {
                for (int hh = 0; hh < NH; ++hh) {
                    const __m256i u = _mm256_and_si256(_mm256_srli_epi16(load_half(q + 64 * k, h0 + hh), shift), low4);
                    for (int t = 0; t < T; ++t) {
                        const __m256i xw = broadcast_word(x[t].qs + a * 32 + 4 * k);
#if defined(__AVXVNNI__)
                        sum[t][hh] = dot_u8i8(k ? sum[t][hh] : _mm256_setzero_si256(), u, xw);
#else
                        const __m256i p = _mm256_maddubs_epi16(u, xw);
                        sum[t][hh] = k ? _mm256_add_epi16(sum[t][hh], p) : p;
#endif
                        keep_in_register(sum[t][hh]);
                    }
                }
            }
            for (int hh = 0; hh < NH; ++hh)
                for (int t = 0; t < T; ++t) {
#if defined(__AVXVNNI__)
                    const __m256i dot = sum[t][hh];
#else
                    const __m256i dot = widen_pairs(sum[t][hh]);
#endif
                    const __m256 r = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot),
                                                     _mm256_mul_ps(scale[hh][j], _mm256_set1_ps(x[t].d[a])), acc[t][hh]);
                    acc[t][hh] = _mm256_fnmadd_ps(min[hh][j], _mm256_set1_ps(x[t].ds[a]), r);
                }
        }
    }
    for (int t = 0; t < T; ++t)
        for (int hh = 0; hh < NH; ++hh) out[t][h0 + hh] = acc[t][hh];
}

// Q6_K: per sub-block of 16 elements, 2 words of nibbles and 1 of top bits make the 4 words of
// u = q + 32; the dot is corrected by -32 * sum(x) over the sub-block (sum16, per token).
template <int T, int NH>
void q6_k_pass(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T],
               const std::int32_t* const (&sum16)[T], int h0, __m256 (&out)[T][2]) noexcept {
    using L = interleaved<q6_k>;
    const __m256i low4 = _mm256_set1_epi8(0x0F), top2 = _mm256_set1_epi8(0x30);
    const auto merge = [](__m256i a, __m256i b, __m256i c) { return _mm256_or_si256(a, _mm256_and_si256(b, c)); };
    __m256 acc[T][NH];
    for (int t = 0; t < T; ++t)
        for (int hh = 0; hh < NH; ++hh) acc[t][hh] = _mm256_setzero_ps();
    for (std::size_t b = 0; b < nb; ++b) {
        if (h0 == 0) prefetch_block(g, pf, b);
        const std::byte* lo = g + L::part(0, nb) + b * 2048;
        const std::byte* hi = g + L::part(1, nb) + b * 1024;
        const std::byte* scales = g + L::part(2, nb) + b * 256;
        const std::byte* d = g + L::part(3, nb) + b * 32;
        for (std::size_t s = 0; s < 16; ++s) {
            const std::size_t e = b * 256 + s * 16;  // first element
            for (int hh = 0; hh < NH; ++hh) {
                const int h = h0 + hh;
                const __m128i sc8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales + s * 16 + 8 * h));
                const __m256 scale = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc8)), fp16_half(d, h));
                const __m256i l0 = load_half(lo + s * 128, h), l1 = load_half(lo + s * 128 + 64, h), hv = load_half(hi + s * 64, h);
                const __m256i u0 = merge(_mm256_and_si256(l0, low4), _mm256_slli_epi16(hv, 4), top2);
                const __m256i u1 = merge(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4), _mm256_slli_epi16(hv, 2), top2);
                const __m256i u2 = merge(_mm256_and_si256(l1, low4), hv, top2);
                const __m256i u3 = merge(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4), _mm256_srli_epi16(hv, 2), top2);
                for (int t = 0; t < T; ++t) {
                    const std::int8_t* xq = x[t].qs + e;
#if defined(__AVXVNNI__)
                    __m256i dot = _mm256_set1_epi32(-32 * sum16[t][e / 16]);
                    dot = dot_u8i8(dot, u0, broadcast_word(xq));
                    dot = dot_u8i8(dot, u1, broadcast_word(xq + 4));
                    dot = dot_u8i8(dot, u2, broadcast_word(xq + 8));
                    dot = dot_u8i8(dot, u3, broadcast_word(xq + 12));
#else
                    const __m256i p01 = _mm256_add_epi16(_mm256_maddubs_epi16(u0, broadcast_word(xq)),
                                                         _mm256_maddubs_epi16(u1, broadcast_word(xq + 4)));
                    const __m256i p23 = _mm256_add_epi16(_mm256_maddubs_epi16(u2, broadcast_word(xq + 8)),
                                                         _mm256_maddubs_epi16(u3, broadcast_word(xq + 12)));
                    const __m256i dot = _mm256_add_epi32(_mm256_add_epi32(widen_pairs(p01), widen_pairs(p23)),
                                                         _mm256_set1_epi32(-32 * sum16[t][e / 16]));
#endif
                    acc[t][hh] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(scale, _mm256_set1_ps(x[t].d[e / 32])),
                                                 acc[t][hh]);
                }
            }
        }
    }
    for (int t = 0; t < T; ++t)
        for (int hh = 0; hh < NH; ++hh) out[t][h0 + hh] = acc[t][hh];
}

// The first n (<= 16) of the 16 rows' results.
inline void store_rows(float* y, std::size_t n, const __m256 (&v)[2]) noexcept {
    if (n >= 16) {
        _mm256_storeu_ps(y, v[0]);
        _mm256_storeu_ps(y + 8, v[1]);
        return;
    }
    alignas(32) float tmp[16];
    _mm256_store_ps(tmp, v[0]);
    _mm256_store_ps(tmp + 8, v[1]);
    std::copy(tmp, tmp + n, y);
}

}  // namespace detail

// The kernel set of interleaved_driver.hpp.
struct kernels {
    using acc = __m256[2];  // rows 0-7, rows 8-15
    template <class P, int T>
    static void group(const std::byte* g, std::size_t nb, const detail::prefetch_plan& pf, const act_q8::row (&x)[T],
                      const std::int32_t* const (&sum16)[T], acc (&out)[T]) noexcept {
        detail::group_passes<T>([&]<int NH>(int h0) {
            if constexpr (std::is_same_v<P, q4_0>) {
                detail::q4_0_pass<T, NH>(g, nb, pf, x, h0, out);
            } else if constexpr (std::is_same_v<P, q8_0>) {
                detail::q8_0_pass<T, NH>(g, nb, pf, x, h0, out);
            } else if constexpr (std::is_same_v<P, q4_k>) {
                detail::q4_k_pass<T, NH>(g, nb, pf, x, h0, out);
            } else {
                static_assert(std::is_same_v<P, q6_k>);
                detail::q6_k_pass<T, NH>(g, nb, pf, x, sum16, h0, out);
            }
        });
    }
    static void store_rows(float* y, std::size_t n, const acc& v) noexcept { detail::store_rows(y, n, v); }
};

namespace detail {

// F16: column k of the 16 rows, half h, as floats.
inline __m256 f16_column(const std::uint16_t* g, std::size_t k, int h) noexcept {
    return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(g + k * interleave_rows + 8 * h)));
}

}  // namespace detail

// weight_ops::matmul_act over a matrix in P's interleaved layout, and over row-major weights
// packed a group at a time (interleaved_driver.hpp).
template <class P>
void matmul_interleaved(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
                        std::size_t xa_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    interleaved_driver::matmul_interleaved<kernels, P>(w, cols, r0, r1, xa, xa_stride, n_tok, y, y_stride);
}
template <class P>
void matmul_packed(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
                   std::size_t xa_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    interleaved_driver::matmul_packed<kernels, P>(w, cols, r0, r1, xa, xa_stride, n_tok, y, y_stride);
}

// weight_ops::matmul over an F16 matrix in the interleaved layout against float activations:
// at every column the 16 rows' halves are converted once and multiplied by the broadcast
// activation of each token. Decode runs 4 chains per row half; prefill 6 tokens per pass, so
// each converted column serves 6 tokens (12 accumulators, within AVX2's 16 registers).
inline void matmul_f16(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const float* x,
                       std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    constexpr std::size_t R = interleave_rows;
    const std::size_t gb = interleaved<f16>::group_bytes(cols);
    const auto group = [&](std::size_t r) { return reinterpret_cast<const std::uint16_t*>(w + r / R * gb); };
    const auto one_token = [&](std::size_t r, std::size_t t) {
        const std::uint16_t* g = group(r);
        const float* xt = x + t * x_stride;
        const auto* bytes = reinterpret_cast<const char*>(g);
        __m256 acc[2][2] = {{_mm256_setzero_ps(), _mm256_setzero_ps()}, {_mm256_setzero_ps(), _mm256_setzero_ps()}};
        std::size_t k = 0;
        for (; k + 2 <= cols; k += 2) {
            _mm_prefetch(bytes + k * 32 + interleave_prefetch_distance, _MM_HINT_T1);
            for (std::size_t j = 0; j < 2; ++j) {
                const __m256 xb = _mm256_set1_ps(xt[k + j]);
                acc[j][0] = _mm256_fmadd_ps(detail::f16_column(g, k + j, 0), xb, acc[j][0]);
                acc[j][1] = _mm256_fmadd_ps(detail::f16_column(g, k + j, 1), xb, acc[j][1]);
            }
        }
        for (; k < cols; ++k) {
            const __m256 xb = _mm256_set1_ps(xt[k]);
            acc[0][0] = _mm256_fmadd_ps(detail::f16_column(g, k, 0), xb, acc[0][0]);
            acc[0][1] = _mm256_fmadd_ps(detail::f16_column(g, k, 1), xb, acc[0][1]);
        }
        const __m256 out[2] = {_mm256_add_ps(acc[0][0], acc[1][0]), _mm256_add_ps(acc[0][1], acc[1][1])};
        detail::store_rows(y + t * y_stride + r, r1 - r, out);
    };
    const auto six_tokens = [&](std::size_t r, std::size_t t) {
        constexpr int T = 6;
        const std::uint16_t* g = group(r);
        const float* xs[T];
        for (int j = 0; j < T; ++j) xs[j] = x + (t + std::size_t(j)) * x_stride;
        __m256 acc[T][2];
        for (int j = 0; j < T; ++j) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
        for (std::size_t k = 0; k < cols; ++k) {
            const __m256 w0 = detail::f16_column(g, k, 0), w1 = detail::f16_column(g, k, 1);
            for (int j = 0; j < T; ++j) {
                const __m256 xb = _mm256_set1_ps(xs[j][k]);
                acc[j][0] = _mm256_fmadd_ps(w0, xb, acc[j][0]);
                acc[j][1] = _mm256_fmadd_ps(w1, xb, acc[j][1]);
            }
        }
        for (int j = 0; j < T; ++j) detail::store_rows(y + (t + std::size_t(j)) * y_stride + r, r1 - r, acc[j]);
    };
    for (std::size_t r = r0; r < r1; r += R) {
        std::size_t t = 0;
        if (n_tok >= 6)
            for (; t + 6 <= n_tok; t += 6) six_tokens(r, t);
        for (; t < n_tok; ++t) one_token(r, t);
    }
}

LMTK_INTRINSICS_WARNINGS_ON

#endif  // LMTK_QUANT_AVX2_INTERLEAVED

}  // namespace lmtk::quant::avx2x16
// #include <lmtk/quant/interleaved_neon.hpp>
// ARM NEON kernels over the 16-row interleaved layouts of interleaved.hpp, for AArch64 with the
// dot-product extension (Armv8.2 DotProd: Apple M1 on, Cortex-A55/A76 on, Graviton 2 on):
// Q4_0, Q8_0, Q4_K and Q6_K against int8 activations (act_q8), F16 against float activations.
// The same layouts as the x86 kernels, so one scalar spec (interleaved<P>::dequantize_row)
// checks every ISA.
//
// Lane r of a layout's 64-byte word vector is row r; NEON holds it as four 128-bit quarters,
// rows 4q .. 4q + 3. SDOT by element (vdotq_laneq_s32) multiplies the 4 bytes of each row in a
// quarter by one 4-byte word of a 16-byte activation register and adds the sum to the row's
// int32 lane: exact, signed by signed, so the weights need no unsigned form and no int16 step
// that could saturate.
//   Q4_0, Q4_K: nibbles 0..15, the zero point (8, or Q4_K's min) applied after the dot
//   Q8_0:       the layout's u = q + 128 with the top bit flipped is q itself
//   Q6_K:       u = q + 32 (0..63), corrected by -32 * sum(x) per 16 elements
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

// #include <lmtk/quant/act_q8.hpp>
// #include <lmtk/quant/interleaved.hpp>
// #include <lmtk/quant/interleaved_driver.hpp>

#if defined(__aarch64__) && defined(__ARM_NEON) && defined(__ARM_FEATURE_DOTPROD)
#define LMTK_QUANT_NEON_INTERLEAVED 1
#include <arm_neon.h>
#endif

namespace lmtk::quant::neon16 {

// The formats these kernels cover with int8 activations.
template <class P>
inline constexpr bool int8_format =
    std::is_same_v<P, q4_0> || std::is_same_v<P, q8_0> || std::is_same_v<P, q4_k> || std::is_same_v<P, q6_k>;

#if LMTK_QUANT_NEON_INTERLEAVED

namespace detail {

using interleaved_driver::prefetch_block;
using interleaved_driver::prefetch_plan;

// Quarter q (rows 4q .. 4q + 3) of the 64-byte word vector at p.
inline uint8x16_t load_quarter(const std::byte* p, int q) noexcept {
    return vld1q_u8(reinterpret_cast<const std::uint8_t*>(p) + 16 * q);
}
inline float32x4_t fp16_quarter(const std::byte* p, int q) noexcept {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const std::uint16_t*>(p) + 4 * q)));
}
inline int8x16_t low_nibbles(uint8x16_t v) noexcept { return vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))); }
inline int8x16_t high_nibbles(uint8x16_t v) noexcept { return vreinterpretq_s8_u8(vshrq_n_u8(v, 4)); }

// dot += the 4 rows' words w[0..3] times the 4 activation words of x.
inline int32x4_t dot_words(int32x4_t dot, const int8x16_t* w, int8x16_t x) noexcept {
    dot = vdotq_laneq_s32(dot, w[0], x, 0);
    dot = vdotq_laneq_s32(dot, w[1], x, 1);
    dot = vdotq_laneq_s32(dot, w[2], x, 2);
    return vdotq_laneq_s32(dot, w[3], x, 3);
}
// The same for 8 words against the 32 activation bytes at xq.
inline int32x4_t dot_words8(int32x4_t dot, const int8x16_t (&w)[8], const std::int8_t* xq) noexcept {
    return dot_words(dot_words(dot, w, vld1q_s8(xq)), w + 4, vld1q_s8(xq + 16));
}

// Each kernel runs one group (16 rows) against T tokens: acc[t][q] lane i = dot(row 4q + i, token t).

template <int T>
void group_q4_0(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T],
                float32x4_t (&acc)[T][4]) noexcept {
    using L = interleaved<q4_0>;
    for (int t = 0; t < T; ++t)
        for (int q = 0; q < 4; ++q) acc[t][q] = vdupq_n_f32(0);
    for (std::size_t b = 0; b < nb; ++b) {
        prefetch_block(g, pf, b);
        const std::byte* w = g + L::part(0, nb) + b * 256;
        const std::byte* d = g + L::part(1, nb) + b * 32;
        for (int q = 0; q < 4; ++q) {
            int8x16_t lo[4], hi[4];  // word k: elements 4k.. (low nibbles), 16 + 4k.. (high)
            for (int k = 0; k < 4; ++k) {
                const uint8x16_t v = load_quarter(w + 64 * k, q);
                lo[k] = low_nibbles(v);
                hi[k] = high_nibbles(v);
            }
            const float32x4_t dw = fp16_quarter(d, q);
            for (int t = 0; t < T; ++t) {
                const std::int8_t* xq = x[t].qs + b * 32;
                int32x4_t dot = dot_words(vdupq_n_s32(-8 * x[t].sum[b]), lo, vld1q_s8(xq));
                dot = dot_words(dot, hi, vld1q_s8(xq + 16));
                acc[t][q] = vfmaq_f32(acc[t][q], vcvtq_f32_s32(dot), vmulq_n_f32(dw, x[t].d[b]));
            }
        }
    }
}

template <int T>
void group_q8_0(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T],
                float32x4_t (&acc)[T][4]) noexcept {
    using L = interleaved<q8_0>;
    const uint8x16_t flip = vdupq_n_u8(0x80);
    for (int t = 0; t < T; ++t)
        for (int q = 0; q < 4; ++q) acc[t][q] = vdupq_n_f32(0);
    for (std::size_t b = 0; b < nb; ++b) {
        prefetch_block(g, pf, b);
        const std::byte* w = g + L::part(0, nb) + b * 512;
        const std::byte* d = g + L::part(1, nb) + b * 32;
        for (int q = 0; q < 4; ++q) {
            int8x16_t v[8];
            for (int k = 0; k < 8; ++k) v[k] = vreinterpretq_s8_u8(veorq_u8(load_quarter(w + 64 * k, q), flip));
            const float32x4_t dw = fp16_quarter(d, q);
            for (int t = 0; t < T; ++t) {
                const std::int8_t* xq = x[t].qs + b * 32;
                const int32x4_t dot = dot_words8(vdupq_n_s32(0), v, xq);
                acc[t][q] = vfmaq_f32(acc[t][q], vcvtq_f32_s32(dot), vmulq_n_f32(dw, x[t].d[b]));
            }
        }
    }
}

// Q4_K's 6-bit scale (Min = false) or min (Min = true) of sub-block J in every lane, from the
// 3 words a, b, c of the packed 12 bytes (the layout get_scale_min_k4 reads).
template <int N>
uint32x4_t shift_right(uint32x4_t v) noexcept {
    if constexpr (N == 0) return v;  // vshrq_n takes 1..32 only
    else return vshrq_n_u32(v, N);
}
template <int J, bool Min>
float32x4_t k4_scale(uint32x4_t a, uint32x4_t b, uint32x4_t c) noexcept {
    uint32x4_t v;
    if constexpr (J < 4) {
        v = vandq_u32(shift_right<8 * J>(Min ? b : a), vdupq_n_u32(63));
    } else {
        const uint32x4_t low = vandq_u32(shift_right<8 * (J - 4) + (Min ? 4 : 0)>(c), vdupq_n_u32(0x0F));
        const uint32x4_t high = vandq_u32(shift_right<8 * (J - 4) + 2>(Min ? b : a), vdupq_n_u32(0x30));
        v = vorrq_u32(low, high);
    }
    return vcvtq_f32_u32(v);
}

template <int T>
void group_q4_k(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T],
                float32x4_t (&acc)[T][4]) noexcept {
    using L = interleaved<q4_k>;
    for (int t = 0; t < T; ++t)
        for (int q = 0; q < 4; ++q) acc[t][q] = vdupq_n_f32(0);
    for (std::size_t b = 0; b < nb; ++b) {
        prefetch_block(g, pf, b);
        const std::byte* s = g + L::part(1, nb) + b * 192;
        const std::byte* d = g + L::part(2, nb) + b * 64;
        for (int q = 0; q < 4; ++q) {
            const uint32x4_t sa = vreinterpretq_u32_u8(load_quarter(s, q)), sb = vreinterpretq_u32_u8(load_quarter(s + 64, q)),
                             sc = vreinterpretq_u32_u8(load_quarter(s + 128, q));
            const float32x4_t dd = fp16_quarter(d, q), dmin = fp16_quarter(d + 32, q);
            float32x4_t scale[8], min[8];
            const auto decode = [&]<int J>() {
                scale[J] = vmulq_f32(k4_scale<J, false>(sa, sb, sc), dd);
                min[J] = vmulq_f32(k4_scale<J, true>(sa, sb, sc), dmin);
            };
            [&]<int... J>(std::integer_sequence<int, J...>) { (decode.template operator()<J>(), ...); }(
                std::make_integer_sequence<int, 8>{});
            for (std::size_t c = 0; c < 4; ++c) {
                const std::byte* w = g + L::part(0, nb) + b * 2048 + c * 512;
                int8x16_t lo[8], hi[8];  // sub-blocks 2c and 2c + 1
                for (int k = 0; k < 8; ++k) {
                    const uint8x16_t v = load_quarter(w + 64 * k, q);
                    lo[k] = low_nibbles(v);
                    hi[k] = high_nibbles(v);
                }
                const std::size_t a = b * 8 + 2 * c;  // activation block of sub-block 2c; 2c + 1's is a + 1
                for (int t = 0; t < T; ++t) {
                    const std::int8_t* xq = x[t].qs + a * 32;
                    const int32x4_t da = dot_words8(vdupq_n_s32(0), lo, xq);
                    const int32x4_t db = dot_words8(vdupq_n_s32(0), hi, xq + 32);
                    float32x4_t r = vfmaq_f32(acc[t][q], vcvtq_f32_s32(da), vmulq_n_f32(scale[2 * c], x[t].d[a]));
                    r = vfmsq_f32(r, min[2 * c], vdupq_n_f32(x[t].ds[a]));
                    r = vfmaq_f32(r, vcvtq_f32_s32(db), vmulq_n_f32(scale[2 * c + 1], x[t].d[a + 1]));
                    acc[t][q] = vfmsq_f32(r, min[2 * c + 1], vdupq_n_f32(x[t].ds[a + 1]));
                }
            }
        }
    }
}

// Q6_K: per sub-block of 16 elements, 2 words of nibbles and 1 of top bits make the 4 words of
// u = q + 32 (byte shifts: NEON shifts each byte on its own, so no mask is needed after >> 4).
template <int T>
void group_q6_k(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T],
                const std::int32_t* const (&sum16)[T], float32x4_t (&acc)[T][4]) noexcept {
    using L = interleaved<q6_k>;
    const uint8x16_t low4 = vdupq_n_u8(0x0F), top2 = vdupq_n_u8(0x30);
    for (int t = 0; t < T; ++t)
        for (int q = 0; q < 4; ++q) acc[t][q] = vdupq_n_f32(0);
    for (std::size_t b = 0; b < nb; ++b) {
        prefetch_block(g, pf, b);
        const std::byte* lo = g + L::part(0, nb) + b * 2048;
        const std::byte* hi = g + L::part(1, nb) + b * 1024;
        const auto* scales = reinterpret_cast<const std::int8_t*>(g + L::part(2, nb) + b * 256);
        const std::byte* d = g + L::part(3, nb) + b * 32;
        for (int q = 0; q < 4; ++q) {
            const float32x4_t dd = fp16_quarter(d, q);
            for (std::size_t s = 0; s < 16; ++s) {
                std::int32_t sc4;  // the 4 rows' scales of sub-block s
                std::memcpy(&sc4, scales + s * 16 + 4 * q, 4);
                const int16x8_t sc16 = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(sc4)));
                const float32x4_t scale = vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(sc16))), dd);
                const uint8x16_t l0 = load_quarter(lo + s * 128, q), l1 = load_quarter(lo + s * 128 + 64, q),
                                 hv = load_quarter(hi + s * 64, q);
                const int8x16_t u[4] = {
                    vreinterpretq_s8_u8(vorrq_u8(vandq_u8(l0, low4), vandq_u8(vshlq_n_u8(hv, 4), top2))),
                    vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(l0, 4), vandq_u8(vshlq_n_u8(hv, 2), top2))),
                    vreinterpretq_s8_u8(vorrq_u8(vandq_u8(l1, low4), vandq_u8(hv, top2))),
                    vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(l1, 4), vandq_u8(vshrq_n_u8(hv, 2), top2))),
                };
                const std::size_t e = b * 256 + s * 16;  // first element
                for (int t = 0; t < T; ++t) {
                    const int32x4_t dot = dot_words(vdupq_n_s32(-32 * sum16[t][e / 16]), u, vld1q_s8(x[t].qs + e));
                    acc[t][q] = vfmaq_f32(acc[t][q], vcvtq_f32_s32(dot), vmulq_n_f32(scale, x[t].d[e / 32]));
                }
            }
        }
    }
}

// The first n (<= 16) of the 16 rows' results.
inline void store_rows(float* y, std::size_t n, const float32x4_t (&v)[4]) noexcept {
    if (n >= 16) {
        for (int q = 0; q < 4; ++q) vst1q_f32(y + 4 * q, v[q]);
        return;
    }
    float tmp[16];
    for (int q = 0; q < 4; ++q) vst1q_f32(tmp + 4 * q, v[q]);
    std::memcpy(y, tmp, n * sizeof(float));
}

// F16: quarter q of column k of the 16 rows, as floats.
inline float32x4_t f16_column(const std::uint16_t* g, std::size_t k, int q) noexcept {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(g + k * interleave_rows + 4 * q)));
}

}  // namespace detail

// The kernel set of interleaved_driver.hpp.
struct kernels {
    using acc = float32x4_t[4];  // rows 0-3, 4-7, 8-11, 12-15
    template <class P, int T>
    static void group(const std::byte* g, std::size_t nb, const detail::prefetch_plan& pf, const act_q8::row (&x)[T],
                      const std::int32_t* const (&sum16)[T], acc (&out)[T]) noexcept {
        if constexpr (std::is_same_v<P, q4_0>) {
            detail::group_q4_0<T>(g, nb, pf, x, out);
        } else if constexpr (std::is_same_v<P, q8_0>) {
            detail::group_q8_0<T>(g, nb, pf, x, out);
        } else if constexpr (std::is_same_v<P, q4_k>) {
            detail::group_q4_k<T>(g, nb, pf, x, out);
        } else {
            static_assert(std::is_same_v<P, q6_k>);
            detail::group_q6_k<T>(g, nb, pf, x, sum16, out);
        }
    }
    static void store_rows(float* y, std::size_t n, const acc& v) noexcept { detail::store_rows(y, n, v); }
};

// weight_ops::matmul_act over a matrix in P's interleaved layout, and over row-major weights
// packed a group at a time (interleaved_driver.hpp).
template <class P>
void matmul_interleaved(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
                        std::size_t xa_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    interleaved_driver::matmul_interleaved<kernels, P>(w, cols, r0, r1, xa, xa_stride, n_tok, y, y_stride);
}
template <class P>
void matmul_packed(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
                   std::size_t xa_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    interleaved_driver::matmul_packed<kernels, P>(w, cols, r0, r1, xa, xa_stride, n_tok, y, y_stride);
}

// weight_ops::matmul over an F16 matrix in the interleaved layout against float activations:
// each column's 16 halves are converted once and multiplied by the broadcast activation of each
// token. Decode runs 2 chains per quarter; prefill 6 tokens per pass (24 accumulators and 4
// weight registers of NEON's 32).
inline void matmul_f16(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const float* x,
                       std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    constexpr std::size_t R = interleave_rows;
    const std::size_t gb = interleaved<f16>::group_bytes(cols);
    const auto group = [&](std::size_t r) { return reinterpret_cast<const std::uint16_t*>(w + r / R * gb); };
    const auto one_token = [&](std::size_t r, std::size_t t) {
        const std::uint16_t* g = group(r);
        const float* xt = x + t * x_stride;
        float32x4_t acc[2][4];
        for (auto& chain : acc)
            for (auto& a : chain) a = vdupq_n_f32(0);
        std::size_t k = 0;
        for (; k + 2 <= cols; k += 2) {
            __builtin_prefetch(reinterpret_cast<const char*>(g + k * R) + interleave_prefetch_distance, 0, 2);
            for (std::size_t j = 0; j < 2; ++j)
                for (int q = 0; q < 4; ++q) acc[j][q] = vfmaq_n_f32(acc[j][q], detail::f16_column(g, k + j, q), xt[k + j]);
        }
        for (; k < cols; ++k)
            for (int q = 0; q < 4; ++q) acc[0][q] = vfmaq_n_f32(acc[0][q], detail::f16_column(g, k, q), xt[k]);
        float32x4_t out[4];
        for (int q = 0; q < 4; ++q) out[q] = vaddq_f32(acc[0][q], acc[1][q]);
        detail::store_rows(y + t * y_stride + r, r1 - r, out);
    };
    const auto six_tokens = [&](std::size_t r, std::size_t t) {
        constexpr int T = 6;
        const std::uint16_t* g = group(r);
        const float* xs[T];
        for (int j = 0; j < T; ++j) xs[j] = x + (t + std::size_t(j)) * x_stride;
        float32x4_t acc[T][4];
        for (auto& tok : acc)
            for (auto& a : tok) a = vdupq_n_f32(0);
        for (std::size_t k = 0; k < cols; ++k) {
            float32x4_t wq[4];
            for (int q = 0; q < 4; ++q) wq[q] = detail::f16_column(g, k, q);
            for (int j = 0; j < T; ++j)
                for (int q = 0; q < 4; ++q) acc[j][q] = vfmaq_n_f32(acc[j][q], wq[q], xs[j][k]);
        }
        for (int j = 0; j < T; ++j) detail::store_rows(y + (t + std::size_t(j)) * y_stride + r, r1 - r, acc[j]);
    };
    for (std::size_t r = r0; r < r1; r += R) {
        std::size_t t = 0;
        for (; t + 6 <= n_tok; t += 6) six_tokens(r, t);
        for (; t < n_tok; ++t) one_token(r, t);
    }
}

#endif  // LMTK_QUANT_NEON_INTERLEAVED

}  // namespace lmtk::quant::neon16
// #include <lmtk/quant/interleaved_f16.hpp>
// AVX-512 kernels for F16 weights in their interleaved layout (interleaved.hpp: column k of 16
// rows is one vector of halves) against float activations.
//
// At every column a vector of 16 rows' weights is converted once (vcvtph2ps) and multiplied
// by the broadcast activation x[t][k] of each token: no horizontal sums, and in prefill one
// weight vector serves 12 tokens and one broadcast two vectors of rows, 24 FMAs per 2 loads,
// 2 conversions and 12 broadcasts, which keeps the FMA units close to busy (the row tiles of
// dispatch.hpp, decoding halves a row at a time and reducing every dot, reached half of that).
// Decode reads the weights once, four chains of FMAs deep, with the next weights prefetched
// into L2 as the int8 kernels do.
#include <algorithm>
#include <cstddef>
#include <cstdint>

// #include <lmtk/quant/intrinsics_warnings.hpp>
// #include <lmtk/quant/interleaved.hpp>

#if defined(__AVX512F__) && defined(__F16C__)
#define LMTK_QUANT_F16_INTERLEAVED 1
#include <immintrin.h>
#endif

namespace lmtk::quant::f16x16 {

#if LMTK_QUANT_F16_INTERLEAVED

LMTK_INTRINSICS_WARNINGS_OFF

namespace detail {

inline __m512 column(const std::uint16_t* g, std::size_t k) noexcept {
    return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(g + k * interleave_rows)));
}

// One group, one token: y lanes = the 16 rows' dots.
inline __m512 group_one_token(const std::uint16_t* g, std::size_t cols, const float* x, std::size_t ahead) noexcept {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const auto* bytes = reinterpret_cast<const char*>(g);
    std::size_t k = 0;
    for (; k + 4 <= cols; k += 4) {
        // Two columns are one 64-byte line: prefetch the line `ahead` bytes on, twice per step.
        _mm_prefetch(bytes + k * 32 + ahead, _MM_HINT_T1);
        _mm_prefetch(bytes + k * 32 + 64 + ahead, _MM_HINT_T1);
        for (std::size_t j = 0; j < 4; ++j) acc[j] = _mm512_fmadd_ps(column(g, k + j), _mm512_set1_ps(x[k + j]), acc[j]);
    }
    for (; k < cols; ++k) acc[0] = _mm512_fmadd_ps(column(g, k), _mm512_set1_ps(x[k]), acc[0]);
    return _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
}

// G groups (16 G rows) against T tokens.
template <int G, int T>
void groups_tokens(const std::uint16_t* const (&g)[G], std::size_t cols, const float* const (&x)[T],
                   __m512 (&acc)[G][T]) noexcept {
    for (int i = 0; i < G; ++i)
        for (int t = 0; t < T; ++t) acc[i][t] = _mm512_setzero_ps();
    for (std::size_t k = 0; k < cols; ++k) {
        __m512 w[G];
        for (int i = 0; i < G; ++i) w[i] = column(g[i], k);
        for (int t = 0; t < T; ++t) {
            const __m512 xb = _mm512_set1_ps(x[t][k]);
            for (int i = 0; i < G; ++i) acc[i][t] = _mm512_fmadd_ps(w[i], xb, acc[i][t]);
        }
    }
}

inline void store_rows(float* y, std::size_t n, __m512 v) noexcept {
    _mm512_mask_storeu_ps(y, static_cast<__mmask16>((1u << std::min<std::size_t>(n, 16)) - 1), v);
}

}  // namespace detail

// weight_ops::matmul over an F16 matrix in the interleaved layout (w: its first group; rows
// r0 .. r1, r0 a multiple of 16): y[t * y_stride + r] = dot(row r, x + t * x_stride).
inline void matmul(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const float* x,
                   std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    constexpr std::size_t R = interleave_rows;
    const std::size_t gb = interleaved<f16>::group_bytes(cols);
    const auto group = [&](std::size_t r) { return reinterpret_cast<const std::uint16_t*>(w + r / R * gb); };
    if (n_tok < 4) {
        for (std::size_t r = r0; r < r1; r += R)
            for (std::size_t t = 0; t < n_tok; ++t)
                detail::store_rows(y + t * y_stride + r, r1 - r,
                                   detail::group_one_token(group(r), cols, x + t * x_stride, interleave_prefetch_distance));
        return;
    }
    // Prefill: two groups (32 rows) against 12 tokens, then 4, then 1.
    const auto run = [&]<int G, int T>(std::size_t r, std::size_t t) {
        const std::uint16_t* gs[G];
        const float* xs[T];
        for (int i = 0; i < G; ++i) gs[i] = group(r + std::size_t(i) * R);
        for (int j = 0; j < T; ++j) xs[j] = x + (t + std::size_t(j)) * x_stride;
        __m512 acc[G][T];
        detail::groups_tokens<G, T>(gs, cols, xs, acc);
        for (int i = 0; i < G; ++i)
            for (int j = 0; j < T; ++j) {
                const std::size_t row = r + std::size_t(i) * R;
                detail::store_rows(y + (t + std::size_t(j)) * y_stride + row, r1 - row, acc[i][j]);
            }
    };
    const auto tokens = [&]<int G>(std::size_t r) {
        std::size_t t = 0;
        for (; t + 12 <= n_tok; t += 12) run.template operator()<G, 12>(r, t);
        for (; t + 4 <= n_tok; t += 4) run.template operator()<G, 4>(r, t);
        for (; t < n_tok; ++t) run.template operator()<G, 1>(r, t);
    };
    std::size_t r = r0;
    for (; r + 2 * R <= r1; r += 2 * R) tokens.template operator()<2>(r);
    for (; r < r1; r += R) tokens.template operator()<1>(r);
}

LMTK_INTRINSICS_WARNINGS_ON

#endif  // LMTK_QUANT_F16_INTERLEAVED

}  // namespace lmtk::quant::f16x16
// #include <lmtk/quant/interleaved_vnni.hpp>
// AVX-512 VNNI kernels over the row-interleaved layouts of interleaved.hpp, against int8
// activations (act_q8): y[t][r] = dot(row r, token t) for whole groups of 16 rows.
//
// Lane r of every vector is row r. A word of 4 weight bytes per lane meets the 4 activation
// bytes it multiplies, broadcast from memory, in one vpdpbusd; the block's integer dots of all
// 16 rows end in one register, and one convert, one scale and one FMA finish them. Decode
// (one token) runs these kernels over weights repacked at load; a prefill batch over weights
// that stayed row-major packs one group at a time into a thread-local buffer first (the
// group then stays in L1 while every token of the batch passes over it).
//
// The quants are unsigned (u = q + z); sum(u * x) - z * sum(x) is the block's dot, and the
// correction starts the vpdpbusd chain as one broadcast value (all 16 rows share the token).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

// #include <lmtk/quant/intrinsics_warnings.hpp>
// #include <lmtk/quant/act_q8.hpp>
// #include <lmtk/quant/interleaved.hpp>
// #include <lmtk/quant/matmul_vnni.hpp>
// Integer matmul of Q8_0 / Q4_0 / Q4_K / Q6_K weights against int8 activations (act_q8) with
// AVX-512 VNNI.
//
// Why intrinsics: vpdpbusd multiplies 64 unsigned by 64 signed bytes and adds each group of four
// products into an int32 lane, one instruction for what the float path does with 4 widenings
// and 4 FMAs; xsimd 8.1 has no VNNI. bench/quant_kernels.cpp shows the gain (decode and prefill
// both), and tests/quant/int8_matmul.cpp checks these kernels against the scalar reference below.
// Other CPUs keep the portable float kernels (weight_ops::matmul).
//
// The shape of the computation: the weights' quants are made unsigned (u = q + z: Q8_0 flips
// the sign bit, z = 128; Q4_0 keeps its nibbles, z = 8), two blocks (64 bytes) at a time, so that
// sum(u * x) - z * sum(x) is the block's integer dot; the correction is folded into the
// accumulator vpdpbusd starts from. Each block's int32 partial sums are then converted and scaled
// by d_w * d_x in float. A tile of R rows x T tokens reuses every unpacked weight vector for T
// tokens and every activation vector for R rows. These row-major tiles serve weights used as
// mapped for fewer than 8 tokens; the faster kernels over 16 interleaved rows, which a model
// uses for its repacked weights and for prefill batches, are in interleaved_vnni.hpp.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

// #include <lmtk/quant/intrinsics_warnings.hpp>
// #include <lmtk/quant/act_q8.hpp>
// #include <lmtk/quant/q4_0.hpp>
// #include <lmtk/quant/q4_k.hpp>
// #include <lmtk/quant/q6_k.hpp>
// #include <lmtk/quant/q8_0.hpp>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__) && \
    defined(__F16C__)
#define LMTK_QUANT_VNNI 1
#include <immintrin.h>
#endif

namespace lmtk::quant::vnni {

// Scalar reference of the int8 path: the exact value the kernels compute up to float rounding,
// sum over blocks of sum_j w[j] * d_x * q_x[j] with w from the format's reference decoder.
template <class P>
float reference_dot(const typename P::block* w, const act_q8::row& x, std::size_t n_blocks) noexcept {
    constexpr std::size_t sub = act_q8::block_elems, n_sub = P::block_elems / sub;
    static_assert(P::block_elems % sub == 0);
    double sum = 0.0;
    float deq[P::block_elems];
    for (std::size_t b = 0; b < n_blocks; ++b) {
        P::dequantize_row(w + b, deq, 1);
        for (std::size_t k = 0; k < n_sub; ++k) {
            double s = 0.0;
            for (std::size_t j = 0; j < sub; ++j) s += double(deq[k * sub + j]) * x.qs[(b * n_sub + k) * sub + j];
            sum += s * x.d[b * n_sub + k];
        }
    }
    return static_cast<float>(sum);
}

// How a weight format's blocks become unsigned bytes for vpdpbusd; only formats with a
// specialisation get the int8 path.
template <class P>
struct format {
    static constexpr bool supported = false;
};

#if LMTK_QUANT_VNNI

LMTK_INTRINSICS_WARNINGS_OFF

template <>
struct format<q8_0> {
    static constexpr bool supported = true;
    static constexpr int zero_shift = 7;  // z = 128: q + 128 is q with its sign bit flipped
    static __m512i unpack_pair(const q8_0::block* b) noexcept {
        const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[0].qs));
        const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[1].qs));
        const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        return _mm512_xor_si512(q, _mm512_set1_epi8(static_cast<char>(0x80)));
    }
};

template <>
struct format<q4_0> {
    static constexpr bool supported = true;
    static constexpr int zero_shift = 3;  // z = 8: the nibbles are q + 8 already
    static __m512i unpack_pair(const q4_0::block* b) noexcept {
        // [b0.qs | b1.qs] -> [b0.qs, b0.qs, b1.qs, b1.qs] -> low nibbles in lanes 0 and 2, high
        // nibbles (shifted down) in lanes 1 and 3: the element order of the two blocks.
        const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[0].qs));
        const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[1].qs));
        const __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1);
        const __m512i dup = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3), _mm512_castsi256_si512(q));
        const __m512i shift = _mm512_setr_epi64(0, 0, 0x0004000400040004, 0x0004000400040004, 0, 0,
                                                0x0004000400040004, 0x0004000400040004);
        return _mm512_and_si512(_mm512_srlv_epi16(dup, shift), _mm512_set1_epi8(0x0F));
    }
};

// Q4_K: super-blocks of 256 = 8 sub-blocks of 32 with 6-bit scales and mins (see q4_k.hpp).
// The nibbles are unsigned already; the min is applied in float per sub-block (dmin * m * the
// activation block's d * sum), so there is no integer correction. Its own tile below.
template <>
struct format<q4_k> {
    static constexpr bool supported = true;
    // 64 elements 64c .. 64c + 63 of a super-block: the low nibbles of qs[32c .. 32c + 31]
    // (sub-block 2c) then their high nibbles (sub-block 2c + 1).
    static __m512i unpack_chunk(const std::uint8_t* qs) noexcept {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs));
        const __m256i mask = _mm256_set1_epi8(0x0F);
        const __m256i lo = _mm256_and_si256(q, mask), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), mask);
        return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    }
};

// Q6_K: super-blocks of 256 = 16 sub-blocks of 16 with int8 scales (see q6_k.hpp); u = q + 32
// is unsigned 0..63. The -32 * sum(x) of every 4 elements comes from one more vpdpbusd per
// token against a vector of 32s (act_q8's sums are per 32 elements; the scales per 16).
template <>
struct format<q6_k> {
    static constexpr bool supported = true;
    // Chunk m (0..3) of a super-block, elements 64m .. 64m + 63 = sub-blocks 4m .. 4m + 3: from
    // ql[64n .. 64n + 63] (n = m / 2; low nibbles for even m, high for odd) and the bit pairs
    // 2k, 2k + 1 of qh[32n .. 32n + 31] (k = 2 (m % 2) for the first 32 elements, + 1 after).
    static __m512i unpack_chunk(const q6_k::block& b, std::size_t m) noexcept {
        const std::size_t n = m / 2, odd = m % 2;
        const __m512i ql = _mm512_loadu_si512(b.ql + 64 * n);
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh + 32 * n));
        const __m512i qh2 = _mm512_inserti64x4(_mm512_castsi256_si512(qh), qh, 1);
        const __m512i low = _mm512_and_si512(odd ? _mm512_srli_epi16(ql, 4) : ql, _mm512_set1_epi8(0x0F));
        // Bits 4 (odd) or 0 (even) of qh for the first 32 bytes, 6 or 2 for the last 32.
        const __m512i shift = odd ? _mm512_setr_epi64(4, 4, 4, 4, 6, 6, 6, 6) : _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
        const __m512i high = _mm512_and_si512(_mm512_srlv_epi64(qh2, shift), _mm512_set1_epi8(0x03));
        return _mm512_or_si512(low, _mm512_slli_epi16(high, 4));  // high <= 3: no carry across bytes
    }
};

namespace detail {

// 16 lanes: the first 8 hold v[0], the last 8 v[1] (one float per block of a pair).
inline __m512 spread_pair(__m128 v) noexcept {
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v));
}

// The fp16 scales of blocks b[0] and b[1] as floats in lanes 0 and 1.
template <class Block>
__m128 scales_pair(const Block* b) noexcept {
    const auto bits = static_cast<std::uint32_t>(b[0].d) | (static_cast<std::uint32_t>(b[1].d) << 16);
    return _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(bits)));
}

// R rows x T tokens over every block of the rows: out[r][t] = dot(row r, token t).
template <class P, int R, int T>
void tile(const typename P::block* const (&w)[R], const act_q8::row (&x)[T], std::size_t n_blocks,
          float (&out)[R][T]) noexcept {
    using fmt = format<P>;
    __m512 acc[R][T];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
    std::size_t b = 0;
    for (; b + 2 <= n_blocks; b += 2) {
        __m512i wq[R];
        __m512 wd[R];
        for (int r = 0; r < R; ++r) {
            wq[r] = fmt::unpack_pair(w[r] + b);
            wd[r] = spread_pair(scales_pair(w[r] + b));
        }
        for (int t = 0; t < T; ++t) {
            const __m512i xq = _mm512_loadu_si512(x[t].qs + b * 32);
            const __m512 xd = spread_pair(_mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(x[t].d + b))));
            // -z * sum(x) of each block in the first lane of its half: where vpdpbusd starts.
            const __m512i sums = _mm512_maskz_expand_epi32(
                0x0101, _mm512_castsi128_si512(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x[t].sum + b))));
            const __m512i start = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sums, fmt::zero_shift));
            for (int r = 0; r < R; ++r) {
                const __m512i dot = _mm512_dpbusd_epi32(start, wq[r], xq);
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(wd[r], xd), acc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) {
            out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
            // An odd last block (rows of 288 values, say) is not worth a half-width kernel.
            if (b < n_blocks) {
                const act_q8::row tail{x[t].qs + b * 32, x[t].d + b, x[t].ds + b, x[t].sum + b};
                out[r][t] += reference_dot<P>(w[r] + b, tail, 1);
            }
        }
}

// The 8 six-bit scales and mins of a Q4_K super-block as floats, unpacked in registers (the
// layout of get_scale_min_k4, four sub-blocks per 32-bit word).
struct k4_scales {
    __m256 sc, m;
};
inline k4_scales unpack_k4_scales(const std::uint8_t* s) noexcept {
    std::uint32_t a, b, c;
    std::memcpy(&a, s, 4);
    std::memcpy(&b, s + 4, 4);
    std::memcpy(&c, s + 8, 4);
    const std::uint32_t sc_lo = a & 0x3F3F3F3Fu, m_lo = b & 0x3F3F3F3Fu;
    const std::uint32_t sc_hi = (c & 0x0F0F0F0Fu) | ((a >> 2) & 0x30303030u);
    const std::uint32_t m_hi = ((c >> 4) & 0x0F0F0F0Fu) | ((b >> 2) & 0x30303030u);
    const auto floats = [](std::uint32_t lo, std::uint32_t hi) {
        const __m128i bytes = _mm_cvtsi64_si128(static_cast<long long>(lo | (std::uint64_t(hi) << 32)));
        return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
    };
    return {floats(sc_lo, sc_hi), floats(m_lo, m_hi)};
}

// The Q4_K tile: per super-block, 4 chunks of 64 elements (two sub-blocks each) through
// vpdpbusd, scaled per sub-block by d * sc * d_x; the mins as one 8-wide FMA per super-block.
template <int R, int T>
void tile_q4_k(const q4_k::block* const (&w)[R], const act_q8::row (&x)[T], std::size_t n_blocks,
               float (&out)[R][T]) noexcept {
    __m512 acc[R][T];
    __m256 mins[R][T];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) {
            acc[r][t] = _mm512_setzero_ps();
            mins[r][t] = _mm256_setzero_ps();
        }
    for (std::size_t b = 0; b < n_blocks; ++b) {
        __m512 scale[R];  // d * sc of the 8 sub-blocks in lanes 0..7
        __m256 min[R];    // dmin * m of the 8 sub-blocks
        for (int r = 0; r < R; ++r) {
            const q4_k::block& blk = w[r][b];
            const k4_scales sm = unpack_k4_scales(blk.scales);
            scale[r] = _mm512_castps256_ps512(_mm256_mul_ps(sm.sc, _mm256_set1_ps(_cvtsh_ss(blk.d))));
            min[r] = _mm256_mul_ps(sm.m, _mm256_set1_ps(_cvtsh_ss(blk.dmin)));
        }
        for (std::size_t c = 0; c < 4; ++c) {
            // Lanes 0..7 of a chunk's dot are sub-block 2c, lanes 8..15 sub-block 2c + 1.
            const __m512i pick = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
            const __m512i idx = _mm512_add_epi32(pick, _mm512_set1_epi32(static_cast<int>(2 * c)));
            __m512i wq[R];
            __m512 ws[R];
            for (int r = 0; r < R; ++r) {
                wq[r] = format<q4_k>::unpack_chunk(w[r][b].qs + 32 * c);
                ws[r] = _mm512_permutexvar_ps(idx, scale[r]);
            }
            for (int t = 0; t < T; ++t) {
                const std::size_t sub = b * 8 + 2 * c;  // the chunk's first activation block
                const __m512i xq = _mm512_loadu_si512(x[t].qs + sub * 32);
                const __m512 xd = spread_pair(_mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(x[t].d + sub))));
                for (int r = 0; r < R; ++r) {
                    const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq[r], xq);
                    acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(ws[r], xd), acc[r][t]);
                }
            }
        }
        for (int t = 0; t < T; ++t) {
            const __m256 ds = _mm256_loadu_ps(x[t].ds + b * 8);
            for (int r = 0; r < R; ++r) mins[r][t] = _mm256_fmadd_ps(min[r], ds, mins[r][t]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) {
            const __m256 m = mins[r][t];
            const __m128 m4 = _mm_add_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            const __m128 m2 = _mm_add_ps(m4, _mm_movehl_ps(m4, m4));
            const float msum = _mm_cvtss_f32(_mm_add_ss(m2, _mm_movehdup_ps(m2)));
            out[r][t] = _mm512_reduce_add_ps(acc[r][t]) - msum;
        }
}

// The Q6_K tile: per super-block, 4 chunks of 64 elements through vpdpbusd starting from
// -32 * sum(x) per 4 elements, scaled per lane by d * sc[sub-block] * d_x[block].
template <int R, int T>
void tile_q6_k(const q6_k::block* const (&w)[R], const act_q8::row (&x)[T], std::size_t n_blocks,
               float (&out)[R][T]) noexcept {
    __m512 acc[R][T];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
    // Lane i of a chunk's dot covers elements 4i .. 4i + 3: sub-block i / 4, activation block i / 8.
    const __m512i quarter = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __m512i thirty_two = _mm512_set1_epi8(32);
    for (std::size_t b = 0; b < n_blocks; ++b) {
        __m512 scale[R];  // d * sc of the 16 sub-blocks
        for (int r = 0; r < R; ++r) {
            const q6_k::block& blk = w[r][b];
            const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.scales));
            scale[r] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc)), _mm512_set1_ps(_cvtsh_ss(blk.d)));
        }
        for (std::size_t m = 0; m < 4; ++m) {
            const __m512i idx = _mm512_add_epi32(quarter, _mm512_set1_epi32(static_cast<int>(4 * m)));
            __m512i wq[R];
            __m512 ws[R];
            for (int r = 0; r < R; ++r) {
                wq[r] = format<q6_k>::unpack_chunk(w[r][b], m);
                ws[r] = _mm512_permutexvar_ps(idx, scale[r]);
            }
            for (int t = 0; t < T; ++t) {
                const std::size_t sub = b * 8 + 2 * m;  // the chunk's first activation block
                const __m512i xq = _mm512_loadu_si512(x[t].qs + sub * 32);
                const __m512 xd = spread_pair(_mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(x[t].d + sub))));
                const __m512i start = _mm512_sub_epi32(_mm512_setzero_si512(),
                                                       _mm512_dpbusd_epi32(_mm512_setzero_si512(), thirty_two, xq));
                for (int r = 0; r < R; ++r) {
                    const __m512i dot = _mm512_dpbusd_epi32(start, wq[r], xq);
                    acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(ws[r], xd), acc[r][t]);
                }
            }
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
}

}  // namespace detail

// Rows are visited in tiles of about this many weight bytes, which stay in L2 while every token
// of the batch passes over them.
inline constexpr std::size_t row_tile_bytes = 256 * 1024;

// The row-tile path: y[t * y_stride + r] = dot(row r, activation row t), weights as stored.
template <class P>
void matmul_tiles(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
                  std::size_t xa_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    using block = typename P::block;
    const std::size_t nb = cols / P::block_elems;
    const auto* rows = reinterpret_cast<const block*>(w);
    const auto act = [&](std::size_t t) { return act_q8::view(xa + t * xa_stride, cols); };
    const auto run = [&]<int R, int T>(std::size_t r, std::size_t t) {
        const block* wr[R];
        act_q8::row xr[T];
        float out[R][T];
        for (int i = 0; i < R; ++i) wr[i] = rows + (r + i) * nb;
        for (int j = 0; j < T; ++j) xr[j] = act(t + j);
        if constexpr (std::is_same_v<P, q4_k>) detail::tile_q4_k<R, T>(wr, xr, nb, out);
        else if constexpr (std::is_same_v<P, q6_k>) detail::tile_q6_k<R, T>(wr, xr, nb, out);
        else detail::tile<P, R, T>(wr, xr, nb, out);
        for (int i = 0; i < R; ++i)
            for (int j = 0; j < T; ++j) y[(t + j) * y_stride + r + i] = out[i][j];
    };
    // Rows in groups of R, each group against the tokens in groups of T; leftovers one by one.
    const auto rows_against = [&]<int T>(std::size_t rt0, std::size_t rt1, std::size_t t) {
        std::size_t r = rt0;
        for (; r + 4 <= rt1; r += 4) run.template operator()<4, T>(r, t);
        for (; r < rt1; ++r) run.template operator()<1, T>(r, t);
    };
    const std::size_t tile = std::max<std::size_t>(4, row_tile_bytes / (nb * sizeof(block)));
    for (std::size_t rt = r0; rt < r1; rt += tile) {
        const std::size_t rt1 = std::min(r1, rt + tile);
        std::size_t t = 0;
        for (; t + 4 <= n_tok; t += 4) rows_against.template operator()<4>(rt, rt1, t);
        for (; t < n_tok; ++t) rows_against.template operator()<1>(rt, rt1, t);
    }
}

LMTK_INTRINSICS_WARNINGS_ON

#endif  // LMTK_QUANT_VNNI

}  // namespace lmtk::quant::vnni

namespace lmtk::quant::vnni {

#if LMTK_QUANT_VNNI

LMTK_INTRINSICS_WARNINGS_OFF

namespace detail {

// 4 activation bytes at p in every 32-bit lane.
inline __m512i broadcast_word(const std::int8_t* p) noexcept {
    std::int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

inline __m512 fp16_lanes(const std::byte* p) noexcept {
    return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(p)));
}

inline __m512i load_words(const std::byte* p) noexcept { return _mm512_load_si512(p); }

// Prefetch into L2 of the part of the weights `ahead` bytes past group g that corresponds to
// block b: over a pass through the group, the whole range [g + ahead, g + ahead + group
// bytes) is asked for, a block's share at a time. The hardware prefetchers alone fall behind
// on these streams of a few arrays per group (bench/quant_kernels, _stream: Q4_K read 10 GB/s
// from DRAM on one core without this, 20 with it, against 29 for a plain sum). Addresses past
// the end of the weights are harmless: a prefetch never faults.
struct prefetch_plan {
    std::size_t ahead = 0;  // 0: none (a group packed into L1 per call)
    std::size_t step = 0;   // group bytes per block
};
inline void prefetch_block(const std::byte* g, const prefetch_plan& pf, std::size_t b) noexcept {
    if (!pf.ahead) return;
    const std::byte* p = g + pf.ahead + b * pf.step;
    for (std::size_t off = 0; off < pf.step; off += 64) _mm_prefetch(reinterpret_cast<const char*>(p + off), _MM_HINT_T1);
}

// A thread-local buffer of at least `bytes` bytes on a 64-byte boundary, grown once.
inline std::byte* aligned_scratch(std::size_t bytes) {
    thread_local std::unique_ptr<std::byte[]> buf;
    thread_local std::size_t size = 0;
    if (size < bytes) {
        buf.reset(new std::byte[bytes + 64]);
        size = bytes;
    }
    const auto misalign = reinterpret_cast<std::uintptr_t>(buf.get()) % 64;
    return buf.get() + (misalign ? 64 - misalign : 0);
}

// Each kernel runs one group (16 rows) against T tokens: acc[t] lane r = dot(row r, token t).
// Decode uses T = 1, prefill T = 4 (each unpacked weight vector then serves four tokens).

// Q4_0: per block, 4 words of nibbles; low nibbles are elements 4k.., high ones 16 + 4k...
template <int T>
void group_q4_0(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T],
               __m512 (&acc)[T]) noexcept {
    using L = interleaved<q4_0>;
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (std::size_t b = 0; b < nb; ++b) {
        prefetch_block(g, pf, b);
        const std::byte* q = g + L::part(0, nb) + b * 256;
        __m512i lo[4], hi[4];
        for (int k = 0; k < 4; ++k) {
            const __m512i v = load_words(q + 64 * k);
            lo[k] = _mm512_and_si512(v, low4);
            hi[k] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
        }
        const __m512 dw = fp16_lanes(g + L::part(1, nb) + b * 32);
        for (int t = 0; t < T; ++t) {
            const std::int8_t* xq = x[t].qs + b * 32;
            // Two chains, so that the 8 dependent vpdpbusd of a block do not serialise.
            __m512i d0 = _mm512_set1_epi32(-8 * x[t].sum[b]), d1 = _mm512_setzero_si512();
            for (int k = 0; k < 4; ++k) {
                d0 = _mm512_dpbusd_epi32(d0, lo[k], broadcast_word(xq + 4 * k));
                d1 = _mm512_dpbusd_epi32(d1, hi[k], broadcast_word(xq + 16 + 4 * k));
            }
            const __m512i dot = _mm512_add_epi32(d0, d1);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw, _mm512_set1_ps(x[t].d[b])), acc[t]);
        }
    }
}

// Q8_0: per block, 8 words of unsigned quants q + 128.
template <int T>
void group_q8_0(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T],
               __m512 (&acc)[T]) noexcept {
    using L = interleaved<q8_0>;
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (std::size_t b = 0; b < nb; ++b) {
        prefetch_block(g, pf, b);
        const std::byte* q = g + L::part(0, nb) + b * 512;
        __m512i v[8];
        for (int k = 0; k < 8; ++k) v[k] = load_words(q + 64 * k);
        const __m512 dw = fp16_lanes(g + L::part(1, nb) + b * 32);
        for (int t = 0; t < T; ++t) {
            const std::int8_t* xq = x[t].qs + b * 32;
            __m512i d0 = _mm512_set1_epi32(-128 * x[t].sum[b]), d1 = _mm512_setzero_si512();
            for (int k = 0; k < 8; k += 2) {
                d0 = _mm512_dpbusd_epi32(d0, v[k], broadcast_word(xq + 4 * k));
                d1 = _mm512_dpbusd_epi32(d1, v[k + 1], broadcast_word(xq + 4 * k + 4));
            }
            const __m512i dot = _mm512_add_epi32(d0, d1);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw, _mm512_set1_ps(x[t].d[b])), acc[t]);
        }
    }
}

// Q4_K's 6-bit scale (Min = false) or min (Min = true) of sub-block j in every lane, from the
// 3 words a, b, c of the packed 12 bytes (the layout get_scale_min_k4 reads).
template <int J, bool Min>
__m512i k4_scale(__m512i a, __m512i b, __m512i c) noexcept {
    const __m512i six = _mm512_set1_epi32(63);
    if constexpr (J < 4) {
        return _mm512_and_si512(_mm512_srli_epi32(Min ? b : a, 8 * J), six);
    } else {
        // low 4 bits: nibble of byte J - 4 of c; high 2 bits: top bits of byte J - 4 of a (b).
        const __m512i low = _mm512_and_si512(_mm512_srli_epi32(c, 8 * (J - 4) + (Min ? 4 : 0)), _mm512_set1_epi32(0x0F));
        const __m512i high = _mm512_and_si512(_mm512_srli_epi32(Min ? b : a, 8 * (J - 4) + 2), _mm512_set1_epi32(0x30));
        return _mm512_or_si512(low, high);
    }
}

// Q4_K: per super-block, the 8 scales and mins decoded in registers (shared by every token),
// then 4 chunks of 8 words: low nibbles sub-block 2c, high nibbles sub-block 2c + 1. The min
// term is dmin * m * (d_x * sum(q_x)) per sub-block, in float.
template <int T>
void group_q4_k(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T],
               __m512 (&acc)[T]) noexcept {
    using L = interleaved<q4_k>;
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (std::size_t b = 0; b < nb; ++b) {
        prefetch_block(g, pf, b);
        const std::byte* s = g + L::part(1, nb) + b * 192;
        const std::byte* d = g + L::part(2, nb) + b * 64;
        const __m512i sa = load_words(s), sb = load_words(s + 64), sc = load_words(s + 128);
        const __m512 dd = fp16_lanes(d), dmin = fp16_lanes(d + 32);
        __m512 scale[8], min[8];
        const auto decode = [&]<int J>() {
            scale[J] = _mm512_mul_ps(_mm512_cvtepi32_ps(k4_scale<J, false>(sa, sb, sc)), dd);
            min[J] = _mm512_mul_ps(_mm512_cvtepi32_ps(k4_scale<J, true>(sa, sb, sc)), dmin);
        };
        [&]<int... J>(std::integer_sequence<int, J...>) { (decode.template operator()<J>(), ...); }(
            std::make_integer_sequence<int, 8>{});
        for (std::size_t c = 0; c < 4; ++c) {
            const std::byte* q = g + L::part(0, nb) + b * 2048 + c * 512;
            __m512i lo[8], hi[8];
            for (int k = 0; k < 8; ++k) {
                const __m512i v = load_words(q + 64 * k);
                lo[k] = _mm512_and_si512(v, low4);
                hi[k] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
            }
            const std::size_t a = b * 8 + 2 * c;  // activation block of sub-block 2c; 2c + 1's is a + 1
            for (int t = 0; t < T; ++t) {
                const std::int8_t* xq = x[t].qs + a * 32;
                __m512i da = _mm512_setzero_si512(), db = _mm512_setzero_si512();
                for (int k = 0; k < 8; ++k) {
                    da = _mm512_dpbusd_epi32(da, lo[k], broadcast_word(xq + 4 * k));
                    db = _mm512_dpbusd_epi32(db, hi[k], broadcast_word(xq + 32 + 4 * k));
                }
                __m512 r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(da), _mm512_mul_ps(scale[2 * c], _mm512_set1_ps(x[t].d[a])),
                                           acc[t]);
                r = _mm512_fnmadd_ps(min[2 * c], _mm512_set1_ps(x[t].ds[a]), r);
                r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(db), _mm512_mul_ps(scale[2 * c + 1], _mm512_set1_ps(x[t].d[a + 1])), r);
                acc[t] = _mm512_fnmadd_ps(min[2 * c + 1], _mm512_set1_ps(x[t].ds[a + 1]), r);
            }
        }
    }
}

// Q6_K: per sub-block of 16 elements, 2 words of nibbles and 1 of top bits make the 4 words of
// u = q + 32; the chain starts from -32 * sum(x) over the sub-block (sum16, per token).
template <int T>
void group_q6_k(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T],
                const std::int32_t* const (&sum16)[T], __m512 (&acc)[T]) noexcept {
    using L = interleaved<q6_k>;
    const __m512i low4 = _mm512_set1_epi8(0x0F), top2 = _mm512_set1_epi8(0x30);
    // a | (b & c), one vpternlogd
    const auto merge = [](__m512i a, __m512i b, __m512i c) { return _mm512_ternarylogic_epi32(a, b, c, 0xF8); };
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (std::size_t b = 0; b < nb; ++b) {
        prefetch_block(g, pf, b);
        const std::byte* lo = g + L::part(0, nb) + b * 2048;
        const std::byte* hi = g + L::part(1, nb) + b * 1024;
        const std::byte* scales = g + L::part(2, nb) + b * 256;
        const __m512 dd = fp16_lanes(g + L::part(3, nb) + b * 32);
        for (std::size_t s = 0; s < 16; ++s) {
            const __m128i sc8 = _mm_load_si128(reinterpret_cast<const __m128i*>(scales + s * 16));
            const __m512 scale = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc8)), dd);
            const __m512i l0 = load_words(lo + s * 128), l1 = load_words(lo + s * 128 + 64), h = load_words(hi + s * 64);
            const __m512i u0 = merge(_mm512_and_si512(l0, low4), _mm512_slli_epi16(h, 4), top2);
            const __m512i u1 = merge(_mm512_and_si512(_mm512_srli_epi16(l0, 4), low4), _mm512_slli_epi16(h, 2), top2);
            const __m512i u2 = merge(_mm512_and_si512(l1, low4), h, top2);
            const __m512i u3 = merge(_mm512_and_si512(_mm512_srli_epi16(l1, 4), low4), _mm512_srli_epi16(h, 2), top2);
            const std::size_t e = b * 256 + s * 16;  // first element
            for (int t = 0; t < T; ++t) {
                const std::int8_t* xq = x[t].qs + e;
                __m512i d0 = _mm512_set1_epi32(-32 * sum16[t][e / 16]), d1 = _mm512_setzero_si512();
                d0 = _mm512_dpbusd_epi32(d0, u0, broadcast_word(xq));
                d1 = _mm512_dpbusd_epi32(d1, u1, broadcast_word(xq + 4));
                d0 = _mm512_dpbusd_epi32(d0, u2, broadcast_word(xq + 8));
                d1 = _mm512_dpbusd_epi32(d1, u3, broadcast_word(xq + 12));
                const __m512i dot = _mm512_add_epi32(d0, d1);
                acc[t] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(scale, _mm512_set1_ps(x[t].d[e / 32])), acc[t]);
            }
        }
    }
}

// Sums of every 16 activation quants of n_tok rows (Q6_K's zero point applies per 16 elements;
// act_q8 keeps sums per 32), in a thread-local buffer reused across calls.
inline const std::int32_t* sums_of_16(const std::byte* xa, std::size_t xa_stride, std::size_t cols, std::size_t n_tok) {
    thread_local std::vector<std::int32_t> sums;
    if (sums.size() < n_tok * cols / 16) sums.resize(n_tok * cols / 16);
    for (std::size_t t = 0; t < n_tok; ++t) {
        const std::int8_t* q = act_q8::view(xa + t * xa_stride, cols).qs;
        std::int32_t* out = sums.data() + t * (cols / 16);
        for (std::size_t s = 0; s < cols / 16; ++s) {
            std::int32_t sum = 0;
            for (std::size_t j = 0; j < 16; ++j) sum += q[16 * s + j];
            out[s] = sum;
        }
    }
    return sums.data();
}

// Groups per decode step: enough concurrent streams of weights to keep a core's reads in
// flight, few enough that the unpacked words and scales stay in registers (measured with
// bench/quant_kernels' _stream benchmarks: Q4_0 reads 1.3x faster with 4 than with 1; the
// formats with more work per byte peak at 2).
// What a kernel call needs besides the weights: the activations and where results go.
struct group_args {
    std::size_t nb, cols;
    const std::byte* xa;
    std::size_t xa_stride;
    const std::int32_t* sum16;  // Q6_K only
    float* y;                   // y[t * y_stride + r], r counted from the first group's first row
    std::size_t y_stride;
    prefetch_plan pf;
};

// One group (its rows counted from `row`; n_rows of all of them real) against tokens t0 ..
// t0 + T - 1.
template <class P, int T>
void run_group(const std::byte* g, std::size_t row, std::size_t n_rows, std::size_t t0, const group_args& a) noexcept {
    act_q8::row xr[T];
    __m512 acc[T];
    for (int j = 0; j < T; ++j) xr[j] = act_q8::view(a.xa + (t0 + std::size_t(j)) * a.xa_stride, a.cols);
    if constexpr (std::is_same_v<P, q4_0>) {
        group_q4_0<T>(g, a.nb, a.pf, xr, acc);
    } else if constexpr (std::is_same_v<P, q8_0>) {
        group_q8_0<T>(g, a.nb, a.pf, xr, acc);
    } else if constexpr (std::is_same_v<P, q4_k>) {
        group_q4_k<T>(g, a.nb, a.pf, xr, acc);
    } else {
        static_assert(std::is_same_v<P, q6_k>);
        const std::int32_t* s16[T];
        for (int j = 0; j < T; ++j) s16[j] = a.sum16 + (t0 + std::size_t(j)) * (a.cols / 16);
        group_q6_k<T>(g, a.nb, a.pf, xr, s16, acc);
    }
    const std::size_t real = std::min(interleave_rows, n_rows - row);
    const __mmask16 keep = static_cast<__mmask16>((1u << real) - 1);
    for (int j = 0; j < T; ++j) _mm512_mask_storeu_ps(a.y + (t0 + std::size_t(j)) * a.y_stride + row, keep, acc[j]);
}

// Every token against one group: tokens 4 at a time, then one by one.
template <class P>
void run_group_all_tokens(const std::byte* g, std::size_t row, std::size_t n_rows, std::size_t n_tok,
                          const group_args& a) noexcept {
    std::size_t t = 0;
    for (; t + 4 <= n_tok; t += 4) run_group<P, 4>(g, row, n_rows, t, a);
    for (; t < n_tok; ++t) run_group<P, 1>(g, row, n_rows, t, a);
}

}  // namespace detail


// weight_ops::matmul_act over a matrix in P's interleaved layout (w: its first group; rows
// r0 .. r1, r0 a multiple of 16). Rows past r1 in the last group are computed and not stored.
template <class P>
void matmul_interleaved(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
                        std::size_t xa_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    using L = interleaved<P>;
    const std::size_t nb = cols / P::block_elems, gb = L::group_bytes(nb);
    const std::int32_t* sum16 = std::is_same_v<P, q6_k> ? detail::sums_of_16(xa, xa_stride, cols, n_tok) : nullptr;
    const detail::group_args a{nb, cols, xa, xa_stride, sum16, y + r0, y_stride, {interleave_prefetch_distance, gb / nb}};
    const std::byte* first = w + r0 / interleave_rows * gb;
    const std::size_t n_rows = r1 - r0, groups = (n_rows + interleave_rows - 1) / interleave_rows;
    for (std::size_t i = 0; i < groups; ++i) detail::run_group_all_tokens<P>(first + i * gb, i * interleave_rows, n_rows, n_tok, a);
}

// The same over row-major weights (as mapped from GGUF): each group of 16 rows is interleaved
// into a thread-local buffer first, which pays from about 8 tokens on (bench/quant_kernels).
template <class P>
void matmul_packed(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
                   std::size_t xa_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    using L = interleaved<P>;
    const std::size_t nb = cols / P::block_elems;
    std::byte* group = detail::aligned_scratch(L::group_bytes(nb));
    const auto* rows = reinterpret_cast<const typename P::block*>(w);
    const std::int32_t* sum16 = std::is_same_v<P, q6_k> ? detail::sums_of_16(xa, xa_stride, cols, n_tok) : nullptr;
    const detail::group_args a{nb, cols, xa, xa_stride, sum16, y + r0, y_stride, {}};
    for (std::size_t r = r0; r < r1; r += interleave_rows) {
        L::pack(rows + r * nb, nb, nb, std::min(interleave_rows, r1 - r), group);
        detail::run_group_all_tokens<P>(group, r - r0, r1 - r0, n_tok, a);
    }
}

// From this many tokens on, packing row-major weights per call pays (bench/quant_kernels).
inline constexpr std::size_t packed_min_tokens = 8;

// weight_ops::matmul_act for row-major P: y[t * y_stride + r] = dot(row r, activation row t).
// Packed groups for a batch of tokens, row tiles for a few.
template <class P>
void matmul(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
            std::size_t xa_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    if constexpr (has_interleaved<P>) {
        if (n_tok >= packed_min_tokens) {
            matmul_packed<P>(w, cols, r0, r1, xa, xa_stride, n_tok, y, y_stride);
            return;
        }
    }
    matmul_tiles<P>(w, cols, r0, r1, xa, xa_stride, n_tok, y, y_stride);
}

LMTK_INTRINSICS_WARNINGS_ON

#endif  // LMTK_QUANT_VNNI

}  // namespace lmtk::quant::vnni
// #include <lmtk/quant/iq4_nl.hpp>
// #include <lmtk/quant/policy.hpp>
// #include <lmtk/quant/q2_k.hpp>
// #include <lmtk/quant/q3_k.hpp>
// #include <lmtk/quant/q4_0.hpp>
// #include <lmtk/quant/q4_1.hpp>
// #include <lmtk/quant/q4_k.hpp>
// #include <lmtk/quant/q5_0.hpp>
// #include <lmtk/quant/q5_1.hpp>
// #include <lmtk/quant/q5_k.hpp>
// #include <lmtk/quant/q6_k.hpp>
// #include <lmtk/quant/q8_0.hpp>

namespace lmtk::quant {

// The type of weight_ops for a format that is not a GGUF type (the AWQ/GPTQ group layouts): an
// id no GGUF file can name, since the reader accepts only ids of known_types.
inline constexpr ggml_type not_a_gguf_type = static_cast<ggml_type>(0xFFFFFFFFu);

struct weight_ops {
    ggml_type type;
    std::size_t block_elems, block_bytes;
    // Dequantize the first n values (n % block_elems == 0) of a row starting at `row` into out.
    void (*dequantize_row)(const std::byte* row, float* out, std::size_t n) noexcept;
    // For r in [r0, r1) and t in [0, n_tok): y[t*y_stride + r] = dot(row r of W, x + t*x_stride).
    // W is row-major with `cols` elements per row (row bytes = cols/block_elems*block_bytes).
    void (*matmul)(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1,
                   const float* x, std::size_t x_stride, std::size_t n_tok,
                   float* y, std::size_t y_stride) noexcept;

    // Optional faster path on prepared activations (nullptr: none; use matmul). The caller
    // converts each input row once with prepare_row into act_row_bytes(cols) bytes and then
    // calls matmul_act with those rows in place of x: the conversion is shared between the
    // projections reading one input (same `act`) and paid once, not once per row of W.
    // Formats that leave these unset work unchanged.
    activation_kind act = activation_kind::f32;
    std::size_t (*act_row_bytes)(std::size_t cols) noexcept = nullptr;
    void (*prepare_row)(const float* x, std::byte* out, std::size_t cols) noexcept = nullptr;
    void (*matmul_act)(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1,
                       const std::byte* xa, std::size_t xa_stride, std::size_t n_tok,
                       float* y, std::size_t y_stride) noexcept = nullptr;

    // Rows stored together: 1 for row-major matrices, 16 for an interleaved layout. matmul and
    // matmul_act then take r0 at a multiple of it (threads split a matrix at group boundaries).
    std::size_t row_group = 1;
    // Row r of a whole matrix w (of `cols` columns) in this layout -> out.
    void (*dequantize_row_at)(const std::byte* w, std::size_t cols, std::size_t r, float* out) noexcept = nullptr;

    // Where the format has an interleaved layout with faster kernels on this target (a model
    // repacks into it at load): its ops, its size, and the repacking of group g (rows 16g ..
    // 16g + 15) of a row-major matrix into that group of the interleaved one. nullptr: none.
    const weight_ops* interleaved = nullptr;
    std::size_t (*interleaved_bytes)(std::size_t rows, std::size_t cols) noexcept = nullptr;
    void (*interleave_group)(const std::byte* w, std::size_t rows, std::size_t cols, std::size_t g,
                             std::byte* out) noexcept = nullptr;
};

// The formats compiled into a program. Ids must be distinct: resolve() takes the first match.
template <quant_policy... Ps>
struct set {
    static constexpr auto types = boost::hana::tuple_t<Ps...>;
    static constexpr bool contains(ggml_type t) noexcept { return ((Ps::type_id == t) || ...); }
};

// A set plus the AWQ/GPTQ formats it compiles in (a checkpoint's quantization_config maps onto
// one of them at load, like a GGUF tensor's type onto one of Base's).
template <class Base, group_policy... Gs>
struct with_group_formats : Base {
    static constexpr auto group_types = boost::hana::tuple_t<Gs...>;
    static constexpr bool contains_group(const group_format& f) noexcept { return ((Gs::format == f) || ...); }
};

// Every weight format lmtk reads. Q8_K is left out: ggml only uses it for activations. The
// AWQ/GPTQ policies share kernels per (bits, block size): awq4<128> and gptq<4, 128, *> are one
// group_layout<4, 128>.
using default_set = with_group_formats<
    set<f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl>,
    awq4<32>, awq4<64>, awq4<128>,
    gptq<4, 32, false>, gptq<4, 64, false>, gptq<4, 128, false>, gptq<4, -1, false>,
    gptq<4, 32, true>, gptq<4, 64, true>, gptq<4, 128, true>, gptq<4, -1, true>,
    gptq<3, 32, false>, gptq<3, 64, false>, gptq<3, 128, false>, gptq<3, -1, false>,
    gptq<3, 32, true>, gptq<3, 64, true>, gptq<3, 128, true>, gptq<3, -1, true>>;

// What the generic kernels below need of a format: a block of block_elems values, a scalar
// decoder and a dot kernel. GGUF policies and the AWQ/GPTQ group layouts both are.
template <class P>
concept block_format = std::is_trivially_copyable_v<typename P::block> &&
                       requires(const typename P::block* w, const float* x, float* y, std::size_t n) {
                           { P::block_elems } -> std::convertible_to<std::size_t>;
                           { P::dequantize_row(w, y, n) } noexcept;
                           { P::dot(xsimd::default_arch{}, w, x, n) } noexcept -> std::same_as<float>;
                       };

namespace kernels {

template <block_format P>
const typename P::block* blocks(const std::byte* p) noexcept {
    // GGUF aligns tensor data to >= 32 bytes and every row is whole blocks, so the bytes of a
    // mapped tensor are an array of blocks.
    return reinterpret_cast<const typename P::block*>(p);
}

template <block_format P>
void dequantize_row(const std::byte* row, float* out, std::size_t n) noexcept {
    P::dequantize_row(blocks<P>(row), out, n / P::block_elems);
}

// Prefill visits the rows of W in tiles of about this many bytes (as floats); within a tile
// every token is multiplied before moving on, so each weight byte comes from memory once while
// the tile sits in L2 and the token's activations in L1.
inline constexpr std::size_t row_tile_bytes = 64 * 1024;

// out[r][t] = dot(w[r], x[t]) over n floats for R rows and T tokens at once: each loaded vector
// of weights serves T tokens and each vector of activations R rows, so R + T loads feed R * T
// FMAs (one row against one token needs two loads per FMA and stalls on the load ports).
template <class Arch, int R, int T>
void dot_tile_f32(const float* const (&w)[R], const float* const (&x)[T], std::size_t n, float (&out)[R][T]) noexcept {
    using batch = xsimd::batch<float, Arch>;
    batch acc[R][T];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) acc[r][t] = batch(0.0f);
    std::size_t k = 0;
    for (; k + batch::size <= n; k += batch::size) {
        batch wv[R];
        for (int r = 0; r < R; ++r) wv[r] = batch::load_unaligned(w[r] + k);
        for (int t = 0; t < T; ++t) {
            const batch xv = batch::load_unaligned(x[t] + k);
            for (int r = 0; r < R; ++r) acc[r][t] = xsimd::fma(wv[r], xv, acc[r][t]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) {
            float s = xsimd::hadd(acc[r][t]);
            for (std::size_t j = k; j < n; ++j) s += w[r][j] * x[t][j];
            out[r][t] = s;
        }
}

// Scratch for the decoded rows of a tile: one per thread, grown once, so prefill does not
// allocate per call. Empty if it could not grow (the caller then falls back to P::dot).
inline std::span<float> decode_scratch(std::size_t n) noexcept {
    thread_local std::unique_ptr<float[]> buf;
    thread_local std::size_t size = 0;
    if (size < n) {
        buf.reset(new (std::nothrow) float[n]);
        size = buf ? n : 0;
    }
    return {buf.get(), size};
}

template <block_format P, class Arch>
void matmul(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const float* x,
            std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    const std::size_t n_blocks = cols / P::block_elems;
    const auto* rows = blocks<P>(w);
    if (n_tok == 1) {  // decode: one pass over the rows, decoding inside the dot
        for (std::size_t r = r0; r < r1; ++r) y[r] = P::dot(Arch{}, rows + r * n_blocks, x, n_blocks);
        return;
    }
    // Prefill: decode each row of a tile to floats once (F32 rows are used in place) and reuse it
    // for every token, in register tiles of R rows x T tokens. If the scratch cannot be had, fall
    // back to P::dot: slower, same results up to rounding.
    constexpr bool in_place = [] {
        if constexpr (quant_policy<P>) return P::type_id == ggml_type::f32;
        else return false;
    }();
    const std::size_t tile = std::max<std::size_t>(4, row_tile_bytes / (std::max<std::size_t>(1, cols) * sizeof(float)));
    const std::span<float> decoded = in_place ? std::span<float>() : decode_scratch(tile * cols);
    if (!in_place && decoded.empty()) {
        for (std::size_t t = 0; t < n_tok; ++t)
            for (std::size_t r = r0; r < r1; ++r)
                y[t * y_stride + r] = P::dot(Arch{}, rows + r * n_blocks, x + t * x_stride, n_blocks);
        return;
    }
    constexpr int R = 4, T = xsimd::batch<float, Arch>::size >= 16 ? 4 : 2;  // 16 or 8 accumulators
    for (std::size_t rt = r0; rt < r1; rt += tile) {
        const std::size_t rt_end = std::min(r1, rt + tile);
        const auto row = [&](std::size_t r) -> const float* {
            if constexpr (in_place) return reinterpret_cast<const float*>(rows + r * n_blocks);
            else return decoded.data() + (r - rt) * cols;
        };
        if constexpr (!in_place)
            for (std::size_t r = rt; r < rt_end; ++r)
                P::dequantize_row(rows + r * n_blocks, decoded.data() + (r - rt) * cols, n_blocks);
        const auto run = [&]<int RR, int TT>(std::size_t r, std::size_t t) {
            const float* wr[RR];
            const float* xr[TT];
            float out[RR][TT];
            for (int i = 0; i < RR; ++i) wr[i] = row(r + i);
            for (int j = 0; j < TT; ++j) xr[j] = x + (t + j) * x_stride;
            dot_tile_f32<Arch, RR, TT>(wr, xr, cols, out);
            for (int i = 0; i < RR; ++i)
                for (int j = 0; j < TT; ++j) y[(t + j) * y_stride + r + i] = out[i][j];
        };
        const auto rows_against = [&]<int TT>(std::size_t t) {
            std::size_t r = rt;
            for (; r + R <= rt_end; r += R) run.template operator()<R, TT>(r, t);
            for (; r < rt_end; ++r) run.template operator()<1, TT>(r, t);
        };
        std::size_t t = 0;
        for (; t + T <= n_tok; t += T) rows_against.template operator()<T>(t);
        for (; t < n_tok; ++t) rows_against.template operator()<1>(t);
    }
}

}  // namespace kernels

namespace kernels {
inline std::size_t act_q8_row_bytes(std::size_t cols) noexcept { return act_q8::row_bytes(cols); }

template <block_format P>
void dequantize_row_at(const std::byte* w, std::size_t cols, std::size_t r, float* out) noexcept {
    const std::size_t nb = cols / P::block_elems;
    P::dequantize_row(blocks<P>(w) + r * nb, out, nb);
}

// ---- interleaved layouts (interleaved.hpp) -------------------------------------------------

template <class P>
void dequantize_interleaved_row(const std::byte* w, std::size_t cols, std::size_t r, float* out) noexcept {
    using L = interleaved<P>;
    const std::size_t nb = cols / P::block_elems;
    L::dequantize_row(w + r / L::rows * L::group_bytes(nb), nb, r % L::rows, out);
}

template <class P>
std::size_t interleaved_bytes(std::size_t rows, std::size_t cols) noexcept {
    return interleaved<P>::matrix_bytes(rows, cols / P::block_elems);
}

template <class P>
void interleave_group(const std::byte* w, std::size_t rows, std::size_t cols, std::size_t g, std::byte* out) noexcept {
    using L = interleaved<P>;
    const std::size_t nb = cols / P::block_elems, r0 = g * L::rows;
    L::pack(blocks<P>(w) + r0 * nb, nb, nb, std::min(L::rows, rows - r0), out + g * L::group_bytes(nb));
}

// Float activations against an interleaved matrix: a row decoded at a time. Nothing fast takes
// this path (interleaved weights always come with their int8 kernels); it keeps every
// weight_ops complete.
template <class P, class Arch>
void matmul_interleaved_f32(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const float* x,
                            std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    const std::span<float> row = decode_scratch(cols);
    if (row.empty()) return;
    for (std::size_t r = r0; r < r1; ++r) {
        dequantize_interleaved_row<P>(w, cols, r, row.data());
        for (std::size_t t = 0; t < n_tok; ++t)
            y[t * y_stride + r] = f32::dot(Arch{}, reinterpret_cast<const f32::block*>(row.data()), x + t * x_stride, cols);
    }
}

}  // namespace kernels

#if LMTK_QUANT_VNNI
// Int8 activations where the format has VNNI kernels and the target is an AVX-512 one.
template <class P, class Arch>
inline constexpr bool uses_vnni = vnni::format<P>::supported && std::is_base_of_v<xsimd::avx512bw, Arch>;

template <quant_policy P, class Arch>
constexpr weight_ops interleaved_ops_of() noexcept {
    weight_ops ops{P::type_id, P::block_elems, sizeof(typename P::block), nullptr,
                   &kernels::matmul_interleaved_f32<P, Arch>};
    ops.act = activation_kind::q8;
    ops.act_row_bytes = &kernels::act_q8_row_bytes;
    ops.prepare_row = &act_q8::quantize_row;
    ops.matmul_act = &vnni::matmul_interleaved<P>;
    ops.row_group = interleaved<P>::rows;
    ops.dequantize_row_at = &kernels::dequantize_interleaved_row<P>;
    return ops;
}
template <quant_policy P, class Arch>
inline constexpr weight_ops interleaved_ops_v = interleaved_ops_of<P, Arch>();
#endif

#if LMTK_QUANT_F16_INTERLEAVED
// F16 interleaved: float activations, the kernels of interleaved_f16.hpp.
template <class Arch>
inline constexpr bool uses_f16_interleaved = std::is_base_of_v<xsimd::avx512f, Arch>;
constexpr weight_ops interleaved_f16_ops_of() noexcept {
    weight_ops ops{f16::type_id, f16::block_elems, sizeof(f16::block), nullptr, &f16x16::matmul};
    ops.row_group = interleaved<f16>::rows;
    ops.dequantize_row_at = &kernels::dequantize_interleaved_row<f16>;
    return ops;
}
inline constexpr weight_ops interleaved_f16_ops_v = interleaved_f16_ops_of();
#endif

// The kernels over the same interleaved layouts for ISAs with narrower registers (AVX2:
// interleaved_avx2.hpp; NEON with DotProd: interleaved_neon.hpp). Matmul: the level's F16
// float matmul for F16, its int8 matmul_act for the others.
template <quant_policy P, class Arch, auto Matmul>
constexpr weight_ops narrow_interleaved_ops_of() noexcept {
    if constexpr (std::is_same_v<P, f16>) {
        weight_ops ops{f16::type_id, f16::block_elems, sizeof(f16::block), nullptr, Matmul};
        ops.row_group = interleaved<f16>::rows;
        ops.dequantize_row_at = &kernels::dequantize_interleaved_row<f16>;
        return ops;
    } else {
        weight_ops ops{P::type_id, P::block_elems, sizeof(typename P::block), nullptr,
                       &kernels::matmul_interleaved_f32<P, Arch>};
        ops.act = activation_kind::q8;
        ops.act_row_bytes = &kernels::act_q8_row_bytes;
        ops.prepare_row = &act_q8::quantize_row;
        ops.matmul_act = Matmul;
        ops.row_group = interleaved<P>::rows;
        ops.dequantize_row_at = &kernels::dequantize_interleaved_row<P>;
        return ops;
    }
}
template <quant_policy P, class Arch, auto Matmul>
inline constexpr weight_ops narrow_interleaved_ops_v = narrow_interleaved_ops_of<P, Arch, Matmul>();

#if LMTK_QUANT_AVX2_INTERLEAVED
// AVX2 targets without the AVX-512 kernels.
template <class Arch>
inline constexpr bool avx2_without_avx512 = std::is_base_of_v<xsimd::avx2, Arch> && !std::is_base_of_v<xsimd::avx512f, Arch>;
template <quant_policy P>
constexpr auto avx2_matmul() noexcept {
    if constexpr (std::is_same_v<P, f16>) return &avx2x16::matmul_f16;
    else return &avx2x16::matmul_interleaved<P>;
}
#endif

#if LMTK_QUANT_NEON_INTERLEAVED
template <quant_policy P>
constexpr auto neon_matmul() noexcept {
    if constexpr (std::is_same_v<P, f16>) return &neon16::matmul_f16;
    else return &neon16::matmul_interleaved<P>;
}
#endif

template <quant_policy P, class Arch>
constexpr weight_ops ops_of() noexcept {
    weight_ops ops{P::type_id, P::block_elems, sizeof(typename P::block), &kernels::dequantize_row<P>,
                   &kernels::matmul<P, Arch>};
    ops.dequantize_row_at = &kernels::dequantize_row_at<P>;
#if LMTK_QUANT_VNNI
    if constexpr (uses_vnni<P, Arch>) {
        ops.act = activation_kind::q8;
        ops.act_row_bytes = &kernels::act_q8_row_bytes;
        ops.prepare_row = &act_q8::quantize_row;
        ops.matmul_act = &vnni::matmul<P>;
        if constexpr (has_interleaved<P>) {
            ops.interleaved = &interleaved_ops_v<P, Arch>;
            ops.interleaved_bytes = &kernels::interleaved_bytes<P>;
            ops.interleave_group = &kernels::interleave_group<P>;
        }
    }
#endif
#if LMTK_QUANT_F16_INTERLEAVED
    if constexpr (std::is_same_v<P, f16> && uses_f16_interleaved<Arch>) {
        ops.interleaved = &interleaved_f16_ops_v;
        ops.interleaved_bytes = &kernels::interleaved_bytes<P>;
        ops.interleave_group = &kernels::interleave_group<P>;
    }
#endif
#if LMTK_QUANT_AVX2_INTERLEAVED
    if constexpr (avx2_without_avx512<Arch> && (avx2x16::int8_format<P> || std::is_same_v<P, f16>)) {
        static_assert(has_interleaved<P>);
        ops.interleaved = &narrow_interleaved_ops_v<P, Arch, avx2_matmul<P>()>;
        ops.interleaved_bytes = &kernels::interleaved_bytes<P>;
        ops.interleave_group = &kernels::interleave_group<P>;
    }
#endif
#if LMTK_QUANT_NEON_INTERLEAVED
    if constexpr (neon16::int8_format<P> || std::is_same_v<P, f16>) {
        static_assert(has_interleaved<P>);
        ops.interleaved = &narrow_interleaved_ops_v<P, Arch, neon_matmul<P>()>;
        ops.interleaved_bytes = &kernels::interleaved_bytes<P>;
        ops.interleave_group = &kernels::interleave_group<P>;
    }
#endif
    return ops;
}

// The kernels of an AWQ/GPTQ group layout (float activations only, for now).
template <class Layout, class Arch>
constexpr weight_ops ops_of_layout() noexcept {
    weight_ops ops{not_a_gguf_type, Layout::block_elems, sizeof(typename Layout::block),
                   &kernels::dequantize_row<Layout>, &kernels::matmul<Layout, Arch>};
    ops.dequantize_row_at = &kernels::dequantize_row_at<Layout>;
    return ops;
}

// nullopt when the format is not compiled into Set (or Set has no group formats).
template <class Set, class Arch>
std::optional<weight_ops> resolve_group(const group_format& f) noexcept {
    if constexpr (requires { Set::group_types; }) {
        return boost::hana::unpack(Set::group_types, [&f](auto... p) {
            std::optional<weight_ops> ops;
            static_cast<void>(((decltype(p)::type::format == f
                                    ? (ops = ops_of_layout<typename decltype(p)::type::layout, Arch>(), true)
                                    : false) ||
                               ...));
            return ops;
        });
    } else {
        return std::nullopt;
    }
}

// nullopt when the type is not compiled into Set: the loader turns that into a load error.
template <class Set, class Arch>
std::optional<weight_ops> resolve(ggml_type t) noexcept {
    return boost::hana::unpack(Set::types, [t](auto... p) {
        std::optional<weight_ops> ops;
        // A short-circuit switch over the set: stops at the first format whose id matches.
        static_cast<void>(
            ((decltype(p)::type::type_id == t ? (ops = ops_of<typename decltype(p)::type, Arch>(), true) : false) ||
             ...));
        return ops;
    });
}

}  // namespace lmtk::quant
// #include <lmtk/target/cpu.hpp>
// The CPU targets: empty tags naming the xsimd architecture the forward pass is instantiated for.
#include <xsimd/xsimd.hpp>

namespace lmtk::target {

// Every kernel compiled for Arch in the including translation unit: what a header-only user gets.
template <class Arch = xsimd::default_arch>
struct cpu {
    using arch = Arch;
    static_assert(Arch::supported(),
                  "lmtk::target::cpu<Arch>: this translation unit is not compiled for Arch "
                  "(add its -m flags, or use xsimd::default_arch)");
    static constexpr const char* name() noexcept { return Arch::name(); }
};

// The weights' kernels chosen when a model loads, among the instruction-set levels compiled into
// lmtk::cpu_kernels (quant/cpu_kernels.hpp), by CPUID or LMTK_CPU; the rest of the forward pass
// (norms, attention, sampling) runs on Arch. What lmtk's own programs use: one binary that takes
// the AVX-512 kernels where the CPU has them and runs on an SSE4.2 one too. A program that names
// it links lmtk::cpu_kernels; the set of formats is then quant::default_set.
template <class Arch = xsimd::default_arch>
struct cpu_dispatch : cpu<Arch> {
    static constexpr bool kernels_at_load = true;
};

template <class Target>
concept chooses_kernels_at_load = requires { requires Target::kernels_at_load; };

}  // namespace lmtk::target
// #include <lmtk/model/hparams.hpp>
// Llama-family hyperparameters as a GGUF file states them ({arch}.* keys), checked for
// consistency before any buffer is sized from them.
//
// The fields are 32-bit as the files store them, but every product of them (q_dim(), kv_dim(),
// buffer sizes, tensor shapes) is taken in 64 bits: a hostile file can pick head counts and a
// head size whose 32-bit product wraps to a small number that its tensors then match, and the
// forward pass would index with the true head size far past those tensors.
// #include <lmtk/core/error.hpp>
// #include <lmtk/io/gguf.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

namespace lmtk::model {

// How RoPE pairs dimensions: `normal` rotates (x[2i], x[2i+1]) (GGUF llama, whose converter
// permutes Q/K rows for it); `neox` rotates (x[i], x[i + d/2]) (HF layout, qwen2 and others).
enum class rope_kind { normal, neox };

struct llama_hparams {
    std::string arch;
    std::uint32_t n_vocab = 0;
    std::uint32_t n_embd = 0;
    std::uint32_t n_layer = 0;
    std::uint32_t n_head = 0;
    std::uint32_t n_head_kv = 0;
    std::uint32_t n_ff = 0;
    std::uint32_t n_ctx_train = 0;
    std::uint32_t head_dim = 0;
    std::uint32_t rope_dim = 0;
    float rope_freq_base = 10000.0f;
    float rope_freq_scale = 1.0f;  // positions are multiplied by this (linear scaling)
    float rms_eps = 1e-5f;
    rope_kind rope = rope_kind::normal;

    std::size_t q_dim() const noexcept { return std::size_t{n_head} * head_dim; }
    std::size_t kv_dim() const noexcept { return std::size_t{n_head_kv} * head_dim; }

    // Refuses widths no real model has (the widest today are near 2^16): each width, and the
    // query and KV widths (products), at most max_width, so that a product of two widths, or
    // of a width and a batch or context size, stays far inside 64 bits. The tensors are then
    // checked against these widths (llama::bind), so a width the file cannot back is refused
    // there.
    static constexpr std::uint64_t max_width = std::uint64_t{1} << 28;
    void check_dimensions(std::string_view origin) const {
        const std::pair<const char*, std::uint64_t> widths[] = {
            {"embedding length", n_embd}, {"feed-forward length", n_ff}, {"head dimension", head_dim},
            {"query width (head count x head dimension)", q_dim()},
            {"key/value width (KV head count x head dimension)", kv_dim()}};
        for (const auto& [what, w] : widths)
            if (w == 0 || w > max_width) fail(origin, ": ", what, " ", w, " is outside 1 .. ", max_width);
        if (n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0)
            fail(origin, ": head count ", n_head, " is not a multiple of the KV head count ", n_head_kv);
        if (n_layer == 0) fail(origin, ": the block count is zero");
        // Zero would mean no positional signal at all, no Llama; the forward pass also takes the
        // first cos/sin of every row, which a rope dimension of 0 leaves without any.
        if (rope_dim == 0 || rope_dim > head_dim || rope_dim % 2 != 0)
            fail(origin, ": rope dimension ", rope_dim, " must be even, positive and at most the head dimension ", head_dim);
    }

    static llama_hparams from_gguf(const gguf::file& f) {
        llama_hparams h;
        h.arch = f.require<std::string>("general.architecture");
        // qwen2 is llama with q/k/v biases (bound when present) and rotate-half RoPE.
        if (h.arch != "llama" && h.arch != "qwen2")
            fail(f.path(), ": architecture '", h.arch, "' is not supported yet (supported: llama, qwen2)");
        if (h.arch == "qwen2") h.rope = rope_kind::neox;
        const std::string a = h.arch + ".";
        h.n_embd = f.require<std::uint32_t>(a + "embedding_length");
        h.n_layer = f.require<std::uint32_t>(a + "block_count");
        h.n_head = f.require<std::uint32_t>(a + "attention.head_count");
        h.n_head_kv = f.get_or<std::uint32_t>(a + "attention.head_count_kv", h.n_head);
        h.n_ff = f.require<std::uint32_t>(a + "feed_forward_length");
        h.n_ctx_train = f.get_or<std::uint32_t>(a + "context_length", 2048);
        h.rms_eps = f.get_or<float>(a + "attention.layer_norm_rms_epsilon", 1e-5f);
        h.rope_freq_base = f.get_or<float>(a + "rope.freq_base", 10000.0f);
        if (h.n_head == 0 || h.n_embd == 0 || h.n_layer == 0 || h.n_ff == 0)
            fail(f.path(), ": embedding length, block count, head count and feed-forward length must be non-zero");
        if (h.n_embd % h.n_head != 0)
            fail(f.path(), ": embedding length ", h.n_embd, " is not a multiple of the head count ", h.n_head);
        h.head_dim = f.get_or<std::uint32_t>(a + "attention.key_length", h.n_embd / h.n_head);
        if (h.head_dim == 0 || h.head_dim % 2 != 0) fail(f.path(), ": head dimension ", h.head_dim, " must be even");
        if (f.get_or<std::uint32_t>(a + "attention.value_length", h.head_dim) != h.head_dim)
            fail(f.path(), ": different key and value head sizes are not supported");
        if (h.n_head_kv == 0 || h.n_head % h.n_head_kv != 0)
            fail(f.path(), ": head count ", h.n_head, " is not a multiple of the KV head count ", h.n_head_kv);
        h.rope_dim = f.get_or<std::uint32_t>(a + "rope.dimension_count", h.head_dim);
        if (h.rope_dim == 0 || h.rope_dim > h.head_dim || h.rope_dim % 2 != 0)
            fail(f.path(), ": rope dimension ", h.rope_dim, " must be even, positive and at most the head dimension ", h.head_dim);
        if (!(h.rope_freq_base > 0.0f) || !std::isfinite(h.rope_freq_base))
            fail(f.path(), ": rope.freq_base must be positive");
        if (!(h.rms_eps >= 0.0f) || !std::isfinite(h.rms_eps)) fail(f.path(), ": invalid RMS norm epsilon");
        const std::string scaling = f.get_or<std::string>(a + "rope.scaling.type", "none");
        if (scaling == "linear") {
            const float factor = f.get_or<float>(a + "rope.scaling.factor", 1.0f);
            if (!(factor > 0.0f)) fail(f.path(), ": rope.scaling.factor must be positive");
            h.rope_freq_scale = 1.0f / factor;
        } else if (scaling != "none") {
            fail(f.path(), ": rope scaling '", scaling, "' is not supported yet");
        }
        h.check_dimensions(f.path());
        // The vocabulary size comes from the embedding tensor; the key is optional.
        return h;
    }
};

}  // namespace lmtk::model
// #include <lmtk/model/kv_cache.hpp>
// Key/value cache of one sequence, allocated once for the whole context. The element type is a
// policy: `kv_f32` stores floats, `kv_f16` stores IEEE halves (half the memory, ~1e-3 relative
// rounding of cached keys/values). Layout per layer: [position][kv_head * head_dim], one row per
// token, so appending a token writes one contiguous row.
// #include <lmtk/core/error.hpp>
// #include <lmtk/core/fp16.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace lmtk::model {

struct kv_f32 {
    using storage = float;
    static constexpr std::string_view name = "f32";
    static storage store(float v) noexcept { return v; }
    static float load(storage v) noexcept { return v; }
};

struct kv_f16 {
    using storage = std::uint16_t;
    static constexpr std::string_view name = "f16";
    static storage store(float v) noexcept { return core::f32_to_fp16(v); }
    static float load(storage v) noexcept { return core::fp16_to_f32(v); }
};

template <class KV>
class kv_cache {
public:
    using storage = typename KV::storage;

    kv_cache() = default;
    kv_cache(std::size_t n_layer, std::size_t n_ctx, std::size_t kv_dim)
        : n_layer_(n_layer), n_ctx_(n_ctx), kv_dim_(kv_dim),
          k_(n_layer * n_ctx * kv_dim), v_(n_layer * n_ctx * kv_dim) {}

    static std::size_t bytes_needed(std::size_t n_layer, std::size_t n_ctx, std::size_t kv_dim) noexcept {
        return 2 * n_layer * n_ctx * kv_dim * sizeof(storage);
    }

    std::size_t n_ctx() const noexcept { return n_ctx_; }
    std::size_t kv_dim() const noexcept { return kv_dim_; }

    storage* k_row(std::size_t layer, std::size_t pos) noexcept { return k_.data() + (layer * n_ctx_ + pos) * kv_dim_; }
    storage* v_row(std::size_t layer, std::size_t pos) noexcept { return v_.data() + (layer * n_ctx_ + pos) * kv_dim_; }
    const storage* k_row(std::size_t layer, std::size_t pos) const noexcept {
        return k_.data() + (layer * n_ctx_ + pos) * kv_dim_;
    }
    const storage* v_row(std::size_t layer, std::size_t pos) const noexcept {
        return v_.data() + (layer * n_ctx_ + pos) * kv_dim_;
    }

private:
    std::size_t n_layer_ = 0, n_ctx_ = 0, kv_dim_ = 0;
    std::vector<storage> k_, v_;
};

}  // namespace lmtk::model
// #include <lmtk/model/source.hpp>
// Where a model's weights and hyperparameters come from. A GGUF file is one source; a Hugging
// Face checkpoint directory is another. The model binds its weights from a source once, at load,
// by GGUF tensor names (blk.N.attn_q.weight ...), so the forward pass never knows which it was.
// The virtual calls here happen only while loading, never per token.
// #include <lmtk/core/error.hpp>
// #include <lmtk/core/mapped_file.hpp>
// #include <lmtk/io/gguf.hpp>
// #include <lmtk/model/hparams.hpp>
// #include <lmtk/quant/group_layout.hpp>

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace lmtk::model {

// A matrix that an AWQ or GPTQ checkpoint stores quantized, repacked at load into blocks of
// quant::group_layout: `rows` rows of cols / block_elems blocks. With act-order, column k of the
// blocks holds input input_perm[k].
struct group_tensor {
    quant::group_format format;
    const std::byte* data = nullptr;
    std::size_t rows = 0, cols = 0;
    const std::uint32_t* input_perm = nullptr;  // nullptr: the identity
};

class weight_source {
public:
    virtual ~weight_source() = default;

    virtual const std::string& path() const noexcept = 0;
    virtual const llama_hparams& hparams() const noexcept = 0;
    // A tensor by its GGUF name, in GGUF orientation (ne[0] = contiguous input dimension).
    virtual const gguf::tensor_info* find_tensor(std::string_view name) const noexcept = 0;
    // The GGUF file behind this source, for metadata such as the vocabulary; nullptr otherwise.
    virtual const gguf::file* gguf_file() const noexcept { return nullptr; }
    // A matrix by its GGUF name when the source holds it in an AWQ/GPTQ group format (checked
    // before find_tensor); nullptr otherwise.
    virtual const group_tensor* find_group_tensor(std::string_view) const noexcept { return nullptr; }
    // The loader copied [p, p + n) elsewhere and will not read it again: a mapped source may
    // drop those pages from memory (they stay readable).
    virtual void release(const std::byte* /*p*/, std::size_t /*n*/) const noexcept {}
    // The mapped file that holds [p, p + n), if [p, p + n) is read from one; nullptr for bytes
    // the source holds in memory of its own. Asked once at load, so that rows can later be
    // read with the file's own read_at() (no virtual call, no pages mapped in).
    virtual const core::mapped_file* mapping_of(const std::byte* /*p*/, std::size_t /*n*/) const noexcept { return nullptr; }

    const gguf::tensor_info& tensor(std::string_view name) const {
        const gguf::tensor_info* t = find_tensor(name);
        if (!t) fail(path(), ": tensor '", name, "' is missing");
        return *t;
    }
};

class gguf_source final : public weight_source {
public:
    explicit gguf_source(const std::string& path) : file_(path), hp_(llama_hparams::from_gguf(file_)) {}
    // A file already open (read from a memfd or checked beforehand).
    explicit gguf_source(gguf::file f) : file_(std::move(f)), hp_(llama_hparams::from_gguf(file_)) {}

    const std::string& path() const noexcept override { return file_.path(); }
    const llama_hparams& hparams() const noexcept override { return hp_; }
    const gguf::tensor_info* find_tensor(std::string_view name) const noexcept override { return file_.find_tensor(name); }
    const gguf::file* gguf_file() const noexcept override { return &file_; }
    void release(const std::byte* p, std::size_t n) const noexcept override { file_.mapping().release(p, n); }
    const core::mapped_file* mapping_of(const std::byte* p, std::size_t n) const noexcept override {
        return file_.mapping().contains(p, n) ? &file_.mapping() : nullptr;
    }

private:
    gguf::file file_;
    llama_hparams hp_;
};

}  // namespace lmtk::model

// open_weights(path), for a GGUF file or a Hugging Face checkpoint folder, lives with the HF
// source it needs. Included last: hf.hpp builds on the classes above, whichever header comes first.
// #include <lmtk/model/hf.hpp>
// A Hugging Face checkpoint folder as a weight_source: config.json for the hyperparameters,
// model.safetensors (or shards named by model.safetensors.index.json) for the weights.
//
// Supported: LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM (Llama with q/k/v biases)
// with F32, F16 or BF16 tensors, and AutoAWQ (GEMM or GEMV, 4-bit) or GPTQ
// (3/4-bit, v1 or v2 zeros, any group, act-order) checkpoints: their quantized linears are
// repacked once, here, into quant::group_layout blocks (see quant/awq.hpp, quant/gptq.hpp). Each HF tensor is presented under its
// GGUF name and in GGUF orientation (ne = the HF shape reversed: [out, in] -> ne = [in, out]),
// so the model binds it exactly like a GGUF tensor. HF keeps Q and K rows in the rotate-half
// layout, so the hyperparameters say rope_kind::neox; nothing is permuted here.
//
// Tensors are used in place from the mapping when their bytes are aligned for their type;
// safetensors gives no alignment guarantee (the header length is arbitrary), so a misaligned
// tensor is copied once, at load, into an aligned buffer this source owns.
// #include <lmtk/core/error.hpp>
// #include <lmtk/io/gguf.hpp>
// #include <lmtk/io/safetensors.hpp>
// #include <lmtk/model/hparams.hpp>
// #include <lmtk/model/source.hpp>
// #include <lmtk/quant/awq.hpp>
// #include <lmtk/quant/ggml_type.hpp>
// #include <lmtk/quant/gptq.hpp>
// #include <lmtk/quant/group_layout.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <filesystem>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lmtk::model {

namespace detail {

// "model.layers.12.self_attn.q_proj.weight" -> "blk.12.attn_q.weight"; nullopt for names that
// are not weights of the Llama family (the caller decides whether that is an error).
inline std::optional<std::string> gguf_name_of(std::string_view hf) {
    if (hf == "model.embed_tokens.weight") return "token_embd.weight";
    if (hf == "model.norm.weight") return "output_norm.weight";
    if (hf == "lm_head.weight") return "output.weight";
    constexpr std::string_view layers = "model.layers.";
    if (!hf.starts_with(layers)) return std::nullopt;
    hf.remove_prefix(layers.size());
    const std::size_t dot = hf.find('.');
    if (dot == 0 || dot == std::string_view::npos) return std::nullopt;
    unsigned layer = 0;
    const auto [p, ec] = std::from_chars(hf.data(), hf.data() + dot, layer);
    if (ec != std::errc() || p != hf.data() + dot) return std::nullopt;
    const std::string_view rest = hf.substr(dot + 1);
    static constexpr std::pair<std::string_view, std::string_view> parts[] = {
        {"input_layernorm.weight", "attn_norm.weight"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"self_attn.q_proj.bias", "attn_q.bias"},
        {"self_attn.k_proj.bias", "attn_k.bias"},
        {"self_attn.v_proj.bias", "attn_v.bias"},
        {"self_attn.o_proj.bias", "attn_output.bias"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
    };
    for (const auto& [from, to] : parts)
        if (rest == from) return "blk." + std::to_string(layer) + "." + std::string(to);
    return std::nullopt;
}

// Buffers for tensors copied out of the mapping; 64-byte aligned like a cache line, which is
// more than any kernel needs.
struct aligned_delete {
    void operator()(std::byte* p) const noexcept { ::operator delete[](p, std::align_val_t{64}); }
};
using aligned_bytes = std::unique_ptr<std::byte[], aligned_delete>;

}  // namespace detail

class hf_source final : public weight_source {
public:
    static constexpr std::string_view supported_architectures = "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM";

    explicit hf_source(const std::string& dir) : dir_(dir), path_(dir) {
        namespace fs = std::filesystem;
        config_path_ = (dir_ / "config.json").string();
        std::error_code ec;
        if (!fs::is_regular_file(config_path_, ec)) fail(path_, ": no config.json in the checkpoint folder");
        {
            const core::mapped_file m(config_path_);
            if (m.size() > safetensors::max_header_bytes) fail(config_path_, ": implausibly large (", m.size(), " bytes)");
            config_ = safetensors::detail::parse_json(
                std::string_view(reinterpret_cast<const char*>(m.data()), m.size()), config_path_);
        }
        if (!config_.is_object()) fail(config_path_, ": not a JSON object");
        read_config();
        weights_ = std::make_unique<safetensors::checkpoint>(dir);
        bind_tensors();
    }

    const std::string& path() const noexcept override { return path_; }
    const llama_hparams& hparams() const noexcept override { return hp_; }
    // Bytes repacked at load: drop them from memory where they are the mapped safetensors
    // (mapped_file::release ignores ranges outside its file; copies made for alignment stay).
    void release(const std::byte* p, std::size_t n) const noexcept override {
        if (weights_)
            for (const auto& f : weights_->files()) f->mapping().release(p, n);
    }
    const core::mapped_file* mapping_of(const std::byte* p, std::size_t n) const noexcept override {
        if (weights_)
            for (const auto& f : weights_->files())
                if (f->mapping().contains(p, n)) return &f->mapping();
        return nullptr;
    }

    const gguf::tensor_info* find_tensor(std::string_view name) const noexcept override {
        const auto it = index_.find(name);
        return it == index_.end() ? nullptr : &tensors_[it->second];
    }
    const group_tensor* find_group_tensor(std::string_view name) const noexcept override {
        const auto it = group_index_.find(name);
        return it == group_index_.end() ? nullptr : &group_tensors_[it->second];
    }
    // The AWQ/GPTQ matrices, repacked, under their GGUF names (empty for F32/F16/BF16 checkpoints).
    const std::deque<group_tensor>& group_tensors() const noexcept { return group_tensors_; }

    const std::filesystem::path& directory() const noexcept { return dir_; }
    const nlohmann::json& config() const noexcept { return config_; }
    const std::string& architecture() const noexcept { return architecture_; }  // "LlamaForCausalLM"
    bool tied_embeddings() const noexcept { return tied_; }
    // The tensors under their GGUF names, in checkpoint order.
    const std::vector<gguf::tensor_info>& tensors() const noexcept { return tensors_; }
    const safetensors::checkpoint& checkpoint() const noexcept { return *weights_; }
    // config.json values that are not hyperparameters of the forward pass.
    std::optional<std::int64_t> bos_token_id() const { return optional_int("bos_token_id"); }
    std::optional<std::int64_t> eos_token_id() const { return optional_int("eos_token_id"); }
    // tokenizer.json in the folder, if there is one.
    std::optional<std::string> tokenizer_json() const {
        std::error_code ec;
        const auto p = dir_ / "tokenizer.json";
        if (std::filesystem::is_regular_file(p, ec)) return p.string();
        return std::nullopt;
    }

private:
    // --- config.json ------------------------------------------------------------------------
    const nlohmann::json* field(std::string_view key) const {
        const auto it = config_.find(key);
        return it == config_.end() || it->is_null() ? nullptr : &*it;
    }
    std::optional<std::int64_t> optional_int(std::string_view key) const {
        const nlohmann::json* v = field(key);
        if (!v) return std::nullopt;
        if (v->is_array() && v->size() == 1) v = &(*v)[0];  // eos_token_id may be a list
        if (!v->is_number_integer()) return std::nullopt;
        return v->get<std::int64_t>();
    }
    std::uint32_t positive(std::string_view key, std::optional<std::uint32_t> fallback = std::nullopt) const {
        const nlohmann::json* v = field(key);
        if (!v) {
            if (fallback) return *fallback;
            fail(config_path_, ": '", key, "' is missing");
        }
        if (!v->is_number_integer() || v->get<std::int64_t>() <= 0 || v->get<std::int64_t>() > (1 << 30))
            fail(config_path_, ": '", key, "' must be a positive integer, not ", v->dump());
        return static_cast<std::uint32_t>(v->get<std::int64_t>());
    }
    double number(std::string_view key, double fallback) const {
        const nlohmann::json* v = field(key);
        if (!v) return fallback;
        if (!v->is_number() || !std::isfinite(v->get<double>()))
            fail(config_path_, ": '", key, "' must be a number, not ", v->dump());
        return v->get<double>();
    }

    void read_config() {
        const nlohmann::json* archs = field("architectures");
        if (!archs || !archs->is_array() || archs->empty() || !(*archs)[0].is_string())
            fail(config_path_, ": no 'architectures' list");
        architecture_ = (*archs)[0].get<std::string>();
        if (architecture_ != "LlamaForCausalLM" && architecture_ != "MistralForCausalLM" && architecture_ != "Qwen2ForCausalLM")
            fail(config_path_, ": architecture '", architecture_, "' is not supported (supported: ", supported_architectures,
                 ")");
        read_quantization_config();
        if (const nlohmann::json* act = field("hidden_act"); act && *act != "silu")
            fail(config_path_, ": hidden_act ", act->dump(), " is not supported (Llama uses silu)");
        // Attention biases are bound when the checkpoint has them (Qwen2's q/k/v, Llama's
        // attention_bias); the feed-forward has none in lmtk's forward pass.
        if (const nlohmann::json* b = field("mlp_bias"); b && *b == true)
            fail(config_path_, ": 'mlp_bias' is true; feed-forward biases are not supported by lmtk's forward pass yet");

        llama_hparams h;
        h.arch = architecture_ == "Qwen2ForCausalLM" ? "qwen2" : "llama";
        h.rope = rope_kind::neox;  // HF's rotate-half layout, unpermuted
        h.n_embd = positive("hidden_size");
        h.n_ff = positive("intermediate_size");
        h.n_layer = positive("num_hidden_layers");
        h.n_head = positive("num_attention_heads");
        h.n_head_kv = positive("num_key_value_heads", h.n_head);
        if (h.n_head % h.n_head_kv != 0)
            fail(config_path_, ": num_attention_heads ", h.n_head, " is not a multiple of num_key_value_heads ", h.n_head_kv);
        if (!field("head_dim") && h.n_embd % h.n_head != 0)
            fail(config_path_, ": hidden_size ", h.n_embd, " is not a multiple of num_attention_heads ", h.n_head);
        h.head_dim = positive("head_dim", h.n_embd / h.n_head);
        if (h.head_dim % 2 != 0) fail(config_path_, ": head_dim ", h.head_dim, " must be even");
        h.rope_dim = h.head_dim;
        h.n_ctx_train = positive("max_position_embeddings", 2048);
        // Sliding-window attention (Mistral v0.1) equals full attention while the context fits in
        // the window, so the default context is capped at the window rather than refused.
        // Qwen2 configs name a window but use it only with use_sliding_window: true.
        const nlohmann::json* use_window = field("use_sliding_window");
        const bool windowed = use_window ? *use_window == true : architecture_ != "Qwen2ForCausalLM";
        if (const nlohmann::json* w = field("sliding_window"); w && w->is_number_integer() && w->get<std::int64_t>() > 0 && windowed)
            h.n_ctx_train = std::min<std::uint32_t>(h.n_ctx_train, static_cast<std::uint32_t>(
                                                                         std::min<std::int64_t>(w->get<std::int64_t>(), 1 << 30)));
        h.rms_eps = static_cast<float>(number("rms_norm_eps", 1e-6));
        if (!(h.rms_eps >= 0.0f)) fail(config_path_, ": rms_norm_eps must not be negative");
        h.rope_freq_base = static_cast<float>(number("rope_theta", 10000.0));
        if (!(h.rope_freq_base > 0.0f)) fail(config_path_, ": rope_theta must be positive");
        if (const nlohmann::json* rs = field("rope_scaling")) {
            if (!rs->is_object()) fail(config_path_, ": rope_scaling must be an object or null");
            std::string type;
            for (const char* k : {"rope_type", "type"})
                if (const auto it = rs->find(k); it != rs->end() && it->is_string()) type = it->get<std::string>();
            if (type == "linear") {
                const auto f = rs->find("factor");
                if (f == rs->end() || !f->is_number() || !(f->get<double>() > 0.0) || !std::isfinite(f->get<double>()))
                    fail(config_path_, ": rope_scaling.factor must be a positive number");
                h.rope_freq_scale = static_cast<float>(1.0 / f->get<double>());
            } else if (type != "default") {
                fail(config_path_, ": rope_scaling type '", type, "' is not supported (supported: linear)");
            }
        }
        const nlohmann::json* tie = field("tie_word_embeddings");
        if (tie && !tie->is_boolean()) fail(config_path_, ": tie_word_embeddings must be true or false");
        tied_ = tie && tie->get<bool>();  // transformers' Llama/Mistral default is false
        h.check_dimensions(config_path_);
        hp_ = h;
    }

    // --- quantization_config (AWQ, GPTQ) -----------------------------------------------------
    struct quantization {
        quant::group_method method = quant::group_method::gptq;
        unsigned bits = 4;
        int group = 128;
        bool awq_gemv = false;  // AWQ version "gemv" rather than "gemm"
        bool gptq_v1 = true;    // GPTQ checkpoint_format "gptq": zeros stored minus one
    };

    void read_quantization_config() {
        namespace fs = std::filesystem;
        nlohmann::json q;
        std::string where = config_path_;
        if (const nlohmann::json* c = field("quantization_config")) {
            q = *c;
        } else {
            // AutoGPTQ writes quantize_config.json beside config.json instead.
            for (const char* name : {"quantize_config.json", "quant_config.json"}) {
                std::error_code ec;
                const fs::path p = dir_ / name;
                if (!fs::is_regular_file(p, ec)) continue;
                const core::mapped_file m(p.string());
                if (m.size() > safetensors::max_header_bytes) fail(p.string(), ": implausibly large");
                q = safetensors::detail::parse_json(std::string_view(reinterpret_cast<const char*>(m.data()), m.size()),
                                                    p.string());
                where = p.string();
                break;
            }
            if (q.is_null()) return;
        }
        if (!q.is_object()) fail(where, ": quantization_config must be an object");
        const auto str = [&](std::initializer_list<const char*> keys, std::string fallback) {
            for (const char* k : keys)
                if (const auto it = q.find(k); it != q.end() && it->is_string()) {
                    std::string v = it->get<std::string>();
                    for (char& ch : v) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
                    return v;
                }
            return fallback;
        };
        const auto integer = [&](std::initializer_list<const char*> keys, std::int64_t fallback) {
            for (const char* k : keys)
                if (const auto it = q.find(k); it != q.end() && !it->is_null()) {
                    if (!it->is_number_integer()) fail(where, ": quantization_config.", k, " must be an integer, not ", it->dump());
                    return it->get<std::int64_t>();
                }
            return fallback;
        };
        const auto boolean = [&](const char* key, bool fallback) {
            const auto it = q.find(key);
            if (it == q.end() || it->is_null()) return fallback;
            if (!it->is_boolean()) fail(where, ": quantization_config.", key, " must be true or false, not ", it->dump());
            return it->get<bool>();
        };
        const std::string method = str({"quant_method"}, q.contains("w_bit") ? "awq" : "gptq");
        quantization z;
        const std::int64_t bits = integer({"bits", "w_bit"}, 4);
        const std::int64_t group = integer({"group_size", "q_group_size"}, 128);
        if (method == "awq") {
            z.method = quant::group_method::awq;
            if (bits != 4) fail(where, ": AWQ with ", bits, " bits; AutoAWQ checkpoints are 4-bit");
            if (group != 32 && group != 64 && group != 128)
                fail(where, ": AWQ group_size ", group, " is not supported (32, 64 or 128)");
            if (!boolean("zero_point", true)) fail(where, ": AWQ without zero_point is not supported (AutoAWQ's GEMM needs zeros)");
            const std::string version = str({"version"}, "gemm");
            if (version == "gemv") z.awq_gemv = true;
            else if (version != "gemm")
                fail(where, ": AWQ version '", version, "' is not supported (gemm or gemv; gemv_fast and marlin are GPU tile layouts)");
        } else if (method == "gptq") {
            z.method = quant::group_method::gptq;
            if (bits != 3 && bits != 4) fail(where, ": GPTQ with ", bits, " bits is not supported (3 or 4)");
            if (group != 32 && group != 64 && group != 128 && group != -1)
                fail(where, ": GPTQ group_size ", group, " is not supported (32, 64, 128 or -1)");
            if (boolean("is_marlin_format", false)) fail(where, ": GPTQ Marlin checkpoints are not supported (use the gptq format)");
            const std::string format = str({"checkpoint_format", "format"}, "gptq");
            if (format == "gptq_v2") z.gptq_v1 = false;
            else if (format != "gptq") fail(where, ": GPTQ checkpoint_format '", format, "' is not supported (gptq or gptq_v2)");
        } else {
            fail(where, ": quant_method '", method, "' is not supported (awq, gptq; or F32/F16/BF16 weights)");
        }
        z.bits = static_cast<unsigned>(bits);
        z.group = static_cast<int>(group);
        quant_ = z;
    }

    // The safetensors tensor `name` with the given dtype and rank, or a clear error.
    const safetensors::tensor& quant_part(const std::string& name, safetensors::dtype type, std::size_t rank) const {
        const safetensors::tensor* t = weights_->find(name);
        if (!t) fail(path_, ": tensor '", name, "' is missing");
        if (t->type != type || t->n_dims() != rank)
            fail(where(*t), ": tensor '", name, "' is ", safetensors::dtype_name(t->type), " with ", t->n_dims(),
                 " dimensions; ", quant::format_name({quant_->method, quant_->bits, quant_->group, false}), " stores it as ",
                 safetensors::dtype_name(type), " with ", rank);
        return *t;
    }

    void expect_shape(const safetensors::tensor& t, std::uint64_t d0, std::uint64_t d1) const {
        if (t.shape[0] != d0 || t.shape[1] != d1)
            fail(where(t), ": tensor '", t.name, "' has shape [", t.shape[0], ", ", t.shape[1], "], expected [", d0, ", ", d1, "]");
    }

    // Repacks the quantized linear `prefix` (its .qweight, .qzeros, .scales, .g_idx) and presents
    // it under `gguf_name`.
    void add_quantized(const std::string& prefix, std::string gguf_name) {
        using safetensors::dtype;
        const quantization& z = *quant_;
        const auto& qw = quant_part(prefix + ".qweight", dtype::i32, 2);
        const auto& qz = quant_part(prefix + ".qzeros", dtype::i32, 2);
        const auto& sc = quant_part(prefix + ".scales", dtype::f16, 2);
        group_tensor g;
        quant::group_matrix m;
        if (z.method == quant::group_method::awq) {
            const std::size_t gsz = static_cast<std::size_t>(z.group);
            if (!z.awq_gemv) {
                const std::uint64_t in = qw.shape[0], out = qw.shape[1] * 8;
                if (in == 0 || in % gsz != 0) fail(where(qw), ": '", qw.name, "' has ", in, " inputs, not whole groups of ", gsz);
                expect_shape(qz, in / gsz, out / 8);
                expect_shape(sc, in / gsz, out);
                const quant::awq::gemm_tensors t{qw.bytes.data(), qz.bytes.data(), sc.bytes.data(), in, out, gsz};
                m = gsz == 32 ? quant::awq::repack_gemm<32>(t) : gsz == 64 ? quant::awq::repack_gemm<64>(t) : quant::awq::repack_gemm<128>(t);
                g.rows = out;
                g.cols = in;
            } else {
                const std::uint64_t out = qw.shape[0], in = qw.shape[1] * 8;
                if (in == 0 || in % gsz != 0) fail(where(qw), ": '", qw.name, "' has ", in, " inputs, not whole groups of ", gsz);
                const std::uint64_t zw = qz.shape[1];
                expect_shape(qz, out, zw);
                expect_shape(sc, out, zw * 8);
                const quant::awq::gemv_tensors t{qw.bytes.data(), qz.bytes.data(), sc.bytes.data(), in, out, gsz, zw};
                m = gsz == 32 ? quant::awq::repack_gemv<32>(t) : gsz == 64 ? quant::awq::repack_gemv<64>(t) : quant::awq::repack_gemv<128>(t);
                g.rows = out;
                g.cols = in;
            }
        } else {
            const std::uint64_t in = qw.shape[0] * 32 / z.bits, out = qw.shape[1];
            if (in == 0 || (qw.shape[0] * 32) % z.bits != 0) fail(where(qw), ": '", qw.name, "' has an impossible row count for ", z.bits, " bits");
            const std::uint64_t gsz = z.group == -1 ? in : std::uint64_t(z.group);
            const std::uint64_t groups = (in + gsz - 1) / gsz;
            if ((out * z.bits) % 32 != 0) fail(where(qw), ": '", qw.name, "' has ", out, " outputs, not whole ", z.bits, "-bit words");
            expect_shape(qz, groups, out * z.bits / 32);
            expect_shape(sc, groups, out);
            const std::byte* g_idx = nullptr;
            if (const safetensors::tensor* gi = weights_->find(prefix + ".g_idx")) {
                if (gi->type != dtype::i32 || gi->n_dims() != 1 || gi->shape[0] != in)
                    fail(where(*gi), ": tensor '", gi->name, "' must be I32 [", in, "]");
                g_idx = gi->bytes.data();
            }
            const quant::gptq_format::tensors t{qw.bytes.data(), qz.bytes.data(), sc.bytes.data(), g_idx, in, out, z.group, z.bits, z.gptq_v1};
            // Per-channel scales (-1) repeat over blocks of 32.
            const std::size_t bs = z.group == -1 ? 32 : static_cast<std::size_t>(z.group);
            if (z.bits == 4)
                m = bs == 32 ? quant::gptq_format::repack<4, 32>(t) : bs == 64 ? quant::gptq_format::repack<4, 64>(t) : quant::gptq_format::repack<4, 128>(t);
            else
                m = bs == 32 ? quant::gptq_format::repack<3, 32>(t) : bs == 64 ? quant::gptq_format::repack<3, 64>(t) : quant::gptq_format::repack<3, 128>(t);
            g.rows = out;
            g.cols = in;
        }
        g.format = {z.method, z.bits, z.group, !m.input_perm.empty()};
        if (!m.input_perm.empty()) {
            // q, k and v of a layer are usually quantized in the same input order: share it, so
            // the forward pass gathers their input once.
            const auto same = std::find_if(perms_.begin(), perms_.end(), [&](const auto& p) { return p == m.input_perm; });
            if (same == perms_.end()) perms_.push_back(std::move(m.input_perm));
            g.input_perm = (same == perms_.end() ? perms_.back() : *same).data();
        }
        blocks_.push_back(std::move(m.blocks));
        g.data = blocks_.back().data();
        names_.push_back(std::move(gguf_name));
        if (group_index_.count(names_.back())) fail(path_, ": two tensors map to '", names_.back(), "'");
        group_index_.emplace(names_.back(), group_tensors_.size());
        group_tensors_.push_back(g);
    }

    // --- tensors ----------------------------------------------------------------------------
    void bind_tensors() {
        const std::vector<const safetensors::tensor*> all = weights_->tensors();
        tensors_.reserve(all.size());
        const bool embed_stored = weights_->find("model.embed_tokens.weight") != nullptr;
        for (const safetensors::tensor* t : all) {
            if (quant_) {
                // Quantized linears come as .qweight + .qzeros + .scales (+ .g_idx): repacked
                // when their .qweight is met, the other parts skipped.
                const std::string_view n = t->name;
                if (n.ends_with(".qzeros") || n.ends_with(".scales") || n.ends_with(".g_idx")) continue;
                if (n.ends_with(".qweight")) {
                    const std::string prefix(n.substr(0, n.size() - std::string_view(".qweight").size()));
                    std::optional<std::string> name = detail::gguf_name_of(prefix + ".weight");
                    if (!name) fail(where(*t), ": tensor '", t->name, "' is not part of a ", architecture_, " lmtk can run");
                    if (*name == "output.weight" && !embed_stored) fail(where(*t), ": a quantized lm_head cannot stand in for the embedding");
                    add_quantized(prefix, std::move(*name));
                    continue;
                }
            }
            std::optional<std::string> name = detail::gguf_name_of(t->name);
            if (!name) {
                // Non-persistent buffers some older checkpoints saved along with the weights.
                if (t->name.ends_with(".rotary_emb.inv_freq")) continue;
                fail(where(*t), ": tensor '", t->name, "' is not part of a ", architecture_, " lmtk can run");
            }
            if (*name == "output.weight") {
                // torch's save_model stores tied weights once, sometimes under lm_head.weight
                // only: then it is the embedding. With both present and tied, the head is dropped.
                if (!embed_stored) name = "token_embd.weight";
                else if (tied_) continue;
            }
            add(*t, std::move(*name));
        }
        if (!find_tensor("token_embd.weight")) fail(path_, ": model.embed_tokens.weight is missing");
        if (!tied_ && !find_tensor("output.weight") && !find_group_tensor("output.weight"))
            fail(path_, ": lm_head.weight is missing and tie_word_embeddings is not true");

        const gguf::tensor_info& emb = *find_tensor("token_embd.weight");
        if (const nlohmann::json* v = field("vocab_size"); v && (!v->is_number_integer() || v->get<std::int64_t>() != emb.ne[1]))
            fail(config_path_, ": vocab_size ", v->dump(), " disagrees with the embedding's ", emb.ne[1], " rows");
        if (emb.ne[1] <= 0 || emb.ne[1] > std::numeric_limits<std::int32_t>::max())
            fail(path_, ": model.embed_tokens.weight has ", emb.ne[1], " rows, not a vocabulary of int32 ids");
        hp_.n_vocab = static_cast<std::uint32_t>(emb.ne[1]);
    }

    std::string where(const safetensors::tensor& t) const {
        const safetensors::file* f = weights_->file_of(t.name);
        return f ? f->path() : path_;
    }

    void add(const safetensors::tensor& t, std::string gguf_name) {
        gguf::tensor_info info;
        switch (t.type) {
            case safetensors::dtype::f32: info.type = quant::ggml_type::f32; break;
            case safetensors::dtype::f16: info.type = quant::ggml_type::f16; break;
            case safetensors::dtype::bf16: info.type = quant::ggml_type::bf16; break;
            default:
                fail(where(t), ": tensor '", t.name, "' has dtype ", safetensors::dtype_name(t.type),
                     "; only F32, F16 and BF16 weights are supported");
        }
        if (t.n_dims() == 0 || t.n_dims() > gguf::max_dims)
            fail(where(t), ": tensor '", t.name, "' has ", t.n_dims(), " dimensions (1 to ", gguf::max_dims, " supported)");
        info.n_dims = static_cast<std::uint32_t>(t.n_dims());
        for (std::size_t d = 0; d < t.n_dims(); ++d) {
            const std::uint64_t v = t.shape[t.n_dims() - 1 - d];
            // safetensors bounds the element count by the file size, so this cannot overflow int64.
            info.ne[d] = static_cast<std::int64_t>(v);
        }
        info.n_elements = t.n_elements;
        info.n_bytes = t.bytes.size();
        info.offset = t.begin;
        const std::size_t align = quant::traits_of(info.type).block_bytes;
        if (reinterpret_cast<std::uintptr_t>(t.bytes.data()) % align == 0) {
            info.data = t.bytes.data();
        } else {
            detail::aligned_bytes copy(static_cast<std::byte*>(::operator new[](t.bytes.size() + 1, std::align_val_t{64})));
            std::memcpy(copy.get(), t.bytes.data(), t.bytes.size());
            info.data = copy.get();
            owned_.push_back(std::move(copy));
        }
        names_.push_back(std::move(gguf_name));
        info.name = names_.back();
        if (index_.count(info.name)) fail(where(t), ": two tensors map to '", info.name, "'");
        index_.emplace(info.name, tensors_.size());
        tensors_.push_back(info);
    }

    std::filesystem::path dir_;
    std::string path_, config_path_;
    nlohmann::json config_;
    std::string architecture_;
    llama_hparams hp_;
    bool tied_ = false;
    std::unique_ptr<safetensors::checkpoint> weights_;
    std::deque<std::string> names_;  // GGUF names; a deque keeps the views in tensors_ valid
    std::vector<gguf::tensor_info> tensors_;
    std::unordered_map<std::string_view, std::size_t> index_;
    std::vector<detail::aligned_bytes> owned_;
    std::optional<quantization> quant_;                  // set for AWQ/GPTQ checkpoints
    std::deque<group_tensor> group_tensors_;
    std::unordered_map<std::string_view, std::size_t> group_index_;
    std::deque<std::vector<std::byte>> blocks_;           // repacked AWQ/GPTQ matrices
    std::deque<std::vector<std::uint32_t>> perms_;        // act-order input orders, shared
};

// Opens a model path: a GGUF file or a Hugging Face checkpoint folder.
inline std::unique_ptr<weight_source> open_weights(const std::string& path) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) return std::make_unique<hf_source>(path);
    return std::make_unique<gguf_source>(path);
}

}  // namespace lmtk::model
// #include <lmtk/model/llama.hpp>
// Llama-family transformer (Llama 1-3, Mistral, Qwen2, SmolLM...): weights bound in place from
// a GGUF mapping or an HF folder, and a context that owns the KV cache and every activation
// buffer and runs the forward pass.
//
//   llama<Set, Target>        immutable after load; shareable between contexts
//                             (llama_weights.hpp; repacking at load: repack.hpp)
//   llama_context<Model, KV>  KV caches + run state, allocated once; decode() runs tokens
//                             through the network and allocates nothing (llama_context.hpp;
//                             attention: attention.hpp; norms, RoPE, SwiGLU: ops.hpp)
// #include <lmtk/model/llama_weights.hpp>
// Llama-family weights: every tensor of a GGUF file (or an HF folder, through its source) bound
// in place with its kernels, checked against the hyperparameters before a pointer into it is
// kept; matrices with an interleaved layout repacked once (repack.hpp). Immutable after load
// and shareable between contexts (llama_context.hpp runs the forward pass over them).
//
// Each weight's GGUF type is mapped to a compiled kernel pair (quant::weight_ops) once, here;
// the forward pass calls through those pointers and never switches on a type.
// #include <lmtk/core/error.hpp>
// #include <lmtk/core/mapped_file.hpp>
// #include <lmtk/io/gguf.hpp>
// #include <lmtk/model/hparams.hpp>
// #include <lmtk/model/repack.hpp>
// Repacking at load: the matrices whose format has an interleaved layout on this target
// (quant/interleaved.hpp) move into one buffer in that layout, once, before the first token.
// Shared by every architecture; the forward passes then read only the repacked copies.
// #include <lmtk/core/mapped_file.hpp>
// #include <lmtk/model/source.hpp>
// #include <lmtk/model/weight.hpp>
// One weight matrix bound to its kernels, shared by every architecture: a forward pass
// multiplies `weight`s through the kernel pointers chosen at load and never looks at a
// tensor's type. Also how a model is loaded (load_options).
// #include <lmtk/core/mapped_file.hpp>
// #include <lmtk/core/thread_pool.hpp>
// #include <lmtk/quant/dispatch.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <utility>

namespace lmtk::model {

// One weight matrix of `rows` x `cols` (GGUF ne = [cols, rows]) with its kernels.
// A GPTQ act-order matrix has its columns in another order than the inputs: column k multiplies
// input input_perm[k], so its input is gathered into that order first (see project()).
struct weight {
    const std::byte* data = nullptr;
    quant::weight_ops ops{};
    std::size_t rows = 0, cols = 0;
    const std::uint32_t* input_perm = nullptr;  // nullptr: column k is input k

    // Bytes of one row in GGUF's row-major layout (an interleaved copy holds the same bits).
    std::size_t row_bytes() const noexcept { return cols / ops.block_elems * ops.block_bytes; }
    // Row r in input order.
    void dequantize_row(std::size_t r, float* out) const noexcept {
        if (!input_perm) {
            ops.dequantize_row_at(data, cols, r, out);
            return;
        }
        const std::span<float> tmp = quant::kernels::decode_scratch(cols);
        if (tmp.empty()) {  // no memory for the scratch: a row of NaN says so without a crash
            std::fill_n(out, cols, std::numeric_limits<float>::quiet_NaN());
            return;
        }
        ops.dequantize_row_at(data, cols, r, tmp.data());
        for (std::size_t k = 0; k < cols; ++k) out[input_perm[k]] = tmp[k];
    }
    // Thread i of n's share of the rows: contiguous, and cut at the layout's row groups.
    std::pair<std::size_t, std::size_t> rows_of_thread(std::size_t i, std::size_t n) const noexcept {
        const std::size_t g = ops.row_group;
        const auto [g0, g1] = core::thread_pool::split((rows + g - 1) / g, i, n);
        return {std::min(rows, g0 * g), std::min(rows, g1 * g)};
    }
};

// A matrix read a row at a time at random (the token embedding): rows of a mapped, row-major
// matrix are read from its file with pread(2) into the caller's scratch, so that a long run
// does not leave every page it ever looked up resident in this process (the kernel maps 64 KiB
// around each page fault, and lookups are scattered over the whole vocabulary). Rows of any
// other matrix are decoded where they are.
struct row_lookup {
    weight w;
    const core::mapped_file* file = nullptr;  // set only for a mapped, row-major, unpermuted matrix

    std::size_t scratch_bytes() const noexcept { return file ? w.row_bytes() : 0; }
    // Row r as floats; `scratch` holds scratch_bytes().
    void row(std::size_t r, std::byte* scratch, float* out) const noexcept {
        const std::size_t rb = w.row_bytes();
        if (file && file->read_at(w.data + r * rb, rb, scratch)) {
            w.ops.dequantize_row_at(scratch, w.cols, 0, out);
            return;
        }
        w.dequantize_row(r, out);  // a failed read (never expected on a regular file) reads the mapping
    }
};

// How a model is loaded.
struct load_options {
    // Repack the weights of formats with an interleaved layout (quant/interleaved.hpp) once,
    // at load, into memory of their own; the mapped file's pages are let go as each matrix is
    // done, so memory use stays that of the file. Off: every weight is used where it is mapped.
    bool interleave = true;
    // For a target that chooses its kernels at load (target::cpu_dispatch): the instruction-set
    // level to use ("avx2", ...); empty: LMTK_CPU, else the highest this CPU runs.
    std::string cpu;
};

}  // namespace lmtk::model

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <span>
#include <thread>
#include <vector>

namespace lmtk::model {

// Repacks each matrix of `todo` (distinct, with an interleaved layout and no input
// permutation) into `buffer`, and points it there with the interleaved kernels. Returns the
// bytes repacked. The source's pages of each ~1 MiB chunk are let go as soon as it is done,
// so the peak stays near the file's size even while the largest matrix is repacked.
inline std::size_t interleave_weights(std::span<weight* const> todo, const weight_source& src,
                                      core::anonymous_memory& buffer) {
    if (todo.empty()) return 0;
    // Work in chunks of about 1 MiB of source, shared by two threads (the copy is bound by
    // the kernel zeroing the new pages, which two cores do twice as fast).
    struct chunk {
        weight* w;
        std::size_t offset;  // of the matrix in buffer
        std::size_t g0, g1;
    };
    std::vector<chunk> chunks;
    std::vector<std::size_t> offsets;
    std::size_t total = 0;
    for (weight* w : todo) {
        const std::size_t row_group = w->ops.interleaved->row_group;
        const std::size_t groups = (w->rows + row_group - 1) / row_group;
        const std::size_t per_chunk = std::max<std::size_t>(1, (std::size_t{1} << 20) / (row_group * w->row_bytes()));
        for (std::size_t g = 0; g < groups; g += per_chunk) chunks.push_back({w, total, g, std::min(groups, g + per_chunk)});
        offsets.push_back(total);
        total += w->ops.interleaved_bytes(w->rows, w->cols);
    }
    buffer = core::anonymous_memory(total);
    std::atomic<std::size_t> next{0};
    const auto work = [&]() noexcept {
        for (std::size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < chunks.size();) {
            const chunk& c = chunks[i];
            const weight& w = *c.w;
            for (std::size_t g = c.g0; g < c.g1; ++g) w.ops.interleave_group(w.data, w.rows, w.cols, g, buffer.data() + c.offset);
            const std::size_t group_src = w.ops.interleaved->row_group * w.row_bytes();
            const std::size_t end = std::min(w.rows * w.row_bytes(), c.g1 * group_src);
            src.release(w.data + c.g0 * group_src, end - c.g0 * group_src);
        }
    };
    {
        std::jthread helper(work);
        work();
    }
    for (std::size_t i = 0; i < todo.size(); ++i) {
        weight& w = *todo[i];
        w.data = buffer.data() + offsets[i];
        w.ops = *w.ops.interleaved;
    }
    return total;
}

}  // namespace lmtk::model
// #include <lmtk/model/source.hpp>
// #include <lmtk/model/weight.hpp>
// #include <lmtk/quant/cpu_kernels.hpp>
// The weight kernels of quant::default_set, and attention, for each instruction-set level, chosen
// at load.
//
// src/cpu_kernels.cpp is compiled once per level with that level's flags (CMake target
// lmtk::cpu_kernels) and defines one kernel_table each. The symbols of each compiled copy are
// renamed apart after compilation (cmake/isolate_kernels.cmake), so the inline functions and
// template instances that every copy contains (a quantizer, std::vector's members) can never be
// merged by the linker into the copy of a higher level: the AVX-512 build of a helper must not be
// what the SSE4.2 path calls. A program that links lmtk::cpu_kernels asks for a table once per
// model (target::cpu_dispatch does this in model::llama) and binds every tensor through it.
#include <cstdlib>
#include <memory>
#include <type_traits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

// #include <lmtk/core/error.hpp>
// #include <lmtk/model/attention.hpp>
// Causal grouped-query attention over a KV cache per sequence, for the rows of one forward
// pass (a prompt's rows, or one decode row for each of many sequences). Shared by every
// architecture whose attention is softmax(q.k / sqrt(head_dim)) . v over cached positions.
//
// Shapes (hd = head_dim, nh = n_head, nkv = n_head_kv, group = nh / nkv):
//   q    [n][nh][hd]   this pass's queries, RoPE applied
//   att  [n][nh][hd]   output: each query head's mix of cached values
//   caches[seq]        k_row(layer, pos), v_row(layer, pos): [nkv][hd] per position
//   row_seq[t], row_pos[t]: the sequence and position of row t; row t sees positions 0..row_pos[t]
// #include <lmtk/core/thread_pool.hpp>
// #include <lmtk/model/hparams.hpp>
// #include <lmtk/model/kv_cache.hpp>
// #include <lmtk/quant/f16.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include <xsimd/xsimd.hpp>

namespace lmtk::model {

// The attention of a context's forward passes, as the context holds it: attention<KV, Arch> of
// the level chosen at load (quant::kernel_table::attention_*, compiled per instruction-set level
// like the weight kernels), or of the program's own Arch. One virtual call per layer and pass.
template <class KV>
class attention_pass {
public:
    // The widest SIMD batch any level uses (AVX-512: 16 floats): what a context budgets the
    // per-thread scratch for before it knows the level.
    static constexpr std::size_t max_lanes = 16;

    virtual ~attention_pass() = default;
    virtual void run(std::size_t layer, std::size_t n, const float* q, float* att, const kv_cache<KV>* caches,
                     const std::uint32_t* row_seq, const std::size_t* row_pos) noexcept = 0;
};

template <class KV, class Arch>
class attention final : public attention_pass<KV> {
    using batch = xsimd::batch<float, Arch>;

public:
    static constexpr std::size_t lanes = batch::size;
    static_assert(lanes <= attention_pass<KV>::max_lanes);

    // Scratch for `n_threads` threads and up to n_batch rows of n_ctx positions.
    attention(const llama_hparams& hp, std::size_t n_ctx, std::size_t n_batch, core::thread_pool& pool)
        : hp_(hp), n_ctx_(n_ctx), pool_(pool) {
        scores_.resize(pool_.size() * (hp_.n_head / hp_.n_head_kv) * n_ctx_);
        // Per thread, for attention over blocks of rows (attention_rows()): a block's queries
        // turned sideways, its scores (a lane per row) and an output tile.
        if (hp_.head_dim % lanes == 0) lane_scratch_.resize(pool_.size() * lane_scratch_floats());
        row_blocks_.reserve(n_batch);
        single_rows_.reserve(n_batch);
    }
    attention(const attention&) = delete;
    attention& operator=(const attention&) = delete;

    // att[t, head h] = softmax(q·k / sqrt(hd)) · v over positions 0..row_pos_[t] of the row's
    // sequence, with kv head h / group. Rows that come in runs of one sequence (a prompt) take
    // attention_rows(), a SIMD lane per row; the others (decode rows of many sequences) take
    // attention_single(), a row and KV head per work item.
    void run(std::size_t layer, std::size_t n, const float* q, float* att, const kv_cache<KV>* caches,
             const std::uint32_t* row_seq, const std::size_t* row_pos) noexcept override {
        q_ = q;
        att_ = att;
        caches_ = caches;
        row_seq_ = row_seq;
        row_pos_ = row_pos;
        row_blocks_.clear();
        single_rows_.clear();
        for (std::size_t t = 0; t < n;) {
            std::size_t e = t + 1;
            while (e < n && e - t < lanes && row_seq_[e] == row_seq_[t]) ++e;
            if (!lane_scratch_.empty() && e - t >= min_lane_rows) row_blocks_.push_back({t, e - t});
            else
                for (std::size_t r = t; r < e; ++r) single_rows_.push_back(r);
            t = e;
        }
        if (!row_blocks_.empty()) attention_rows(layer);
        if (!single_rows_.empty()) attention_single(layer);
    }

private:
    // The rows of single_rows_. One work item is a row and a kv head: the `group` query heads
    // that share it read each cached key and value row once, while it is in L1. When that
    // leaves threads idle (decoding one row of a model with few KV heads), a group is split.
    void attention_single(std::size_t layer) noexcept {
        const std::size_t hd = hp_.head_dim, nh = hp_.n_head, nkv = hp_.n_head_kv, n = single_rows_.size();
        std::size_t work = 0;
        for (const std::size_t t : single_rows_) work += (row_pos_[t] + 1) * nh * hd;
        const std::size_t group = nh / nkv;
        std::size_t parts = 1;
        while (n * nkv * parts < pool_.size() && group % (2 * parts) == 0) parts *= 2;
        const std::size_t heads = group / parts;  // query heads per work item
        const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
        pool_.run_sized(work, [&](std::size_t ti, std::size_t nt) noexcept {
            float* scores = &scores_[ti * group * n_ctx_];  // up to group rows of n_ctx
            const auto [w0, w1] = core::thread_pool::split(n * nkv * parts, ti, nt);
            for (std::size_t item = w0; item < w1; ++item) {
                const std::size_t t = single_rows_[item / (nkv * parts)], g = item / parts % nkv;
                const std::size_t kv_off = g * hd, h0 = g * group + item % parts * heads;
                const std::size_t n_pos = row_pos_[t] + 1;
                const kv_cache<KV>& cache = caches_[row_seq_[t]];
                for (std::size_t p = 0; p < n_pos; ++p) {
                    const typename KV::storage* k = cache.k_row(layer, p) + kv_off;
                    for (std::size_t i = 0; i < heads; ++i)
                        scores[i * n_ctx_ + p] = qk_dot(&q_[(t * nh + h0 + i) * hd], k, hd) * scale;
                }
                for (std::size_t i = 0; i < heads; ++i) softmax_in_place(scores + i * n_ctx_, n_pos);
                float* out = &att_[(t * nh + h0) * hd];  // the item's heads are consecutive
                std::fill_n(out, heads * hd, 0.0f);
                for (std::size_t p = 0; p < n_pos; ++p) {
                    const typename KV::storage* v = cache.v_row(layer, p) + kv_off;
                    std::size_t j = 0;
                    for (; j + batch::size <= hd; j += batch::size) {
                        const batch vj = load_kv(v + j);
                        for (std::size_t i = 0; i < heads; ++i) {
                            float* o = out + i * hd + j;
                            xsimd::fma(batch(scores[i * n_ctx_ + p]), vj, batch::load_unaligned(o)).store_unaligned(o);
                        }
                    }
                    for (; j < hd; ++j)
                        for (std::size_t i = 0; i < heads; ++i) out[i * hd + j] += scores[i * n_ctx_ + p] * KV::load(v[j]);
                }
            }
        });
    }

    // SIMD lanes over rows: up to `lanes` consecutive rows of one sequence (a block of a
    // prompt) and one query head per work item, row j of the block in lane j. A cached key
    // row then meets all the block's queries in head_dim FMAs that broadcast its elements, with
    // no horizontal sums; each lane's causal limit is a mask, softmax runs down the lanes, and
    // each value row meets all the block's probabilities the same way. Per block, the queries
    // are turned sideways once and the outputs turned back once.
    // Blocks of fewer rows than this take attention_single(): the lanes would run mostly empty.
    static constexpr std::size_t min_lane_rows = 4;
    struct row_block {
        std::size_t t0, count;
    };
    std::size_t lane_scratch_floats() const noexcept { return n_ctx_ * lanes + hp_.head_dim * lanes + lanes * lanes; }

    void attention_rows(std::size_t layer) noexcept {
        const std::size_t hd = hp_.head_dim, nh = hp_.n_head, group = nh / hp_.n_head_kv;
        const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
        std::size_t work = 0;
        for (const row_block& b : row_blocks_) work += (row_pos_[b.t0 + b.count - 1] + 1) * b.count * nh * hd;
        pool_.run_sized(work, [&](std::size_t ti, std::size_t nt) noexcept {
            float* qt = &lane_scratch_[ti * lane_scratch_floats()];  // [hd][lanes]
            float* s = qt + hd * lanes;                                  // [n_pos][lanes]
            float* tile = s + n_ctx_ * lanes;                            // [lanes][lanes]
            const auto [w0, w1] = core::thread_pool::split(row_blocks_.size() * nh, ti, nt);
            for (std::size_t item = w0; item < w1; ++item) {
                const row_block& b = row_blocks_[item / nh];
                const std::size_t h = item % nh, kv_off = h / group * hd;
                const kv_cache<KV>& cache = caches_[row_seq_[b.t0]];
                // Lane limits: row j sees positions 0 .. pos[j]; empty lanes copy lane 0.
                alignas(64) float pos_lane[lanes];
                std::size_t first = row_pos_[b.t0], last = first;
                for (std::size_t j = 0; j < lanes; ++j) {
                    const std::size_t pj = row_pos_[b.t0 + (j < b.count ? j : 0)];
                    pos_lane[j] = static_cast<float>(pj);
                    first = std::min(first, pj);
                    last = std::max(last, pj);
                }
                for (std::size_t d = 0; d < hd; ++d)
                    for (std::size_t j = 0; j < lanes; ++j)
                        qt[d * lanes + j] = j < b.count ? q_[((b.t0 + j) * nh + h) * hd + d] * scale : 0.0f;
                const batch limit = batch::load_aligned(pos_lane);
                const batch minus_inf(-std::numeric_limits<float>::infinity());
                // Scores, 8 positions at a time: eight independent FMA chains per query element.
                batch mx = minus_inf;
                const auto score_rows = [&]<std::size_t P>(std::size_t p) {
                    const typename KV::storage* k[P];
                    for (std::size_t i = 0; i < P; ++i) k[i] = cache.k_row(layer, p + i) + kv_off;
                    batch acc[P];
                    for (std::size_t i = 0; i < P; ++i) acc[i] = batch(0.0f);
                    for (std::size_t d = 0; d < hd; ++d) {
                        const batch qd = batch::load_aligned(qt + d * lanes);
                        for (std::size_t i = 0; i < P; ++i) acc[i] = xsimd::fma(qd, batch(KV::load(k[i][d])), acc[i]);
                    }
                    for (std::size_t i = 0; i < P; ++i) {
                        batch v = acc[i];
                        if (p + i > first) v = xsimd::select(batch(static_cast<float>(p + i)) > limit, minus_inf, v);
                        v.store_aligned(s + (p + i) * lanes);
                        mx = xsimd::max(mx, v);
                    }
                };
                const std::size_t n_pos = last + 1;
                std::size_t p = 0;
                for (; p + 8 <= n_pos; p += 8) score_rows.template operator()<8>(p);
                for (; p < n_pos; ++p) score_rows.template operator()<1>(p);
                // Softmax down each lane.
                batch sum(0.0f);
                for (p = 0; p < n_pos; ++p) {
                    const batch e = xsimd::exp(batch::load_aligned(s + p * lanes) - mx);
                    e.store_aligned(s + p * lanes);
                    sum += e;
                }
                const batch inv = batch(1.0f) / sum;
                // Output, a tile of `lanes` dimensions at a time: acc[i] lane j = dim i of row j.
                for (std::size_t d0 = 0; d0 < hd; d0 += lanes) {
                    batch acc[lanes];
                    for (std::size_t i = 0; i < lanes; ++i) acc[i] = batch(0.0f);
                    for (p = 0; p < n_pos; ++p) {
                        const batch pr = batch::load_aligned(s + p * lanes);
                        const typename KV::storage* v = cache.v_row(layer, p) + kv_off + d0;
                        for (std::size_t i = 0; i < lanes; ++i) acc[i] = xsimd::fma(pr, batch(KV::load(v[i])), acc[i]);
                    }
                    for (std::size_t i = 0; i < lanes; ++i) (acc[i] * inv).store_aligned(tile + i * lanes);
                    for (std::size_t j = 0; j < b.count; ++j) {
                        float* out = &att_[((b.t0 + j) * nh + h) * hd + d0];
                        for (std::size_t i = 0; i < lanes; ++i) out[i] = tile[i * lanes + j];
                    }
                }
            }
        });
    }

    // s[0..n) = softmax(s), exp vectorised (a call per value was a visible share of long prompts).
    static void softmax_in_place(float* s, std::size_t n) noexcept {
        float mx = -std::numeric_limits<float>::infinity();
        for (std::size_t p = 0; p < n; ++p) mx = std::max(mx, s[p]);
        batch acc(0.0f);
        std::size_t p = 0;
        for (; p + batch::size <= n; p += batch::size) {
            const batch e = xsimd::exp(batch::load_unaligned(s + p) - batch(mx));
            e.store_unaligned(s + p);
            acc += e;
        }
        float sum = xsimd::hadd(acc);
        for (; p < n; ++p) {
            s[p] = std::exp(s[p] - mx);
            sum += s[p];
        }
        const float inv = 1.0f / sum;
        p = 0;
        for (; p + batch::size <= n; p += batch::size) (batch::load_unaligned(s + p) * batch(inv)).store_unaligned(s + p);
        for (; p < n; ++p) s[p] *= inv;
    }

    // batch::size cached keys or values as floats.
    static batch load_kv(const typename KV::storage* p) noexcept {
        if constexpr (std::is_same_v<typename KV::storage, float>) return batch::load_unaligned(p);
        else return quant::detail::load_fp16<Arch>(p);
    }
    // q . k over a head. Vectorised: the scalar loop is one long dependency chain (the compiler
    // must keep the float sum in order), and attention is every score of every cached position.
    static float qk_dot(const float* q, const typename KV::storage* k, std::size_t hd) noexcept {
        batch acc(0.0f);
        std::size_t j = 0;
        for (; j + batch::size <= hd; j += batch::size) acc = xsimd::fma(batch::load_unaligned(q + j), load_kv(k + j), acc);
        float s = xsimd::hadd(acc);
        for (; j < hd; ++j) s += q[j] * KV::load(k[j]);
        return s;
    }


    const llama_hparams& hp_;
    std::size_t n_ctx_ = 0;
    core::thread_pool& pool_;
    std::vector<float> scores_;                                             // see attention_single()
    std::vector<float, xsimd::aligned_allocator<float, 64>> lane_scratch_;  // see attention_rows()
    std::vector<row_block> row_blocks_;  // this pass's work (see run())
    std::vector<std::size_t> single_rows_;
    // The pass being run (set by run()).
    const float* q_ = nullptr;
    float* att_ = nullptr;
    const kv_cache<KV>* caches_ = nullptr;
    const std::uint32_t* row_seq_ = nullptr;
    const std::size_t* row_pos_ = nullptr;
};

}  // namespace lmtk::model
// #include <lmtk/quant/dispatch.hpp>
// #include <lmtk/target/isa.hpp>
// The instruction-set levels lmtk compiles its weight kernels for, and which one this CPU runs.
//
// One binary serves every x86-64 CPU from Nehalem on: the kernels of each level live in their
// own translation unit built with that level's -m flags (src/cpu_kernels.cpp, the lmtk::cpu_kernels
// library), and a model picks one table of them when it loads, by CPUID, the way it picks a
// tensor's format. LMTK_CPU (or load_options::cpu, `lmtk bench --cpu`) forces a lower level, so
// that every level can be tested and measured on a machine that has a higher one.
#include <cstdint>
#include <optional>
#include <string_view>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace lmtk::target {

// Ordered within one architecture: a CPU that runs a level runs every lower one of its family
// (a build compiles the levels of one family only).
enum class isa : std::uint8_t {
    generic,       // whatever the compiler's baseline for the target is (aarch64: Armv8-A NEON)
    sse4_2,        // x86-64-v2: the floor of the portable x86 build
    avx2,          // x86-64-v3: AVX2, FMA, F16C, BMI2
    avx512_vnni,   // x86-64-v4 (AVX-512 F/BW/DQ/VL) plus VNNI
    neon_dotprod,  // aarch64: Armv8.2-A with the dot-product extension (SDOT)
};

constexpr std::string_view isa_name(isa i) noexcept {
    switch (i) {
        case isa::generic: return "generic";
        case isa::sse4_2: return "sse4.2";
        case isa::avx2: return "avx2";
        case isa::avx512_vnni: return "avx512-vnni";
        case isa::neon_dotprod: return "neon-dotprod";
    }
    return "?";
}

// "sse4.2", "avx2", "avx512-vnni" (also "sse42", "avx512", "avx512vnni"), "neon-dotprod"
// (also "dotprod"), "generic".
constexpr std::optional<isa> parse_isa(std::string_view s) noexcept {
    if (s == "generic") return isa::generic;
    if (s == "sse4.2" || s == "sse42" || s == "sse4_2") return isa::sse4_2;
    if (s == "avx2") return isa::avx2;
    if (s == "avx512-vnni" || s == "avx512" || s == "avx512vnni" || s == "avx512_vnni") return isa::avx512_vnni;
    if (s == "neon-dotprod" || s == "neon_dotprod" || s == "dotprod") return isa::neon_dotprod;
    return std::nullopt;
}

namespace detail {

#if defined(__x86_64__) || defined(_M_X64)
struct cpuid_regs {
    unsigned a = 0, b = 0, c = 0, d = 0;
};
inline cpuid_regs cpuid(unsigned leaf, unsigned sub = 0) noexcept {
    cpuid_regs r;
    if (!__get_cpuid_count(leaf, sub, &r.a, &r.b, &r.c, &r.d)) return {};
    return r;
}
// The register state the OS saves on a context switch (XCR0): a CPU may have AVX-512 units that
// the kernel does not enable, and then using them faults.
inline std::uint64_t xcr0() noexcept {
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (std::uint64_t{hi} << 32) | lo;
}
#endif

}  // namespace detail

// The highest level this CPU (and its OS) runs.
inline isa host_isa() noexcept {
#if defined(__x86_64__) || defined(_M_X64)
    const auto l1 = detail::cpuid(1), l7 = detail::cpuid(7);
    const auto bit = [](unsigned reg, int n) { return ((reg >> n) & 1u) != 0; };
    const bool sse42 = bit(l1.c, 20) && bit(l1.c, 23) && bit(l1.c, 19) && bit(l1.c, 9);  // sse4.2 popcnt sse4.1 ssse3
    if (!sse42) return isa::generic;
    const bool osxsave = bit(l1.c, 27);
    const std::uint64_t xcr = osxsave ? detail::xcr0() : 0;
    const bool ymm_state = (xcr & 0x6) == 0x6, zmm_state = (xcr & 0xE6) == 0xE6;
    const bool avx2 = ymm_state && bit(l1.c, 28) && bit(l1.c, 12) && bit(l1.c, 29) &&  // avx fma f16c
                      bit(l7.b, 5) && bit(l7.b, 3) && bit(l7.b, 8);                    // avx2 bmi1 bmi2
    if (!avx2) return isa::sse4_2;
    const bool avx512 = zmm_state && bit(l7.b, 16) && bit(l7.b, 17) && bit(l7.b, 28) &&  // f dq cd
                        bit(l7.b, 30) && bit(l7.b, 31) && bit(l7.c, 11);                  // bw vl vnni
    return avx512 ? isa::avx512_vnni : isa::avx2;
#elif defined(__aarch64__) && defined(__linux__)
    constexpr unsigned long hwcap_asimddp = 1ul << 20;  // HWCAP_ASIMDDP of <asm/hwcap.h>
    return (getauxval(AT_HWCAP) & hwcap_asimddp) ? isa::neon_dotprod : isa::generic;
#else
    return isa::generic;
#endif
}

}  // namespace lmtk::target

namespace lmtk::quant {

struct kernel_table {
    target::isa isa;
    std::optional<weight_ops> (*resolve)(ggml_type) noexcept;
    std::optional<weight_ops> (*resolve_group)(const group_format&) noexcept;
    // The attention of a forward pass at this level, per KV cache type: after the matmuls the
    // largest share of a long prompt's time, too much to leave at the program's SSE4.2 floor.
    template <class KV>
    using make_attention = std::unique_ptr<model::attention_pass<KV>> (*)(const model::llama_hparams&, std::size_t n_ctx,
                                                                          std::size_t n_batch, core::thread_pool&);
    make_attention<model::kv_f32> attention_f32;
    make_attention<model::kv_f16> attention_f16;

    template <class KV>
    make_attention<KV> attention() const noexcept {
        if constexpr (std::is_same_v<KV, model::kv_f16>) return attention_f16;
        else return attention_f32;
    }
};

}  // namespace lmtk::quant

// Every level compiled into this program, lowest first (defined by lmtk::cpu_kernels).
extern "C" const lmtk::quant::kernel_table* const* lmtk_cpu_kernel_tables(std::size_t* count) noexcept;

namespace lmtk::quant {

inline std::span<const kernel_table* const> compiled_kernel_tables() noexcept {
    std::size_t n = 0;
    const kernel_table* const* t = lmtk_cpu_kernel_tables(&n);
    return {t, n};
}

// The tables of every compiled level this CPU can run, lowest first.
inline std::vector<const kernel_table*> runnable_kernel_tables() {
    std::vector<const kernel_table*> out;
    const target::isa host = target::host_isa();
    for (const kernel_table* t : compiled_kernel_tables())
        if (t->isa <= host) out.push_back(t);
    return out;
}

// The table a model uses: `request` ("avx2", ...; empty: the LMTK_CPU environment variable,
// and if that is unset or empty the highest compiled level the CPU runs). Asking for a level the
// CPU cannot run, or one this build did not compile, is an error rather than a silent fallback:
// the override exists to measure and test a named path.
inline const kernel_table& choose_kernels(std::string_view request = {}) {
    std::string from_env;
    if (request.empty())
        if (const char* e = std::getenv("LMTK_CPU"); e && *e) request = from_env = e;
    const target::isa host = target::host_isa();
    const kernel_table* best = nullptr;
    std::string names;
    for (const kernel_table* t : compiled_kernel_tables()) {
        names += names.empty() ? "" : ", ";
        names += target::isa_name(t->isa);
        if (request.empty()) {
            if (t->isa <= host && (!best || t->isa > best->isa)) best = t;
        } else if (const auto want = target::parse_isa(request); want && t->isa == *want) {
            if (t->isa > host)
                fail("LMTK_CPU/--cpu ", request, ": this CPU runs at most ", target::isa_name(host));
            best = t;
        }
    }
    if (!best && !request.empty())
        fail("LMTK_CPU/--cpu '", request, "' is not a kernel level of this build (compiled: ", names, ")");
    if (!best) fail("no kernel level of this build runs on this CPU (compiled: ", names, "; CPU: ", target::isa_name(host), ")");
    return *best;
}

}  // namespace lmtk::quant
// #include <lmtk/quant/quant.hpp>
// #include <lmtk/target/cpu.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace lmtk::model {

struct llama_layer {
    weight wq, wk, wv, wo;      // attention projections
    weight gate, up, down;      // SwiGLU feed-forward
    std::vector<float> attn_norm, ffn_norm;
    std::vector<float> bq, bk, bv, bo;  // attention biases (Qwen2: q/k/v); empty when absent
};

template <class Set = quant::default_set, class Target = target::cpu<>>
class llama {
public:
    using quant_set = Set;
    using target = Target;

    // Opens a GGUF file (or another source open_weights() knows) and binds every weight.
    explicit llama(const std::string& path, load_options opt = {}) : llama(open_weights(path), opt) {}
    explicit llama(std::unique_ptr<weight_source> src, load_options opt = {}) : src_(std::move(src)) {
        if constexpr (::lmtk::target::chooses_kernels_at_load<Target>) {
            static_assert(std::is_same_v<Set, quant::default_set>,
                          "target::cpu_dispatch: lmtk::cpu_kernels holds the kernels of quant::default_set only");
            kernels_ = &quant::choose_kernels(opt.cpu);
        }
        bind();
        if (opt.interleave) interleave();
        bind_embedding_lookup();
    }

    const weight_source& source() const noexcept { return *src_; }
    // The kernel level chosen at load (target::cpu_dispatch), else null.
    const quant::kernel_table* kernels() const noexcept { return kernels_; }
    const std::string& path() const noexcept { return src_->path(); }
    const llama_hparams& hparams() const noexcept { return hp_; }
    std::uint32_t n_vocab() const noexcept { return hp_.n_vocab; }

    const weight& token_embedding() const noexcept { return tok_embd_; }
    const weight& output() const noexcept { return output_; }
    std::span<const float> output_norm() const noexcept { return output_norm_; }
    const llama_layer& layer(std::size_t i) const noexcept { return layers_[i]; }
    std::span<const double> rope_inv_freq() const noexcept { return inv_freq_; }

    // The token embedding, read a row at a time (see bind_embedding_lookup()).
    const row_lookup& embedding_lookup() const noexcept { return embedding_; }

    // The instruction-set level of the weights' kernels: the one chosen at load for
    // target::cpu_dispatch, else the level Target's Arch was compiled for.
    std::string_view kernel_isa() const noexcept {
        if constexpr (::lmtk::target::chooses_kernels_at_load<Target>) return ::lmtk::target::isa_name(kernels_->isa);
        else return Target::arch::name();
    }

    // Bytes of weights repacked into interleaved layouts at load (0: all used as mapped).
    std::size_t interleaved_bytes() const noexcept { return repacked_bytes_; }

    // Bytes of weight data the forward pass reads per token (all layers plus the output).
    std::size_t weight_bytes() const noexcept {
        std::size_t total = output_.rows * output_.row_bytes();
        for (const auto& l : layers_)
            for (const weight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down}) total += w->rows * w->row_bytes();
        return total;
    }

private:
    std::optional<quant::weight_ops> resolve(quant::ggml_type t) const noexcept {
        if constexpr (::lmtk::target::chooses_kernels_at_load<Target>) return kernels_->resolve(t);
        else return quant::resolve<Set, typename Target::arch>(t);
    }
    std::optional<quant::weight_ops> resolve_group(const quant::group_format& f) const noexcept {
        if constexpr (::lmtk::target::chooses_kernels_at_load<Target>) return kernels_->resolve_group(f);
        else return quant::resolve_group<Set, typename Target::arch>(f);
    }

    weight bind_weight(const std::string& name, std::size_t cols, std::size_t rows) const {
        if (const group_tensor* g = src_->find_group_tensor(name)) {
            if (g->cols != cols || g->rows != rows)
                fail(path(), ": tensor '", name, "' has shape [", g->cols, ", ", g->rows, "], expected [", cols, ", ", rows, "]");
            const auto ops = resolve_group(g->format);
            if (!ops)
                fail(path(), ": tensor '", name, "' is ", quant::format_name(g->format),
                     ", which this build of lmtk does not include");
            return weight{g->data, *ops, rows, cols, g->input_perm};
        }
        const gguf::tensor_info& t = src_->tensor(name);
        if (static_cast<std::size_t>(t.ne[0]) != cols || static_cast<std::size_t>(t.rows()) != rows)
            fail(path(), ": tensor '", name, "' has shape [", t.ne[0], ", ", t.rows(), "], expected [", cols, ", ",
                 rows, "]");
        const auto ops = resolve(t.type);
        if (!ops)
            fail(path(), ": tensor '", name, "' has type ", quant::type_name(t.type),
                 ", which this build of lmtk does not include");
        return weight{t.data, *ops, rows, cols};
    }

    std::vector<float> bind_vector(const std::string& name, std::size_t n) const {
        const weight w = bind_weight(name, n, 1);
        std::vector<float> v(n);
        w.dequantize_row(0, v.data());
        return v;
    }

    std::vector<float> bind_optional_vector(const std::string& name, std::size_t n) const {
        return src_->find_tensor(name) ? bind_vector(name, n) : std::vector<float>();
    }

    // Every shape below is computed in 64 bits from hyperparameters that check_dimensions()
    // bounded, and each tensor must have exactly that shape before a pointer into it is kept:
    // the forward pass then indexes only inside tensors the file really holds.
    void bind() {
        hp_ = src_->hparams();
        hp_.check_dimensions(path());  // again: a source other than GGUF/HF may not have checked them
        const gguf::tensor_info& emb = src_->tensor("token_embd.weight");
        if (emb.ne[0] != static_cast<std::int64_t>(hp_.n_embd) || emb.rows() <= 0)
            fail(path(), ": token_embd.weight has ", emb.ne[0], " columns, expected the embedding length ", hp_.n_embd);
        // Token ids are int32 everywhere, so the vocabulary must be indexable by one.
        if (emb.rows() > std::numeric_limits<std::int32_t>::max())
            fail(path(), ": token_embd.weight has ", emb.rows(), " rows, more than a vocabulary of int32 ids can have");
        hp_.n_vocab = static_cast<std::uint32_t>(emb.rows());
        if (const gguf::file* f = src_->gguf_file())
            if (auto v = f->get<std::uint32_t>(hp_.arch + ".vocab_size"); v && *v != hp_.n_vocab)
                fail(path(), ": vocab_size ", *v, " disagrees with token_embd.weight's ", hp_.n_vocab, " rows");

        const std::size_t d = hp_.n_embd, q = hp_.q_dim(), kv = hp_.kv_dim(), ff = hp_.n_ff;
        tok_embd_ = bind_weight("token_embd.weight", d, hp_.n_vocab);
        output_ = src_->find_tensor("output.weight") ? bind_weight("output.weight", d, hp_.n_vocab) : tok_embd_;
        output_norm_ = bind_vector("output_norm.weight", d);
        // Layers are appended as their tensors are found, never sized up front from the block
        // count: a file claiming 2^32 blocks fails at the first missing tensor, not in an
        // allocation of that many layers.
        layers_.clear();
        for (std::size_t i = 0; i < hp_.n_layer; ++i) {
            const std::string p = "blk." + std::to_string(i) + ".";
            llama_layer& l = layers_.emplace_back();
            l.attn_norm = bind_vector(p + "attn_norm.weight", d);
            l.wq = bind_weight(p + "attn_q.weight", d, q);
            l.wk = bind_weight(p + "attn_k.weight", d, kv);
            l.wv = bind_weight(p + "attn_v.weight", d, kv);
            l.wo = bind_weight(p + "attn_output.weight", q, d);
            l.bq = bind_optional_vector(p + "attn_q.bias", q);
            l.bk = bind_optional_vector(p + "attn_k.bias", kv);
            l.bv = bind_optional_vector(p + "attn_v.bias", kv);
            l.bo = bind_optional_vector(p + "attn_output.bias", d);
            l.ffn_norm = bind_vector(p + "ffn_norm.weight", d);
            l.gate = bind_weight(p + "ffn_gate.weight", d, ff);
            l.up = bind_weight(p + "ffn_up.weight", d, ff);
            l.down = bind_weight(p + "ffn_down.weight", ff, d);
        }

        // RoPE frequencies: theta_i = base^(-2i/rope_dim), divided by per-dimension factors
        // when the file carries them (Llama 3.1 style rope_freqs.weight).
        const std::size_t half = hp_.rope_dim / 2;
        std::vector<float> factors;
        if (src_->find_tensor("rope_freqs.weight")) factors = bind_vector("rope_freqs.weight", half);
        inv_freq_.resize(half);
        for (std::size_t i = 0; i < half; ++i) {
            double f = std::pow(static_cast<double>(hp_.rope_freq_base), -2.0 * double(i) / double(hp_.rope_dim));
            if (!factors.empty()) f /= factors[i];
            inv_freq_[i] = f;
        }
    }

    // Every matrix the forward pass multiplies whose format has an interleaved layout on this
    // target moves into one buffer in that layout (repack.hpp); the token embedding stays as
    // mapped (it is only read a row at a time) unless the output shares it.
    void interleave() {
        std::vector<weight*> todo;
        const auto consider = [&](weight& w) {
            if (w.ops.interleaved && !w.input_perm && std::find(todo.begin(), todo.end(), &w) == todo.end()) todo.push_back(&w);
        };
        for (llama_layer& l : layers_)
            for (weight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down}) consider(*w);
        // The output may be the token embedding itself (tied weights): the lookup then reads
        // the interleaved copy too.
        const bool tied = output_.data == tok_embd_.data;
        consider(output_);
        repacked_bytes_ = interleave_weights(todo, *src_, repacked_);
        if (tied) tok_embd_ = output_;
    }

    // Token embedding rows: read from the file (row_lookup) when the embedding is a mapped,
    // row-major matrix of its own; read in place when the output shares it (every pass reads
    // all of it anyway) or it lives in memory the source made.
    void bind_embedding_lookup() {
        embedding_.w = tok_embd_;
        embedding_.file = nullptr;
        if (tok_embd_.data != output_.data && !tok_embd_.input_perm && tok_embd_.ops.row_group == 1 &&
            !src_->find_group_tensor("token_embd.weight"))
            embedding_.file = src_->mapping_of(tok_embd_.data, tok_embd_.rows * tok_embd_.row_bytes());
    }

    std::unique_ptr<weight_source> src_;
    const quant::kernel_table* kernels_ = nullptr;  // target::cpu_dispatch: the level chosen at load
    core::anonymous_memory repacked_;  // the interleaved weights (see interleave())
    row_lookup embedding_;             // see bind_embedding_lookup()
    std::size_t repacked_bytes_ = 0;
    llama_hparams hp_;
    weight tok_embd_, output_;
    std::vector<float> output_norm_;
    std::vector<llama_layer> layers_;
    std::vector<double> inv_freq_;
};

}  // namespace lmtk::model
// #include <lmtk/model/llama_context.hpp>
// The run of a Llama-family model: a context owns the KV cache of each sequence and every
// activation buffer (its run state, allocated once), and runs the forward pass over the
// weights of a llama<Set, Target> (llama_weights.hpp). decode() and decode_batch() allocate
// nothing.
// #include <lmtk/core/error.hpp>
// #include <lmtk/core/tensor.hpp>
// #include <lmtk/core/thread_pool.hpp>
// #include <lmtk/model/attention.hpp>
// #include <lmtk/model/hparams.hpp>
// #include <lmtk/model/kv_cache.hpp>
// #include <lmtk/model/llama_weights.hpp>
// #include <lmtk/model/ops.hpp>
// The element-wise and row-wise operations of a transformer block, shared by every
// architecture: RMS normalisation, rotary position embedding, SwiGLU, biases and residual
// additions. Each works on n rows laid out one after another ([n][width]).
// #include <lmtk/core/thread_pool.hpp>

#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

#include <xsimd/xsimd.hpp>

namespace lmtk::model::ops {

// y[t] = x[t] / rms(x[t]) * g for n rows of d, the rows split across the pool's threads.
inline void rmsnorm(core::thread_pool& pool, float* y, const float* x, const float* g, std::size_t n, std::size_t d,
                    float eps) noexcept {
    pool.run_sized(n * d, [&](std::size_t i, std::size_t nt) noexcept {
        const auto [t0, t1] = core::thread_pool::split(n, i, nt);
        for (std::size_t t = t0; t < t1; ++t) {
            const float* xr = x + t * d;
            float* yr = y + t * d;
            double ss = 0.0;  // double: this sum sets the scale of the whole row
            for (std::size_t j = 0; j < d; ++j) ss += double(xr[j]) * xr[j];
            const float scale = static_cast<float>(1.0 / std::sqrt(ss / double(d) + double(eps)));
            for (std::size_t j = 0; j < d; ++j) yr[j] = xr[j] * scale * g[j];
        }
    });
}

// cos/sin [n][inv_freq.size()] of every (row, frequency) pair, row t at position pos[t];
// angles in double because position * frequency loses digits in float at long contexts.
inline void rope_angles(std::span<const double> inv_freq, const std::size_t* pos, std::size_t n, float freq_scale,
                        float* cos_out, float* sin_out) noexcept {
    const std::size_t half = inv_freq.size();
    for (std::size_t t = 0; t < n; ++t) {
        const double p = double(pos[t]) * double(freq_scale);
        for (std::size_t i = 0; i < half; ++i) {
            const double a = p * inv_freq[i];
            cos_out[t * half + i] = static_cast<float>(std::cos(a));
            sin_out[t * half + i] = static_cast<float>(std::sin(a));
        }
    }
}

// Rotates the first 2 * half dimensions of each head of n rows of [n_heads][head_dim], with the
// angles of rope_angles(). Normal (GPT-J) style rotates pairs (2i, 2i+1); NeoX style rotates
// pairs (i, i + half).
inline void apply_rope(float* v, std::size_t n, std::size_t n_heads, std::size_t head_dim, std::size_t half, bool neox,
                       const float* cos_in, const float* sin_in) noexcept {
    for (std::size_t t = 0; t < n; ++t) {
        const float* c = cos_in + t * half;
        const float* s = sin_in + t * half;
        for (std::size_t h = 0; h < n_heads; ++h) {
            float* x = v + (t * n_heads + h) * head_dim;
            for (std::size_t i = 0; i < half; ++i) {
                const std::size_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
                const float x0 = x[a], x1 = x[b];
                x[a] = x0 * c[i] - x1 * s[i];
                x[b] = x0 * s[i] + x1 * c[i];
            }
        }
    }
}

// y[t] += b for n rows of b.size(); nothing when the layer has no such bias.
inline void add_bias(float* y, const std::vector<float>& b, std::size_t n) noexcept {
    for (std::size_t t = 0; t < n; ++t)
        for (std::size_t i = 0; i < b.size(); ++i) y[t * b.size() + i] += b[i];
}

inline void add_in_place(float* x, const float* y, std::size_t n) noexcept {
    for (std::size_t i = 0; i < n; ++i) x[i] += y[i];
}

// g = silu(g) * u over n values.
template <class Arch>
void swiglu(float* g, const float* u, std::size_t n) noexcept {
    using batch = xsimd::batch<float, Arch>;
    // xsimd's exp keeps this vectorised: std::exp is a call per value, a visible share of a
    // decode step at n_ff = 2816 x 16 layers.
    std::size_t i = 0;
    for (; i + batch::size <= n; i += batch::size) {
        const batch gv = batch::load_unaligned(g + i);
        (gv / (batch(1.0f) + xsimd::exp(-gv)) * batch::load_unaligned(u + i)).store_unaligned(g + i);
    }
    for (; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

}  // namespace lmtk::model::ops
// #include <lmtk/model/weight.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace lmtk::model {

struct context_options {
    std::size_t n_ctx = 0;       // per sequence; 0: the model's training context, capped at 4096
    std::size_t n_threads = 0;   // 0: one per hardware thread
    // Rows per forward pass (prompt chunks, or tokens of many sequences). 64 keeps a pass's int8
    // activations (64 x 2816 bytes for a 246M model's FFN) in L2 while each packed weight panel
    // streams past them, and the scratch small (about 45 KB a row for that model: peak RSS stays
    // within 1.1x of file + KV cache). Larger batches were no faster with the packed kernels
    // in alternating runs (bench/RESULTS.md), within this machine's +-30% noise.
    std::size_t n_batch = 64;
    std::size_t n_seq = 1;       // sequences with their own KV cache (server slots)
};

// Bytes of memory this machine can still give (MemAvailable), or 0 if unknown.
inline std::size_t available_memory_bytes() {
    std::ifstream in("/proc/meminfo");
    std::string key;
    std::size_t kb = 0;
    std::string unit;
    while (in >> key >> kb >> unit)
        if (key == "MemAvailable:") return kb * 1024;
    return 0;
}

namespace detail {

// Sizes of a context's buffers, as products of a model's widths and the caller's context and
// batch sizes: refused rather than wrapped when they pass 64 bits (a context size of 2^60
// would otherwise wrap to a small, "affordable" cache that decode() writes far past).
inline std::size_t checked_mul(std::size_t a, std::size_t b) {
    std::size_t r = 0;
    if (__builtin_mul_overflow(a, b, &r)) fail("a context of this size does not fit in memory (", a, " x ", b, " overflows)");
    return r;
}
inline std::size_t checked_add(std::size_t a, std::size_t b) {
    std::size_t r = 0;
    if (__builtin_add_overflow(a, b, &r)) fail("a context of this size does not fit in memory (", a, " + ", b, " overflows)");
    return r;
}

}  // namespace detail

// One row of a multi-sequence batch: `token` appended to sequence `seq`.
struct batch_entry {
    std::int32_t token = 0;
    std::uint32_t seq = 0;
    bool want_logits = false;
};

template <class Model, class KV = kv_f32>
class llama_context {
    using arch = typename Model::target::arch;
    static constexpr std::size_t lanes = attention_pass<KV>::max_lanes;

public:
    using kv_type = KV;

    llama_context(const Model& model, context_options opt)
        : m_(model), hp_(model.hparams()), pool_(opt.n_threads) {
        using detail::checked_add, detail::checked_mul;
        n_ctx_ = opt.n_ctx ? opt.n_ctx : std::min<std::size_t>(hp_.n_ctx_train ? hp_.n_ctx_train : 2048, 4096);
        const std::size_t n_seq = std::max<std::size_t>(1, opt.n_seq);
        n_batch_ = std::max<std::size_t>(1, std::min(opt.n_batch ? opt.n_batch : context_options{}.n_batch, checked_mul(n_ctx_, n_seq)));
        // Every buffer below is a part of one of these two totals, so once they are computed
        // without overflow, no product sizing a buffer can overflow either. The widths are
        // bounded by llama_hparams::max_width, so the per-row sum cannot.
        const std::size_t kv_bytes = checked_mul(
            n_seq, checked_mul(checked_mul(checked_mul(2 * std::size_t{hp_.n_layer}, n_ctx_), hp_.kv_dim()), sizeof(typename KV::storage)));
        const std::size_t row_floats = 3 * std::size_t{hp_.n_embd} + 2 * hp_.q_dim() + 2 * hp_.kv_dim() + 2 * std::size_t{hp_.n_ff} +
                                       hp_.rope_dim;
        const std::size_t per_thread_floats = checked_mul(n_ctx_, hp_.n_head / hp_.n_head_kv + lanes);  // attention scratch
        const std::size_t scratch = checked_mul(
            sizeof(float), checked_add(checked_add(checked_mul(n_batch_, row_floats), hp_.n_vocab),
                                       checked_mul(pool_.size(), checked_add(per_thread_floats, hp_.head_dim * lanes + lanes * lanes))));
        if (const std::size_t avail = available_memory_bytes(); avail && checked_add(kv_bytes, scratch) > avail)
            fail("a context of ", n_seq, " x ", n_ctx_, " tokens needs ", (kv_bytes + scratch) >> 20, " MiB (KV cache ",
                 kv_bytes >> 20, " MiB), more than the ", avail >> 20, " MiB of memory available; choose a smaller -c");
        for (std::size_t i = 0; i < n_seq; ++i) caches_.emplace_back(hp_.n_layer, n_ctx_, hp_.kv_dim());
        n_past_.assign(n_seq, 0);
        x_.resize(n_batch_ * hp_.n_embd);
        xb_.resize(n_batch_ * hp_.n_embd);
        q_.resize(n_batch_ * hp_.q_dim());
        k_.resize(n_batch_ * hp_.kv_dim());
        v_.resize(n_batch_ * hp_.kv_dim());
        att_.resize(n_batch_ * hp_.q_dim());
        hb_.resize(n_batch_ * hp_.n_ff);
        hb2_.resize(n_batch_ * hp_.n_ff);
        // Prepared (int8) activations of the widest input, 64-byte aligned for the kernels' loads.
        std::size_t act_row = 0;
        for (std::size_t l = 0; l < hp_.n_layer; ++l) {
            const llama_layer& w = m_.layer(l);
            for (const weight* p : {&w.wq, &w.wk, &w.wv, &w.wo, &w.gate, &w.up, &w.down})
                if (p->ops.act_row_bytes) act_row = std::max(act_row, p->ops.act_row_bytes(p->cols));
        }
        if (m_.output().ops.act_row_bytes) act_row = std::max(act_row, m_.output().ops.act_row_bytes(m_.output().cols));
        act_buf_.resize(n_batch_ * act_row + 64);
        // Gathered inputs of act-order weights: up to three orders (q/k/v) of the widest input.
        bool any_perm = false;
        max_cols_ = std::max({std::size_t(hp_.n_embd), std::size_t(hp_.q_dim()), std::size_t(hp_.n_ff)});
        for (std::size_t l = 0; l < hp_.n_layer; ++l) {
            const llama_layer& w = m_.layer(l);
            for (const weight* p : {&w.wq, &w.wk, &w.wv, &w.wo, &w.gate, &w.up, &w.down}) any_perm |= p->input_perm != nullptr;
        }
        any_perm |= m_.output().input_perm != nullptr;
        if (any_perm) perm_x_.resize(3 * n_batch_ * max_cols_);
        act_ = act_buf_.data() + (64 - reinterpret_cast<std::uintptr_t>(act_buf_.data()) % 64) % 64;
        rope_cos_.resize(n_batch_ * hp_.rope_dim / 2);
        rope_sin_.resize(n_batch_ * hp_.rope_dim / 2);
        if constexpr (::lmtk::target::chooses_kernels_at_load<typename Model::target>)
            if (const quant::kernel_table* k = m_.kernels()) attn_ = k->template attention<KV>()(hp_, n_ctx_, n_batch_, pool_);
        if (!attn_) attn_ = std::make_unique<attention<KV, arch>>(hp_, n_ctx_, n_batch_, pool_);
        embd_row_.resize(m_.embedding_lookup().scratch_bytes());
        logits_.resize(hp_.n_vocab);
        row_seq_.resize(n_batch_);
        row_pos_.resize(n_batch_);
        out_rows_.resize(n_batch_);
        seq_fill_.resize(n_seq);
        tokens_.reserve(n_batch_);
    }

    const Model& model() const noexcept { return m_; }
    std::size_t n_ctx() const noexcept { return n_ctx_; }
    std::size_t n_seq() const noexcept { return caches_.size(); }
    std::size_t n_batch() const noexcept { return n_batch_; }
    std::size_t n_past(std::size_t seq = 0) const noexcept { return n_past_[seq]; }
    std::size_t n_threads() const noexcept { return pool_.size(); }
    std::uint32_t n_vocab() const noexcept { return hp_.n_vocab; }

    // Forgets the cached positions of a sequence from `n_keep` on (0: start it anew).
    void truncate(std::size_t n_keep, std::size_t seq = 0) noexcept { n_past_[seq] = std::min(n_past_[seq], n_keep); }

    // Runs `tokens` on sequence 0 at positions n_past .. n_past + n - 1 and appends them to its
    // cache. Returns the logits of the last token. With `all_logits_out`, also writes every
    // position's logits (n x n_vocab, row-major) there.
    std::span<const float> decode(std::span<const std::int32_t> tokens, float* all_logits_out = nullptr) {
        if (tokens.empty()) fail("decode: no tokens to evaluate");
        check_room(0, tokens.size());
        for (const std::int32_t t : tokens) check_token(t);
        for (std::size_t start = 0; start < tokens.size(); start += n_batch_) {
            const std::size_t n = std::min(n_batch_, tokens.size() - start);
            const bool last_chunk = start + n == tokens.size();
            std::size_t n_out = 0;
            for (std::size_t t = 0; t < n; ++t) {
                row_seq_[t] = 0;
                row_pos_[t] = n_past_[0] + t;
                if (all_logits_out || (last_chunk && t + 1 == n)) out_rows_[n_out++] = t;
            }
            float* out = all_logits_out ? all_logits_out + start * hp_.n_vocab : logits_.data();
            forward(tokens.subspan(start, n), std::span(out_rows_.data(), n_out), out);
            if (all_logits_out && last_chunk) std::copy_n(out + (n - 1) * hp_.n_vocab, hp_.n_vocab, logits_.data());
            n_past_[0] += n;
        }
        return logits_;
    }

    // Runs rows of several sequences in one forward pass per n_batch rows, so the weights stream
    // once for all of them. Rows of one sequence take its next positions in order. The logits of
    // rows with want_logits are written to `logits_out`, one n_vocab row each, in batch order.
    // Returns the number of logit rows written.
    std::size_t decode_batch(std::span<const batch_entry> batch, float* logits_out) {
        std::fill(seq_fill_.begin(), seq_fill_.end(), 0);
        for (const batch_entry& e : batch) {
            if (e.seq >= caches_.size()) fail("decode_batch: sequence ", e.seq, " does not exist (", caches_.size(), " slots)");
            check_token(e.token);
            ++seq_fill_[e.seq];
        }
        for (std::size_t sq = 0; sq < caches_.size(); ++sq) check_room(sq, seq_fill_[sq]);
        std::size_t written = 0;
        for (std::size_t start = 0; start < batch.size(); start += n_batch_) {
            const std::size_t n = std::min(n_batch_, batch.size() - start);
            std::size_t n_out = 0;
            tokens_.resize(n);  // capacity reserved up front: no allocation here
            for (std::size_t t = 0; t < n; ++t) {
                const batch_entry& e = batch[start + t];
                tokens_[t] = e.token;
                row_seq_[t] = e.seq;
                row_pos_[t] = n_past_[e.seq]++;
                if (e.want_logits) out_rows_[n_out++] = t;
            }
            forward(tokens_, std::span(out_rows_.data(), n_out), logits_out + written * hp_.n_vocab);
            written += n_out;
        }
        return written;
    }

    std::span<const float> logits() const noexcept { return logits_; }
    // The same logits as a 1-D xtensor view over this context's buffer (no copy; valid until
    // the next decode): lmtk::log_softmax(ctx.logits_view()), xt::argmax(ctx.logits_view()), ...
    auto logits_view() const noexcept { return vector_view(logits_.data(), logits_.size()); }

    // Runs `tokens` on sequence 0 as decode() does and returns every position's logits,
    // [tokens.size()][n_vocab], in a new container (scoring, perplexity, evaluation).
    xt::xtensor<float, 2> decode_all(std::span<const std::int32_t> tokens) {
        xt::xtensor<float, 2> out = xt::empty<float>({tokens.size(), std::size_t{hp_.n_vocab}});
        decode(tokens, out.data());
        return out;
    }

private:
    void check_room(std::size_t seq, std::size_t n) const {
        if (n_past_[seq] + n > n_ctx_)
            fail("the context is full: ", n_past_[seq], " cached + ", n, " new tokens exceed the context size of ", n_ctx_,
                 " (use a larger -c)");
    }
    void check_token(std::int32_t t) const {
        if (t < 0 || static_cast<std::uint32_t>(t) >= hp_.n_vocab)
            fail("token id ", t, " is outside the vocabulary of ", hp_.n_vocab);
    }

    // ---------------------------------------------------------------------------------------
    // The forward pass of n rows: row t is token tokens[t] of sequence row_seq_[t] at position
    // row_pos_[t]. Logits are computed for the rows listed in `out_rows`, into `out`.
    // Reads top-down like the architecture diagram.
    // ---------------------------------------------------------------------------------------
    void forward(std::span<const std::int32_t> tokens, std::span<const std::size_t> out_rows, float* out) noexcept {
        const std::size_t n = tokens.size(), d = hp_.n_embd, kvd = hp_.kv_dim(), ff = hp_.n_ff, half = hp_.rope_dim / 2;
        const bool neox = hp_.rope == rope_kind::neox;

        // Token embeddings: one (possibly quantized) row per token.
        for (std::size_t t = 0; t < n; ++t) m_.embedding_lookup().row(std::size_t(tokens[t]), embd_row_.data(), &x_[t * d]);
        ops::rope_angles(m_.rope_inv_freq(), row_pos_.data(), n, hp_.rope_freq_scale, rope_cos_.data(), rope_sin_.data());

        for (std::size_t l = 0; l < hp_.n_layer; ++l) {
            const llama_layer& w = m_.layer(l);

            // Attention: RMSNorm, Q/K/V projections, RoPE on Q and K, cache K and V.
            ops::rmsnorm(pool_, xb_.data(), x_.data(), w.attn_norm.data(), n, d, hp_.rms_eps);
            matmul3(w.wq, w.wk, w.wv, xb_.data(), n, q_.data(), k_.data(), v_.data());
            ops::add_bias(q_.data(), w.bq, n);
            ops::add_bias(k_.data(), w.bk, n);
            ops::add_bias(v_.data(), w.bv, n);
            ops::apply_rope(q_.data(), n, hp_.n_head, hp_.head_dim, half, neox, rope_cos_.data(), rope_sin_.data());
            ops::apply_rope(k_.data(), n, hp_.n_head_kv, hp_.head_dim, half, neox, rope_cos_.data(), rope_sin_.data());
            for (std::size_t t = 0; t < n; ++t) {
                kv_cache<KV>& cache = caches_[row_seq_[t]];
                typename KV::storage* kr = cache.k_row(l, row_pos_[t]);
                typename KV::storage* vr = cache.v_row(l, row_pos_[t]);
                for (std::size_t i = 0; i < kvd; ++i) {
                    kr[i] = KV::store(k_[t * kvd + i]);
                    vr[i] = KV::store(v_[t * kvd + i]);
                }
            }

            // Causal grouped-query attention over every cached position of the row's sequence,
            // then the output projection and the residual connection.
            attn_->run(l, n, q_.data(), att_.data(), caches_.data(), row_seq_.data(), row_pos_.data());
            matmul(w.wo, att_.data(), n, xb_.data());
            ops::add_bias(xb_.data(), w.bo, n);
            ops::add_in_place(x_.data(), xb_.data(), n * d);

            // Feed-forward: RMSNorm, SwiGLU (silu(gate) * up), down projection, residual.
            ops::rmsnorm(pool_, xb_.data(), x_.data(), w.ffn_norm.data(), n, d, hp_.rms_eps);
            matmul2(w.gate, w.up, xb_.data(), n, hb_.data(), hb2_.data());
            ops::swiglu<arch>(hb_.data(), hb2_.data(), n * ff);
            matmul(w.down, hb_.data(), n, xb_.data());
            ops::add_in_place(x_.data(), xb_.data(), n * d);
        }

        // Final norm and classifier, for the rows whose logits are wanted.
        if (out_rows.empty()) return;
        for (std::size_t i = 0; i < out_rows.size(); ++i)
            if (out_rows[i] != i) std::copy_n(&x_[out_rows[i] * d], d, &x_[i * d]);  // gather (i <= out_rows[i])
        ops::rmsnorm(pool_, xb_.data(), x_.data(), m_.output_norm().data(), out_rows.size(), d, hp_.rms_eps);
        matmul(m_.output(), xb_.data(), out_rows.size(), out);
    }

    // y (n x w.rows) = x (n x w.cols) * W^T, rows split across threads.
    void matmul(const weight& w, const float* x, std::size_t n, float* y) noexcept {
        const projection p[] = {{&w, y}};
        project(x, n, p);
    }
    // Two or three projections of the same input share one parallel region.
    void matmul2(const weight& a, const weight& b, const float* x, std::size_t n, float* ya, float* yb) noexcept {
        const projection p[] = {{&a, ya}, {&b, yb}};
        project(x, n, p);
    }
    void matmul3(const weight& a, const weight& b, const weight& c, const float* x, std::size_t n, float* ya, float* yb,
                 float* yc) noexcept {
        const projection p[] = {{&a, ya}, {&b, yb}, {&c, yc}};
        project(x, n, p);
    }

    struct projection {
        const weight* w;
        float* y;
    };
    // Projections of one input x (n rows of w.cols). Weights with a prepared-activation path
    // (int8 x for the quantized formats) get x converted once, into act_, for all of them.
    void project(const float* x, std::size_t n, std::span<const projection> ps) noexcept {
        const std::size_t cols = ps[0].w->cols;
        // Act-order (GPTQ) weights take their input in their own column order: gather it once
        // per distinct order (q/k/v of one layer usually share theirs). At most three orders.
        const std::uint32_t* perms[3] = {};
        const float* permuted[3] = {};
        std::size_t n_perm = 0;
        for (const projection& p : ps) {
            const std::uint32_t* perm = p.w->input_perm;
            if (!perm || std::find(perms, perms + n_perm, perm) != perms + n_perm) continue;
            float* dst = &perm_x_[n_perm * n_batch_ * max_cols_];
            pool_.run_sized(n * cols, [&](std::size_t i, std::size_t nt) noexcept {
                const auto [t0, t1] = core::thread_pool::split(n, i, nt);
                for (std::size_t t = t0; t < t1; ++t)
                    for (std::size_t k = 0; k < cols; ++k) dst[t * cols + k] = x[t * cols + perm[k]];
            });
            perms[n_perm] = perm;
            permuted[n_perm++] = dst;
        }
        const auto input_of = [&](const weight& w) noexcept -> const float* {
            if (!w.input_perm) return x;
            return permuted[std::find(perms, perms + n_perm, w.input_perm) - perms];
        };
        const quant::weight_ops* prep = nullptr;
        for (const projection& p : ps)
            if (p.w->ops.matmul_act) prep = &p.w->ops;
        std::size_t act_stride = 0;
        if (prep) {
            act_stride = prep->act_row_bytes(cols);
            pool_.run_sized(n * cols, [&](std::size_t i, std::size_t nt) noexcept {
                const auto [t0, t1] = core::thread_pool::split(n, i, nt);
                for (std::size_t t = t0; t < t1; ++t) prep->prepare_row(x + t * cols, act_ + t * act_stride, cols);
            });
        }
        std::size_t work = 0;
        for (const projection& p : ps) work += p.w->rows * cols * n;
        pool_.run_sized(work, [&](std::size_t i, std::size_t nt) noexcept {
            for (const projection& p : ps) {
                const weight& w = *p.w;
                const auto [r0, r1] = w.rows_of_thread(i, nt);
                if (r0 >= r1) continue;
                if (w.ops.matmul_act && w.ops.act == prep->act)
                    w.ops.matmul_act(w.data, cols, r0, r1, act_, act_stride, n, p.y, w.rows);
                else
                    w.ops.matmul(w.data, cols, r0, r1, input_of(w), cols, n, p.y, w.rows);
            }
        });
    }

    const Model& m_;
    const llama_hparams& hp_;
    core::thread_pool pool_;
    std::size_t n_ctx_ = 0, n_batch_ = 0;
    std::vector<kv_cache<KV>> caches_;       // one per sequence
    std::vector<std::size_t> n_past_;        // cached positions per sequence
    std::unique_ptr<attention_pass<KV>> attn_;  // the load-time level's, else arch's; made once the sizes are checked

    // The run state of one forward pass of n <= n_batch rows (row t: token tokens[t] of
    // sequence row_seq_[t] at position row_pos_[t]); d = n_embd, q_dim = n_head * head_dim,
    // kv_dim = n_head_kv * head_dim, ff = n_ff.
    std::vector<float> x_;                   // [n][d]       the residual stream
    std::vector<float> xb_;                  // [n][d]       a block's normed input, then its output
    std::vector<float> q_;                   // [n][q_dim]   queries
    std::vector<float> k_, v_;               // [n][kv_dim]  this pass's keys and values, before caching
    std::vector<float> att_;                 // [n][q_dim]   attention output per query head
    std::vector<float> hb_, hb2_;            // [n][ff]      gate (then silu(gate) * up) and up
    std::vector<float> rope_cos_, rope_sin_; // [n][rope_dim / 2]
    std::vector<float> logits_;              // [n_vocab]    the last row's logits (decode())
    std::vector<std::byte> embd_row_;        // [row bytes]  a token embedding row read from the file
    std::vector<std::byte> act_buf_;         // [n][act row] prepared (int8) activations (see project())
    std::byte* act_ = nullptr;               //              act_buf_, 64-byte aligned
    std::vector<float> perm_x_;              // [3][n][max_cols_] inputs gathered for act-order weights
    std::size_t max_cols_ = 0;
    std::vector<std::uint32_t> row_seq_;     // [n] per batch row: its sequence
    std::vector<std::size_t> row_pos_;       // [n] per batch row: its position
    std::vector<std::size_t> out_rows_;      // [n] the rows whose logits are wanted
    std::vector<std::size_t> seq_fill_;      // [n_seq] rows per sequence in a decode_batch()
    std::vector<std::int32_t> tokens_;       // [n] a decode_batch() chunk's tokens
};

}  // namespace lmtk::model
// #include <lmtk/tokenize/tokenize.hpp>
// Tokenizers over GGUF vocabularies and Hugging Face tokenizer.json files; tokenizer.hpp's
// tokenize::tokenizer picks the right one. The libsentencepiece adapter,
// <lmtk/tokenize/sentencepiece.hpp>, is not included: it needs lmtk::sentencepiece to link.
// #include <lmtk/tokenize/hf_export.hpp>
// A Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) for any vocabulary lmtk
// loads, written so that `tokenizers` / transformers' AutoTokenizer encode exactly as lmtk does.
// Python clients that tokenize on their side (LMQL, transformers pipelines) need one, and a
// GGUF-only model has none.
//
//   byte-level BPE        model BPE (vocab, merges, ignore_merges), pre_tokenizer Sequence of
//                         Split(pattern, Isolated) for each step of the family's split, then
//                         ByteLevel without its own regex; decoder ByteLevel
//   BPE with byte tokens  model BPE with byte_fallback and the unknown token; normalizer
//   (SentencePiece-like)  Prepend("▁") when the vocabulary adds a space prefix, Replace(" ", "▁");
//                         decoder Replace("▁", " "), ByteFallback, Fuse, Strip(1 leading space)
//   SentencePiece (SPM)   the same BPE form, with merges derived from the scores: SPM merges the
//                         adjacent pair whose concatenation scores best, so every way of writing
//                         a token as two tokens becomes a merge, ranked by that token's score
//
// Control, unknown and user-defined tokens become added_tokens (special unless user-defined).
// BOS/EOS insertion follows the vocabulary's add_bos/add_eos, through a TemplateProcessing
// post-processor.
// #include <lmtk/core/error.hpp>
// #include <lmtk/tokenize/pre_tokenizer.hpp>
// lmtk::tokenize::pre_tokenizer: how byte-level BPE cuts text into pieces before merging (merges
// never cross a piece boundary). A pre-tokenizer is a list of regular expressions applied in
// turn: each one splits every piece so far into its matches and the stretches between them
// (both kept, as Hugging Face's Split pre-tokenizer with behavior "Isolated" and llama.cpp do).
//
// Where the patterns come from:
//   - tokenizer.json: its Split / ByteLevel / Digits pre-tokenizers (tokenizer_json.hpp);
//   - GGUF: `tokenizer.ggml.pre` names the pre-tokenizer of the model's family; the table below
//     maps each name llama.cpp writes to the patterns of that family's tokenizer.json.
// GPT-2's own pattern has a hand-written split (unicode::split_gpt2), used whenever the list is
// exactly that pattern; everything else runs on tokenize::regex.
// #include <lmtk/core/error.hpp>
// #include <lmtk/tokenize/regex.hpp>
// lmtk::tokenize::regex: the regular expressions that BPE pre-tokenizers are written in
// (tokenizer.json's Split patterns, the splits llama.cpp names by `tokenizer.ggml.pre`), matched
// over Unicode code points in time linear in the text, whatever the pattern.
//
// Why not std::regex: it has no \p{..} classes, it backtracks (a hostile pattern from a model
// file, or a long run of spaces, can take exponential time or overflow the stack), and it is
// slow. These patterns need little: classes with Unicode general categories, alternation,
// greedy and lazy quantifiers, groups, case-insensitive groups of ASCII letters, `^`/`$`, and a
// lookahead of one character such as `(?!\S)`.
//
// Semantics are those of Oniguruma and PCRE, which Hugging Face `tokenizers` uses: the leftmost
// match wins, and among matches starting there the first one in the pattern's priority order
// (alternatives left to right, greedy quantifiers taking as much as they can). The matcher is a
// Pike VM (Thompson NFA simulation with thread priorities), which gives exactly that answer
// without backtracking; its cost is O(text x pattern size).
//
// Supported syntax:
//   literals (any UTF-8 character), escapes \t \n \r \f \v \e \0 \xHH \x{H..} \uHHHH and \ before
//     any punctuation; `.` (any character but \n)
//   classes [..] and [^..] with ranges, \p{X} \P{X} (X a general category or one-letter group:
//     L Lu Ll Lt Lm Lo M Mn Mc Me N Nd Nl No P Pc Pd Ps Pe Pi Pf Po S Sm Sc Sk So Z Zs Zl Zp C Cc
//     Cf Cs Co Cn, also as \pL), \s \S \d \D \w \W, inside classes or alone
//   groups (..), (?:..), (?i:..) (ASCII case folding), alternation |
//   quantifiers ? * + {n} {n,} {n,m}, each optionally lazy (?)
//   anchors ^ $ (of the piece being split), \A \z
//   lookahead (?=X) (?!X) where X is one character or class
// Anything else (backreferences, lookbehind, possessive quantifiers, atomic groups, scripts such
// as \p{Han}, \b) is refused when the pattern is compiled, with an error naming it.
// #include <lmtk/core/error.hpp>
// #include <lmtk/tokenize/unicode.hpp>
// The bits of Unicode the byte-level BPE tokenizers need, without std::regex or ICU:
//   - UTF-8 decoding that never fails (a malformed byte is a code point of its own),
//   - the general category of every code point (ranges generated from the Unicode database),
//     for \p{..} classes, and \s,
//   - GPT-2's byte <-> printable-character table,
//   - GPT-2's pre-tokenizer split, written out by hand from its regular expression.
// #include <lmtk/tokenize/unicode_data.hpp>
// Generated by tools/unicode/gen_categories.py from Unicode 14.0.0
// (Python's unicodedata): do not edit by hand.
// The general category of every assigned code point, as sorted ranges [first, last]; a code point
// in no range is unassigned (Cn).
#include <cstdint>

namespace lmtk::tokenize::unicode_data {

enum category : std::uint8_t { Lu, Ll, Lt, Lm, Lo, Mn, Mc, Me, Nd, Nl, No, Pc, Pd, Ps, Pe, Pi, Pf, Po, Sm, Sc, Sk, So, Zs, Zl, Zp, Cc, Cf, Cs, Co, Cn };

struct category_range {
    std::uint32_t first, last;
    category cat;
};

inline constexpr const char* version = "14.0.0";

inline constexpr category_range categories[] = {
    {0x0, 0x1F, Cc}, {0x20, 0x20, Zs}, {0x21, 0x23, Po}, {0x24, 0x24, Sc}, {0x25, 0x27, Po},
    {0x28, 0x28, Ps}, {0x29, 0x29, Pe}, {0x2A, 0x2A, Po}, {0x2B, 0x2B, Sm}, {0x2C, 0x2C, Po},
    {0x2D, 0x2D, Pd}, {0x2E, 0x2F, Po}, {0x30, 0x39, Nd}, {0x3A, 0x3B, Po}, {0x3C, 0x3E, Sm},
    {0x3F, 0x40, Po}, {0x41, 0x5A, Lu}, {0x5B, 0x5B, Ps}, {0x5C, 0x5C, Po}, {0x5D, 0x5D, Pe},
    {0x5E, 0x5E, Sk}, {0x5F, 0x5F, Pc}, {0x60, 0x60, Sk}, {0x61, 0x7A, Ll}, {0x7B, 0x7B, Ps},
    {0x7C, 0x7C, Sm}, {0x7D, 0x7D, Pe}, {0x7E, 0x7E, Sm}, {0x7F, 0x9F, Cc}, {0xA0, 0xA0, Zs},
    {0xA1, 0xA1, Po}, {0xA2, 0xA5, Sc}, {0xA6, 0xA6, So}, {0xA7, 0xA7, Po}, {0xA8, 0xA8, Sk},
    {0xA9, 0xA9, So}, {0xAA, 0xAA, Lo}, {0xAB, 0xAB, Pi}, {0xAC, 0xAC, Sm}, {0xAD, 0xAD, Cf},
    {0xAE, 0xAE, So}, {0xAF, 0xAF, Sk}, {0xB0, 0xB0, So}, {0xB1, 0xB1, Sm}, {0xB2, 0xB3, No},
    {0xB4, 0xB4, Sk}, {0xB5, 0xB5, Ll}, {0xB6, 0xB7, Po}, {0xB8, 0xB8, Sk}, {0xB9, 0xB9, No},
    {0xBA, 0xBA, Lo}, {0xBB, 0xBB, Pf}, {0xBC, 0xBE, No}, {0xBF, 0xBF, Po}, {0xC0, 0xD6, Lu},
    {0xD7, 0xD7, Sm}, {0xD8, 0xDE, Lu}, {0xDF, 0xF6, Ll}, {0xF7, 0xF7, Sm}, {0xF8, 0xFF, Ll},
    {0x100, 0x100, Lu}, {0x101, 0x101, Ll}, {0x102, 0x102, Lu}, {0x103, 0x103, Ll}, {0x104, 0x104, Lu},
    {0x105, 0x105, Ll}, {0x106, 0x106, Lu}, {0x107, 0x107, Ll}, {0x108, 0x108, Lu}, {0x109, 0x109, Ll},
    {0x10A, 0x10A, Lu}, {0x10B, 0x10B, Ll}, {0x10C, 0x10C, Lu}, {0x10D, 0x10D, Ll}, {0x10E, 0x10E, Lu},
    {0x10F, 0x10F, Ll}, {0x110, 0x110, Lu}, {0x111, 0x111, Ll}, {0x112, 0x112, Lu}, {0x113, 0x113, Ll},
    {0x114, 0x114, Lu}, {0x115, 0x115, Ll}, {0x116, 0x116, Lu}, {0x117, 0x117, Ll}, {0x118, 0x118, Lu},
    {0x119, 0x119, Ll}, {0x11A, 0x11A, Lu}, {0x11B, 0x11B, Ll}, {0x11C, 0x11C, Lu}, {0x11D, 0x11D, Ll},
    {0x11E, 0x11E, Lu}, {0x11F, 0x11F, Ll}, {0x120, 0x120, Lu}, {0x121, 0x121, Ll}, {0x122, 0x122, Lu},
    {0x123, 0x123, Ll}, {0x124, 0x124, Lu}, {0x125, 0x125, Ll}, {0x126, 0x126, Lu}, {0x127, 0x127, Ll},
    {0x128, 0x128, Lu}, {0x129, 0x129, Ll}, {0x12A, 0x12A, Lu}, {0x12B, 0x12B, Ll}, {0x12C, 0x12C, Lu},
    {0x12D, 0x12D, Ll}, {0x12E, 0x12E, Lu}, {0x12F, 0x12F, Ll}, {0x130, 0x130, Lu}, {0x131, 0x131, Ll},
    {0x132, 0x132, Lu}, {0x133, 0x133, Ll}, {0x134, 0x134, Lu}, {0x135, 0x135, Ll}, {0x136, 0x136, Lu},
    {0x137, 0x138, Ll}, {0x139, 0x139, Lu}, {0x13A, 0x13A, Ll}, {0x13B, 0x13B, Lu}, {0x13C, 0x13C, Ll},
    {0x13D, 0x13D, Lu}, {0x13E, 0x13E, Ll}, {0x13F, 0x13F, Lu}, {0x140, 0x140, Ll}, {0x141, 0x141, Lu},
    {0x142, 0x142, Ll}, {0x143, 0x143, Lu}, {0x144, 0x144, Ll}, {0x145, 0x145, Lu}, {0x146, 0x146, Ll},
    {0x147, 0x147, Lu}, {0x148, 0x149, Ll}, {0x14A, 0x14A, Lu}, {0x14B, 0x14B, Ll}, {0x14C, 0x14C, Lu},
    {0x14D, 0x14D, Ll}, {0x14E, 0x14E, Lu}, {0x14F, 0x14F, Ll}, {0x150, 0x150, Lu}, {0x151, 0x151, Ll},
    {0x152, 0x152, Lu}, {0x153, 0x153, Ll}, {0x154, 0x154, Lu}, {0x155, 0x155, Ll}, {0x156, 0x156, Lu},
    {0x157, 0x157, Ll}, {0x158, 0x158, Lu}, {0x159, 0x159, Ll}, {0x15A, 0x15A, Lu}, {0x15B, 0x15B, Ll},
    {0x15C, 0x15C, Lu}, {0x15D, 0x15D, Ll}, {0x15E, 0x15E, Lu}, {0x15F, 0x15F, Ll}, {0x160, 0x160, Lu},
    {0x161, 0x161, Ll}, {0x162, 0x162, Lu}, {0x163, 0x163, Ll}, {0x164, 0x164, Lu}, {0x165, 0x165, Ll},
    {0x166, 0x166, Lu}, {0x167, 0x167, Ll}, {0x168, 0x168, Lu}, {0x169, 0x169, Ll}, {0x16A, 0x16A, Lu},
    {0x16B, 0x16B, Ll}, {0x16C, 0x16C, Lu}, {0x16D, 0x16D, Ll}, {0x16E, 0x16E, Lu}, {0x16F, 0x16F, Ll},
    {0x170, 0x170, Lu}, {0x171, 0x171, Ll}, {0x172, 0x172, Lu}, {0x173, 0x173, Ll}, {0x174, 0x174, Lu},
    {0x175, 0x175, Ll}, {0x176, 0x176, Lu}, {0x177, 0x177, Ll}, {0x178, 0x179, Lu}, {0x17A, 0x17A, Ll},
    {0x17B, 0x17B, Lu}, {0x17C, 0x17C, Ll}, {0x17D, 0x17D, Lu}, {0x17E, 0x180, Ll}, {0x181, 0x182, Lu},
    {0x183, 0x183, Ll}, {0x184, 0x184, Lu}, {0x185, 0x185, Ll}, {0x186, 0x187, Lu}, {0x188, 0x188, Ll},
    {0x189, 0x18B, Lu}, {0x18C, 0x18D, Ll}, {0x18E, 0x191, Lu}, {0x192, 0x192, Ll}, {0x193, 0x194, Lu},
    {0x195, 0x195, Ll}, {0x196, 0x198, Lu}, {0x199, 0x19B, Ll}, {0x19C, 0x19D, Lu}, {0x19E, 0x19E, Ll},
    {0x19F, 0x1A0, Lu}, {0x1A1, 0x1A1, Ll}, {0x1A2, 0x1A2, Lu}, {0x1A3, 0x1A3, Ll}, {0x1A4, 0x1A4, Lu},
    {0x1A5, 0x1A5, Ll}, {0x1A6, 0x1A7, Lu}, {0x1A8, 0x1A8, Ll}, {0x1A9, 0x1A9, Lu}, {0x1AA, 0x1AB, Ll},
    {0x1AC, 0x1AC, Lu}, {0x1AD, 0x1AD, Ll}, {0x1AE, 0x1AF, Lu}, {0x1B0, 0x1B0, Ll}, {0x1B1, 0x1B3, Lu},
    {0x1B4, 0x1B4, Ll}, {0x1B5, 0x1B5, Lu}, {0x1B6, 0x1B6, Ll}, {0x1B7, 0x1B8, Lu}, {0x1B9, 0x1BA, Ll},
    {0x1BB, 0x1BB, Lo}, {0x1BC, 0x1BC, Lu}, {0x1BD, 0x1BF, Ll}, {0x1C0, 0x1C3, Lo}, {0x1C4, 0x1C4, Lu},
    {0x1C5, 0x1C5, Lt}, {0x1C6, 0x1C6, Ll}, {0x1C7, 0x1C7, Lu}, {0x1C8, 0x1C8, Lt}, {0x1C9, 0x1C9, Ll},
    {0x1CA, 0x1CA, Lu}, {0x1CB, 0x1CB, Lt}, {0x1CC, 0x1CC, Ll}, {0x1CD, 0x1CD, Lu}, {0x1CE, 0x1CE, Ll},
    {0x1CF, 0x1CF, Lu}, {0x1D0, 0x1D0, Ll}, {0x1D1, 0x1D1, Lu}, {0x1D2, 0x1D2, Ll}, {0x1D3, 0x1D3, Lu},
    {0x1D4, 0x1D4, Ll}, {0x1D5, 0x1D5, Lu}, {0x1D6, 0x1D6, Ll}, {0x1D7, 0x1D7, Lu}, {0x1D8, 0x1D8, Ll},
    {0x1D9, 0x1D9, Lu}, {0x1DA, 0x1DA, Ll}, {0x1DB, 0x1DB, Lu}, {0x1DC, 0x1DD, Ll}, {0x1DE, 0x1DE, Lu},
    {0x1DF, 0x1DF, Ll}, {0x1E0, 0x1E0, Lu}, {0x1E1, 0x1E1, Ll}, {0x1E2, 0x1E2, Lu}, {0x1E3, 0x1E3, Ll},
    {0x1E4, 0x1E4, Lu}, {0x1E5, 0x1E5, Ll}, {0x1E6, 0x1E6, Lu}, {0x1E7, 0x1E7, Ll}, {0x1E8, 0x1E8, Lu},
    {0x1E9, 0x1E9, Ll}, {0x1EA, 0x1EA, Lu}, {0x1EB, 0x1EB, Ll}, {0x1EC, 0x1EC, Lu}, {0x1ED, 0x1ED, Ll},
    {0x1EE, 0x1EE, Lu}, {0x1EF, 0x1F0, Ll}, {0x1F1, 0x1F1, Lu}, {0x1F2, 0x1F2, Lt}, {0x1F3, 0x1F3, Ll},
    {0x1F4, 0x1F4, Lu}, {0x1F5, 0x1F5, Ll}, {0x1F6, 0x1F8, Lu}, {0x1F9, 0x1F9, Ll}, {0x1FA, 0x1FA, Lu},
    {0x1FB, 0x1FB, Ll}, {0x1FC, 0x1FC, Lu}, {0x1FD, 0x1FD, Ll}, {0x1FE, 0x1FE, Lu}, {0x1FF, 0x1FF, Ll},
    {0x200, 0x200, Lu}, {0x201, 0x201, Ll}, {0x202, 0x202, Lu}, {0x203, 0x203, Ll}, {0x204, 0x204, Lu},
    {0x205, 0x205, Ll}, {0x206, 0x206, Lu}, {0x207, 0x207, Ll}, {0x208, 0x208, Lu}, {0x209, 0x209, Ll},
    {0x20A, 0x20A, Lu}, {0x20B, 0x20B, Ll}, {0x20C, 0x20C, Lu}, {0x20D, 0x20D, Ll}, {0x20E, 0x20E, Lu},
    {0x20F, 0x20F, Ll}, {0x210, 0x210, Lu}, {0x211, 0x211, Ll}, {0x212, 0x212, Lu}, {0x213, 0x213, Ll},
    {0x214, 0x214, Lu}, {0x215, 0x215, Ll}, {0x216, 0x216, Lu}, {0x217, 0x217, Ll}, {0x218, 0x218, Lu},
    {0x219, 0x219, Ll}, {0x21A, 0x21A, Lu}, {0x21B, 0x21B, Ll}, {0x21C, 0x21C, Lu}, {0x21D, 0x21D, Ll},
    {0x21E, 0x21E, Lu}, {0x21F, 0x21F, Ll}, {0x220, 0x220, Lu}, {0x221, 0x221, Ll}, {0x222, 0x222, Lu},
    {0x223, 0x223, Ll}, {0x224, 0x224, Lu}, {0x225, 0x225, Ll}, {0x226, 0x226, Lu}, {0x227, 0x227, Ll},
    {0x228, 0x228, Lu}, {0x229, 0x229, Ll}, {0x22A, 0x22A, Lu}, {0x22B, 0x22B, Ll}, {0x22C, 0x22C, Lu},
    {0x22D, 0x22D, Ll}, {0x22E, 0x22E, Lu}, {0x22F, 0x22F, Ll}, {0x230, 0x230, Lu}, {0x231, 0x231, Ll},
    {0x232, 0x232, Lu}, {0x233, 0x239, Ll}, {0x23A, 0x23B, Lu}, {0x23C, 0x23C, Ll}, {0x23D, 0x23E, Lu},
    {0x23F, 0x240, Ll}, {0x241, 0x241, Lu}, {0x242, 0x242, Ll}, {0x243, 0x246, Lu}, {0x247, 0x247, Ll},
    {0x248, 0x248, Lu}, {0x249, 0x249, Ll}, {0x24A, 0x24A, Lu}, {0x24B, 0x24B, Ll}, {0x24C, 0x24C, Lu},
    {0x24D, 0x24D, Ll}, {0x24E, 0x24E, Lu}, {0x24F, 0x293, Ll}, {0x294, 0x294, Lo}, {0x295, 0x2AF, Ll},
    {0x2B0, 0x2C1, Lm}, {0x2C2, 0x2C5, Sk}, {0x2C6, 0x2D1, Lm}, {0x2D2, 0x2DF, Sk}, {0x2E0, 0x2E4, Lm},
    {0x2E5, 0x2EB, Sk}, {0x2EC, 0x2EC, Lm}, {0x2ED, 0x2ED, Sk}, {0x2EE, 0x2EE, Lm}, {0x2EF, 0x2FF, Sk},
    {0x300, 0x36F, Mn}, {0x370, 0x370, Lu}, {0x371, 0x371, Ll}, {0x372, 0x372, Lu}, {0x373, 0x373, Ll},
    {0x374, 0x374, Lm}, {0x375, 0x375, Sk}, {0x376, 0x376, Lu}, {0x377, 0x377, Ll}, {0x37A, 0x37A, Lm},
    {0x37B, 0x37D, Ll}, {0x37E, 0x37E, Po}, {0x37F, 0x37F, Lu}, {0x384, 0x385, Sk}, {0x386, 0x386, Lu},
    {0x387, 0x387, Po}, {0x388, 0x38A, Lu}, {0x38C, 0x38C, Lu}, {0x38E, 0x38F, Lu}, {0x390, 0x390, Ll},
    {0x391, 0x3A1, Lu}, {0x3A3, 0x3AB, Lu}, {0x3AC, 0x3CE, Ll}, {0x3CF, 0x3CF, Lu}, {0x3D0, 0x3D1, Ll},
    {0x3D2, 0x3D4, Lu}, {0x3D5, 0x3D7, Ll}, {0x3D8, 0x3D8, Lu}, {0x3D9, 0x3D9, Ll}, {0x3DA, 0x3DA, Lu},
    {0x3DB, 0x3DB, Ll}, {0x3DC, 0x3DC, Lu}, {0x3DD, 0x3DD, Ll}, {0x3DE, 0x3DE, Lu}, {0x3DF, 0x3DF, Ll},
    {0x3E0, 0x3E0, Lu}, {0x3E1, 0x3E1, Ll}, {0x3E2, 0x3E2, Lu}, {0x3E3, 0x3E3, Ll}, {0x3E4, 0x3E4, Lu},
    {0x3E5, 0x3E5, Ll}, {0x3E6, 0x3E6, Lu}, {0x3E7, 0x3E7, Ll}, {0x3E8, 0x3E8, Lu}, {0x3E9, 0x3E9, Ll},
    {0x3EA, 0x3EA, Lu}, {0x3EB, 0x3EB, Ll}, {0x3EC, 0x3EC, Lu}, {0x3ED, 0x3ED, Ll}, {0x3EE, 0x3EE, Lu},
    {0x3EF, 0x3F3, Ll}, {0x3F4, 0x3F4, Lu}, {0x3F5, 0x3F5, Ll}, {0x3F6, 0x3F6, Sm}, {0x3F7, 0x3F7, Lu},
    {0x3F8, 0x3F8, Ll}, {0x3F9, 0x3FA, Lu}, {0x3FB, 0x3FC, Ll}, {0x3FD, 0x42F, Lu}, {0x430, 0x45F, Ll},
    {0x460, 0x460, Lu}, {0x461, 0x461, Ll}, {0x462, 0x462, Lu}, {0x463, 0x463, Ll}, {0x464, 0x464, Lu},
    {0x465, 0x465, Ll}, {0x466, 0x466, Lu}, {0x467, 0x467, Ll}, {0x468, 0x468, Lu}, {0x469, 0x469, Ll},
    {0x46A, 0x46A, Lu}, {0x46B, 0x46B, Ll}, {0x46C, 0x46C, Lu}, {0x46D, 0x46D, Ll}, {0x46E, 0x46E, Lu},
    {0x46F, 0x46F, Ll}, {0x470, 0x470, Lu}, {0x471, 0x471, Ll}, {0x472, 0x472, Lu}, {0x473, 0x473, Ll},
    {0x474, 0x474, Lu}, {0x475, 0x475, Ll}, {0x476, 0x476, Lu}, {0x477, 0x477, Ll}, {0x478, 0x478, Lu},
    {0x479, 0x479, Ll}, {0x47A, 0x47A, Lu}, {0x47B, 0x47B, Ll}, {0x47C, 0x47C, Lu}, {0x47D, 0x47D, Ll},
    {0x47E, 0x47E, Lu}, {0x47F, 0x47F, Ll}, {0x480, 0x480, Lu}, {0x481, 0x481, Ll}, {0x482, 0x482, So},
    {0x483, 0x487, Mn}, {0x488, 0x489, Me}, {0x48A, 0x48A, Lu}, {0x48B, 0x48B, Ll}, {0x48C, 0x48C, Lu},
    {0x48D, 0x48D, Ll}, {0x48E, 0x48E, Lu}, {0x48F, 0x48F, Ll}, {0x490, 0x490, Lu}, {0x491, 0x491, Ll},
    {0x492, 0x492, Lu}, {0x493, 0x493, Ll}, {0x494, 0x494, Lu}, {0x495, 0x495, Ll}, {0x496, 0x496, Lu},
    {0x497, 0x497, Ll}, {0x498, 0x498, Lu}, {0x499, 0x499, Ll}, {0x49A, 0x49A, Lu}, {0x49B, 0x49B, Ll},
    {0x49C, 0x49C, Lu}, {0x49D, 0x49D, Ll}, {0x49E, 0x49E, Lu}, {0x49F, 0x49F, Ll}, {0x4A0, 0x4A0, Lu},
    {0x4A1, 0x4A1, Ll}, {0x4A2, 0x4A2, Lu}, {0x4A3, 0x4A3, Ll}, {0x4A4, 0x4A4, Lu}, {0x4A5, 0x4A5, Ll},
    {0x4A6, 0x4A6, Lu}, {0x4A7, 0x4A7, Ll}, {0x4A8, 0x4A8, Lu}, {0x4A9, 0x4A9, Ll}, {0x4AA, 0x4AA, Lu},
    {0x4AB, 0x4AB, Ll}, {0x4AC, 0x4AC, Lu}, {0x4AD, 0x4AD, Ll}, {0x4AE, 0x4AE, Lu}, {0x4AF, 0x4AF, Ll},
    {0x4B0, 0x4B0, Lu}, {0x4B1, 0x4B1, Ll}, {0x4B2, 0x4B2, Lu}, {0x4B3, 0x4B3, Ll}, {0x4B4, 0x4B4, Lu},
    {0x4B5, 0x4B5, Ll}, {0x4B6, 0x4B6, Lu}, {0x4B7, 0x4B7, Ll}, {0x4B8, 0x4B8, Lu}, {0x4B9, 0x4B9, Ll},
    {0x4BA, 0x4BA, Lu}, {0x4BB, 0x4BB, Ll}, {0x4BC, 0x4BC, Lu}, {0x4BD, 0x4BD, Ll}, {0x4BE, 0x4BE, Lu},
    {0x4BF, 0x4BF, Ll}, {0x4C0, 0x4C1, Lu}, {0x4C2, 0x4C2, Ll}, {0x4C3, 0x4C3, Lu}, {0x4C4, 0x4C4, Ll},
    {0x4C5, 0x4C5, Lu}, {0x4C6, 0x4C6, Ll}, {0x4C7, 0x4C7, Lu}, {0x4C8, 0x4C8, Ll}, {0x4C9, 0x4C9, Lu},
    {0x4CA, 0x4CA, Ll}, {0x4CB, 0x4CB, Lu}, {0x4CC, 0x4CC, Ll}, {0x4CD, 0x4CD, Lu}, {0x4CE, 0x4CF, Ll},
    {0x4D0, 0x4D0, Lu}, {0x4D1, 0x4D1, Ll}, {0x4D2, 0x4D2, Lu}, {0x4D3, 0x4D3, Ll}, {0x4D4, 0x4D4, Lu},
    {0x4D5, 0x4D5, Ll}, {0x4D6, 0x4D6, Lu}, {0x4D7, 0x4D7, Ll}, {0x4D8, 0x4D8, Lu}, {0x4D9, 0x4D9, Ll},
    {0x4DA, 0x4DA, Lu}, {0x4DB, 0x4DB, Ll}, {0x4DC, 0x4DC, Lu}, {0x4DD, 0x4DD, Ll}, {0x4DE, 0x4DE, Lu},
    {0x4DF, 0x4DF, Ll}, {0x4E0, 0x4E0, Lu}, {0x4E1, 0x4E1, Ll}, {0x4E2, 0x4E2, Lu}, {0x4E3, 0x4E3, Ll},
    {0x4E4, 0x4E4, Lu}, {0x4E5, 0x4E5, Ll}, {0x4E6, 0x4E6, Lu}, {0x4E7, 0x4E7, Ll}, {0x4E8, 0x4E8, Lu},
    {0x4E9, 0x4E9, Ll}, {0x4EA, 0x4EA, Lu}, {0x4EB, 0x4EB, Ll}, {0x4EC, 0x4EC, Lu}, {0x4ED, 0x4ED, Ll},
    {0x4EE, 0x4EE, Lu}, {0x4EF, 0x4EF, Ll}, {0x4F0, 0x4F0, Lu}, {0x4F1, 0x4F1, Ll}, {0x4F2, 0x4F2, Lu},
    {0x4F3, 0x4F3, Ll}, {0x4F4, 0x4F4, Lu}, {0x4F5, 0x4F5, Ll}, {0x4F6, 0x4F6, Lu}, {0x4F7, 0x4F7, Ll},
    {0x4F8, 0x4F8, Lu}, {0x4F9, 0x4F9, Ll}, {0x4FA, 0x4FA, Lu}, {0x4FB, 0x4FB, Ll}, {0x4FC, 0x4FC, Lu},
    {0x4FD, 0x4FD, Ll}, {0x4FE, 0x4FE, Lu}, {0x4FF, 0x4FF, Ll}, {0x500, 0x500, Lu}, {0x501, 0x501, Ll},
    {0x502, 0x502, Lu}, {0x503, 0x503, Ll}, {0x504, 0x504, Lu}, {0x505, 0x505, Ll}, {0x506, 0x506, Lu},
    {0x507, 0x507, Ll}, {0x508, 0x508, Lu}, {0x509, 0x509, Ll}, {0x50A, 0x50A, Lu}, {0x50B, 0x50B, Ll},
    {0x50C, 0x50C, Lu}, {0x50D, 0x50D, Ll}, {0x50E, 0x50E, Lu}, {0x50F, 0x50F, Ll}, {0x510, 0x510, Lu},
    {0x511, 0x511, Ll}, {0x512, 0x512, Lu}, {0x513, 0x513, Ll}, {0x514, 0x514, Lu}, {0x515, 0x515, Ll},
    {0x516, 0x516, Lu}, {0x517, 0x517, Ll}, {0x518, 0x518, Lu}, {0x519, 0x519, Ll}, {0x51A, 0x51A, Lu},
    {0x51B, 0x51B, Ll}, {0x51C, 0x51C, Lu}, {0x51D, 0x51D, Ll}, {0x51E, 0x51E, Lu}, {0x51F, 0x51F, Ll},
    {0x520, 0x520, Lu}, {0x521, 0x521, Ll}, {0x522, 0x522, Lu}, {0x523, 0x523, Ll}, {0x524, 0x524, Lu},
    {0x525, 0x525, Ll}, {0x526, 0x526, Lu}, {0x527, 0x527, Ll}, {0x528, 0x528, Lu}, {0x529, 0x529, Ll},
    {0x52A, 0x52A, Lu}, {0x52B, 0x52B, Ll}, {0x52C, 0x52C, Lu}, {0x52D, 0x52D, Ll}, {0x52E, 0x52E, Lu},
    {0x52F, 0x52F, Ll}, {0x531, 0x556, Lu}, {0x559, 0x559, Lm}, {0x55A, 0x55F, Po}, {0x560, 0x588, Ll},
    {0x589, 0x589, Po}, {0x58A, 0x58A, Pd}, {0x58D, 0x58E, So}, {0x58F, 0x58F, Sc}, {0x591, 0x5BD, Mn},
    {0x5BE, 0x5BE, Pd}, {0x5BF, 0x5BF, Mn}, {0x5C0, 0x5C0, Po}, {0x5C1, 0x5C2, Mn}, {0x5C3, 0x5C3, Po},
    {0x5C4, 0x5C5, Mn}, {0x5C6, 0x5C6, Po}, {0x5C7, 0x5C7, Mn}, {0x5D0, 0x5EA, Lo}, {0x5EF, 0x5F2, Lo},
    {0x5F3, 0x5F4, Po}, {0x600, 0x605, Cf}, {0x606, 0x608, Sm}, {0x609, 0x60A, Po}, {0x60B, 0x60B, Sc},
    {0x60C, 0x60D, Po}, {0x60E, 0x60F, So}, {0x610, 0x61A, Mn}, {0x61B, 0x61B, Po}, {0x61C, 0x61C, Cf},
    {0x61D, 0x61F, Po}, {0x620, 0x63F, Lo}, {0x640, 0x640, Lm}, {0x641, 0x64A, Lo}, {0x64B, 0x65F, Mn},
    {0x660, 0x669, Nd}, {0x66A, 0x66D, Po}, {0x66E, 0x66F, Lo}, {0x670, 0x670, Mn}, {0x671, 0x6D3, Lo},
    {0x6D4, 0x6D4, Po}, {0x6D5, 0x6D5, Lo}, {0x6D6, 0x6DC, Mn}, {0x6DD, 0x6DD, Cf}, {0x6DE, 0x6DE, So},
    {0x6DF, 0x6E4, Mn}, {0x6E5, 0x6E6, Lm}, {0x6E7, 0x6E8, Mn}, {0x6E9, 0x6E9, So}, {0x6EA, 0x6ED, Mn},
    {0x6EE, 0x6EF, Lo}, {0x6F0, 0x6F9, Nd}, {0x6FA, 0x6FC, Lo}, {0x6FD, 0x6FE, So}, {0x6FF, 0x6FF, Lo},
    {0x700, 0x70D, Po}, {0x70F, 0x70F, Cf}, {0x710, 0x710, Lo}, {0x711, 0x711, Mn}, {0x712, 0x72F, Lo},
    {0x730, 0x74A, Mn}, {0x74D, 0x7A5, Lo}, {0x7A6, 0x7B0, Mn}, {0x7B1, 0x7B1, Lo}, {0x7C0, 0x7C9, Nd},
    {0x7CA, 0x7EA, Lo}, {0x7EB, 0x7F3, Mn}, {0x7F4, 0x7F5, Lm}, {0x7F6, 0x7F6, So}, {0x7F7, 0x7F9, Po},
    {0x7FA, 0x7FA, Lm}, {0x7FD, 0x7FD, Mn}, {0x7FE, 0x7FF, Sc}, {0x800, 0x815, Lo}, {0x816, 0x819, Mn},
    {0x81A, 0x81A, Lm}, {0x81B, 0x823, Mn}, {0x824, 0x824, Lm}, {0x825, 0x827, Mn}, {0x828, 0x828, Lm},
    {0x829, 0x82D, Mn}, {0x830, 0x83E, Po}, {0x840, 0x858, Lo}, {0x859, 0x85B, Mn}, {0x85E, 0x85E, Po},
    {0x860, 0x86A, Lo}, {0x870, 0x887, Lo}, {0x888, 0x888, Sk}, {0x889, 0x88E, Lo}, {0x890, 0x891, Cf},
    {0x898, 0x89F, Mn}, {0x8A0, 0x8C8, Lo}, {0x8C9, 0x8C9, Lm}, {0x8CA, 0x8E1, Mn}, {0x8E2, 0x8E2, Cf},
    {0x8E3, 0x902, Mn}, {0x903, 0x903, Mc}, {0x904, 0x939, Lo}, {0x93A, 0x93A, Mn}, {0x93B, 0x93B, Mc},
    {0x93C, 0x93C, Mn}, {0x93D, 0x93D, Lo}, {0x93E, 0x940, Mc}, {0x941, 0x948, Mn}, {0x949, 0x94C, Mc},
    {0x94D, 0x94D, Mn}, {0x94E, 0x94F, Mc}, {0x950, 0x950, Lo}, {0x951, 0x957, Mn}, {0x958, 0x961, Lo},
    {0x962, 0x963, Mn}, {0x964, 0x965, Po}, {0x966, 0x96F, Nd}, {0x970, 0x970, Po}, {0x971, 0x971, Lm},
    {0x972, 0x980, Lo}, {0x981, 0x981, Mn}, {0x982, 0x983, Mc}, {0x985, 0x98C, Lo}, {0x98F, 0x990, Lo},
    {0x993, 0x9A8, Lo}, {0x9AA, 0x9B0, Lo}, {0x9B2, 0x9B2, Lo}, {0x9B6, 0x9B9, Lo}, {0x9BC, 0x9BC, Mn},
    {0x9BD, 0x9BD, Lo}, {0x9BE, 0x9C0, Mc}, {0x9C1, 0x9C4, Mn}, {0x9C7, 0x9C8, Mc}, {0x9CB, 0x9CC, Mc},
    {0x9CD, 0x9CD, Mn}, {0x9CE, 0x9CE, Lo}, {0x9D7, 0x9D7, Mc}, {0x9DC, 0x9DD, Lo}, {0x9DF, 0x9E1, Lo},
    {0x9E2, 0x9E3, Mn}, {0x9E6, 0x9EF, Nd}, {0x9F0, 0x9F1, Lo}, {0x9F2, 0x9F3, Sc}, {0x9F4, 0x9F9, No},
    {0x9FA, 0x9FA, So}, {0x9FB, 0x9FB, Sc}, {0x9FC, 0x9FC, Lo}, {0x9FD, 0x9FD, Po}, {0x9FE, 0x9FE, Mn},
    {0xA01, 0xA02, Mn}, {0xA03, 0xA03, Mc}, {0xA05, 0xA0A, Lo}, {0xA0F, 0xA10, Lo}, {0xA13, 0xA28, Lo},
    {0xA2A, 0xA30, Lo}, {0xA32, 0xA33, Lo}, {0xA35, 0xA36, Lo}, {0xA38, 0xA39, Lo}, {0xA3C, 0xA3C, Mn},
    {0xA3E, 0xA40, Mc}, {0xA41, 0xA42, Mn}, {0xA47, 0xA48, Mn}, {0xA4B, 0xA4D, Mn}, {0xA51, 0xA51, Mn},
    {0xA59, 0xA5C, Lo}, {0xA5E, 0xA5E, Lo}, {0xA66, 0xA6F, Nd}, {0xA70, 0xA71, Mn}, {0xA72, 0xA74, Lo},
    {0xA75, 0xA75, Mn}, {0xA76, 0xA76, Po}, {0xA81, 0xA82, Mn}, {0xA83, 0xA83, Mc}, {0xA85, 0xA8D, Lo},
    {0xA8F, 0xA91, Lo}, {0xA93, 0xAA8, Lo}, {0xAAA, 0xAB0, Lo}, {0xAB2, 0xAB3, Lo}, {0xAB5, 0xAB9, Lo},
    {0xABC, 0xABC, Mn}, {0xABD, 0xABD, Lo}, {0xABE, 0xAC0, Mc}, {0xAC1, 0xAC5, Mn}, {0xAC7, 0xAC8, Mn},
    {0xAC9, 0xAC9, Mc}, {0xACB, 0xACC, Mc}, {0xACD, 0xACD, Mn}, {0xAD0, 0xAD0, Lo}, {0xAE0, 0xAE1, Lo},
    {0xAE2, 0xAE3, Mn}, {0xAE6, 0xAEF, Nd}, {0xAF0, 0xAF0, Po}, {0xAF1, 0xAF1, Sc}, {0xAF9, 0xAF9, Lo},
    {0xAFA, 0xAFF, Mn}, {0xB01, 0xB01, Mn}, {0xB02, 0xB03, Mc}, {0xB05, 0xB0C, Lo}, {0xB0F, 0xB10, Lo},
    {0xB13, 0xB28, Lo}, {0xB2A, 0xB30, Lo}, {0xB32, 0xB33, Lo}, {0xB35, 0xB39, Lo}, {0xB3C, 0xB3C, Mn},
    {0xB3D, 0xB3D, Lo}, {0xB3E, 0xB3E, Mc}, {0xB3F, 0xB3F, Mn}, {0xB40, 0xB40, Mc}, {0xB41, 0xB44, Mn},
    {0xB47, 0xB48, Mc}, {0xB4B, 0xB4C, Mc}, {0xB4D, 0xB4D, Mn}, {0xB55, 0xB56, Mn}, {0xB57, 0xB57, Mc},
    {0xB5C, 0xB5D, Lo}, {0xB5F, 0xB61, Lo}, {0xB62, 0xB63, Mn}, {0xB66, 0xB6F, Nd}, {0xB70, 0xB70, So},
    {0xB71, 0xB71, Lo}, {0xB72, 0xB77, No}, {0xB82, 0xB82, Mn}, {0xB83, 0xB83, Lo}, {0xB85, 0xB8A, Lo},
    {0xB8E, 0xB90, Lo}, {0xB92, 0xB95, Lo}, {0xB99, 0xB9A, Lo}, {0xB9C, 0xB9C, Lo}, {0xB9E, 0xB9F, Lo},
    {0xBA3, 0xBA4, Lo}, {0xBA8, 0xBAA, Lo}, {0xBAE, 0xBB9, Lo}, {0xBBE, 0xBBF, Mc}, {0xBC0, 0xBC0, Mn},
    {0xBC1, 0xBC2, Mc}, {0xBC6, 0xBC8, Mc}, {0xBCA, 0xBCC, Mc}, {0xBCD, 0xBCD, Mn}, {0xBD0, 0xBD0, Lo},
    {0xBD7, 0xBD7, Mc}, {0xBE6, 0xBEF, Nd}, {0xBF0, 0xBF2, No}, {0xBF3, 0xBF8, So}, {0xBF9, 0xBF9, Sc},
    {0xBFA, 0xBFA, So}, {0xC00, 0xC00, Mn}, {0xC01, 0xC03, Mc}, {0xC04, 0xC04, Mn}, {0xC05, 0xC0C, Lo},
    {0xC0E, 0xC10, Lo}, {0xC12, 0xC28, Lo}, {0xC2A, 0xC39, Lo}, {0xC3C, 0xC3C, Mn}, {0xC3D, 0xC3D, Lo},
    {0xC3E, 0xC40, Mn}, {0xC41, 0xC44, Mc}, {0xC46, 0xC48, Mn}, {0xC4A, 0xC4D, Mn}, {0xC55, 0xC56, Mn},
    {0xC58, 0xC5A, Lo}, {0xC5D, 0xC5D, Lo}, {0xC60, 0xC61, Lo}, {0xC62, 0xC63, Mn}, {0xC66, 0xC6F, Nd},
    {0xC77, 0xC77, Po}, {0xC78, 0xC7E, No}, {0xC7F, 0xC7F, So}, {0xC80, 0xC80, Lo}, {0xC81, 0xC81, Mn},
    {0xC82, 0xC83, Mc}, {0xC84, 0xC84, Po}, {0xC85, 0xC8C, Lo}, {0xC8E, 0xC90, Lo}, {0xC92, 0xCA8, Lo},
    {0xCAA, 0xCB3, Lo}, {0xCB5, 0xCB9, Lo}, {0xCBC, 0xCBC, Mn}, {0xCBD, 0xCBD, Lo}, {0xCBE, 0xCBE, Mc},
    {0xCBF, 0xCBF, Mn}, {0xCC0, 0xCC4, Mc}, {0xCC6, 0xCC6, Mn}, {0xCC7, 0xCC8, Mc}, {0xCCA, 0xCCB, Mc},
    {0xCCC, 0xCCD, Mn}, {0xCD5, 0xCD6, Mc}, {0xCDD, 0xCDE, Lo}, {0xCE0, 0xCE1, Lo}, {0xCE2, 0xCE3, Mn},
    {0xCE6, 0xCEF, Nd}, {0xCF1, 0xCF2, Lo}, {0xD00, 0xD01, Mn}, {0xD02, 0xD03, Mc}, {0xD04, 0xD0C, Lo},
    {0xD0E, 0xD10, Lo}, {0xD12, 0xD3A, Lo}, {0xD3B, 0xD3C, Mn}, {0xD3D, 0xD3D, Lo}, {0xD3E, 0xD40, Mc},
    {0xD41, 0xD44, Mn}, {0xD46, 0xD48, Mc}, {0xD4A, 0xD4C, Mc}, {0xD4D, 0xD4D, Mn}, {0xD4E, 0xD4E, Lo},
    {0xD4F, 0xD4F, So}, {0xD54, 0xD56, Lo}, {0xD57, 0xD57, Mc}, {0xD58, 0xD5E, No}, {0xD5F, 0xD61, Lo},
    {0xD62, 0xD63, Mn}, {0xD66, 0xD6F, Nd}, {0xD70, 0xD78, No}, {0xD79, 0xD79, So}, {0xD7A, 0xD7F, Lo},
    {0xD81, 0xD81, Mn}, {0xD82, 0xD83, Mc}, {0xD85, 0xD96, Lo}, {0xD9A, 0xDB1, Lo}, {0xDB3, 0xDBB, Lo},
    {0xDBD, 0xDBD, Lo}, {0xDC0, 0xDC6, Lo}, {0xDCA, 0xDCA, Mn}, {0xDCF, 0xDD1, Mc}, {0xDD2, 0xDD4, Mn},
    {0xDD6, 0xDD6, Mn}, {0xDD8, 0xDDF, Mc}, {0xDE6, 0xDEF, Nd}, {0xDF2, 0xDF3, Mc}, {0xDF4, 0xDF4, Po},
    {0xE01, 0xE30, Lo}, {0xE31, 0xE31, Mn}, {0xE32, 0xE33, Lo}, {0xE34, 0xE3A, Mn}, {0xE3F, 0xE3F, Sc},
    {0xE40, 0xE45, Lo}, {0xE46, 0xE46, Lm}, {0xE47, 0xE4E, Mn}, {0xE4F, 0xE4F, Po}, {0xE50, 0xE59, Nd},
    {0xE5A, 0xE5B, Po}, {0xE81, 0xE82, Lo}, {0xE84, 0xE84, Lo}, {0xE86, 0xE8A, Lo}, {0xE8C, 0xEA3, Lo},
    {0xEA5, 0xEA5, Lo}, {0xEA7, 0xEB0, Lo}, {0xEB1, 0xEB1, Mn}, {0xEB2, 0xEB3, Lo}, {0xEB4, 0xEBC, Mn},
    {0xEBD, 0xEBD, Lo}, {0xEC0, 0xEC4, Lo}, {0xEC6, 0xEC6, Lm}, {0xEC8, 0xECD, Mn}, {0xED0, 0xED9, Nd},
    {0xEDC, 0xEDF, Lo}, {0xF00, 0xF00, Lo}, {0xF01, 0xF03, So}, {0xF04, 0xF12, Po}, {0xF13, 0xF13, So},
    {0xF14, 0xF14, Po}, {0xF15, 0xF17, So}, {0xF18, 0xF19, Mn}, {0xF1A, 0xF1F, So}, {0xF20, 0xF29, Nd},
    {0xF2A, 0xF33, No}, {0xF34, 0xF34, So}, {0xF35, 0xF35, Mn}, {0xF36, 0xF36, So}, {0xF37, 0xF37, Mn},
    {0xF38, 0xF38, So}, {0xF39, 0xF39, Mn}, {0xF3A, 0xF3A, Ps}, {0xF3B, 0xF3B, Pe}, {0xF3C, 0xF3C, Ps},
    {0xF3D, 0xF3D, Pe}, {0xF3E, 0xF3F, Mc}, {0xF40, 0xF47, Lo}, {0xF49, 0xF6C, Lo}, {0xF71, 0xF7E, Mn},
    {0xF7F, 0xF7F, Mc}, {0xF80, 0xF84, Mn}, {0xF85, 0xF85, Po}, {0xF86, 0xF87, Mn}, {0xF88, 0xF8C, Lo},
    {0xF8D, 0xF97, Mn}, {0xF99, 0xFBC, Mn}, {0xFBE, 0xFC5, So}, {0xFC6, 0xFC6, Mn}, {0xFC7, 0xFCC, So},
    {0xFCE, 0xFCF, So}, {0xFD0, 0xFD4, Po}, {0xFD5, 0xFD8, So}, {0xFD9, 0xFDA, Po}, {0x1000, 0x102A, Lo},
    {0x102B, 0x102C, Mc}, {0x102D, 0x1030, Mn}, {0x1031, 0x1031, Mc}, {0x1032, 0x1037, Mn}, {0x1038, 0x1038, Mc},
    {0x1039, 0x103A, Mn}, {0x103B, 0x103C, Mc}, {0x103D, 0x103E, Mn}, {0x103F, 0x103F, Lo}, {0x1040, 0x1049, Nd},
    {0x104A, 0x104F, Po}, {0x1050, 0x1055, Lo}, {0x1056, 0x1057, Mc}, {0x1058, 0x1059, Mn}, {0x105A, 0x105D, Lo},
    {0x105E, 0x1060, Mn}, {0x1061, 0x1061, Lo}, {0x1062, 0x1064, Mc}, {0x1065, 0x1066, Lo}, {0x1067, 0x106D, Mc},
    {0x106E, 0x1070, Lo}, {0x1071, 0x1074, Mn}, {0x1075, 0x1081, Lo}, {0x1082, 0x1082, Mn}, {0x1083, 0x1084, Mc},
    {0x1085, 0x1086, Mn}, {0x1087, 0x108C, Mc}, {0x108D, 0x108D, Mn}, {0x108E, 0x108E, Lo}, {0x108F, 0x108F, Mc},
    {0x1090, 0x1099, Nd}, {0x109A, 0x109C, Mc}, {0x109D, 0x109D, Mn}, {0x109E, 0x109F, So}, {0x10A0, 0x10C5, Lu},
    {0x10C7, 0x10C7, Lu}, {0x10CD, 0x10CD, Lu}, {0x10D0, 0x10FA, Ll}, {0x10FB, 0x10FB, Po}, {0x10FC, 0x10FC, Lm},
    {0x10FD, 0x10FF, Ll}, {0x1100, 0x1248, Lo}, {0x124A, 0x124D, Lo}, {0x1250, 0x1256, Lo}, {0x1258, 0x1258, Lo},
    {0x125A, 0x125D, Lo}, {0x1260, 0x1288, Lo}, {0x128A, 0x128D, Lo}, {0x1290, 0x12B0, Lo}, {0x12B2, 0x12B5, Lo},
    {0x12B8, 0x12BE, Lo}, {0x12C0, 0x12C0, Lo}, {0x12C2, 0x12C5, Lo}, {0x12C8, 0x12D6, Lo}, {0x12D8, 0x1310, Lo},
    {0x1312, 0x1315, Lo}, {0x1318, 0x135A, Lo}, {0x135D, 0x135F, Mn}, {0x1360, 0x1368, Po}, {0x1369, 0x137C, No},
    {0x1380, 0x138F, Lo}, {0x1390, 0x1399, So}, {0x13A0, 0x13F5, Lu}, {0x13F8, 0x13FD, Ll}, {0x1400, 0x1400, Pd},
    {0x1401, 0x166C, Lo}, {0x166D, 0x166D, So}, {0x166E, 0x166E, Po}, {0x166F, 0x167F, Lo}, {0x1680, 0x1680, Zs},
    {0x1681, 0x169A, Lo}, {0x169B, 0x169B, Ps}, {0x169C, 0x169C, Pe}, {0x16A0, 0x16EA, Lo}, {0x16EB, 0x16ED, Po},
    {0x16EE, 0x16F0, Nl}, {0x16F1, 0x16F8, Lo}, {0x1700, 0x1711, Lo}, {0x1712, 0x1714, Mn}, {0x1715, 0x1715, Mc},
    {0x171F, 0x1731, Lo}, {0x1732, 0x1733, Mn}, {0x1734, 0x1734, Mc}, {0x1735, 0x1736, Po}, {0x1740, 0x1751, Lo},
    {0x1752, 0x1753, Mn}, {0x1760, 0x176C, Lo}, {0x176E, 0x1770, Lo}, {0x1772, 0x1773, Mn}, {0x1780, 0x17B3, Lo},
    {0x17B4, 0x17B5, Mn}, {0x17B6, 0x17B6, Mc}, {0x17B7, 0x17BD, Mn}, {0x17BE, 0x17C5, Mc}, {0x17C6, 0x17C6, Mn},
    {0x17C7, 0x17C8, Mc}, {0x17C9, 0x17D3, Mn}, {0x17D4, 0x17D6, Po}, {0x17D7, 0x17D7, Lm}, {0x17D8, 0x17DA, Po},
    {0x17DB, 0x17DB, Sc}, {0x17DC, 0x17DC, Lo}, {0x17DD, 0x17DD, Mn}, {0x17E0, 0x17E9, Nd}, {0x17F0, 0x17F9, No},
    {0x1800, 0x1805, Po}, {0x1806, 0x1806, Pd}, {0x1807, 0x180A, Po}, {0x180B, 0x180D, Mn}, {0x180E, 0x180E, Cf},
    {0x180F, 0x180F, Mn}, {0x1810, 0x1819, Nd}, {0x1820, 0x1842, Lo}, {0x1843, 0x1843, Lm}, {0x1844, 0x1878, Lo},
    {0x1880, 0x1884, Lo}, {0x1885, 0x1886, Mn}, {0x1887, 0x18A8, Lo}, {0x18A9, 0x18A9, Mn}, {0x18AA, 0x18AA, Lo},
    {0x18B0, 0x18F5, Lo}, {0x1900, 0x191E, Lo}, {0x1920, 0x1922, Mn}, {0x1923, 0x1926, Mc}, {0x1927, 0x1928, Mn},
    {0x1929, 0x192B, Mc}, {0x1930, 0x1931, Mc}, {0x1932, 0x1932, Mn}, {0x1933, 0x1938, Mc}, {0x1939, 0x193B, Mn},
    {0x1940, 0x1940, So}, {0x1944, 0x1945, Po}, {0x1946, 0x194F, Nd}, {0x1950, 0x196D, Lo}, {0x1970, 0x1974, Lo},
    {0x1980, 0x19AB, Lo}, {0x19B0, 0x19C9, Lo}, {0x19D0, 0x19D9, Nd}, {0x19DA, 0x19DA, No}, {0x19DE, 0x19FF, So},
    {0x1A00, 0x1A16, Lo}, {0x1A17, 0x1A18, Mn}, {0x1A19, 0x1A1A, Mc}, {0x1A1B, 0x1A1B, Mn}, {0x1A1E, 0x1A1F, Po},
    {0x1A20, 0x1A54, Lo}, {0x1A55, 0x1A55, Mc}, {0x1A56, 0x1A56, Mn}, {0x1A57, 0x1A57, Mc}, {0x1A58, 0x1A5E, Mn},
    {0x1A60, 0x1A60, Mn}, {0x1A61, 0x1A61, Mc}, {0x1A62, 0x1A62, Mn}, {0x1A63, 0x1A64, Mc}, {0x1A65, 0x1A6C, Mn},
    {0x1A6D, 0x1A72, Mc}, {0x1A73, 0x1A7C, Mn}, {0x1A7F, 0x1A7F, Mn}, {0x1A80, 0x1A89, Nd}, {0x1A90, 0x1A99, Nd},
    {0x1AA0, 0x1AA6, Po}, {0x1AA7, 0x1AA7, Lm}, {0x1AA8, 0x1AAD, Po}, {0x1AB0, 0x1ABD, Mn}, {0x1ABE, 0x1ABE, Me},
    {0x1ABF, 0x1ACE, Mn}, {0x1B00, 0x1B03, Mn}, {0x1B04, 0x1B04, Mc}, {0x1B05, 0x1B33, Lo}, {0x1B34, 0x1B34, Mn},
    {0x1B35, 0x1B35, Mc}, {0x1B36, 0x1B3A, Mn}, {0x1B3B, 0x1B3B, Mc}, {0x1B3C, 0x1B3C, Mn}, {0x1B3D, 0x1B41, Mc},
    {0x1B42, 0x1B42, Mn}, {0x1B43, 0x1B44, Mc}, {0x1B45, 0x1B4C, Lo}, {0x1B50, 0x1B59, Nd}, {0x1B5A, 0x1B60, Po},
    {0x1B61, 0x1B6A, So}, {0x1B6B, 0x1B73, Mn}, {0x1B74, 0x1B7C, So}, {0x1B7D, 0x1B7E, Po}, {0x1B80, 0x1B81, Mn},
    {0x1B82, 0x1B82, Mc}, {0x1B83, 0x1BA0, Lo}, {0x1BA1, 0x1BA1, Mc}, {0x1BA2, 0x1BA5, Mn}, {0x1BA6, 0x1BA7, Mc},
    {0x1BA8, 0x1BA9, Mn}, {0x1BAA, 0x1BAA, Mc}, {0x1BAB, 0x1BAD, Mn}, {0x1BAE, 0x1BAF, Lo}, {0x1BB0, 0x1BB9, Nd},
    {0x1BBA, 0x1BE5, Lo}, {0x1BE6, 0x1BE6, Mn}, {0x1BE7, 0x1BE7, Mc}, {0x1BE8, 0x1BE9, Mn}, {0x1BEA, 0x1BEC, Mc},
    {0x1BED, 0x1BED, Mn}, {0x1BEE, 0x1BEE, Mc}, {0x1BEF, 0x1BF1, Mn}, {0x1BF2, 0x1BF3, Mc}, {0x1BFC, 0x1BFF, Po},
    {0x1C00, 0x1C23, Lo}, {0x1C24, 0x1C2B, Mc}, {0x1C2C, 0x1C33, Mn}, {0x1C34, 0x1C35, Mc}, {0x1C36, 0x1C37, Mn},
    {0x1C3B, 0x1C3F, Po}, {0x1C40, 0x1C49, Nd}, {0x1C4D, 0x1C4F, Lo}, {0x1C50, 0x1C59, Nd}, {0x1C5A, 0x1C77, Lo},
    {0x1C78, 0x1C7D, Lm}, {0x1C7E, 0x1C7F, Po}, {0x1C80, 0x1C88, Ll}, {0x1C90, 0x1CBA, Lu}, {0x1CBD, 0x1CBF, Lu},
    {0x1CC0, 0x1CC7, Po}, {0x1CD0, 0x1CD2, Mn}, {0x1CD3, 0x1CD3, Po}, {0x1CD4, 0x1CE0, Mn}, {0x1CE1, 0x1CE1, Mc},
    {0x1CE2, 0x1CE8, Mn}, {0x1CE9, 0x1CEC, Lo}, {0x1CED, 0x1CED, Mn}, {0x1CEE, 0x1CF3, Lo}, {0x1CF4, 0x1CF4, Mn},
    {0x1CF5, 0x1CF6, Lo}, {0x1CF7, 0x1CF7, Mc}, {0x1CF8, 0x1CF9, Mn}, {0x1CFA, 0x1CFA, Lo}, {0x1D00, 0x1D2B, Ll},
    {0x1D2C, 0x1D6A, Lm}, {0x1D6B, 0x1D77, Ll}, {0x1D78, 0x1D78, Lm}, {0x1D79, 0x1D9A, Ll}, {0x1D9B, 0x1DBF, Lm},
    {0x1DC0, 0x1DFF, Mn}, {0x1E00, 0x1E00, Lu}, {0x1E01, 0x1E01, Ll}, {0x1E02, 0x1E02, Lu}, {0x1E03, 0x1E03, Ll},
    {0x1E04, 0x1E04, Lu}, {0x1E05, 0x1E05, Ll}, {0x1E06, 0x1E06, Lu}, {0x1E07, 0x1E07, Ll}, {0x1E08, 0x1E08, Lu},
    {0x1E09, 0x1E09, Ll}, {0x1E0A, 0x1E0A, Lu}, {0x1E0B, 0x1E0B, Ll}, {0x1E0C, 0x1E0C, Lu}, {0x1E0D, 0x1E0D, Ll},
    {0x1E0E, 0x1E0E, Lu}, {0x1E0F, 0x1E0F, Ll}, {0x1E10, 0x1E10, Lu}, {0x1E11, 0x1E11, Ll}, {0x1E12, 0x1E12, Lu},
    {0x1E13, 0x1E13, Ll}, {0x1E14, 0x1E14, Lu}, {0x1E15, 0x1E15, Ll}, {0x1E16, 0x1E16, Lu}, {0x1E17, 0x1E17, Ll},
    {0x1E18, 0x1E18, Lu}, {0x1E19, 0x1E19, Ll}, {0x1E1A, 0x1E1A, Lu}, {0x1E1B, 0x1E1B, Ll}, {0x1E1C, 0x1E1C, Lu},
    {0x1E1D, 0x1E1D, Ll}, {0x1E1E, 0x1E1E, Lu}, {0x1E1F, 0x1E1F, Ll}, {0x1E20, 0x1E20, Lu}, {0x1E21, 0x1E21, Ll},
    {0x1E22, 0x1E22, Lu}, {0x1E23, 0x1E23, Ll}, {0x1E24, 0x1E24, Lu}, {0x1E25, 0x1E25, Ll}, {0x1E26, 0x1E26, Lu},
    {0x1E27, 0x1E27, Ll}, {0x1E28, 0x1E28, Lu}, {0x1E29, 0x1E29, Ll}, {0x1E2A, 0x1E2A, Lu}, {0x1E2B, 0x1E2B, Ll},
    {0x1E2C, 0x1E2C, Lu}, {0x1E2D, 0x1E2D, Ll}, {0x1E2E, 0x1E2E, Lu}, {0x1E2F, 0x1E2F, Ll}, {0x1E30, 0x1E30, Lu},
    {0x1E31, 0x1E31, Ll}, {0x1E32, 0x1E32, Lu}, {0x1E33, 0x1E33, Ll}, {0x1E34, 0x1E34, Lu}, {0x1E35, 0x1E35, Ll},
    {0x1E36, 0x1E36, Lu}, {0x1E37, 0x1E37, Ll}, {0x1E38, 0x1E38, Lu}, {0x1E39, 0x1E39, Ll}, {0x1E3A, 0x1E3A, Lu},
    {0x1E3B, 0x1E3B, Ll}, {0x1E3C, 0x1E3C, Lu}, {0x1E3D, 0x1E3D, Ll}, {0x1E3E, 0x1E3E, Lu}, {0x1E3F, 0x1E3F, Ll},
    {0x1E40, 0x1E40, Lu}, {0x1E41, 0x1E41, Ll}, {0x1E42, 0x1E42, Lu}, {0x1E43, 0x1E43, Ll}, {0x1E44, 0x1E44, Lu},
    {0x1E45, 0x1E45, Ll}, {0x1E46, 0x1E46, Lu}, {0x1E47, 0x1E47, Ll}, {0x1E48, 0x1E48, Lu}, {0x1E49, 0x1E49, Ll},
    {0x1E4A, 0x1E4A, Lu}, {0x1E4B, 0x1E4B, Ll}, {0x1E4C, 0x1E4C, Lu}, {0x1E4D, 0x1E4D, Ll}, {0x1E4E, 0x1E4E, Lu},
    {0x1E4F, 0x1E4F, Ll}, {0x1E50, 0x1E50, Lu}, {0x1E51, 0x1E51, Ll}, {0x1E52, 0x1E52, Lu}, {0x1E53, 0x1E53, Ll},
    {0x1E54, 0x1E54, Lu}, {0x1E55, 0x1E55, Ll}, {0x1E56, 0x1E56, Lu}, {0x1E57, 0x1E57, Ll}, {0x1E58, 0x1E58, Lu},
    {0x1E59, 0x1E59, Ll}, {0x1E5A, 0x1E5A, Lu}, {0x1E5B, 0x1E5B, Ll}, {0x1E5C, 0x1E5C, Lu}, {0x1E5D, 0x1E5D, Ll},
    {0x1E5E, 0x1E5E, Lu}, {0x1E5F, 0x1E5F, Ll}, {0x1E60, 0x1E60, Lu}, {0x1E61, 0x1E61, Ll}, {0x1E62, 0x1E62, Lu},
    {0x1E63, 0x1E63, Ll}, {0x1E64, 0x1E64, Lu}, {0x1E65, 0x1E65, Ll}, {0x1E66, 0x1E66, Lu}, {0x1E67, 0x1E67, Ll},
    {0x1E68, 0x1E68, Lu}, {0x1E69, 0x1E69, Ll}, {0x1E6A, 0x1E6A, Lu}, {0x1E6B, 0x1E6B, Ll}, {0x1E6C, 0x1E6C, Lu},
    {0x1E6D, 0x1E6D, Ll}, {0x1E6E, 0x1E6E, Lu}, {0x1E6F, 0x1E6F, Ll}, {0x1E70, 0x1E70, Lu}, {0x1E71, 0x1E71, Ll},
    {0x1E72, 0x1E72, Lu}, {0x1E73, 0x1E73, Ll}, {0x1E74, 0x1E74, Lu}, {0x1E75, 0x1E75, Ll}, {0x1E76, 0x1E76, Lu},
    {0x1E77, 0x1E77, Ll}, {0x1E78, 0x1E78, Lu}, {0x1E79, 0x1E79, Ll}, {0x1E7A, 0x1E7A, Lu}, {0x1E7B, 0x1E7B, Ll},
    {0x1E7C, 0x1E7C, Lu}, {0x1E7D, 0x1E7D, Ll}, {0x1E7E, 0x1E7E, Lu}, {0x1E7F, 0x1E7F, Ll}, {0x1E80, 0x1E80, Lu},
    {0x1E81, 0x1E81, Ll}, {0x1E82, 0x1E82, Lu}, {0x1E83, 0x1E83, Ll}, {0x1E84, 0x1E84, Lu}, {0x1E85, 0x1E85, Ll},
    {0x1E86, 0x1E86, Lu}, {0x1E87, 0x1E87, Ll}, {0x1E88, 0x1E88, Lu}, {0x1E89, 0x1E89, Ll}, {0x1E8A, 0x1E8A, Lu},
    {0x1E8B, 0x1E8B, Ll}, {0x1E8C, 0x1E8C, Lu}, {0x1E8D, 0x1E8D, Ll}, {0x1E8E, 0x1E8E, Lu}, {0x1E8F, 0x1E8F, Ll},
    {0x1E90, 0x1E90, Lu}, {0x1E91, 0x1E91, Ll}, {0x1E92, 0x1E92, Lu}, {0x1E93, 0x1E93, Ll}, {0x1E94, 0x1E94, Lu},
    {0x1E95, 0x1E9D, Ll}, {0x1E9E, 0x1E9E, Lu}, {0x1E9F, 0x1E9F, Ll}, {0x1EA0, 0x1EA0, Lu}, {0x1EA1, 0x1EA1, Ll},
    {0x1EA2, 0x1EA2, Lu}, {0x1EA3, 0x1EA3, Ll}, {0x1EA4, 0x1EA4, Lu}, {0x1EA5, 0x1EA5, Ll}, {0x1EA6, 0x1EA6, Lu},
    {0x1EA7, 0x1EA7, Ll}, {0x1EA8, 0x1EA8, Lu}, {0x1EA9, 0x1EA9, Ll}, {0x1EAA, 0x1EAA, Lu}, {0x1EAB, 0x1EAB, Ll},
    {0x1EAC, 0x1EAC, Lu}, {0x1EAD, 0x1EAD, Ll}, {0x1EAE, 0x1EAE, Lu}, {0x1EAF, 0x1EAF, Ll}, {0x1EB0, 0x1EB0, Lu},
    {0x1EB1, 0x1EB1, Ll}, {0x1EB2, 0x1EB2, Lu}, {0x1EB3, 0x1EB3, Ll}, {0x1EB4, 0x1EB4, Lu}, {0x1EB5, 0x1EB5, Ll},
    {0x1EB6, 0x1EB6, Lu}, {0x1EB7, 0x1EB7, Ll}, {0x1EB8, 0x1EB8, Lu}, {0x1EB9, 0x1EB9, Ll}, {0x1EBA, 0x1EBA, Lu},
    {0x1EBB, 0x1EBB, Ll}, {0x1EBC, 0x1EBC, Lu}, {0x1EBD, 0x1EBD, Ll}, {0x1EBE, 0x1EBE, Lu}, {0x1EBF, 0x1EBF, Ll},
    {0x1EC0, 0x1EC0, Lu}, {0x1EC1, 0x1EC1, Ll}, {0x1EC2, 0x1EC2, Lu}, {0x1EC3, 0x1EC3, Ll}, {0x1EC4, 0x1EC4, Lu},
    {0x1EC5, 0x1EC5, Ll}, {0x1EC6, 0x1EC6, Lu}, {0x1EC7, 0x1EC7, Ll}, {0x1EC8, 0x1EC8, Lu}, {0x1EC9, 0x1EC9, Ll},
    {0x1ECA, 0x1ECA, Lu}, {0x1ECB, 0x1ECB, Ll}, {0x1ECC, 0x1ECC, Lu}, {0x1ECD, 0x1ECD, Ll}, {0x1ECE, 0x1ECE, Lu},
    {0x1ECF, 0x1ECF, Ll}, {0x1ED0, 0x1ED0, Lu}, {0x1ED1, 0x1ED1, Ll}, {0x1ED2, 0x1ED2, Lu}, {0x1ED3, 0x1ED3, Ll},
    {0x1ED4, 0x1ED4, Lu}, {0x1ED5, 0x1ED5, Ll}, {0x1ED6, 0x1ED6, Lu}, {0x1ED7, 0x1ED7, Ll}, {0x1ED8, 0x1ED8, Lu},
    {0x1ED9, 0x1ED9, Ll}, {0x1EDA, 0x1EDA, Lu}, {0x1EDB, 0x1EDB, Ll}, {0x1EDC, 0x1EDC, Lu}, {0x1EDD, 0x1EDD, Ll},
    {0x1EDE, 0x1EDE, Lu}, {0x1EDF, 0x1EDF, Ll}, {0x1EE0, 0x1EE0, Lu}, {0x1EE1, 0x1EE1, Ll}, {0x1EE2, 0x1EE2, Lu},
    {0x1EE3, 0x1EE3, Ll}, {0x1EE4, 0x1EE4, Lu}, {0x1EE5, 0x1EE5, Ll}, {0x1EE6, 0x1EE6, Lu}, {0x1EE7, 0x1EE7, Ll},
    {0x1EE8, 0x1EE8, Lu}, {0x1EE9, 0x1EE9, Ll}, {0x1EEA, 0x1EEA, Lu}, {0x1EEB, 0x1EEB, Ll}, {0x1EEC, 0x1EEC, Lu},
    {0x1EED, 0x1EED, Ll}, {0x1EEE, 0x1EEE, Lu}, {0x1EEF, 0x1EEF, Ll}, {0x1EF0, 0x1EF0, Lu}, {0x1EF1, 0x1EF1, Ll},
    {0x1EF2, 0x1EF2, Lu}, {0x1EF3, 0x1EF3, Ll}, {0x1EF4, 0x1EF4, Lu}, {0x1EF5, 0x1EF5, Ll}, {0x1EF6, 0x1EF6, Lu},
    {0x1EF7, 0x1EF7, Ll}, {0x1EF8, 0x1EF8, Lu}, {0x1EF9, 0x1EF9, Ll}, {0x1EFA, 0x1EFA, Lu}, {0x1EFB, 0x1EFB, Ll},
    {0x1EFC, 0x1EFC, Lu}, {0x1EFD, 0x1EFD, Ll}, {0x1EFE, 0x1EFE, Lu}, {0x1EFF, 0x1F07, Ll}, {0x1F08, 0x1F0F, Lu},
    {0x1F10, 0x1F15, Ll}, {0x1F18, 0x1F1D, Lu}, {0x1F20, 0x1F27, Ll}, {0x1F28, 0x1F2F, Lu}, {0x1F30, 0x1F37, Ll},
    {0x1F38, 0x1F3F, Lu}, {0x1F40, 0x1F45, Ll}, {0x1F48, 0x1F4D, Lu}, {0x1F50, 0x1F57, Ll}, {0x1F59, 0x1F59, Lu},
    {0x1F5B, 0x1F5B, Lu}, {0x1F5D, 0x1F5D, Lu}, {0x1F5F, 0x1F5F, Lu}, {0x1F60, 0x1F67, Ll}, {0x1F68, 0x1F6F, Lu},
    {0x1F70, 0x1F7D, Ll}, {0x1F80, 0x1F87, Ll}, {0x1F88, 0x1F8F, Lt}, {0x1F90, 0x1F97, Ll}, {0x1F98, 0x1F9F, Lt},
    {0x1FA0, 0x1FA7, Ll}, {0x1FA8, 0x1FAF, Lt}, {0x1FB0, 0x1FB4, Ll}, {0x1FB6, 0x1FB7, Ll}, {0x1FB8, 0x1FBB, Lu},
    {0x1FBC, 0x1FBC, Lt}, {0x1FBD, 0x1FBD, Sk}, {0x1FBE, 0x1FBE, Ll}, {0x1FBF, 0x1FC1, Sk}, {0x1FC2, 0x1FC4, Ll},
    {0x1FC6, 0x1FC7, Ll}, {0x1FC8, 0x1FCB, Lu}, {0x1FCC, 0x1FCC, Lt}, {0x1FCD, 0x1FCF, Sk}, {0x1FD0, 0x1FD3, Ll},
    {0x1FD6, 0x1FD7, Ll}, {0x1FD8, 0x1FDB, Lu}, {0x1FDD, 0x1FDF, Sk}, {0x1FE0, 0x1FE7, Ll}, {0x1FE8, 0x1FEC, Lu},
    {0x1FED, 0x1FEF, Sk}, {0x1FF2, 0x1FF4, Ll}, {0x1FF6, 0x1FF7, Ll}, {0x1FF8, 0x1FFB, Lu}, {0x1FFC, 0x1FFC, Lt},
    {0x1FFD, 0x1FFE, Sk}, {0x2000, 0x200A, Zs}, {0x200B, 0x200F, Cf}, {0x2010, 0x2015, Pd}, {0x2016, 0x2017, Po},
    {0x2018, 0x2018, Pi}, {0x2019, 0x2019, Pf}, {0x201A, 0x201A, Ps}, {0x201B, 0x201C, Pi}, {0x201D, 0x201D, Pf},
    {0x201E, 0x201E, Ps}, {0x201F, 0x201F, Pi}, {0x2020, 0x2027, Po}, {0x2028, 0x2028, Zl}, {0x2029, 0x2029, Zp},
    {0x202A, 0x202E, Cf}, {0x202F, 0x202F, Zs}, {0x2030, 0x2038, Po}, {0x2039, 0x2039, Pi}, {0x203A, 0x203A, Pf},
    {0x203B, 0x203E, Po}, {0x203F, 0x2040, Pc}, {0x2041, 0x2043, Po}, {0x2044, 0x2044, Sm}, {0x2045, 0x2045, Ps},
    {0x2046, 0x2046, Pe}, {0x2047, 0x2051, Po}, {0x2052, 0x2052, Sm}, {0x2053, 0x2053, Po}, {0x2054, 0x2054, Pc},
    {0x2055, 0x205E, Po}, {0x205F, 0x205F, Zs}, {0x2060, 0x2064, Cf}, {0x2066, 0x206F, Cf}, {0x2070, 0x2070, No},
    {0x2071, 0x2071, Lm}, {0x2074, 0x2079, No}, {0x207A, 0x207C, Sm}, {0x207D, 0x207D, Ps}, {0x207E, 0x207E, Pe},
    {0x207F, 0x207F, Lm}, {0x2080, 0x2089, No}, {0x208A, 0x208C, Sm}, {0x208D, 0x208D, Ps}, {0x208E, 0x208E, Pe},
    {0x2090, 0x209C, Lm}, {0x20A0, 0x20C0, Sc}, {0x20D0, 0x20DC, Mn}, {0x20DD, 0x20E0, Me}, {0x20E1, 0x20E1, Mn},
    {0x20E2, 0x20E4, Me}, {0x20E5, 0x20F0, Mn}, {0x2100, 0x2101, So}, {0x2102, 0x2102, Lu}, {0x2103, 0x2106, So},
    {0x2107, 0x2107, Lu}, {0x2108, 0x2109, So}, {0x210A, 0x210A, Ll}, {0x210B, 0x210D, Lu}, {0x210E, 0x210F, Ll},
    {0x2110, 0x2112, Lu}, {0x2113, 0x2113, Ll}, {0x2114, 0x2114, So}, {0x2115, 0x2115, Lu}, {0x2116, 0x2117, So},
    {0x2118, 0x2118, Sm}, {0x2119, 0x211D, Lu}, {0x211E, 0x2123, So}, {0x2124, 0x2124, Lu}, {0x2125, 0x2125, So},
    {0x2126, 0x2126, Lu}, {0x2127, 0x2127, So}, {0x2128, 0x2128, Lu}, {0x2129, 0x2129, So}, {0x212A, 0x212D, Lu},
    {0x212E, 0x212E, So}, {0x212F, 0x212F, Ll}, {0x2130, 0x2133, Lu}, {0x2134, 0x2134, Ll}, {0x2135, 0x2138, Lo},
    {0x2139, 0x2139, Ll}, {0x213A, 0x213B, So}, {0x213C, 0x213D, Ll}, {0x213E, 0x213F, Lu}, {0x2140, 0x2144, Sm},
    {0x2145, 0x2145, Lu}, {0x2146, 0x2149, Ll}, {0x214A, 0x214A, So}, {0x214B, 0x214B, Sm}, {0x214C, 0x214D, So},
    {0x214E, 0x214E, Ll}, {0x214F, 0x214F, So}, {0x2150, 0x215F, No}, {0x2160, 0x2182, Nl}, {0x2183, 0x2183, Lu},
    {0x2184, 0x2184, Ll}, {0x2185, 0x2188, Nl}, {0x2189, 0x2189, No}, {0x218A, 0x218B, So}, {0x2190, 0x2194, Sm},
    {0x2195, 0x2199, So}, {0x219A, 0x219B, Sm}, {0x219C, 0x219F, So}, {0x21A0, 0x21A0, Sm}, {0x21A1, 0x21A2, So},
    {0x21A3, 0x21A3, Sm}, {0x21A4, 0x21A5, So}, {0x21A6, 0x21A6, Sm}, {0x21A7, 0x21AD, So}, {0x21AE, 0x21AE, Sm},
    {0x21AF, 0x21CD, So}, {0x21CE, 0x21CF, Sm}, {0x21D0, 0x21D1, So}, {0x21D2, 0x21D2, Sm}, {0x21D3, 0x21D3, So},
    {0x21D4, 0x21D4, Sm}, {0x21D5, 0x21F3, So}, {0x21F4, 0x22FF, Sm}, {0x2300, 0x2307, So}, {0x2308, 0x2308, Ps},
    {0x2309, 0x2309, Pe}, {0x230A, 0x230A, Ps}, {0x230B, 0x230B, Pe}, {0x230C, 0x231F, So}, {0x2320, 0x2321, Sm},
    {0x2322, 0x2328, So}, {0x2329, 0x2329, Ps}, {0x232A, 0x232A, Pe}, {0x232B, 0x237B, So}, {0x237C, 0x237C, Sm},
    {0x237D, 0x239A, So}, {0x239B, 0x23B3, Sm}, {0x23B4, 0x23DB, So}, {0x23DC, 0x23E1, Sm}, {0x23E2, 0x2426, So},
    {0x2440, 0x244A, So}, {0x2460, 0x249B, No}, {0x249C, 0x24E9, So}, {0x24EA, 0x24FF, No}, {0x2500, 0x25B6, So},
    {0x25B7, 0x25B7, Sm}, {0x25B8, 0x25C0, So}, {0x25C1, 0x25C1, Sm}, {0x25C2, 0x25F7, So}, {0x25F8, 0x25FF, Sm},
    {0x2600, 0x266E, So}, {0x266F, 0x266F, Sm}, {0x2670, 0x2767, So}, {0x2768, 0x2768, Ps}, {0x2769, 0x2769, Pe},
    {0x276A, 0x276A, Ps}, {0x276B, 0x276B, Pe}, {0x276C, 0x276C, Ps}, {0x276D, 0x276D, Pe}, {0x276E, 0x276E, Ps},
    {0x276F, 0x276F, Pe}, {0x2770, 0x2770, Ps}, {0x2771, 0x2771, Pe}, {0x2772, 0x2772, Ps}, {0x2773, 0x2773, Pe},
    {0x2774, 0x2774, Ps}, {0x2775, 0x2775, Pe}, {0x2776, 0x2793, No}, {0x2794, 0x27BF, So}, {0x27C0, 0x27C4, Sm},
    {0x27C5, 0x27C5, Ps}, {0x27C6, 0x27C6, Pe}, {0x27C7, 0x27E5, Sm}, {0x27E6, 0x27E6, Ps}, {0x27E7, 0x27E7, Pe},
    {0x27E8, 0x27E8, Ps}, {0x27E9, 0x27E9, Pe}, {0x27EA, 0x27EA, Ps}, {0x27EB, 0x27EB, Pe}, {0x27EC, 0x27EC, Ps},
    {0x27ED, 0x27ED, Pe}, {0x27EE, 0x27EE, Ps}, {0x27EF, 0x27EF, Pe}, {0x27F0, 0x27FF, Sm}, {0x2800, 0x28FF, So},
    {0x2900, 0x2982, Sm}, {0x2983, 0x2983, Ps}, {0x2984, 0x2984, Pe}, {0x2985, 0x2985, Ps}, {0x2986, 0x2986, Pe},
    {0x2987, 0x2987, Ps}, {0x2988, 0x2988, Pe}, {0x2989, 0x2989, Ps}, {0x298A, 0x298A, Pe}, {0x298B, 0x298B, Ps},
    {0x298C, 0x298C, Pe}, {0x298D, 0x298D, Ps}, {0x298E, 0x298E, Pe}, {0x298F, 0x298F, Ps}, {0x2990, 0x2990, Pe},
    {0x2991, 0x2991, Ps}, {0x2992, 0x2992, Pe}, {0x2993, 0x2993, Ps}, {0x2994, 0x2994, Pe}, {0x2995, 0x2995, Ps},
    {0x2996, 0x2996, Pe}, {0x2997, 0x2997, Ps}, {0x2998, 0x2998, Pe}, {0x2999, 0x29D7, Sm}, {0x29D8, 0x29D8, Ps},
    {0x29D9, 0x29D9, Pe}, {0x29DA, 0x29DA, Ps}, {0x29DB, 0x29DB, Pe}, {0x29DC, 0x29FB, Sm}, {0x29FC, 0x29FC, Ps},
    {0x29FD, 0x29FD, Pe}, {0x29FE, 0x2AFF, Sm}, {0x2B00, 0x2B2F, So}, {0x2B30, 0x2B44, Sm}, {0x2B45, 0x2B46, So},
    {0x2B47, 0x2B4C, Sm}, {0x2B4D, 0x2B73, So}, {0x2B76, 0x2B95, So}, {0x2B97, 0x2BFF, So}, {0x2C00, 0x2C2F, Lu},
    {0x2C30, 0x2C5F, Ll}, {0x2C60, 0x2C60, Lu}, {0x2C61, 0x2C61, Ll}, {0x2C62, 0x2C64, Lu}, {0x2C65, 0x2C66, Ll},
    {0x2C67, 0x2C67, Lu}, {0x2C68, 0x2C68, Ll}, {0x2C69, 0x2C69, Lu}, {0x2C6A, 0x2C6A, Ll}, {0x2C6B, 0x2C6B, Lu},
    {0x2C6C, 0x2C6C, Ll}, {0x2C6D, 0x2C70, Lu}, {0x2C71, 0x2C71, Ll}, {0x2C72, 0x2C72, Lu}, {0x2C73, 0x2C74, Ll},
    {0x2C75, 0x2C75, Lu}, {0x2C76, 0x2C7B, Ll}, {0x2C7C, 0x2C7D, Lm}, {0x2C7E, 0x2C80, Lu}, {0x2C81, 0x2C81, Ll},
    {0x2C82, 0x2C82, Lu}, {0x2C83, 0x2C83, Ll}, {0x2C84, 0x2C84, Lu}, {0x2C85, 0x2C85, Ll}, {0x2C86, 0x2C86, Lu},
    {0x2C87, 0x2C87, Ll}, {0x2C88, 0x2C88, Lu}, {0x2C89, 0x2C89, Ll}, {0x2C8A, 0x2C8A, Lu}, {0x2C8B, 0x2C8B, Ll},
    {0x2C8C, 0x2C8C, Lu}, {0x2C8D, 0x2C8D, Ll}, {0x2C8E, 0x2C8E, Lu}, {0x2C8F, 0x2C8F, Ll}, {0x2C90, 0x2C90, Lu},
    {0x2C91, 0x2C91, Ll}, {0x2C92, 0x2C92, Lu}, {0x2C93, 0x2C93, Ll}, {0x2C94, 0x2C94, Lu}, {0x2C95, 0x2C95, Ll},
    {0x2C96, 0x2C96, Lu}, {0x2C97, 0x2C97, Ll}, {0x2C98, 0x2C98, Lu}, {0x2C99, 0x2C99, Ll}, {0x2C9A, 0x2C9A, Lu},
    {0x2C9B, 0x2C9B, Ll}, {0x2C9C, 0x2C9C, Lu}, {0x2C9D, 0x2C9D, Ll}, {0x2C9E, 0x2C9E, Lu}, {0x2C9F, 0x2C9F, Ll},
    {0x2CA0, 0x2CA0, Lu}, {0x2CA1, 0x2CA1, Ll}, {0x2CA2, 0x2CA2, Lu}, {0x2CA3, 0x2CA3, Ll}, {0x2CA4, 0x2CA4, Lu},
    {0x2CA5, 0x2CA5, Ll}, {0x2CA6, 0x2CA6, Lu}, {0x2CA7, 0x2CA7, Ll}, {0x2CA8, 0x2CA8, Lu}, {0x2CA9, 0x2CA9, Ll},
    {0x2CAA, 0x2CAA, Lu}, {0x2CAB, 0x2CAB, Ll}, {0x2CAC, 0x2CAC, Lu}, {0x2CAD, 0x2CAD, Ll}, {0x2CAE, 0x2CAE, Lu},
    {0x2CAF, 0x2CAF, Ll}, {0x2CB0, 0x2CB0, Lu}, {0x2CB1, 0x2CB1, Ll}, {0x2CB2, 0x2CB2, Lu}, {0x2CB3, 0x2CB3, Ll},
    {0x2CB4, 0x2CB4, Lu}, {0x2CB5, 0x2CB5, Ll}, {0x2CB6, 0x2CB6, Lu}, {0x2CB7, 0x2CB7, Ll}, {0x2CB8, 0x2CB8, Lu},
    {0x2CB9, 0x2CB9, Ll}, {0x2CBA, 0x2CBA, Lu}, {0x2CBB, 0x2CBB, Ll}, {0x2CBC, 0x2CBC, Lu}, {0x2CBD, 0x2CBD, Ll},
    {0x2CBE, 0x2CBE, Lu}, {0x2CBF, 0x2CBF, Ll}, {0x2CC0, 0x2CC0, Lu}, {0x2CC1, 0x2CC1, Ll}, {0x2CC2, 0x2CC2, Lu},
    {0x2CC3, 0x2CC3, Ll}, {0x2CC4, 0x2CC4, Lu}, {0x2CC5, 0x2CC5, Ll}, {0x2CC6, 0x2CC6, Lu}, {0x2CC7, 0x2CC7, Ll},
    {0x2CC8, 0x2CC8, Lu}, {0x2CC9, 0x2CC9, Ll}, {0x2CCA, 0x2CCA, Lu}, {0x2CCB, 0x2CCB, Ll}, {0x2CCC, 0x2CCC, Lu},
    {0x2CCD, 0x2CCD, Ll}, {0x2CCE, 0x2CCE, Lu}, {0x2CCF, 0x2CCF, Ll}, {0x2CD0, 0x2CD0, Lu}, {0x2CD1, 0x2CD1, Ll},
    {0x2CD2, 0x2CD2, Lu}, {0x2CD3, 0x2CD3, Ll}, {0x2CD4, 0x2CD4, Lu}, {0x2CD5, 0x2CD5, Ll}, {0x2CD6, 0x2CD6, Lu},
    {0x2CD7, 0x2CD7, Ll}, {0x2CD8, 0x2CD8, Lu}, {0x2CD9, 0x2CD9, Ll}, {0x2CDA, 0x2CDA, Lu}, {0x2CDB, 0x2CDB, Ll},
    {0x2CDC, 0x2CDC, Lu}, {0x2CDD, 0x2CDD, Ll}, {0x2CDE, 0x2CDE, Lu}, {0x2CDF, 0x2CDF, Ll}, {0x2CE0, 0x2CE0, Lu},
    {0x2CE1, 0x2CE1, Ll}, {0x2CE2, 0x2CE2, Lu}, {0x2CE3, 0x2CE4, Ll}, {0x2CE5, 0x2CEA, So}, {0x2CEB, 0x2CEB, Lu},
    {0x2CEC, 0x2CEC, Ll}, {0x2CED, 0x2CED, Lu}, {0x2CEE, 0x2CEE, Ll}, {0x2CEF, 0x2CF1, Mn}, {0x2CF2, 0x2CF2, Lu},
    {0x2CF3, 0x2CF3, Ll}, {0x2CF9, 0x2CFC, Po}, {0x2CFD, 0x2CFD, No}, {0x2CFE, 0x2CFF, Po}, {0x2D00, 0x2D25, Ll},
    {0x2D27, 0x2D27, Ll}, {0x2D2D, 0x2D2D, Ll}, {0x2D30, 0x2D67, Lo}, {0x2D6F, 0x2D6F, Lm}, {0x2D70, 0x2D70, Po},
    {0x2D7F, 0x2D7F, Mn}, {0x2D80, 0x2D96, Lo}, {0x2DA0, 0x2DA6, Lo}, {0x2DA8, 0x2DAE, Lo}, {0x2DB0, 0x2DB6, Lo},
    {0x2DB8, 0x2DBE, Lo}, {0x2DC0, 0x2DC6, Lo}, {0x2DC8, 0x2DCE, Lo}, {0x2DD0, 0x2DD6, Lo}, {0x2DD8, 0x2DDE, Lo},
    {0x2DE0, 0x2DFF, Mn}, {0x2E00, 0x2E01, Po}, {0x2E02, 0x2E02, Pi}, {0x2E03, 0x2E03, Pf}, {0x2E04, 0x2E04, Pi},
    {0x2E05, 0x2E05, Pf}, {0x2E06, 0x2E08, Po}, {0x2E09, 0x2E09, Pi}, {0x2E0A, 0x2E0A, Pf}, {0x2E0B, 0x2E0B, Po},
    {0x2E0C, 0x2E0C, Pi}, {0x2E0D, 0x2E0D, Pf}, {0x2E0E, 0x2E16, Po}, {0x2E17, 0x2E17, Pd}, {0x2E18, 0x2E19, Po},
    {0x2E1A, 0x2E1A, Pd}, {0x2E1B, 0x2E1B, Po}, {0x2E1C, 0x2E1C, Pi}, {0x2E1D, 0x2E1D, Pf}, {0x2E1E, 0x2E1F, Po},
    {0x2E20, 0x2E20, Pi}, {0x2E21, 0x2E21, Pf}, {0x2E22, 0x2E22, Ps}, {0x2E23, 0x2E23, Pe}, {0x2E24, 0x2E24, Ps},
    {0x2E25, 0x2E25, Pe}, {0x2E26, 0x2E26, Ps}, {0x2E27, 0x2E27, Pe}, {0x2E28, 0x2E28, Ps}, {0x2E29, 0x2E29, Pe},
    {0x2E2A, 0x2E2E, Po}, {0x2E2F, 0x2E2F, Lm}, {0x2E30, 0x2E39, Po}, {0x2E3A, 0x2E3B, Pd}, {0x2E3C, 0x2E3F, Po},
    {0x2E40, 0x2E40, Pd}, {0x2E41, 0x2E41, Po}, {0x2E42, 0x2E42, Ps}, {0x2E43, 0x2E4F, Po}, {0x2E50, 0x2E51, So},
    {0x2E52, 0x2E54, Po}, {0x2E55, 0x2E55, Ps}, {0x2E56, 0x2E56, Pe}, {0x2E57, 0x2E57, Ps}, {0x2E58, 0x2E58, Pe},
    {0x2E59, 0x2E59, Ps}, {0x2E5A, 0x2E5A, Pe}, {0x2E5B, 0x2E5B, Ps}, {0x2E5C, 0x2E5C, Pe}, {0x2E5D, 0x2E5D, Pd},
    {0x2E80, 0x2E99, So}, {0x2E9B, 0x2EF3, So}, {0x2F00, 0x2FD5, So}, {0x2FF0, 0x2FFB, So}, {0x3000, 0x3000, Zs},
    {0x3001, 0x3003, Po}, {0x3004, 0x3004, So}, {0x3005, 0x3005, Lm}, {0x3006, 0x3006, Lo}, {0x3007, 0x3007, Nl},
    {0x3008, 0x3008, Ps}, {0x3009, 0x3009, Pe}, {0x300A, 0x300A, Ps}, {0x300B, 0x300B, Pe}, {0x300C, 0x300C, Ps},
    {0x300D, 0x300D, Pe}, {0x300E, 0x300E, Ps}, {0x300F, 0x300F, Pe}, {0x3010, 0x3010, Ps}, {0x3011, 0x3011, Pe},
    {0x3012, 0x3013, So}, {0x3014, 0x3014, Ps}, {0x3015, 0x3015, Pe}, {0x3016, 0x3016, Ps}, {0x3017, 0x3017, Pe},
    {0x3018, 0x3018, Ps}, {0x3019, 0x3019, Pe}, {0x301A, 0x301A, Ps}, {0x301B, 0x301B, Pe}, {0x301C, 0x301C, Pd},
    {0x301D, 0x301D, Ps}, {0x301E, 0x301F, Pe}, {0x3020, 0x3020, So}, {0x3021, 0x3029, Nl}, {0x302A, 0x302D, Mn},
    {0x302E, 0x302F, Mc}, {0x3030, 0x3030, Pd}, {0x3031, 0x3035, Lm}, {0x3036, 0x3037, So}, {0x3038, 0x303A, Nl},
    {0x303B, 0x303B, Lm}, {0x303C, 0x303C, Lo}, {0x303D, 0x303D, Po}, {0x303E, 0x303F, So}, {0x3041, 0x3096, Lo},
    {0x3099, 0x309A, Mn}, {0x309B, 0x309C, Sk}, {0x309D, 0x309E, Lm}, {0x309F, 0x309F, Lo}, {0x30A0, 0x30A0, Pd},
    {0x30A1, 0x30FA, Lo}, {0x30FB, 0x30FB, Po}, {0x30FC, 0x30FE, Lm}, {0x30FF, 0x30FF, Lo}, {0x3105, 0x312F, Lo},
    {0x3131, 0x318E, Lo}, {0x3190, 0x3191, So}, {0x3192, 0x3195, No}, {0x3196, 0x319F, So}, {0x31A0, 0x31BF, Lo},
    {0x31C0, 0x31E3, So}, {0x31F0, 0x31FF, Lo}, {0x3200, 0x321E, So}, {0x3220, 0x3229, No}, {0x322A, 0x3247, So},
    {0x3248, 0x324F, No}, {0x3250, 0x3250, So}, {0x3251, 0x325F, No}, {0x3260, 0x327F, So}, {0x3280, 0x3289, No},
    {0x328A, 0x32B0, So}, {0x32B1, 0x32BF, No}, {0x32C0, 0x33FF, So}, {0x3400, 0x4DBF, Lo}, {0x4DC0, 0x4DFF, So},
    {0x4E00, 0xA014, Lo}, {0xA015, 0xA015, Lm}, {0xA016, 0xA48C, Lo}, {0xA490, 0xA4C6, So}, {0xA4D0, 0xA4F7, Lo},
    {0xA4F8, 0xA4FD, Lm}, {0xA4FE, 0xA4FF, Po}, {0xA500, 0xA60B, Lo}, {0xA60C, 0xA60C, Lm}, {0xA60D, 0xA60F, Po},
    {0xA610, 0xA61F, Lo}, {0xA620, 0xA629, Nd}, {0xA62A, 0xA62B, Lo}, {0xA640, 0xA640, Lu}, {0xA641, 0xA641, Ll},
    {0xA642, 0xA642, Lu}, {0xA643, 0xA643, Ll}, {0xA644, 0xA644, Lu}, {0xA645, 0xA645, Ll}, {0xA646, 0xA646, Lu},
    {0xA647, 0xA647, Ll}, {0xA648, 0xA648, Lu}, {0xA649, 0xA649, Ll}, {0xA64A, 0xA64A, Lu}, {0xA64B, 0xA64B, Ll},
    {0xA64C, 0xA64C, Lu}, {0xA64D, 0xA64D, Ll}, {0xA64E, 0xA64E, Lu}, {0xA64F, 0xA64F, Ll}, {0xA650, 0xA650, Lu},
    {0xA651, 0xA651, Ll}, {0xA652, 0xA652, Lu}, {0xA653, 0xA653, Ll}, {0xA654, 0xA654, Lu}, {0xA655, 0xA655, Ll},
    {0xA656, 0xA656, Lu}, {0xA657, 0xA657, Ll}, {0xA658, 0xA658, Lu}, {0xA659, 0xA659, Ll}, {0xA65A, 0xA65A, Lu},
    {0xA65B, 0xA65B, Ll}, {0xA65C, 0xA65C, Lu}, {0xA65D, 0xA65D, Ll}, {0xA65E, 0xA65E, Lu}, {0xA65F, 0xA65F, Ll},
    {0xA660, 0xA660, Lu}, {0xA661, 0xA661, Ll}, {0xA662, 0xA662, Lu}, {0xA663, 0xA663, Ll}, {0xA664, 0xA664, Lu},
    {0xA665, 0xA665, Ll}, {0xA666, 0xA666, Lu}, {0xA667, 0xA667, Ll}, {0xA668, 0xA668, Lu}, {0xA669, 0xA669, Ll},
    {0xA66A, 0xA66A, Lu}, {0xA66B, 0xA66B, Ll}, {0xA66C, 0xA66C, Lu}, {0xA66D, 0xA66D, Ll}, {0xA66E, 0xA66E, Lo},
    {0xA66F, 0xA66F, Mn}, {0xA670, 0xA672, Me}, {0xA673, 0xA673, Po}, {0xA674, 0xA67D, Mn}, {0xA67E, 0xA67E, Po},
    {0xA67F, 0xA67F, Lm}, {0xA680, 0xA680, Lu}, {0xA681, 0xA681, Ll}, {0xA682, 0xA682, Lu}, {0xA683, 0xA683, Ll},
    {0xA684, 0xA684, Lu}, {0xA685, 0xA685, Ll}, {0xA686, 0xA686, Lu}, {0xA687, 0xA687, Ll}, {0xA688, 0xA688, Lu},
    {0xA689, 0xA689, Ll}, {0xA68A, 0xA68A, Lu}, {0xA68B, 0xA68B, Ll}, {0xA68C, 0xA68C, Lu}, {0xA68D, 0xA68D, Ll},
    {0xA68E, 0xA68E, Lu}, {0xA68F, 0xA68F, Ll}, {0xA690, 0xA690, Lu}, {0xA691, 0xA691, Ll}, {0xA692, 0xA692, Lu},
    {0xA693, 0xA693, Ll}, {0xA694, 0xA694, Lu}, {0xA695, 0xA695, Ll}, {0xA696, 0xA696, Lu}, {0xA697, 0xA697, Ll},
    {0xA698, 0xA698, Lu}, {0xA699, 0xA699, Ll}, {0xA69A, 0xA69A, Lu}, {0xA69B, 0xA69B, Ll}, {0xA69C, 0xA69D, Lm},
    {0xA69E, 0xA69F, Mn}, {0xA6A0, 0xA6E5, Lo}, {0xA6E6, 0xA6EF, Nl}, {0xA6F0, 0xA6F1, Mn}, {0xA6F2, 0xA6F7, Po},
    {0xA700, 0xA716, Sk}, {0xA717, 0xA71F, Lm}, {0xA720, 0xA721, Sk}, {0xA722, 0xA722, Lu}, {0xA723, 0xA723, Ll},
    {0xA724, 0xA724, Lu}, {0xA725, 0xA725, Ll}, {0xA726, 0xA726, Lu}, {0xA727, 0xA727, Ll}, {0xA728, 0xA728, Lu},
    {0xA729, 0xA729, Ll}, {0xA72A, 0xA72A, Lu}, {0xA72B, 0xA72B, Ll}, {0xA72C, 0xA72C, Lu}, {0xA72D, 0xA72D, Ll},
    {0xA72E, 0xA72E, Lu}, {0xA72F, 0xA731, Ll}, {0xA732, 0xA732, Lu}, {0xA733, 0xA733, Ll}, {0xA734, 0xA734, Lu},
    {0xA735, 0xA735, Ll}, {0xA736, 0xA736, Lu}, {0xA737, 0xA737, Ll}, {0xA738, 0xA738, Lu}, {0xA739, 0xA739, Ll},
    {0xA73A, 0xA73A, Lu}, {0xA73B, 0xA73B, Ll}, {0xA73C, 0xA73C, Lu}, {0xA73D, 0xA73D, Ll}, {0xA73E, 0xA73E, Lu},
    {0xA73F, 0xA73F, Ll}, {0xA740, 0xA740, Lu}, {0xA741, 0xA741, Ll}, {0xA742, 0xA742, Lu}, {0xA743, 0xA743, Ll},
    {0xA744, 0xA744, Lu}, {0xA745, 0xA745, Ll}, {0xA746, 0xA746, Lu}, {0xA747, 0xA747, Ll}, {0xA748, 0xA748, Lu},
    {0xA749, 0xA749, Ll}, {0xA74A, 0xA74A, Lu}, {0xA74B, 0xA74B, Ll}, {0xA74C, 0xA74C, Lu}, {0xA74D, 0xA74D, Ll},
    {0xA74E, 0xA74E, Lu}, {0xA74F, 0xA74F, Ll}, {0xA750, 0xA750, Lu}, {0xA751, 0xA751, Ll}, {0xA752, 0xA752, Lu},
    {0xA753, 0xA753, Ll}, {0xA754, 0xA754, Lu}, {0xA755, 0xA755, Ll}, {0xA756, 0xA756, Lu}, {0xA757, 0xA757, Ll},
    {0xA758, 0xA758, Lu}, {0xA759, 0xA759, Ll}, {0xA75A, 0xA75A, Lu}, {0xA75B, 0xA75B, Ll}, {0xA75C, 0xA75C, Lu},
    {0xA75D, 0xA75D, Ll}, {0xA75E, 0xA75E, Lu}, {0xA75F, 0xA75F, Ll}, {0xA760, 0xA760, Lu}, {0xA761, 0xA761, Ll},
    {0xA762, 0xA762, Lu}, {0xA763, 0xA763, Ll}, {0xA764, 0xA764, Lu}, {0xA765, 0xA765, Ll}, {0xA766, 0xA766, Lu},
    {0xA767, 0xA767, Ll}, {0xA768, 0xA768, Lu}, {0xA769, 0xA769, Ll}, {0xA76A, 0xA76A, Lu}, {0xA76B, 0xA76B, Ll},
    {0xA76C, 0xA76C, Lu}, {0xA76D, 0xA76D, Ll}, {0xA76E, 0xA76E, Lu}, {0xA76F, 0xA76F, Ll}, {0xA770, 0xA770, Lm},
    {0xA771, 0xA778, Ll}, {0xA779, 0xA779, Lu}, {0xA77A, 0xA77A, Ll}, {0xA77B, 0xA77B, Lu}, {0xA77C, 0xA77C, Ll},
    {0xA77D, 0xA77E, Lu}, {0xA77F, 0xA77F, Ll}, {0xA780, 0xA780, Lu}, {0xA781, 0xA781, Ll}, {0xA782, 0xA782, Lu},
    {0xA783, 0xA783, Ll}, {0xA784, 0xA784, Lu}, {0xA785, 0xA785, Ll}, {0xA786, 0xA786, Lu}, {0xA787, 0xA787, Ll},
    {0xA788, 0xA788, Lm}, {0xA789, 0xA78A, Sk}, {0xA78B, 0xA78B, Lu}, {0xA78C, 0xA78C, Ll}, {0xA78D, 0xA78D, Lu},
    {0xA78E, 0xA78E, Ll}, {0xA78F, 0xA78F, Lo}, {0xA790, 0xA790, Lu}, {0xA791, 0xA791, Ll}, {0xA792, 0xA792, Lu},
    {0xA793, 0xA795, Ll}, {0xA796, 0xA796, Lu}, {0xA797, 0xA797, Ll}, {0xA798, 0xA798, Lu}, {0xA799, 0xA799, Ll},
    {0xA79A, 0xA79A, Lu}, {0xA79B, 0xA79B, Ll}, {0xA79C, 0xA79C, Lu}, {0xA79D, 0xA79D, Ll}, {0xA79E, 0xA79E, Lu},
    {0xA79F, 0xA79F, Ll}, {0xA7A0, 0xA7A0, Lu}, {0xA7A1, 0xA7A1, Ll}, {0xA7A2, 0xA7A2, Lu}, {0xA7A3, 0xA7A3, Ll},
    {0xA7A4, 0xA7A4, Lu}, {0xA7A5, 0xA7A5, Ll}, {0xA7A6, 0xA7A6, Lu}, {0xA7A7, 0xA7A7, Ll}, {0xA7A8, 0xA7A8, Lu},
    {0xA7A9, 0xA7A9, Ll}, {0xA7AA, 0xA7AE, Lu}, {0xA7AF, 0xA7AF, Ll}, {0xA7B0, 0xA7B4, Lu}, {0xA7B5, 0xA7B5, Ll},
    {0xA7B6, 0xA7B6, Lu}, {0xA7B7, 0xA7B7, Ll}, {0xA7B8, 0xA7B8, Lu}, {0xA7B9, 0xA7B9, Ll}, {0xA7BA, 0xA7BA, Lu},
    {0xA7BB, 0xA7BB, Ll}, {0xA7BC, 0xA7BC, Lu}, {0xA7BD, 0xA7BD, Ll}, {0xA7BE, 0xA7BE, Lu}, {0xA7BF, 0xA7BF, Ll},
    {0xA7C0, 0xA7C0, Lu}, {0xA7C1, 0xA7C1, Ll}, {0xA7C2, 0xA7C2, Lu}, {0xA7C3, 0xA7C3, Ll}, {0xA7C4, 0xA7C7, Lu},
    {0xA7C8, 0xA7C8, Ll}, {0xA7C9, 0xA7C9, Lu}, {0xA7CA, 0xA7CA, Ll}, {0xA7D0, 0xA7D0, Lu}, {0xA7D1, 0xA7D1, Ll},
    {0xA7D3, 0xA7D3, Ll}, {0xA7D5, 0xA7D5, Ll}, {0xA7D6, 0xA7D6, Lu}, {0xA7D7, 0xA7D7, Ll}, {0xA7D8, 0xA7D8, Lu},
    {0xA7D9, 0xA7D9, Ll}, {0xA7F2, 0xA7F4, Lm}, {0xA7F5, 0xA7F5, Lu}, {0xA7F6, 0xA7F6, Ll}, {0xA7F7, 0xA7F7, Lo},
    {0xA7F8, 0xA7F9, Lm}, {0xA7FA, 0xA7FA, Ll}, {0xA7FB, 0xA801, Lo}, {0xA802, 0xA802, Mn}, {0xA803, 0xA805, Lo},
    {0xA806, 0xA806, Mn}, {0xA807, 0xA80A, Lo}, {0xA80B, 0xA80B, Mn}, {0xA80C, 0xA822, Lo}, {0xA823, 0xA824, Mc},
    {0xA825, 0xA826, Mn}, {0xA827, 0xA827, Mc}, {0xA828, 0xA82B, So}, {0xA82C, 0xA82C, Mn}, {0xA830, 0xA835, No},
    {0xA836, 0xA837, So}, {0xA838, 0xA838, Sc}, {0xA839, 0xA839, So}, {0xA840, 0xA873, Lo}, {0xA874, 0xA877, Po},
    {0xA880, 0xA881, Mc}, {0xA882, 0xA8B3, Lo}, {0xA8B4, 0xA8C3, Mc}, {0xA8C4, 0xA8C5, Mn}, {0xA8CE, 0xA8CF, Po},
    {0xA8D0, 0xA8D9, Nd}, {0xA8E0, 0xA8F1, Mn}, {0xA8F2, 0xA8F7, Lo}, {0xA8F8, 0xA8FA, Po}, {0xA8FB, 0xA8FB, Lo},
    {0xA8FC, 0xA8FC, Po}, {0xA8FD, 0xA8FE, Lo}, {0xA8FF, 0xA8FF, Mn}, {0xA900, 0xA909, Nd}, {0xA90A, 0xA925, Lo},
    {0xA926, 0xA92D, Mn}, {0xA92E, 0xA92F, Po}, {0xA930, 0xA946, Lo}, {0xA947, 0xA951, Mn}, {0xA952, 0xA953, Mc},
    {0xA95F, 0xA95F, Po}, {0xA960, 0xA97C, Lo}, {0xA980, 0xA982, Mn}, {0xA983, 0xA983, Mc}, {0xA984, 0xA9B2, Lo},
    {0xA9B3, 0xA9B3, Mn}, {0xA9B4, 0xA9B5, Mc}, {0xA9B6, 0xA9B9, Mn}, {0xA9BA, 0xA9BB, Mc}, {0xA9BC, 0xA9BD, Mn},
    {0xA9BE, 0xA9C0, Mc}, {0xA9C1, 0xA9CD, Po}, {0xA9CF, 0xA9CF, Lm}, {0xA9D0, 0xA9D9, Nd}, {0xA9DE, 0xA9DF, Po},
    {0xA9E0, 0xA9E4, Lo}, {0xA9E5, 0xA9E5, Mn}, {0xA9E6, 0xA9E6, Lm}, {0xA9E7, 0xA9EF, Lo}, {0xA9F0, 0xA9F9, Nd},
    {0xA9FA, 0xA9FE, Lo}, {0xAA00, 0xAA28, Lo}, {0xAA29, 0xAA2E, Mn}, {0xAA2F, 0xAA30, Mc}, {0xAA31, 0xAA32, Mn},
    {0xAA33, 0xAA34, Mc}, {0xAA35, 0xAA36, Mn}, {0xAA40, 0xAA42, Lo}, {0xAA43, 0xAA43, Mn}, {0xAA44, 0xAA4B, Lo},
    {0xAA4C, 0xAA4C, Mn}, {0xAA4D, 0xAA4D, Mc}, {0xAA50, 0xAA59, Nd}, {0xAA5C, 0xAA5F, Po}, {0xAA60, 0xAA6F, Lo},
    {0xAA70, 0xAA70, Lm}, {0xAA71, 0xAA76, Lo}, {0xAA77, 0xAA79, So}, {0xAA7A, 0xAA7A, Lo}, {0xAA7B, 0xAA7B, Mc},
    {0xAA7C, 0xAA7C, Mn}, {0xAA7D, 0xAA7D, Mc}, {0xAA7E, 0xAAAF, Lo}, {0xAAB0, 0xAAB0, Mn}, {0xAAB1, 0xAAB1, Lo},
    {0xAAB2, 0xAAB4, Mn}, {0xAAB5, 0xAAB6, Lo}, {0xAAB7, 0xAAB8, Mn}, {0xAAB9, 0xAABD, Lo}, {0xAABE, 0xAABF, Mn},
    {0xAAC0, 0xAAC0, Lo}, {0xAAC1, 0xAAC1, Mn}, {0xAAC2, 0xAAC2, Lo}, {0xAADB, 0xAADC, Lo}, {0xAADD, 0xAADD, Lm},
    {0xAADE, 0xAADF, Po}, {0xAAE0, 0xAAEA, Lo}, {0xAAEB, 0xAAEB, Mc}, {0xAAEC, 0xAAED, Mn}, {0xAAEE, 0xAAEF, Mc},
    {0xAAF0, 0xAAF1, Po}, {0xAAF2, 0xAAF2, Lo}, {0xAAF3, 0xAAF4, Lm}, {0xAAF5, 0xAAF5, Mc}, {0xAAF6, 0xAAF6, Mn},
    {0xAB01, 0xAB06, Lo}, {0xAB09, 0xAB0E, Lo}, {0xAB11, 0xAB16, Lo}, {0xAB20, 0xAB26, Lo}, {0xAB28, 0xAB2E, Lo},
    {0xAB30, 0xAB5A, Ll}, {0xAB5B, 0xAB5B, Sk}, {0xAB5C, 0xAB5F, Lm}, {0xAB60, 0xAB68, Ll}, {0xAB69, 0xAB69, Lm},
    {0xAB6A, 0xAB6B, Sk}, {0xAB70, 0xABBF, Ll}, {0xABC0, 0xABE2, Lo}, {0xABE3, 0xABE4, Mc}, {0xABE5, 0xABE5, Mn},
    {0xABE6, 0xABE7, Mc}, {0xABE8, 0xABE8, Mn}, {0xABE9, 0xABEA, Mc}, {0xABEB, 0xABEB, Po}, {0xABEC, 0xABEC, Mc},
    {0xABED, 0xABED, Mn}, {0xABF0, 0xABF9, Nd}, {0xAC00, 0xD7A3, Lo}, {0xD7B0, 0xD7C6, Lo}, {0xD7CB, 0xD7FB, Lo},
    {0xD800, 0xDFFF, Cs}, {0xE000, 0xF8FF, Co}, {0xF900, 0xFA6D, Lo}, {0xFA70, 0xFAD9, Lo}, {0xFB00, 0xFB06, Ll},
    {0xFB13, 0xFB17, Ll}, {0xFB1D, 0xFB1D, Lo}, {0xFB1E, 0xFB1E, Mn}, {0xFB1F, 0xFB28, Lo}, {0xFB29, 0xFB29, Sm},
    {0xFB2A, 0xFB36, Lo}, {0xFB38, 0xFB3C, Lo}, {0xFB3E, 0xFB3E, Lo}, {0xFB40, 0xFB41, Lo}, {0xFB43, 0xFB44, Lo},
    {0xFB46, 0xFBB1, Lo}, {0xFBB2, 0xFBC2, Sk}, {0xFBD3, 0xFD3D, Lo}, {0xFD3E, 0xFD3E, Pe}, {0xFD3F, 0xFD3F, Ps},
    {0xFD40, 0xFD4F, So}, {0xFD50, 0xFD8F, Lo}, {0xFD92, 0xFDC7, Lo}, {0xFDCF, 0xFDCF, So}, {0xFDF0, 0xFDFB, Lo},
    {0xFDFC, 0xFDFC, Sc}, {0xFDFD, 0xFDFF, So}, {0xFE00, 0xFE0F, Mn}, {0xFE10, 0xFE16, Po}, {0xFE17, 0xFE17, Ps},
    {0xFE18, 0xFE18, Pe}, {0xFE19, 0xFE19, Po}, {0xFE20, 0xFE2F, Mn}, {0xFE30, 0xFE30, Po}, {0xFE31, 0xFE32, Pd},
    {0xFE33, 0xFE34, Pc}, {0xFE35, 0xFE35, Ps}, {0xFE36, 0xFE36, Pe}, {0xFE37, 0xFE37, Ps}, {0xFE38, 0xFE38, Pe},
    {0xFE39, 0xFE39, Ps}, {0xFE3A, 0xFE3A, Pe}, {0xFE3B, 0xFE3B, Ps}, {0xFE3C, 0xFE3C, Pe}, {0xFE3D, 0xFE3D, Ps},
    {0xFE3E, 0xFE3E, Pe}, {0xFE3F, 0xFE3F, Ps}, {0xFE40, 0xFE40, Pe}, {0xFE41, 0xFE41, Ps}, {0xFE42, 0xFE42, Pe},
    {0xFE43, 0xFE43, Ps}, {0xFE44, 0xFE44, Pe}, {0xFE45, 0xFE46, Po}, {0xFE47, 0xFE47, Ps}, {0xFE48, 0xFE48, Pe},
    {0xFE49, 0xFE4C, Po}, {0xFE4D, 0xFE4F, Pc}, {0xFE50, 0xFE52, Po}, {0xFE54, 0xFE57, Po}, {0xFE58, 0xFE58, Pd},
    {0xFE59, 0xFE59, Ps}, {0xFE5A, 0xFE5A, Pe}, {0xFE5B, 0xFE5B, Ps}, {0xFE5C, 0xFE5C, Pe}, {0xFE5D, 0xFE5D, Ps},
    {0xFE5E, 0xFE5E, Pe}, {0xFE5F, 0xFE61, Po}, {0xFE62, 0xFE62, Sm}, {0xFE63, 0xFE63, Pd}, {0xFE64, 0xFE66, Sm},
    {0xFE68, 0xFE68, Po}, {0xFE69, 0xFE69, Sc}, {0xFE6A, 0xFE6B, Po}, {0xFE70, 0xFE74, Lo}, {0xFE76, 0xFEFC, Lo},
    {0xFEFF, 0xFEFF, Cf}, {0xFF01, 0xFF03, Po}, {0xFF04, 0xFF04, Sc}, {0xFF05, 0xFF07, Po}, {0xFF08, 0xFF08, Ps},
    {0xFF09, 0xFF09, Pe}, {0xFF0A, 0xFF0A, Po}, {0xFF0B, 0xFF0B, Sm}, {0xFF0C, 0xFF0C, Po}, {0xFF0D, 0xFF0D, Pd},
    {0xFF0E, 0xFF0F, Po}, {0xFF10, 0xFF19, Nd}, {0xFF1A, 0xFF1B, Po}, {0xFF1C, 0xFF1E, Sm}, {0xFF1F, 0xFF20, Po},
    {0xFF21, 0xFF3A, Lu}, {0xFF3B, 0xFF3B, Ps}, {0xFF3C, 0xFF3C, Po}, {0xFF3D, 0xFF3D, Pe}, {0xFF3E, 0xFF3E, Sk},
    {0xFF3F, 0xFF3F, Pc}, {0xFF40, 0xFF40, Sk}, {0xFF41, 0xFF5A, Ll}, {0xFF5B, 0xFF5B, Ps}, {0xFF5C, 0xFF5C, Sm},
    {0xFF5D, 0xFF5D, Pe}, {0xFF5E, 0xFF5E, Sm}, {0xFF5F, 0xFF5F, Ps}, {0xFF60, 0xFF60, Pe}, {0xFF61, 0xFF61, Po},
    {0xFF62, 0xFF62, Ps}, {0xFF63, 0xFF63, Pe}, {0xFF64, 0xFF65, Po}, {0xFF66, 0xFF6F, Lo}, {0xFF70, 0xFF70, Lm},
    {0xFF71, 0xFF9D, Lo}, {0xFF9E, 0xFF9F, Lm}, {0xFFA0, 0xFFBE, Lo}, {0xFFC2, 0xFFC7, Lo}, {0xFFCA, 0xFFCF, Lo},
    {0xFFD2, 0xFFD7, Lo}, {0xFFDA, 0xFFDC, Lo}, {0xFFE0, 0xFFE1, Sc}, {0xFFE2, 0xFFE2, Sm}, {0xFFE3, 0xFFE3, Sk},
    {0xFFE4, 0xFFE4, So}, {0xFFE5, 0xFFE6, Sc}, {0xFFE8, 0xFFE8, So}, {0xFFE9, 0xFFEC, Sm}, {0xFFED, 0xFFEE, So},
    {0xFFF9, 0xFFFB, Cf}, {0xFFFC, 0xFFFD, So}, {0x10000, 0x1000B, Lo}, {0x1000D, 0x10026, Lo}, {0x10028, 0x1003A, Lo},
    {0x1003C, 0x1003D, Lo}, {0x1003F, 0x1004D, Lo}, {0x10050, 0x1005D, Lo}, {0x10080, 0x100FA, Lo}, {0x10100, 0x10102, Po},
    {0x10107, 0x10133, No}, {0x10137, 0x1013F, So}, {0x10140, 0x10174, Nl}, {0x10175, 0x10178, No}, {0x10179, 0x10189, So},
    {0x1018A, 0x1018B, No}, {0x1018C, 0x1018E, So}, {0x10190, 0x1019C, So}, {0x101A0, 0x101A0, So}, {0x101D0, 0x101FC, So},
    {0x101FD, 0x101FD, Mn}, {0x10280, 0x1029C, Lo}, {0x102A0, 0x102D0, Lo}, {0x102E0, 0x102E0, Mn}, {0x102E1, 0x102FB, No},
    {0x10300, 0x1031F, Lo}, {0x10320, 0x10323, No}, {0x1032D, 0x10340, Lo}, {0x10341, 0x10341, Nl}, {0x10342, 0x10349, Lo},
    {0x1034A, 0x1034A, Nl}, {0x10350, 0x10375, Lo}, {0x10376, 0x1037A, Mn}, {0x10380, 0x1039D, Lo}, {0x1039F, 0x1039F, Po},
    {0x103A0, 0x103C3, Lo}, {0x103C8, 0x103CF, Lo}, {0x103D0, 0x103D0, Po}, {0x103D1, 0x103D5, Nl}, {0x10400, 0x10427, Lu},
    {0x10428, 0x1044F, Ll}, {0x10450, 0x1049D, Lo}, {0x104A0, 0x104A9, Nd}, {0x104B0, 0x104D3, Lu}, {0x104D8, 0x104FB, Ll},
    {0x10500, 0x10527, Lo}, {0x10530, 0x10563, Lo}, {0x1056F, 0x1056F, Po}, {0x10570, 0x1057A, Lu}, {0x1057C, 0x1058A, Lu},
    {0x1058C, 0x10592, Lu}, {0x10594, 0x10595, Lu}, {0x10597, 0x105A1, Ll}, {0x105A3, 0x105B1, Ll}, {0x105B3, 0x105B9, Ll},
    {0x105BB, 0x105BC, Ll}, {0x10600, 0x10736, Lo}, {0x10740, 0x10755, Lo}, {0x10760, 0x10767, Lo}, {0x10780, 0x10785, Lm},
    {0x10787, 0x107B0, Lm}, {0x107B2, 0x107BA, Lm}, {0x10800, 0x10805, Lo}, {0x10808, 0x10808, Lo}, {0x1080A, 0x10835, Lo},
    {0x10837, 0x10838, Lo}, {0x1083C, 0x1083C, Lo}, {0x1083F, 0x10855, Lo}, {0x10857, 0x10857, Po}, {0x10858, 0x1085F, No},
    {0x10860, 0x10876, Lo}, {0x10877, 0x10878, So}, {0x10879, 0x1087F, No}, {0x10880, 0x1089E, Lo}, {0x108A7, 0x108AF, No},
    {0x108E0, 0x108F2, Lo}, {0x108F4, 0x108F5, Lo}, {0x108FB, 0x108FF, No}, {0x10900, 0x10915, Lo}, {0x10916, 0x1091B, No},
    {0x1091F, 0x1091F, Po}, {0x10920, 0x10939, Lo}, {0x1093F, 0x1093F, Po}, {0x10980, 0x109B7, Lo}, {0x109BC, 0x109BD, No},
    {0x109BE, 0x109BF, Lo}, {0x109C0, 0x109CF, No}, {0x109D2, 0x109FF, No}, {0x10A00, 0x10A00, Lo}, {0x10A01, 0x10A03, Mn},
    {0x10A05, 0x10A06, Mn}, {0x10A0C, 0x10A0F, Mn}, {0x10A10, 0x10A13, Lo}, {0x10A15, 0x10A17, Lo}, {0x10A19, 0x10A35, Lo},
    {0x10A38, 0x10A3A, Mn}, {0x10A3F, 0x10A3F, Mn}, {0x10A40, 0x10A48, No}, {0x10A50, 0x10A58, Po}, {0x10A60, 0x10A7C, Lo},
    {0x10A7D, 0x10A7E, No}, {0x10A7F, 0x10A7F, Po}, {0x10A80, 0x10A9C, Lo}, {0x10A9D, 0x10A9F, No}, {0x10AC0, 0x10AC7, Lo},
    {0x10AC8, 0x10AC8, So}, {0x10AC9, 0x10AE4, Lo}, {0x10AE5, 0x10AE6, Mn}, {0x10AEB, 0x10AEF, No}, {0x10AF0, 0x10AF6, Po},
    {0x10B00, 0x10B35, Lo}, {0x10B39, 0x10B3F, Po}, {0x10B40, 0x10B55, Lo}, {0x10B58, 0x10B5F, No}, {0x10B60, 0x10B72, Lo},
    {0x10B78, 0x10B7F, No}, {0x10B80, 0x10B91, Lo}, {0x10B99, 0x10B9C, Po}, {0x10BA9, 0x10BAF, No}, {0x10C00, 0x10C48, Lo},
    {0x10C80, 0x10CB2, Lu}, {0x10CC0, 0x10CF2, Ll}, {0x10CFA, 0x10CFF, No}, {0x10D00, 0x10D23, Lo}, {0x10D24, 0x10D27, Mn},
    {0x10D30, 0x10D39, Nd}, {0x10E60, 0x10E7E, No}, {0x10E80, 0x10EA9, Lo}, {0x10EAB, 0x10EAC, Mn}, {0x10EAD, 0x10EAD, Pd},
    {0x10EB0, 0x10EB1, Lo}, {0x10F00, 0x10F1C, Lo}, {0x10F1D, 0x10F26, No}, {0x10F27, 0x10F27, Lo}, {0x10F30, 0x10F45, Lo},
    {0x10F46, 0x10F50, Mn}, {0x10F51, 0x10F54, No}, {0x10F55, 0x10F59, Po}, {0x10F70, 0x10F81, Lo}, {0x10F82, 0x10F85, Mn},
    {0x10F86, 0x10F89, Po}, {0x10FB0, 0x10FC4, Lo}, {0x10FC5, 0x10FCB, No}, {0x10FE0, 0x10FF6, Lo}, {0x11000, 0x11000, Mc},
    {0x11001, 0x11001, Mn}, {0x11002, 0x11002, Mc}, {0x11003, 0x11037, Lo}, {0x11038, 0x11046, Mn}, {0x11047, 0x1104D, Po},
    {0x11052, 0x11065, No}, {0x11066, 0x1106F, Nd}, {0x11070, 0x11070, Mn}, {0x11071, 0x11072, Lo}, {0x11073, 0x11074, Mn},
    {0x11075, 0x11075, Lo}, {0x1107F, 0x11081, Mn}, {0x11082, 0x11082, Mc}, {0x11083, 0x110AF, Lo}, {0x110B0, 0x110B2, Mc},
    {0x110B3, 0x110B6, Mn}, {0x110B7, 0x110B8, Mc}, {0x110B9, 0x110BA, Mn}, {0x110BB, 0x110BC, Po}, {0x110BD, 0x110BD, Cf},
    {0x110BE, 0x110C1, Po}, {0x110C2, 0x110C2, Mn}, {0x110CD, 0x110CD, Cf}, {0x110D0, 0x110E8, Lo}, {0x110F0, 0x110F9, Nd},
    {0x11100, 0x11102, Mn}, {0x11103, 0x11126, Lo}, {0x11127, 0x1112B, Mn}, {0x1112C, 0x1112C, Mc}, {0x1112D, 0x11134, Mn},
    {0x11136, 0x1113F, Nd}, {0x11140, 0x11143, Po}, {0x11144, 0x11144, Lo}, {0x11145, 0x11146, Mc}, {0x11147, 0x11147, Lo},
    {0x11150, 0x11172, Lo}, {0x11173, 0x11173, Mn}, {0x11174, 0x11175, Po}, {0x11176, 0x11176, Lo}, {0x11180, 0x11181, Mn},
    {0x11182, 0x11182, Mc}, {0x11183, 0x111B2, Lo}, {0x111B3, 0x111B5, Mc}, {0x111B6, 0x111BE, Mn}, {0x111BF, 0x111C0, Mc},
    {0x111C1, 0x111C4, Lo}, {0x111C5, 0x111C8, Po}, {0x111C9, 0x111CC, Mn}, {0x111CD, 0x111CD, Po}, {0x111CE, 0x111CE, Mc},
    {0x111CF, 0x111CF, Mn}, {0x111D0, 0x111D9, Nd}, {0x111DA, 0x111DA, Lo}, {0x111DB, 0x111DB, Po}, {0x111DC, 0x111DC, Lo},
    {0x111DD, 0x111DF, Po}, {0x111E1, 0x111F4, No}, {0x11200, 0x11211, Lo}, {0x11213, 0x1122B, Lo}, {0x1122C, 0x1122E, Mc},
    {0x1122F, 0x11231, Mn}, {0x11232, 0x11233, Mc}, {0x11234, 0x11234, Mn}, {0x11235, 0x11235, Mc}, {0x11236, 0x11237, Mn},
    {0x11238, 0x1123D, Po}, {0x1123E, 0x1123E, Mn}, {0x11280, 0x11286, Lo}, {0x11288, 0x11288, Lo}, {0x1128A, 0x1128D, Lo},
    {0x1128F, 0x1129D, Lo}, {0x1129F, 0x112A8, Lo}, {0x112A9, 0x112A9, Po}, {0x112B0, 0x112DE, Lo}, {0x112DF, 0x112DF, Mn},
    {0x112E0, 0x112E2, Mc}, {0x112E3, 0x112EA, Mn}, {0x112F0, 0x112F9, Nd}, {0x11300, 0x11301, Mn}, {0x11302, 0x11303, Mc},
    {0x11305, 0x1130C, Lo}, {0x1130F, 0x11310, Lo}, {0x11313, 0x11328, Lo}, {0x1132A, 0x11330, Lo}, {0x11332, 0x11333, Lo},
    {0x11335, 0x11339, Lo}, {0x1133B, 0x1133C, Mn}, {0x1133D, 0x1133D, Lo}, {0x1133E, 0x1133F, Mc}, {0x11340, 0x11340, Mn},
    {0x11341, 0x11344, Mc}, {0x11347, 0x11348, Mc}, {0x1134B, 0x1134D, Mc}, {0x11350, 0x11350, Lo}, {0x11357, 0x11357, Mc},
    {0x1135D, 0x11361, Lo}, {0x11362, 0x11363, Mc}, {0x11366, 0x1136C, Mn}, {0x11370, 0x11374, Mn}, {0x11400, 0x11434, Lo},
    {0x11435, 0x11437, Mc}, {0x11438, 0x1143F, Mn}, {0x11440, 0x11441, Mc}, {0x11442, 0x11444, Mn}, {0x11445, 0x11445, Mc},
    {0x11446, 0x11446, Mn}, {0x11447, 0x1144A, Lo}, {0x1144B, 0x1144F, Po}, {0x11450, 0x11459, Nd}, {0x1145A, 0x1145B, Po},
    {0x1145D, 0x1145D, Po}, {0x1145E, 0x1145E, Mn}, {0x1145F, 0x11461, Lo}, {0x11480, 0x114AF, Lo}, {0x114B0, 0x114B2, Mc},
    {0x114B3, 0x114B8, Mn}, {0x114B9, 0x114B9, Mc}, {0x114BA, 0x114BA, Mn}, {0x114BB, 0x114BE, Mc}, {0x114BF, 0x114C0, Mn},
    {0x114C1, 0x114C1, Mc}, {0x114C2, 0x114C3, Mn}, {0x114C4, 0x114C5, Lo}, {0x114C6, 0x114C6, Po}, {0x114C7, 0x114C7, Lo},
    {0x114D0, 0x114D9, Nd}, {0x11580, 0x115AE, Lo}, {0x115AF, 0x115B1, Mc}, {0x115B2, 0x115B5, Mn}, {0x115B8, 0x115BB, Mc},
    {0x115BC, 0x115BD, Mn}, {0x115BE, 0x115BE, Mc}, {0x115BF, 0x115C0, Mn}, {0x115C1, 0x115D7, Po}, {0x115D8, 0x115DB, Lo},
    {0x115DC, 0x115DD, Mn}, {0x11600, 0x1162F, Lo}, {0x11630, 0x11632, Mc}, {0x11633, 0x1163A, Mn}, {0x1163B, 0x1163C, Mc},
    {0x1163D, 0x1163D, Mn}, {0x1163E, 0x1163E, Mc}, {0x1163F, 0x11640, Mn}, {0x11641, 0x11643, Po}, {0x11644, 0x11644, Lo},
    {0x11650, 0x11659, Nd}, {0x11660, 0x1166C, Po}, {0x11680, 0x116AA, Lo}, {0x116AB, 0x116AB, Mn}, {0x116AC, 0x116AC, Mc},
    {0x116AD, 0x116AD, Mn}, {0x116AE, 0x116AF, Mc}, {0x116B0, 0x116B5, Mn}, {0x116B6, 0x116B6, Mc}, {0x116B7, 0x116B7, Mn},
    {0x116B8, 0x116B8, Lo}, {0x116B9, 0x116B9, Po}, {0x116C0, 0x116C9, Nd}, {0x11700, 0x1171A, Lo}, {0x1171D, 0x1171F, Mn},
    {0x11720, 0x11721, Mc}, {0x11722, 0x11725, Mn}, {0x11726, 0x11726, Mc}, {0x11727, 0x1172B, Mn}, {0x11730, 0x11739, Nd},
    {0x1173A, 0x1173B, No}, {0x1173C, 0x1173E, Po}, {0x1173F, 0x1173F, So}, {0x11740, 0x11746, Lo}, {0x11800, 0x1182B, Lo},
    {0x1182C, 0x1182E, Mc}, {0x1182F, 0x11837, Mn}, {0x11838, 0x11838, Mc}, {0x11839, 0x1183A, Mn}, {0x1183B, 0x1183B, Po},
    {0x118A0, 0x118BF, Lu}, {0x118C0, 0x118DF, Ll}, {0x118E0, 0x118E9, Nd}, {0x118EA, 0x118F2, No}, {0x118FF, 0x11906, Lo},
    {0x11909, 0x11909, Lo}, {0x1190C, 0x11913, Lo}, {0x11915, 0x11916, Lo}, {0x11918, 0x1192F, Lo}, {0x11930, 0x11935, Mc},
    {0x11937, 0x11938, Mc}, {0x1193B, 0x1193C, Mn}, {0x1193D, 0x1193D, Mc}, {0x1193E, 0x1193E, Mn}, {0x1193F, 0x1193F, Lo},
    {0x11940, 0x11940, Mc}, {0x11941, 0x11941, Lo}, {0x11942, 0x11942, Mc}, {0x11943, 0x11943, Mn}, {0x11944, 0x11946, Po},
    {0x11950, 0x11959, Nd}, {0x119A0, 0x119A7, Lo}, {0x119AA, 0x119D0, Lo}, {0x119D1, 0x119D3, Mc}, {0x119D4, 0x119D7, Mn},
    {0x119DA, 0x119DB, Mn}, {0x119DC, 0x119DF, Mc}, {0x119E0, 0x119E0, Mn}, {0x119E1, 0x119E1, Lo}, {0x119E2, 0x119E2, Po},
    {0x119E3, 0x119E3, Lo}, {0x119E4, 0x119E4, Mc}, {0x11A00, 0x11A00, Lo}, {0x11A01, 0x11A0A, Mn}, {0x11A0B, 0x11A32, Lo},
    {0x11A33, 0x11A38, Mn}, {0x11A39, 0x11A39, Mc}, {0x11A3A, 0x11A3A, Lo}, {0x11A3B, 0x11A3E, Mn}, {0x11A3F, 0x11A46, Po},
    {0x11A47, 0x11A47, Mn}, {0x11A50, 0x11A50, Lo}, {0x11A51, 0x11A56, Mn}, {0x11A57, 0x11A58, Mc}, {0x11A59, 0x11A5B, Mn},
    {0x11A5C, 0x11A89, Lo}, {0x11A8A, 0x11A96, Mn}, {0x11A97, 0x11A97, Mc}, {0x11A98, 0x11A99, Mn}, {0x11A9A, 0x11A9C, Po},
    {0x11A9D, 0x11A9D, Lo}, {0x11A9E, 0x11AA2, Po}, {0x11AB0, 0x11AF8, Lo}, {0x11C00, 0x11C08, Lo}, {0x11C0A, 0x11C2E, Lo},
    {0x11C2F, 0x11C2F, Mc}, {0x11C30, 0x11C36, Mn}, {0x11C38, 0x11C3D, Mn}, {0x11C3E, 0x11C3E, Mc}, {0x11C3F, 0x11C3F, Mn},
    {0x11C40, 0x11C40, Lo}, {0x11C41, 0x11C45, Po}, {0x11C50, 0x11C59, Nd}, {0x11C5A, 0x11C6C, No}, {0x11C70, 0x11C71, Po},
    {0x11C72, 0x11C8F, Lo}, {0x11C92, 0x11CA7, Mn}, {0x11CA9, 0x11CA9, Mc}, {0x11CAA, 0x11CB0, Mn}, {0x11CB1, 0x11CB1, Mc},
    {0x11CB2, 0x11CB3, Mn}, {0x11CB4, 0x11CB4, Mc}, {0x11CB5, 0x11CB6, Mn}, {0x11D00, 0x11D06, Lo}, {0x11D08, 0x11D09, Lo},
    {0x11D0B, 0x11D30, Lo}, {0x11D31, 0x11D36, Mn}, {0x11D3A, 0x11D3A, Mn}, {0x11D3C, 0x11D3D, Mn}, {0x11D3F, 0x11D45, Mn},
    {0x11D46, 0x11D46, Lo}, {0x11D47, 0x11D47, Mn}, {0x11D50, 0x11D59, Nd}, {0x11D60, 0x11D65, Lo}, {0x11D67, 0x11D68, Lo},
    {0x11D6A, 0x11D89, Lo}, {0x11D8A, 0x11D8E, Mc}, {0x11D90, 0x11D91, Mn}, {0x11D93, 0x11D94, Mc}, {0x11D95, 0x11D95, Mn},
    {0x11D96, 0x11D96, Mc}, {0x11D97, 0x11D97, Mn}, {0x11D98, 0x11D98, Lo}, {0x11DA0, 0x11DA9, Nd}, {0x11EE0, 0x11EF2, Lo},
    {0x11EF3, 0x11EF4, Mn}, {0x11EF5, 0x11EF6, Mc}, {0x11EF7, 0x11EF8, Po}, {0x11FB0, 0x11FB0, Lo}, {0x11FC0, 0x11FD4, No},
    {0x11FD5, 0x11FDC, So}, {0x11FDD, 0x11FE0, Sc}, {0x11FE1, 0x11FF1, So}, {0x11FFF, 0x11FFF, Po}, {0x12000, 0x12399, Lo},
    {0x12400, 0x1246E, Nl}, {0x12470, 0x12474, Po}, {0x12480, 0x12543, Lo}, {0x12F90, 0x12FF0, Lo}, {0x12FF1, 0x12FF2, Po},
    {0x13000, 0x1342E, Lo}, {0x13430, 0x13438, Cf}, {0x14400, 0x14646, Lo}, {0x16800, 0x16A38, Lo}, {0x16A40, 0x16A5E, Lo},
    {0x16A60, 0x16A69, Nd}, {0x16A6E, 0x16A6F, Po}, {0x16A70, 0x16ABE, Lo}, {0x16AC0, 0x16AC9, Nd}, {0x16AD0, 0x16AED, Lo},
    {0x16AF0, 0x16AF4, Mn}, {0x16AF5, 0x16AF5, Po}, {0x16B00, 0x16B2F, Lo}, {0x16B30, 0x16B36, Mn}, {0x16B37, 0x16B3B, Po},
    {0x16B3C, 0x16B3F, So}, {0x16B40, 0x16B43, Lm}, {0x16B44, 0x16B44, Po}, {0x16B45, 0x16B45, So}, {0x16B50, 0x16B59, Nd},
    {0x16B5B, 0x16B61, No}, {0x16B63, 0x16B77, Lo}, {0x16B7D, 0x16B8F, Lo}, {0x16E40, 0x16E5F, Lu}, {0x16E60, 0x16E7F, Ll},
    {0x16E80, 0x16E96, No}, {0x16E97, 0x16E9A, Po}, {0x16F00, 0x16F4A, Lo}, {0x16F4F, 0x16F4F, Mn}, {0x16F50, 0x16F50, Lo},
    {0x16F51, 0x16F87, Mc}, {0x16F8F, 0x16F92, Mn}, {0x16F93, 0x16F9F, Lm}, {0x16FE0, 0x16FE1, Lm}, {0x16FE2, 0x16FE2, Po},
    {0x16FE3, 0x16FE3, Lm}, {0x16FE4, 0x16FE4, Mn}, {0x16FF0, 0x16FF1, Mc}, {0x17000, 0x187F7, Lo}, {0x18800, 0x18CD5, Lo},
    {0x18D00, 0x18D08, Lo}, {0x1AFF0, 0x1AFF3, Lm}, {0x1AFF5, 0x1AFFB, Lm}, {0x1AFFD, 0x1AFFE, Lm}, {0x1B000, 0x1B122, Lo},
    {0x1B150, 0x1B152, Lo}, {0x1B164, 0x1B167, Lo}, {0x1B170, 0x1B2FB, Lo}, {0x1BC00, 0x1BC6A, Lo}, {0x1BC70, 0x1BC7C, Lo},
    {0x1BC80, 0x1BC88, Lo}, {0x1BC90, 0x1BC99, Lo}, {0x1BC9C, 0x1BC9C, So}, {0x1BC9D, 0x1BC9E, Mn}, {0x1BC9F, 0x1BC9F, Po},
    {0x1BCA0, 0x1BCA3, Cf}, {0x1CF00, 0x1CF2D, Mn}, {0x1CF30, 0x1CF46, Mn}, {0x1CF50, 0x1CFC3, So}, {0x1D000, 0x1D0F5, So},
    {0x1D100, 0x1D126, So}, {0x1D129, 0x1D164, So}, {0x1D165, 0x1D166, Mc}, {0x1D167, 0x1D169, Mn}, {0x1D16A, 0x1D16C, So},
    {0x1D16D, 0x1D172, Mc}, {0x1D173, 0x1D17A, Cf}, {0x1D17B, 0x1D182, Mn}, {0x1D183, 0x1D184, So}, {0x1D185, 0x1D18B, Mn},
    {0x1D18C, 0x1D1A9, So}, {0x1D1AA, 0x1D1AD, Mn}, {0x1D1AE, 0x1D1EA, So}, {0x1D200, 0x1D241, So}, {0x1D242, 0x1D244, Mn},
    {0x1D245, 0x1D245, So}, {0x1D2E0, 0x1D2F3, No}, {0x1D300, 0x1D356, So}, {0x1D360, 0x1D378, No}, {0x1D400, 0x1D419, Lu},
    {0x1D41A, 0x1D433, Ll}, {0x1D434, 0x1D44D, Lu}, {0x1D44E, 0x1D454, Ll}, {0x1D456, 0x1D467, Ll}, {0x1D468, 0x1D481, Lu},
    {0x1D482, 0x1D49B, Ll}, {0x1D49C, 0x1D49C, Lu}, {0x1D49E, 0x1D49F, Lu}, {0x1D4A2, 0x1D4A2, Lu}, {0x1D4A5, 0x1D4A6, Lu},
    {0x1D4A9, 0x1D4AC, Lu}, {0x1D4AE, 0x1D4B5, Lu}, {0x1D4B6, 0x1D4B9, Ll}, {0x1D4BB, 0x1D4BB, Ll}, {0x1D4BD, 0x1D4C3, Ll},
    {0x1D4C5, 0x1D4CF, Ll}, {0x1D4D0, 0x1D4E9, Lu}, {0x1D4EA, 0x1D503, Ll}, {0x1D504, 0x1D505, Lu}, {0x1D507, 0x1D50A, Lu},
    {0x1D50D, 0x1D514, Lu}, {0x1D516, 0x1D51C, Lu}, {0x1D51E, 0x1D537, Ll}, {0x1D538, 0x1D539, Lu}, {0x1D53B, 0x1D53E, Lu},
    {0x1D540, 0x1D544, Lu}, {0x1D546, 0x1D546, Lu}, {0x1D54A, 0x1D550, Lu}, {0x1D552, 0x1D56B, Ll}, {0x1D56C, 0x1D585, Lu},
    {0x1D586, 0x1D59F, Ll}, {0x1D5A0, 0x1D5B9, Lu}, {0x1D5BA, 0x1D5D3, Ll}, {0x1D5D4, 0x1D5ED, Lu}, {0x1D5EE, 0x1D607, Ll},
    {0x1D608, 0x1D621, Lu}, {0x1D622, 0x1D63B, Ll}, {0x1D63C, 0x1D655, Lu}, {0x1D656, 0x1D66F, Ll}, {0x1D670, 0x1D689, Lu},
    {0x1D68A, 0x1D6A5, Ll}, {0x1D6A8, 0x1D6C0, Lu}, {0x1D6C1, 0x1D6C1, Sm}, {0x1D6C2, 0x1D6DA, Ll}, {0x1D6DB, 0x1D6DB, Sm},
    {0x1D6DC, 0x1D6E1, Ll}, {0x1D6E2, 0x1D6FA, Lu}, {0x1D6FB, 0x1D6FB, Sm}, {0x1D6FC, 0x1D714, Ll}, {0x1D715, 0x1D715, Sm},
    {0x1D716, 0x1D71B, Ll}, {0x1D71C, 0x1D734, Lu}, {0x1D735, 0x1D735, Sm}, {0x1D736, 0x1D74E, Ll}, {0x1D74F, 0x1D74F, Sm},
    {0x1D750, 0x1D755, Ll}, {0x1D756, 0x1D76E, Lu}, {0x1D76F, 0x1D76F, Sm}, {0x1D770, 0x1D788, Ll}, {0x1D789, 0x1D789, Sm},
    {0x1D78A, 0x1D78F, Ll}, {0x1D790, 0x1D7A8, Lu}, {0x1D7A9, 0x1D7A9, Sm}, {0x1D7AA, 0x1D7C2, Ll}, {0x1D7C3, 0x1D7C3, Sm},
    {0x1D7C4, 0x1D7C9, Ll}, {0x1D7CA, 0x1D7CA, Lu}, {0x1D7CB, 0x1D7CB, Ll}, {0x1D7CE, 0x1D7FF, Nd}, {0x1D800, 0x1D9FF, So},
    {0x1DA00, 0x1DA36, Mn}, {0x1DA37, 0x1DA3A, So}, {0x1DA3B, 0x1DA6C, Mn}, {0x1DA6D, 0x1DA74, So}, {0x1DA75, 0x1DA75, Mn},
    {0x1DA76, 0x1DA83, So}, {0x1DA84, 0x1DA84, Mn}, {0x1DA85, 0x1DA86, So}, {0x1DA87, 0x1DA8B, Po}, {0x1DA9B, 0x1DA9F, Mn},
    {0x1DAA1, 0x1DAAF, Mn}, {0x1DF00, 0x1DF09, Ll}, {0x1DF0A, 0x1DF0A, Lo}, {0x1DF0B, 0x1DF1E, Ll}, {0x1E000, 0x1E006, Mn},
    {0x1E008, 0x1E018, Mn}, {0x1E01B, 0x1E021, Mn}, {0x1E023, 0x1E024, Mn}, {0x1E026, 0x1E02A, Mn}, {0x1E100, 0x1E12C, Lo},
    {0x1E130, 0x1E136, Mn}, {0x1E137, 0x1E13D, Lm}, {0x1E140, 0x1E149, Nd}, {0x1E14E, 0x1E14E, Lo}, {0x1E14F, 0x1E14F, So},
    {0x1E290, 0x1E2AD, Lo}, {0x1E2AE, 0x1E2AE, Mn}, {0x1E2C0, 0x1E2EB, Lo}, {0x1E2EC, 0x1E2EF, Mn}, {0x1E2F0, 0x1E2F9, Nd},
    {0x1E2FF, 0x1E2FF, Sc}, {0x1E7E0, 0x1E7E6, Lo}, {0x1E7E8, 0x1E7EB, Lo}, {0x1E7ED, 0x1E7EE, Lo}, {0x1E7F0, 0x1E7FE, Lo},
    {0x1E800, 0x1E8C4, Lo}, {0x1E8C7, 0x1E8CF, No}, {0x1E8D0, 0x1E8D6, Mn}, {0x1E900, 0x1E921, Lu}, {0x1E922, 0x1E943, Ll},
    {0x1E944, 0x1E94A, Mn}, {0x1E94B, 0x1E94B, Lm}, {0x1E950, 0x1E959, Nd}, {0x1E95E, 0x1E95F, Po}, {0x1EC71, 0x1ECAB, No},
    {0x1ECAC, 0x1ECAC, So}, {0x1ECAD, 0x1ECAF, No}, {0x1ECB0, 0x1ECB0, Sc}, {0x1ECB1, 0x1ECB4, No}, {0x1ED01, 0x1ED2D, No},
    {0x1ED2E, 0x1ED2E, So}, {0x1ED2F, 0x1ED3D, No}, {0x1EE00, 0x1EE03, Lo}, {0x1EE05, 0x1EE1F, Lo}, {0x1EE21, 0x1EE22, Lo},
    {0x1EE24, 0x1EE24, Lo}, {0x1EE27, 0x1EE27, Lo}, {0x1EE29, 0x1EE32, Lo}, {0x1EE34, 0x1EE37, Lo}, {0x1EE39, 0x1EE39, Lo},
    {0x1EE3B, 0x1EE3B, Lo}, {0x1EE42, 0x1EE42, Lo}, {0x1EE47, 0x1EE47, Lo}, {0x1EE49, 0x1EE49, Lo}, {0x1EE4B, 0x1EE4B, Lo},
    {0x1EE4D, 0x1EE4F, Lo}, {0x1EE51, 0x1EE52, Lo}, {0x1EE54, 0x1EE54, Lo}, {0x1EE57, 0x1EE57, Lo}, {0x1EE59, 0x1EE59, Lo},
    {0x1EE5B, 0x1EE5B, Lo}, {0x1EE5D, 0x1EE5D, Lo}, {0x1EE5F, 0x1EE5F, Lo}, {0x1EE61, 0x1EE62, Lo}, {0x1EE64, 0x1EE64, Lo},
    {0x1EE67, 0x1EE6A, Lo}, {0x1EE6C, 0x1EE72, Lo}, {0x1EE74, 0x1EE77, Lo}, {0x1EE79, 0x1EE7C, Lo}, {0x1EE7E, 0x1EE7E, Lo},
    {0x1EE80, 0x1EE89, Lo}, {0x1EE8B, 0x1EE9B, Lo}, {0x1EEA1, 0x1EEA3, Lo}, {0x1EEA5, 0x1EEA9, Lo}, {0x1EEAB, 0x1EEBB, Lo},
    {0x1EEF0, 0x1EEF1, Sm}, {0x1F000, 0x1F02B, So}, {0x1F030, 0x1F093, So}, {0x1F0A0, 0x1F0AE, So}, {0x1F0B1, 0x1F0BF, So},
    {0x1F0C1, 0x1F0CF, So}, {0x1F0D1, 0x1F0F5, So}, {0x1F100, 0x1F10C, No}, {0x1F10D, 0x1F1AD, So}, {0x1F1E6, 0x1F202, So},
    {0x1F210, 0x1F23B, So}, {0x1F240, 0x1F248, So}, {0x1F250, 0x1F251, So}, {0x1F260, 0x1F265, So}, {0x1F300, 0x1F3FA, So},
    {0x1F3FB, 0x1F3FF, Sk}, {0x1F400, 0x1F6D7, So}, {0x1F6DD, 0x1F6EC, So}, {0x1F6F0, 0x1F6FC, So}, {0x1F700, 0x1F773, So},
    {0x1F780, 0x1F7D8, So}, {0x1F7E0, 0x1F7EB, So}, {0x1F7F0, 0x1F7F0, So}, {0x1F800, 0x1F80B, So}, {0x1F810, 0x1F847, So},
    {0x1F850, 0x1F859, So}, {0x1F860, 0x1F887, So}, {0x1F890, 0x1F8AD, So}, {0x1F8B0, 0x1F8B1, So}, {0x1F900, 0x1FA53, So},
    {0x1FA60, 0x1FA6D, So}, {0x1FA70, 0x1FA74, So}, {0x1FA78, 0x1FA7C, So}, {0x1FA80, 0x1FA86, So}, {0x1FA90, 0x1FAAC, So},
    {0x1FAB0, 0x1FABA, So}, {0x1FAC0, 0x1FAC5, So}, {0x1FAD0, 0x1FAD9, So}, {0x1FAE0, 0x1FAE7, So}, {0x1FAF0, 0x1FAF6, So},
    {0x1FB00, 0x1FB92, So}, {0x1FB94, 0x1FBCA, So}, {0x1FBF0, 0x1FBF9, Nd}, {0x20000, 0x2A6DF, Lo}, {0x2A700, 0x2B738, Lo},
    {0x2B740, 0x2B81D, Lo}, {0x2B820, 0x2CEA1, Lo}, {0x2CEB0, 0x2EBE0, Lo}, {0x2F800, 0x2FA1D, Lo}, {0x30000, 0x3134A, Lo},
    {0xE0001, 0xE0001, Cf}, {0xE0020, 0xE007F, Cf}, {0xE0100, 0xE01EF, Mn}, {0xF0000, 0xFFFFD, Co}, {0x100000, 0x10FFFD, Co},
};

}  // namespace lmtk::tokenize::unicode_data

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lmtk::tokenize::unicode {

// Stands for a byte that starts no valid UTF-8 sequence: belongs to no class.
inline constexpr std::uint32_t invalid = 0xFFFFFFFFu;

struct code_point {
    std::uint32_t cp;
    std::uint32_t offset;  // byte offset in the text
    std::uint32_t len;     // bytes
};

// Decodes `s` into code points. Overlong forms, surrogates and values above U+10FFFF count as
// malformed, like any truncated or broken sequence: each such byte becomes one `invalid`
// code point, so every byte of the input is covered exactly once.
inline std::vector<code_point> decode_utf8(std::string_view s) {
    std::vector<code_point> out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) {
        const auto b0 = static_cast<unsigned char>(s[i]);
        std::size_t n = b0 < 0x80 ? 1 : (b0 >> 5) == 0x6 ? 2 : (b0 >> 4) == 0xE ? 3 : (b0 >> 3) == 0x1E ? 4 : 0;
        std::uint32_t cp = n == 1 ? b0 : n == 2 ? (b0 & 0x1Fu) : n == 3 ? (b0 & 0x0Fu) : (b0 & 0x07u);
        bool ok = n != 0 && n <= s.size() - i;
        for (std::size_t k = 1; ok && k < n; ++k) {
            const auto b = static_cast<unsigned char>(s[i + k]);
            ok = (b & 0xC0) == 0x80;
            cp = (cp << 6) | (b & 0x3Fu);
        }
        static constexpr std::uint32_t min_of_len[] = {0, 0, 0x80, 0x800, 0x10000};
        ok = ok && cp >= min_of_len[n] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
        if (!ok) {
            cp = invalid;
            n = 1;
        }
        out.push_back({cp, static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(n)});
        i += n;
    }
    return out;
}

inline void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

using unicode_data::category;

// The general category of `cp` (Cn for unassigned code points and for `invalid`).
inline category general_category(std::uint32_t cp) noexcept {
    static constexpr auto ascii = [] {
        std::array<category, 128> t{};
        for (const auto& r : unicode_data::categories)
            for (std::uint32_t c = r.first; c <= r.last && c < 128; ++c) t[c] = r.cat;
        return t;
    }();
    if (cp < 128) return ascii[cp];
    const auto* first = std::begin(unicode_data::categories);
    const auto* last = std::end(unicode_data::categories);
    const auto* it = std::upper_bound(first, last, cp, [](std::uint32_t c, const unicode_data::category_range& r) { return c < r.first; });
    return it != first && cp <= std::prev(it)->last ? std::prev(it)->cat : unicode_data::Cn;
}

// Sets of general categories as bit masks (bit c for category c), for \p{..} classes.
namespace categories {
inline constexpr std::uint32_t bit(category c) noexcept { return std::uint32_t(1) << c; }
using enum unicode_data::category;
inline constexpr std::uint32_t letter = bit(Lu) | bit(Ll) | bit(Lt) | bit(Lm) | bit(Lo);
inline constexpr std::uint32_t mark = bit(Mn) | bit(Mc) | bit(Me);
inline constexpr std::uint32_t number = bit(Nd) | bit(Nl) | bit(No);
inline constexpr std::uint32_t punctuation = bit(Pc) | bit(Pd) | bit(Ps) | bit(Pe) | bit(Pi) | bit(Pf) | bit(Po);
inline constexpr std::uint32_t symbol = bit(Sm) | bit(Sc) | bit(Sk) | bit(So);
inline constexpr std::uint32_t separator = bit(Zs) | bit(Zl) | bit(Zp);
inline constexpr std::uint32_t other = bit(Cc) | bit(Cf) | bit(Cs) | bit(Co) | bit(Cn);
}  // namespace categories

inline bool is_letter(std::uint32_t cp) noexcept {
    if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
    return (categories::bit(general_category(cp)) & categories::letter) != 0;
}
inline bool is_number(std::uint32_t cp) noexcept {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    return (categories::bit(general_category(cp)) & categories::number) != 0;
}
// The White_Space property, which regex engines use for \s.
inline bool is_whitespace(std::uint32_t cp) noexcept {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

// GPT-2 maps every byte to a printable character so that BPE works on text: the printable
// Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves, the other 68 bytes take
// U+0100, U+0101, ... in byte order. A space is thus 'Ġ' (U+0120), a newline 'Ċ' (U+010A).
struct byte_map {
    std::array<std::uint32_t, 256> to_cp{};
    std::array<std::string, 256> to_utf8{};
    std::array<std::int16_t, 512> from_cp{};  // every mapped code point is below 512; -1: none

    byte_map() {
        from_cp.fill(-1);
        std::uint32_t next = 256;
        for (std::uint32_t b = 0; b < 256; ++b) {
            const bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            to_cp[b] = self ? b : next++;
            append_utf8(to_utf8[b], to_cp[b]);
            from_cp[to_cp[b]] = static_cast<std::int16_t>(b);
        }
    }
    static const byte_map& get() {
        static const byte_map m;
        return m;
    }
};

// GPT-2's pre-tokenizer, the regular expression
//     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// applied left to right, first alternative that matches wins. Calls on_chunk(string_view) for
// each match; together the chunks are exactly `text`.
template <class OnChunk>
void split_gpt2(std::string_view text, OnChunk&& on_chunk) {
    const std::vector<code_point> cps = decode_utf8(text);
    const std::size_t n = cps.size();
    auto cp = [&](std::size_t i) { return i < n ? cps[i].cp : invalid; };
    auto other = [&](std::size_t i) {
        return i < n && !is_whitespace(cps[i].cp) && !is_letter(cps[i].cp) && !is_number(cps[i].cp);
    };
    auto emit = [&](std::size_t from, std::size_t to) {
        const std::size_t b = cps[from].offset;
        const std::size_t e = to < n ? cps[to].offset : text.size();
        on_chunk(text.substr(b, e - b));
    };
    std::size_t i = 0;
    while (i < n) {
        const std::uint32_t c = cp(i);
        // 's 't 're 've 'm 'll 'd (case-sensitive, ASCII apostrophe only)
        if (c == '\'') {
            const std::uint32_t a = cp(i + 1), b = cp(i + 2);
            if (a == 's' || a == 't' || a == 'm' || a == 'd') {
                emit(i, i + 2);
                i += 2;
                continue;
            }
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
                emit(i, i + 3);
                i += 3;
                continue;
            }
        }
        // ` ?X+` for X = letters, numbers, other: an optional single space, then a run of X.
        const std::size_t s = (c == ' ' && i + 1 < n) ? i + 1 : i;
        auto run = [&](auto&& in_class) {
            if (!in_class(s)) return false;
            std::size_t j = s + 1;
            while (in_class(j)) ++j;
            emit(i, j);
            i = j;
            return true;
        };
        if (run([&](std::size_t k) { return k < n && is_letter(cps[k].cp); })) continue;
        if (run([&](std::size_t k) { return k < n && is_number(cps[k].cp); })) continue;
        if (run(other)) continue;
        // Whitespace: `\s+(?!\S)` takes the run but leaves its last character to a following
        // non-space (which then takes it as its ` ?` prefix when it is ' '); `\s+` takes a
        // single whitespace character before a non-space.
        std::size_t j = i;
        while (j < n && is_whitespace(cps[j].cp)) ++j;
        const std::size_t end = (j < n && j - i >= 2) ? j - 1 : j;
        emit(i, end);
        i = end;
    }
}

}  // namespace lmtk::tokenize::unicode

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::tokenize {

// A text prepared for matching: its code points and their general categories.
struct regex_text {
    std::vector<std::uint32_t> cps;  // unicode::invalid for a malformed byte
    std::vector<std::uint8_t> cats;  // unicode_data::category of each

    static regex_text of(std::span<const unicode::code_point> decoded) {
        regex_text t;
        t.cps.reserve(decoded.size());
        t.cats.reserve(decoded.size());
        for (const unicode::code_point& c : decoded) {
            t.cps.push_back(c.cp);
            t.cats.push_back(static_cast<std::uint8_t>(unicode::general_category(c.cp)));
        }
        return t;
    }
};

class regex {
public:
    // The largest compiled program; counted repetition such as \s{512} expands into copies.
    static constexpr std::size_t max_program = 1u << 16;

    explicit regex(std::string_view pattern) : pattern_(pattern) {
        parser p{*this, pattern};
        const node_ptr root = p.parse();
        compile(*root);
        emit({op::match});
    }

    const std::string& pattern() const noexcept { return pattern_; }

    // The matcher's working memory: one per thread that matches (a regex itself is immutable
    // and may be shared).
    class scratch {
    public:
        explicit scratch(const regex& re) { resize(re.prog_.size()); }
        void resize(std::size_t n) {
            a_.resize(n);
            b_.resize(n);
        }

    private:
        friend class regex;
        struct list {
            std::vector<std::pair<std::uint32_t, std::uint32_t>> threads;  // (pc, start)
            std::vector<std::uint32_t> seen;                               // generation stamp per pc
            std::uint32_t generation = 1;
            void resize(std::size_t n) {
                seen.assign(n, 0);
                threads.reserve(n);
            }
            void clear() {
                threads.clear();
                if (++generation == 0) {
                    std::fill(seen.begin(), seen.end(), 0);
                    generation = 1;
                }
            }
            bool mark(std::uint32_t pc) {
                if (seen[pc] == generation) return false;
                seen[pc] = generation;
                return true;
            }
        };
        list a_, b_;
        std::vector<std::uint32_t> stack_;
    };

    std::size_t program_size() const noexcept { return prog_.size(); }

    // Calls on_match(first, last) for each non-overlapping match in t[begin, end) (code point
    // indices), left to right, as Oniguruma's search-all does. `^` and `$` mean begin and end.
    // An empty match is reported and the search moves on by one code point. `sc` must have
    // been made for this regex.
    template <class OnMatch>
    void for_each_match(const regex_text& t, std::size_t begin, std::size_t end, scratch& sc, OnMatch&& on_match) const {
        std::size_t pos = begin;
        while (pos <= end) {
            std::size_t s = 0, e = 0;
            if (!search(t, begin, end, pos, sc, s, e)) return;
            on_match(s, e);
            pos = e > s ? e : e + 1;
        }
    }

private:
    enum class op : std::uint8_t { cls, split, jmp, match, at_begin, at_end, look, look_not };
    struct inst {
        op code;
        std::uint32_t x = 0, y = 0;  // cls/look: class index; split: preferred x, then y; jmp: x
    };

    // One item of a class: a code point range, a set of categories, or a property, maybe negated.
    struct item {
        enum class kind : std::uint8_t { range, cats, space, digit, word } k;
        bool negated = false;
        std::uint32_t lo = 0, hi = 0;  // range
        std::uint32_t mask = 0;        // cats
    };
    struct char_class {
        std::vector<item> items;
        bool negated = false;
        std::array<std::uint64_t, 2> ascii{};  // the answer for code points below 128

        static bool item_has(const item& it, std::uint32_t cp, std::uint8_t cat) noexcept {
            bool r = false;
            switch (it.k) {
                case item::kind::range: r = cp >= it.lo && cp <= it.hi; break;
                case item::kind::cats: r = (it.mask >> cat) & 1u; break;
                case item::kind::space: r = unicode::is_whitespace(cp); break;
                case item::kind::digit: r = cat == unicode_data::Nd; break;
                case item::kind::word:
                    r = ((unicode::categories::letter | unicode::categories::mark | unicode::categories::bit(unicode_data::Nd) |
                          unicode::categories::bit(unicode_data::Pc)) >> cat) & 1u;
                    break;
            }
            return r != it.negated;
        }
        bool slow_has(std::uint32_t cp, std::uint8_t cat) const noexcept {
            bool in = false;
            for (const item& it : items)
                if (item_has(it, cp, cat)) {
                    in = true;
                    break;
                }
            return in != negated;
        }
        void finish() {
            for (std::uint32_t c = 0; c < 128; ++c)
                if (slow_has(c, static_cast<std::uint8_t>(unicode::general_category(c)))) ascii[c >> 6] |= std::uint64_t(1) << (c & 63);
        }
        bool has(std::uint32_t cp, std::uint8_t cat) const noexcept {
            if (cp < 128) return (ascii[cp >> 6] >> (cp & 63)) & 1u;
            return slow_has(cp, cat);
        }
    };

    // ---- parsing: pattern -> tree ------------------------------------------------------------
    struct node;
    using node_ptr = std::unique_ptr<node>;
    struct node {
        enum class kind { empty, cls, concat, alt, repeat, at_begin, at_end, look } k;
        std::uint32_t cls = 0;
        std::vector<node_ptr> kids;
        int min = 0, max = 0;  // repeat; max -1: unbounded
        bool greedy = true;
        bool negated = false;  // look
    };

    struct parser {
        regex& re;
        std::string_view s;
        std::size_t i = 0;
        bool icase = false;
        int depth = 0;

        [[noreturn]] void bad(std::string_view what) const {
            fail("pre-tokenizer regex '", re.pattern_, "': ", what, " at offset ", i);
        }
        bool done() const { return i >= s.size(); }
        char peek() const { return done() ? '\0' : s[i]; }
        bool eat(char c) {
            if (peek() != c || done()) return false;
            ++i;
            return true;
        }
        std::uint32_t utf8() {  // one code point of the pattern
            const std::vector<unicode::code_point> cp = unicode::decode_utf8(s.substr(i, std::min<std::size_t>(4, s.size() - i)));
            if (cp.empty() || cp[0].cp == unicode::invalid) bad("malformed UTF-8");
            i += cp[0].len;
            return cp[0].cp;
        }

        node_ptr make(node::kind k) {
            auto n = std::make_unique<node>();
            n->k = k;
            return n;
        }
        node_ptr class_node(char_class c) {
            c.finish();
            auto n = make(node::kind::cls);
            n->cls = static_cast<std::uint32_t>(re.classes_.size());
            re.classes_.push_back(std::move(c));
            return n;
        }

        node_ptr parse() {
            node_ptr n = alternation();
            if (!done()) bad(peek() == ')' ? "unbalanced ')'" : "unexpected character");
            return n;
        }
        node_ptr alternation() {
            if (++depth > 200) bad("groups nested too deeply");
            node_ptr first = sequence();
            if (peek() != '|') {
                --depth;
                return first;
            }
            auto n = make(node::kind::alt);
            n->kids.push_back(std::move(first));
            while (eat('|')) n->kids.push_back(sequence());
            --depth;
            return n;
        }
        node_ptr sequence() {
            auto n = make(node::kind::concat);
            while (!done() && peek() != '|' && peek() != ')') n->kids.push_back(quantified());
            return n;
        }
        int number() {
            if (!(peek() >= '0' && peek() <= '9')) bad("expected a number in {..}");
            long v = 0;
            while (peek() >= '0' && peek() <= '9') {
                v = v * 10 + (s[i++] - '0');
                if (v > 100000) bad("repetition count too large");
            }
            return static_cast<int>(v);
        }
        node_ptr quantified() {
            node_ptr a = atom();
            for (;;) {
                int lo = 0, hi = 0;
                const std::size_t at = i;
                if (eat('?')) lo = 0, hi = 1;
                else if (eat('*')) lo = 0, hi = -1;
                else if (eat('+')) lo = 1, hi = -1;
                else if (peek() == '{' && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '9') {
                    ++i;
                    lo = hi = number();
                    if (eat(',')) hi = peek() == '}' ? -1 : number();
                    if (!eat('}')) bad("unterminated {..}");
                    if (hi != -1 && hi < lo) bad("{n,m} with m < n");
                } else {
                    return a;
                }
                if (a->k == node::kind::at_begin || a->k == node::kind::at_end || a->k == node::kind::look)
                    i = at, bad("quantifier after an assertion");
                auto r = make(node::kind::repeat);
                r->min = lo;
                r->max = hi;
                if (eat('?')) r->greedy = false;
                else if (peek() == '+') bad("possessive quantifiers are not supported");
                r->kids.push_back(std::move(a));
                a = std::move(r);
            }
        }
        node_ptr atom() {
            const char c = peek();
            if (c == '(') return group();
            if (c == '[') return bracket();
            if (c == '.') {
                ++i;
                char_class cc;
                cc.negated = true;
                cc.items.push_back({item::kind::range, false, '\n', '\n'});
                return class_node(std::move(cc));
            }
            if (c == '^') {
                ++i;
                return make(node::kind::at_begin);
            }
            if (c == '$') {
                ++i;
                return make(node::kind::at_end);
            }
            if (c == '*' || c == '+' || c == '?') bad("quantifier with nothing to repeat");
            if (c == '\\') {
                ++i;
                if (eat('A')) return make(node::kind::at_begin);
                if (eat('z') || eat('Z')) return make(node::kind::at_end);
                char_class cc;
                escape(cc, false);
                return class_node(std::move(cc));
            }
            char_class cc;
            literal(cc, utf8());
            return class_node(std::move(cc));
        }
        // A literal character, both cases of it inside (?i:..) (ASCII letters only).
        void literal(char_class& cc, std::uint32_t cp) const { range(cc, cp, cp); }
        void range(char_class& cc, std::uint32_t lo, std::uint32_t hi) const {
            cc.items.push_back({item::kind::range, false, lo, hi});
            if (!icase) return;
            const std::uint32_t a = std::max<std::uint32_t>(lo, 'A'), b = std::min<std::uint32_t>(hi, 'Z');
            if (a <= b) cc.items.push_back({item::kind::range, false, a + 32, b + 32});
            const std::uint32_t c = std::max<std::uint32_t>(lo, 'a'), d = std::min<std::uint32_t>(hi, 'z');
            if (c <= d) cc.items.push_back({item::kind::range, false, c - 32, d - 32});
        }
        node_ptr group() {
            ++i;  // (
            const bool saved = icase;
            node_ptr inner;
            if (eat('?')) {
                if (eat(':')) {
                    inner = alternation();
                } else if (peek() == 'i' && i + 1 < s.size() && s[i + 1] == ':') {
                    i += 2;
                    icase = true;
                    inner = alternation();
                } else if (peek() == '=' || peek() == '!') {
                    const bool neg = s[i++] == '!';
                    node_ptr body = alternation();
                    // Only one character (a class or a literal) may be looked at: that keeps
                    // the matcher linear, and it is all pre-tokenizers use ((?!\S)).
                    const node* one = body.get();
                    while (one->k == node::kind::concat && one->kids.size() == 1) one = one->kids[0].get();
                    if (one->k != node::kind::cls) bad("lookahead of more than one character is not supported");
                    auto n = make(node::kind::look);
                    n->cls = one->cls;
                    n->negated = neg;
                    inner = std::move(n);
                } else if (peek() == '<') {
                    bad("lookbehind and named groups are not supported");
                } else if (peek() == '>') {
                    bad("atomic groups are not supported");
                } else {
                    bad("unsupported group flag");
                }
            } else {
                inner = alternation();  // a capture; captures are not reported
            }
            icase = saved;
            if (!eat(')')) bad("missing ')'");
            return inner;
        }
        node_ptr bracket() {
            ++i;  // [
            char_class cc;
            if (eat('^')) cc.negated = true;
            bool first = true;
            for (;;) {
                if (done()) bad("missing ']'");
                if (peek() == ']' && !first) {
                    ++i;
                    break;
                }
                first = false;
                if (peek() == '[') bad("nested classes and POSIX [:name:] are not supported");
                std::uint32_t lo = 0;
                if (eat('\\')) {
                    if (!escape(cc, true)) continue;  // a property, not a character
                    lo = cc.items.back().lo;
                    cc.items.pop_back();
                } else {
                    lo = utf8();
                }
                if (peek() == '-' && i + 1 < s.size() && s[i + 1] != ']') {
                    ++i;
                    std::uint32_t hi = 0;
                    if (eat('\\')) {
                        char_class tmp;
                        if (!escape(tmp, true)) bad("a class range ends in a property");
                        hi = tmp.items.back().lo;
                    } else {
                        hi = utf8();
                    }
                    if (hi < lo) bad("class range out of order");
                    range(cc, lo, hi);
                } else {
                    literal(cc, lo);
                }
            }
            return class_node(std::move(cc));
        }
        std::uint32_t hex(std::size_t digits_min, std::size_t digits_max) {
            std::uint32_t v = 0;
            std::size_t n = 0;
            while (n < digits_max && !done()) {
                const char c = peek();
                const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
                if (d < 0) break;
                v = v * 16 + static_cast<std::uint32_t>(d);
                ++i, ++n;
            }
            if (n < digits_min || v > 0x10FFFF) bad("bad hexadecimal escape");
            return v;
        }
        // After a backslash: adds the escape to cc. Returns true when it was one character (its
        // range item is the last one added), false for a property such as \s or \p{L}.
        bool escape(char_class& cc, bool in_class) {
            if (done()) bad("pattern ends in a backslash");
            const char c = s[i++];
            auto prop = [&](item::kind k, bool neg) {
                cc.items.push_back({k, neg, 0, 0, 0});
                return false;
            };
            auto chr = [&](std::uint32_t cp) {
                if (in_class) cc.items.push_back({item::kind::range, false, cp, cp});
                else literal(cc, cp);
                return true;
            };
            switch (c) {
                case 's': return prop(item::kind::space, false);
                case 'S': return prop(item::kind::space, true);
                case 'd': return prop(item::kind::digit, false);
                case 'D': return prop(item::kind::digit, true);
                case 'w': return prop(item::kind::word, false);
                case 'W': return prop(item::kind::word, true);
                case 'p':
                case 'P': {
                    std::string name;
                    if (eat('{')) {
                        while (!done() && peek() != '}') name.push_back(s[i++]);
                        if (!eat('}')) bad("unterminated \\p{..}");
                    } else if (!done()) {
                        name.push_back(s[i++]);
                    }
                    bool neg = c == 'P';
                    if (!name.empty() && name[0] == '^') neg = !neg, name.erase(0, 1);
                    const std::uint32_t m = category_mask(name);
                    if (m == 0) bad("unsupported property \\p{" + name + "} (general categories only)");
                    cc.items.push_back({item::kind::cats, neg, 0, 0, m});
                    return false;
                }
                case 't': return chr('\t');
                case 'n': return chr('\n');
                case 'r': return chr('\r');
                case 'f': return chr('\f');
                case 'v': return chr('\v');
                case 'e': return chr(0x1B);
                case 'a': return chr(0x07);
                case '0': return chr(0);
                case 'x':
                    if (eat('{')) {
                        const std::uint32_t v = hex(1, 8);
                        if (!eat('}')) bad("unterminated \\x{..}");
                        return chr(v);
                    }
                    return chr(hex(2, 2));
                case 'u': return chr(hex(4, 4));
                case 'b':
                    if (in_class) return chr(0x08);
                    bad("word boundaries (\\b) are not supported");
                default:
                    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
                        --i, bad(std::string("unsupported escape \\") + c);
                    --i;
                    return chr(utf8());  // \ before punctuation or any non-ASCII character
            }
        }
        static std::uint32_t category_mask(std::string_view name) {
            namespace c = unicode::categories;
            if (name == "L" || name == "Letter") return c::letter;
            if (name == "M" || name == "Mark") return c::mark;
            if (name == "N" || name == "Number") return c::number;
            if (name == "P" || name == "Punctuation") return c::punctuation;
            if (name == "S" || name == "Symbol") return c::symbol;
            if (name == "Z" || name == "Separator") return c::separator;
            if (name == "C" || name == "Other") return c::other;
            static constexpr std::string_view names[] = {"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl",
                                                         "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc",
                                                         "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"};
            for (std::size_t k = 0; k < std::size(names); ++k)
                if (name == names[k]) return std::uint32_t(1) << k;
            return 0;
        }
    };

    // ---- compiling: tree -> program --------------------------------------------------------
    std::uint32_t emit(inst in) {
        if (prog_.size() >= max_program)
            fail("pre-tokenizer regex '", pattern_, "': compiles to more than ", max_program, " instructions");
        prog_.push_back(in);
        return static_cast<std::uint32_t>(prog_.size() - 1);
    }
    std::uint32_t here() const { return static_cast<std::uint32_t>(prog_.size()); }

    void compile(const node& n) {
        switch (n.k) {
            case node::kind::empty: break;
            case node::kind::cls: emit({op::cls, n.cls}); break;
            case node::kind::at_begin: emit({op::at_begin}); break;
            case node::kind::at_end: emit({op::at_end}); break;
            case node::kind::look: emit({n.negated ? op::look_not : op::look, n.cls}); break;
            case node::kind::concat:
                for (const node_ptr& k : n.kids) compile(*k);
                break;
            case node::kind::alt: {
                // split L1, next; L1: a; jmp end; next: split L2, ...; last alternative
                std::vector<std::uint32_t> jumps;
                for (std::size_t k = 0; k < n.kids.size(); ++k) {
                    if (k + 1 < n.kids.size()) {
                        const std::uint32_t sp = emit({op::split});
                        prog_[sp].x = here();
                        compile(*n.kids[k]);
                        jumps.push_back(emit({op::jmp}));
                        prog_[sp].y = here();
                    } else {
                        compile(*n.kids[k]);
                    }
                }
                for (const std::uint32_t j : jumps) prog_[j].x = here();
                break;
            }
            case node::kind::repeat: {
                const node& body = *n.kids[0];
                for (int k = 0; k < n.min; ++k) compile(body);
                // A split that prefers entering the body when greedy, leaving it when lazy.
                auto split_to = [&](std::uint32_t sp, std::uint32_t enter, std::uint32_t leave) {
                    prog_[sp].x = n.greedy ? enter : leave;
                    prog_[sp].y = n.greedy ? leave : enter;
                };
                if (n.max == -1) {
                    const std::uint32_t sp = emit({op::split});
                    compile(body);
                    emit({op::jmp, sp});
                    split_to(sp, sp + 1, here());
                } else {
                    std::vector<std::uint32_t> splits;
                    for (int k = n.min; k < n.max; ++k) {
                        splits.push_back(emit({op::split}));
                        compile(body);
                    }
                    for (const std::uint32_t sp : splits) split_to(sp, sp + 1, here());
                }
                break;
            }
        }
    }

    // ---- matching ---------------------------------------------------------------------------
    bool class_at(std::uint32_t cls, const regex_text& t, std::size_t pos) const noexcept {
        return classes_[cls].has(t.cps[pos], t.cats[pos]);
    }

    // Follows jumps, splits and assertions from pc at position pos, appending the threads that
    // wait on a character (or match) to l, in priority order.
    void add(scratch::list& l, std::vector<std::uint32_t>& stack, std::uint32_t pc0, std::size_t pos, std::uint32_t start,
             const regex_text& t, std::size_t begin, std::size_t end) const {
        stack.clear();
        stack.push_back(pc0);
        while (!stack.empty()) {
            const std::uint32_t pc = stack.back();
            stack.pop_back();
            if (!l.mark(pc)) continue;
            const inst& in = prog_[pc];
            switch (in.code) {
                case op::jmp: stack.push_back(in.x); break;
                case op::split:
                    stack.push_back(in.y);
                    stack.push_back(in.x);
                    break;
                case op::at_begin:
                    if (pos == begin) stack.push_back(pc + 1);
                    break;
                case op::at_end:
                    if (pos == end) stack.push_back(pc + 1);
                    break;
                case op::look:
                    if (pos < end && class_at(in.x, t, pos)) stack.push_back(pc + 1);
                    break;
                case op::look_not:
                    if (!(pos < end && class_at(in.x, t, pos))) stack.push_back(pc + 1);
                    break;
                case op::cls:
                case op::match: l.threads.emplace_back(pc, start); break;
            }
        }
    }

    // The leftmost-first match starting at or after `from`; false when there is none.
    bool search(const regex_text& t, std::size_t begin, std::size_t end, std::size_t from, scratch& sc, std::size_t& ms,
                std::size_t& me) const {
        if (sc.a_.seen.size() != prog_.size()) sc.resize(prog_.size());
        scratch::list* cur = &sc.a_;
        scratch::list* next = &sc.b_;
        cur->clear();
        bool matched = false;
        for (std::size_t pos = from;; ++pos) {
            // A new attempt starts here, behind every earlier (leftmost) one, until one matched.
            if (!matched) add(*cur, sc.stack_, 0, pos, static_cast<std::uint32_t>(pos), t, begin, end);
            if (cur->threads.empty()) {
                if (matched || pos >= end) break;
                cur->clear();  // forget this position's marks; try the next one
                continue;
            }
            next->clear();
            for (const auto& [pc, start] : cur->threads) {
                const inst& in = prog_[pc];
                if (in.code == op::match) {
                    matched = true;
                    ms = start;
                    me = pos;
                    break;  // threads of lower priority lose to this match
                }
                if (pos < end && class_at(in.x, t, pos)) add(*next, sc.stack_, pc + 1, pos + 1, start, t, begin, end);
            }
            std::swap(cur, next);
            if (pos >= end) break;
        }
        return matched;
    }

    std::string pattern_;
    std::vector<char_class> classes_;
    std::vector<inst> prog_;
};

}  // namespace lmtk::tokenize
// #include <lmtk/tokenize/unicode.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::tokenize {

namespace pre_patterns {
// The patterns of the families' tokenizer.json files (facts of the formats, as data).
inline constexpr std::string_view gpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view llama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view qwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view qwen35 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view superbpe =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view tekken =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view gpt4o =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// GPT-2's pattern without its last alternative, after other splits (the stretches it leaves
// unmatched are kept as pieces anyway).
inline constexpr std::string_view gpt2_words = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
inline constexpr std::string_view cjk = R"([一-龥ࠀ-一가-퟿]+)";
inline constexpr std::string_view deepseek_llm_letters =
    R"(\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+)";
inline constexpr std::string_view deepseek_v3_words =
    R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view bloom = R"( ?[^(\s|.,!?…。，、।۔،)]+)";
}  // namespace pre_patterns

// A pre-tokenizer family: its patterns, and whether a piece that is itself a token is taken
// whole before any merge (tokenizer.json's BPE `ignore_merges`, Llama 3 and others).
struct pre_tokenizer_spec {
    std::vector<std::string> patterns;
    bool ignore_merges = false;
};

// The pre-tokenizer llama.cpp's `tokenizer.ggml.pre` value `name` stands for. An unknown name
// throws: splitting with the wrong patterns would give wrong ids silently.
inline pre_tokenizer_spec pre_tokenizer_for(std::string_view name) {
    namespace p = pre_patterns;
    auto is = [&](std::initializer_list<std::string_view> names) {
        for (const std::string_view n : names)
            if (name == n) return true;
        return false;
    };
    auto make = [](std::initializer_list<std::string_view> pats, bool ignore_merges = false) {
        pre_tokenizer_spec s;
        for (const std::string_view x : pats) s.patterns.emplace_back(x);
        s.ignore_merges = ignore_merges;
        return s;
    };
    if (is({"gpt-2", "phi-2", "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4", "jina-es", "jina-de",
            "jina-v2-es", "jina-v2-de", "jina-v1-en", "jina-v2-code", "roberta-bpe", "gigachat", "a.x-4.0", "mellum",
            "modern-bert"}))
        return make({p::gpt2});
    if (is({"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "glm4"}))
        return make({p::llama3}, true);
    if (is({"dbrx", "smaug-bpe", "chatglm-bpe"})) return make({p::llama3});
    if (is({"qwen2", "deepseek-r1-qwen", "kormo", "stablelm2", "hunyuan"})) return make({p::qwen2});
    if (is({"qwen35"})) return make({p::qwen35});
    if (is({"superbpe"})) return make({p::superbpe});
    if (is({"tekken"})) return make({p::tekken}, true);
    if (is({"gpt-4o", "minimax-m2"})) return make({p::gpt4o});
    if (is({"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva"}))
        return make({R"(\p{N})", p::gpt2_words});
    if (is({"falcon"})) return make({R"([\p{P}\$\+<=>\^~\|`]+)", p::gpt2_words, R"([0-9][0-9][0-9])"});
    if (is({"deepseek-llm"}))
        return make({R"([\r\n])", p::deepseek_llm_letters, R"(\s?[!-/:-~！-／：-～‘-‟　-。]+)", R"(\s+$)", p::cjk, R"(\p{N}+)"});
    if (is({"deepseek-coder"})) return make({R"([\r\n])", R"(\s?\p{L}+)", R"(\s?\p{P}+)", p::cjk, R"(\p{N})"});
    if (is({"deepseek-v3", "hunyuan-dense"})) return make({R"(\p{N}{1,3})", R"([一-龥぀-ゟ゠-ヿ]+)", p::deepseek_v3_words});
    if (is({"poro-chat", "bloom", "gpt3-finnish"})) return make({p::bloom});
    if (is({"viking"})) return make({p::bloom, R"(\p{N})"});
    if (is({"default", ""}))  // what llama.cpp applies when a GGUF names none
        return make({R"([\p{P}\$\+<=>\^~\|]+)", p::gpt2_words, R"(\p{N}+)", R"([0-9][0-9][0-9])"});
    fail("pre-tokenizer '", name, "' (tokenizer.ggml.pre) is not known to lmtk; known: gpt-2, llama-bpe (llama3), qwen2, "
         "qwen35, deepseek-llm, deepseek-coder, deepseek-v3, falcon, mpt, starcoder, refact, command-r, smollm, "
         "tekken, gpt-4o, dbrx, smaug-bpe, chatglm-bpe, glm4, stablelm2, olmo, bloom, poro-chat, viking, superbpe, "
         "default (see tokenize/pre_tokenizer.hpp for every alias)");
}

// The tokenizer.ggml.pre name of the family whose patterns are exactly `patterns` (for writing a
// GGUF from a tokenizer.json); empty when no known family splits that way.
inline std::string pre_tokenizer_name(const std::vector<std::string>& patterns, bool ignore_merges = false) {
    for (const std::string_view name : {"gpt-2", "llama-bpe", "dbrx", "qwen2", "qwen35", "superbpe", "tekken", "gpt-4o", "starcoder",
                                        "falcon", "deepseek-llm", "deepseek-coder", "deepseek-v3", "bloom", "viking", "default"}) {
        const pre_tokenizer_spec s = pre_tokenizer_for(name);
        if (s.patterns == patterns && (s.ignore_merges == ignore_merges || name == "gpt-2")) return std::string(name);
    }
    return {};
}

class pre_tokenizer {
public:
    pre_tokenizer() = default;  // no split: all of a text is one piece

    explicit pre_tokenizer(const pre_tokenizer_spec& spec) : ignore_merges_(spec.ignore_merges) {
        if (spec.patterns.size() == 1 && spec.patterns[0] == pre_patterns::gpt2) {
            gpt2_ = true;
            return;
        }
        steps_.reserve(spec.patterns.size());
        for (const std::string& p : spec.patterns) steps_.emplace_back(p);
    }

    bool ignore_merges() const noexcept { return ignore_merges_; }

    // Calls on_piece(string_view) for each piece of `text`, in order; together they are `text`.
    template <class OnPiece>
    void split(std::string_view text, OnPiece&& on_piece) const {
        if (gpt2_) {
            unicode::split_gpt2(text, on_piece);
            return;
        }
        if (steps_.empty() || text.empty()) {
            if (!text.empty()) on_piece(text);
            return;
        }
        const std::vector<unicode::code_point> decoded = unicode::decode_utf8(text);
        const regex_text t = regex_text::of(decoded);
        using span_t = std::pair<std::uint32_t, std::uint32_t>;  // code point indices [first, last)
        std::vector<span_t> pieces{{0u, static_cast<std::uint32_t>(decoded.size())}}, next;
        for (const regex& re : steps_) {
            regex::scratch sc(re);
            next.clear();
            for (const auto& [a, b] : pieces) {
                std::uint32_t at = a;
                re.for_each_match(t, a, b, sc, [&](std::size_t s, std::size_t e) {
                    if (s > at) next.emplace_back(at, static_cast<std::uint32_t>(s));
                    if (e > s) next.emplace_back(static_cast<std::uint32_t>(s), static_cast<std::uint32_t>(e));
                    at = static_cast<std::uint32_t>(std::max<std::size_t>(at, e));
                });
                if (at < b) next.emplace_back(at, b);
            }
            pieces.swap(next);
        }
        for (const auto& [a, b] : pieces) {
            const std::size_t from = decoded[a].offset;
            const std::size_t to = b < decoded.size() ? decoded[b].offset : text.size();
            on_piece(text.substr(from, to - from));
        }
    }

private:
    std::vector<regex> steps_;
    bool gpt2_ = false;
    bool ignore_merges_ = false;
};

}  // namespace lmtk::tokenize
// #include <lmtk/tokenize/spm.hpp>
// lmtk::tokenize::spm_tokenizer: SentencePiece BPE encoding over a GGUF vocabulary (the `llama`
// tokenizer model: Llama 1/2, Mistral v0.1, TinyLlama, stories260K, ...).
//
// encode, per stretch of text between special tokens:
//   1. normalise: prepend a space (add_space_prefix), then write every space as U+2581 "▁";
//   2. split into UTF-8 characters (a malformed byte is a character of its own);
//   3. repeatedly merge the adjacent pair whose concatenation is a vocabulary piece with the
//      highest score, leftmost on ties; a max-heap of candidate pairs makes this O(n log n);
//   4. emit each final symbol's id; a symbol that is no emittable piece (a merged `unused`
//      piece, or a character the vocabulary lacks) splits back into the symbols it was merged
//      from, and a character that is still unknown becomes its UTF-8 bytes as <0xXX> tokens
//      (byte fallback), or one unknown token when the vocabulary has no byte tokens.
// This reproduces sentencepiece and llama.cpp on their test vectors (tests/tokenize/spm_vectors.cpp).
// #include <lmtk/core/error.hpp>
// #include <lmtk/tokenize/special_tokens.hpp>
// lmtk::tokenize::special_matcher: finds special-token texts ("<s>", "<|im_end|>") in input
// text, so a tokenizer can emit their ids directly and run its algorithm only on the text between.
//
// Matching is leftmost first and, at one position, longest first: "<|end|>" inside
// "<|endoftext|>" is never split out when both are special.
#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::tokenize {

class special_matcher {
public:
    // Empty texts are ignored: they would match everywhere. Appended in any order (split()
    // picks the longest hit itself): keeping a bucket sorted on insertion cost a scan and a
    // shift per token, quadratic in a vocabulary that marks 10^5 tokens user-defined.
    void add(std::string_view text, std::int32_t id) {
        if (text.empty()) return;
        by_first_byte_[static_cast<unsigned char>(text[0])].push_back(entry{std::string(text), id});
        ++count_;
    }
    bool empty() const noexcept { return count_ == 0; }

    // Calls on_text(std::string_view) for each non-empty stretch of ordinary text and
    // on_special(std::int32_t) for each special token, in input order.
    template <class OnText, class OnSpecial>
    void split(std::string_view s, OnText&& on_text, OnSpecial&& on_special) const {
        if (empty()) {
            if (!s.empty()) on_text(s);
            return;
        }
        std::size_t text_start = 0;
        std::size_t i = 0;
        while (i < s.size()) {
            const auto& bucket = by_first_byte_[static_cast<unsigned char>(s[i])];
            // Longest match at i; among equal texts the first added, as a vocabulary's first id wins.
            const entry* hit = nullptr;
            for (const entry& e : bucket)
                if ((!hit || e.text.size() > hit->text.size()) && s.substr(i, e.text.size()) == e.text) hit = &e;
            if (!hit) { ++i; continue; }
            if (i > text_start) on_text(s.substr(text_start, i - text_start));
            on_special(hit->id);
            i += hit->text.size();
            text_start = i;
        }
        if (text_start < s.size()) on_text(s.substr(text_start));
    }

private:
    struct entry {
        std::string text;
        std::int32_t id;
    };
    std::array<std::vector<entry>, 256> by_first_byte_;
    std::size_t count_ = 0;
};

}  // namespace lmtk::tokenize
// #include <lmtk/tokenize/vocab.hpp>
// lmtk::tokenize::vocab: the token table of a model, as GGUF stores it under tokenizer.ggml.*.
//
// It owns copies of the token texts, so it outlives the gguf::file it came from. Every array is
// checked against the token count and every special id against the range at load: a tokenizer
// built on a vocab never sees an id it cannot index.
// #include <lmtk/core/error.hpp>
// #include <lmtk/io/gguf.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lmtk::tokenize {

// GGUF token types (llama.cpp's llama_token_type). Stored ids: never renumber.
enum class token_type : std::uint8_t {
    undefined = 0,
    normal = 1,
    unknown = 2,
    control = 3,
    user_defined = 4,
    unused = 5,
    byte = 6,
};

inline constexpr std::int32_t no_token = -1;  // a special id the vocabulary does not have

// Everything a vocab is made of. from_gguf fills one from metadata; other loaders (llama2.c's
// tokenizer.bin, tests) can fill one by hand. `vocab` validates it.
struct vocab_spec {
    std::string model;                  // tokenizer.ggml.model: "llama" (SPM), "gpt2" (BPE), ...
    std::string pre;                    // tokenizer.ggml.pre: BPE pre-tokenizer name, may be empty
    // tokenizer.json's split patterns (none: no split); when set, used instead of `pre`.
    std::optional<std::vector<std::string>> pre_patterns;
    bool ignore_merges = false;  // with pre_patterns: a piece that is a token is taken whole
    std::vector<std::string> tokens;
    std::vector<float> scores;          // empty: all 0
    std::vector<token_type> types;      // empty: all normal
    std::vector<std::string> merges;    // BPE merges "a b", empty for SPM
    std::int32_t bos = no_token, eos = no_token, unk = no_token, sep = no_token, pad = no_token;
    std::int32_t eot = no_token, eom = no_token;  // end of turn / end of message (chat models)
    bool add_bos = false, add_eos = false, add_space_prefix = false;
};

class vocab {
public:
    vocab() = default;

    // `origin` names the source (a path) in error messages.
    vocab(vocab_spec spec, std::string_view origin) : s_(std::move(spec)) {
        const std::size_t n = s_.tokens.size();
        if (n == 0) fail(origin, ": the vocabulary has no tokens");
        if (n > static_cast<std::size_t>(INT32_MAX)) fail(origin, ": the vocabulary has too many tokens (", n, ")");
        if (s_.scores.empty()) s_.scores.assign(n, 0.0f);
        if (s_.types.empty()) s_.types.assign(n, token_type::normal);
        if (s_.scores.size() != n)
            fail(origin, ": tokenizer.ggml.scores has ", s_.scores.size(), " entries for ", n, " tokens");
        if (s_.types.size() != n)
            fail(origin, ": tokenizer.ggml.token_type has ", s_.types.size(), " entries for ", n, " tokens");
        for (std::size_t i = 0; i < n; ++i)
            if (static_cast<std::uint8_t>(s_.types[i]) > static_cast<std::uint8_t>(token_type::byte))
                fail(origin, ": token ", i, " has unknown token type ", int(static_cast<std::uint8_t>(s_.types[i])));
        const std::pair<const char*, std::int32_t> ids[] = {{"bos", s_.bos}, {"eos", s_.eos}, {"unknown", s_.unk},
                                                            {"seperator", s_.sep}, {"padding", s_.pad},
                                                            {"eot", s_.eot}, {"eom", s_.eom}};
        for (const auto& [name, id] : ids)
            if (id != no_token && (id < 0 || static_cast<std::size_t>(id) >= n))
                fail(origin, ": tokenizer.ggml.", name, "_token_id ", id, " is outside the vocabulary of ", n, " tokens");
        index_.reserve(n);
        // Duplicate texts happen in real vocabularies (e.g. unused slots); the first id wins, as
        // in sentencepiece and llama.cpp.
        for (std::size_t i = 0; i < n; ++i) index_.emplace(s_.tokens[i], static_cast<std::int32_t>(i));

        // End of generation: EOS, end of turn, end of message, and the turn-ending tokens chat
        // models name by text (llama.cpp stops on the same list): a Llama 3 instruct model ends
        // its answer with <|eot_id|> while its EOS is <|end_of_text|>; Qwen's is <|im_end|>.
        for (const std::int32_t id : {s_.eos, s_.eot, s_.eom})
            if (id != no_token) eog_.push_back(id);
        static constexpr std::string_view turn_ends[] = {
            "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>", "<|endoftext|>",
            "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "<|end_of_text|>", "<end_of_utterance>",
            "<｜end▁of▁sentence｜>"};  // DeepSeek's, with fullwidth bars
        for (const std::string_view t : turn_ends)
            if (const auto it = index_.find(t); it != index_.end()) {
                const token_type ty = s_.types[static_cast<std::size_t>(it->second)];
                if (ty == token_type::control || ty == token_type::user_defined) eog_.push_back(it->second);
            }
        std::sort(eog_.begin(), eog_.end());
        eog_.erase(std::unique(eog_.begin(), eog_.end()), eog_.end());
    }

    // Whether generating `id` ends the answer (see the constructor).
    bool is_eog(std::int32_t id) const noexcept { return std::binary_search(eog_.begin(), eog_.end(), id); }
    const std::vector<std::int32_t>& eog_ids() const noexcept { return eog_; }

    // Reads tokenizer.ggml.* from a GGUF file (a full model or a vocabulary-only file).
    static vocab from_gguf(const gguf::file& f) {
        const std::string& path = f.path();
        vocab_spec s;
        auto model = f.get<std::string>("tokenizer.ggml.model");
        if (!model) fail(path, ": no tokenizer in the file (tokenizer.ggml.model is missing)");
        s.model = std::move(*model);
        s.pre = f.get_or<std::string>("tokenizer.ggml.pre", "");
        auto tokens = f.get_array<std::string>("tokenizer.ggml.tokens");
        if (!tokens) fail(path, ": tokenizer.ggml.tokens is missing");
        s.tokens = std::move(*tokens);
        if (auto scores = f.get_array<float>("tokenizer.ggml.scores")) s.scores = std::move(*scores);
        if (auto types = f.get_array<std::int32_t>("tokenizer.ggml.token_type")) {
            s.types.reserve(types->size());
            for (std::size_t i = 0; i < types->size(); ++i) {
                const std::int32_t t = (*types)[i];
                if (t < 0 || t > static_cast<std::int32_t>(token_type::byte))
                    fail(path, ": token ", i, " has unknown token type ", t);
                s.types.push_back(static_cast<token_type>(t));
            }
        }
        if (auto merges = f.get_array<std::string>("tokenizer.ggml.merges")) s.merges = std::move(*merges);

        const bool spm = s.model == "llama";
        s.bos = special_id(f, "tokenizer.ggml.bos_token_id");
        s.eos = special_id(f, "tokenizer.ggml.eos_token_id");
        s.unk = special_id(f, "tokenizer.ggml.unknown_token_id");
        s.sep = special_id(f, "tokenizer.ggml.seperator_token_id");  // sic: the key llama.cpp writes
        s.pad = special_id(f, "tokenizer.ggml.padding_token_id");
        s.eot = special_id(f, "tokenizer.ggml.eot_token_id");
        s.eom = special_id(f, "tokenizer.ggml.eom_token_id");
        // Defaults as llama.cpp applies them: SPM models prepend BOS and a space unless told not to.
        s.add_bos = f.get_or<bool>("tokenizer.ggml.add_bos_token", spm);
        s.add_eos = f.get_or<bool>("tokenizer.ggml.add_eos_token", false);
        s.add_space_prefix = f.get_or<bool>("tokenizer.ggml.add_space_prefix", spm);
        return vocab(std::move(s), path);
    }

    const std::string& model() const noexcept { return s_.model; }
    const std::string& pre() const noexcept { return s_.pre; }
    const std::optional<std::vector<std::string>>& pre_patterns() const noexcept { return s_.pre_patterns; }
    bool ignore_merges() const noexcept { return s_.ignore_merges; }
    std::size_t size() const noexcept { return s_.tokens.size(); }
    bool contains(std::int32_t id) const noexcept { return id >= 0 && static_cast<std::size_t>(id) < size(); }

    // Per-token accessors; `id` must be valid (contains(id)).
    const std::string& text(std::int32_t id) const noexcept { return s_.tokens[static_cast<std::size_t>(id)]; }
    float score(std::int32_t id) const noexcept { return s_.scores[static_cast<std::size_t>(id)]; }
    token_type type(std::int32_t id) const noexcept { return s_.types[static_cast<std::size_t>(id)]; }

    // The id of a token text, or no_token.
    std::int32_t find(std::string_view text) const noexcept {
        const auto it = index_.find(text);
        return it == index_.end() ? no_token : it->second;
    }

    const std::vector<std::string>& merges() const noexcept { return s_.merges; }

    std::int32_t bos() const noexcept { return s_.bos; }
    std::int32_t eos() const noexcept { return s_.eos; }
    std::int32_t unk() const noexcept { return s_.unk; }
    std::int32_t sep() const noexcept { return s_.sep; }
    std::int32_t pad() const noexcept { return s_.pad; }
    std::int32_t eot() const noexcept { return s_.eot; }
    std::int32_t eom() const noexcept { return s_.eom; }
    bool add_bos() const noexcept { return s_.add_bos; }
    bool add_eos() const noexcept { return s_.add_eos; }
    bool add_space_prefix() const noexcept { return s_.add_space_prefix; }

private:
    // GGUF writers store "none" as u32 0xFFFFFFFF; some write -1. Both mean absent.
    static std::int32_t special_id(const gguf::file& f, std::string_view key) {
        const gguf::value* v = f.find(key);
        if (!v) return no_token;
        const auto i = v->as_int();
        if (!i) fail(f.path(), ": metadata key '", key, "' is ", gguf::value_type_name(v->type()), ", expected an integer");
        if (*i == -1 || *i == 0xFFFFFFFF) return no_token;
        if (*i < 0 || *i > INT32_MAX) fail(f.path(), ": ", key, " ", *i, " is not a valid token id");
        return static_cast<std::int32_t>(*i);
    }

    // Heterogeneous lookup: the hot merge loop probes with string_views into the input.
    struct text_hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
    };

    vocab_spec s_;
    std::unordered_map<std::string, std::int32_t, text_hash, std::equal_to<>> index_;
    std::vector<std::int32_t> eog_;  // sorted
};

}  // namespace lmtk::tokenize

#include <array>
#include <cstdint>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::tokenize {

namespace detail {

inline constexpr std::string_view spm_space = "\xE2\x96\x81";      // U+2581, SentencePiece's space
inline constexpr std::string_view spm_unk_surface = " \xE2\x81\x87 ";  // " ⁇ ", how sentencepiece shows <unk>

// Length of the UTF-8 character starting at s[i]. Anything malformed (stray continuation byte,
// invalid lead byte, truncated or broken sequence) counts as a one-byte character, so hostile
// input still tokenizes, via byte fallback, without reading past the end.
inline std::size_t utf8_char_len(std::string_view s, std::size_t i) noexcept {
    const auto lead = static_cast<unsigned char>(s[i]);
    std::size_t n = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 1;
    if (n > s.size() - i) return 1;
    for (std::size_t k = 1; k < n; ++k)
        if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 1;
    return n;
}

// "<0x41>" -> 0x41; -1 when the text is not a byte-token text.
inline int parse_byte_token(std::string_view t) noexcept {
    if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
    auto hex = [](char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    };
    const int hi = hex(t[3]), lo = hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

}  // namespace detail

class spm_tokenizer {
public:
    explicit spm_tokenizer(vocab v) : v_(std::move(v)) {
        if (v_.model() != "llama")
            fail("spm_tokenizer: the vocabulary's tokenizer model is '", v_.model(),
                 "', expected 'llama' (SentencePiece)");
        byte_ids_.fill(no_token);
        for (std::int32_t id = 0; id < static_cast<std::int32_t>(v_.size()); ++id) {
            const token_type t = v_.type(id);
            if (t == token_type::byte || t == token_type::undefined) {
                // Byte-typed tokens win over a normal token that merely looks like one.
                const int b = detail::parse_byte_token(v_.text(id));
                if (b >= 0 && (byte_ids_[b] == no_token || t == token_type::byte)) byte_ids_[b] = id;
            }
            if (mergeable(t) && v_.text(id).size() > max_piece_bytes_) max_piece_bytes_ = v_.text(id).size();
            // User-defined pieces are atomic in sentencepiece and llama.cpp, special or not;
            // control (and unknown) texts only when the caller asks for special parsing.
            if (t == token_type::user_defined) {
                always_.add(v_.text(id), id);
                with_control_.add(v_.text(id), id);
            } else if (t == token_type::control || t == token_type::unknown) {
                with_control_.add(v_.text(id), id);
            }
        }
        has_all_bytes_ = true;
        for (std::int32_t id : byte_ids_) has_all_bytes_ = has_all_bytes_ && id != no_token;
    }

    // Token ids of `text`: BOS first when add_bos (and the vocabulary has one). With
    // parse_special, control-token texts such as "<s>" become their ids; as in llama.cpp, the
    // text after a special token gets the space prefix again.
    std::vector<std::int32_t> encode(std::string_view text, bool add_bos, bool parse_special = false) const {
        std::vector<std::int32_t> out;
        out.reserve(text.size() / 3 + 2);
        if (add_bos && v_.bos() != no_token) out.push_back(v_.bos());
        bool after_special = true;  // the start of the text counts as "after a special token"
        (parse_special ? with_control_ : always_)
            .split(
                text,
                [&](std::string_view fragment) {
                    encode_fragment(fragment, v_.add_space_prefix() && after_special, out);
                    after_special = false;
                },
                [&](std::int32_t id) {
                    out.push_back(id);
                    after_special = true;
                });
        return out;
    }

    // Text of `ids`. The space the space prefix put at the start is dropped, as sentencepiece
    // does. skip_special drops control tokens; otherwise their text is written and, mirroring
    // encode, the space prefix after each is dropped too. An id outside the vocabulary throws.
    std::string decode(std::span<const std::int32_t> ids, bool skip_special = true) const {
        std::string out;
        bool at_prefix = v_.add_space_prefix();  // the next text piece starts with the space prefix
        for (const std::int32_t id : ids) {
            check(id);
            const token_type t = v_.type(id);
            if (t == token_type::control) {
                if (skip_special) continue;
                out += v_.text(id);
                at_prefix = v_.add_space_prefix();
                continue;
            }
            if (t == token_type::unknown) {
                out += detail::spm_unk_surface;
            } else if (t == token_type::byte) {
                out += piece(id);
            } else {
                std::string_view text = v_.text(id);
                if (at_prefix && text.starts_with(detail::spm_space)) text.remove_prefix(detail::spm_space.size());
                append_with_spaces(out, text);
            }
            at_prefix = false;
        }
        return out;
    }

    // The raw bytes one token stands for: "▁" -> ' ', <0xXX> -> that byte, control -> empty.
    // For streaming output: concatenated pieces may split a UTF-8 character across tokens.
    std::string piece(std::int32_t id) const {
        check(id);
        std::string out;
        switch (v_.type(id)) {
            case token_type::control: break;
            case token_type::unknown: out = detail::spm_unk_surface; break;
            case token_type::byte: {
                const int b = detail::parse_byte_token(v_.text(id));
                if (b >= 0) out.push_back(static_cast<char>(b));
                else append_with_spaces(out, v_.text(id));
                break;
            }
            default: append_with_spaces(out, v_.text(id));
        }
        return out;
    }

    const vocab& vocabulary() const noexcept { return v_; }
    std::int32_t bos() const noexcept { return v_.bos(); }
    std::int32_t eos() const noexcept { return v_.eos(); }
    // End of generation: EOS, end of turn/message, and the turn-ending tokens (vocab::is_eog).
    bool is_eog(std::int32_t id) const noexcept { return v_.is_eog(id); }
    std::size_t size() const noexcept { return v_.size(); }

private:
    // Pieces the merge step may form. Control, unknown and byte tokens are no text pieces (in
    // sentencepiece they are not in the piece table at all), so "<s>" is never built from '<' 's' '>'.
    static bool mergeable(token_type t) noexcept {
        return t != token_type::control && t != token_type::unknown && t != token_type::byte;
    }
    // Pieces emitted as they are; a merged `unused` piece is split back (sentencepiece does so).
    static bool emittable(token_type t) noexcept { return mergeable(t) && t != token_type::unused; }

    void check(std::int32_t id) const {
        if (!v_.contains(id)) fail("token id ", id, " is outside the vocabulary of ", v_.size(), " tokens");
    }

    static void append_with_spaces(std::string& out, std::string_view t) {
        for (std::size_t p = t.find(detail::spm_space); p != std::string_view::npos; p = t.find(detail::spm_space)) {
            out.append(t.substr(0, p)).push_back(' ');
            t.remove_prefix(p + detail::spm_space.size());
        }
        out.append(t);
    }

    // A stretch of the normalised text; merged nodes remember their halves for resegmenting.
    struct node {
        std::uint32_t start, len;
        std::int32_t left = -1, right = -1;  // -1: a single character
    };
    // One live symbol of the doubly linked list being merged.
    struct symbol {
        std::int32_t prev, next;
        std::int32_t node;  // -1 once merged into its left neighbour
    };
    struct candidate {
        float score;
        std::uint32_t start;               // byte offset of the left symbol: the tie-break
        std::int32_t left, right;          // symbols
        std::int32_t left_node, right_node;  // stale once either symbol changes
    };
    struct lower_priority {
        bool operator()(const candidate& a, const candidate& b) const noexcept {
            return a.score < b.score || (a.score == b.score && a.start > b.start);
        }
    };

    void encode_fragment(std::string_view fragment, bool space_prefix, std::vector<std::int32_t>& out) const {
        std::string norm;
        norm.reserve(fragment.size() + fragment.size() / 2 + detail::spm_space.size());
        if (space_prefix) norm += detail::spm_space;
        for (const char c : fragment) {
            if (c == ' ') norm += detail::spm_space;
            else norm.push_back(c);
        }
        if (norm.size() > UINT32_MAX) fail("spm_tokenizer: input of ", norm.size(), " bytes is too long to encode");

        std::vector<node> nodes;
        std::vector<symbol> syms;
        nodes.reserve(norm.size() * 2);
        syms.reserve(norm.size());
        for (std::size_t i = 0; i < norm.size();) {
            const std::size_t n = detail::utf8_char_len(norm, i);
            const auto k = static_cast<std::int32_t>(syms.size());
            nodes.push_back({static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(n)});
            syms.push_back({k - 1, k + 1, k});
            i += n;
        }
        if (syms.empty()) return;
        syms.back().next = -1;

        std::vector<candidate> heap_storage;
        heap_storage.reserve(syms.size());
        std::priority_queue<candidate, std::vector<candidate>, lower_priority> heap(lower_priority{},
                                                                                    std::move(heap_storage));
        auto consider = [&](std::int32_t l, std::int32_t r) {
            if (l < 0 || r < 0) return;
            const node& a = nodes[static_cast<std::size_t>(syms[l].node)];
            const node& b = nodes[static_cast<std::size_t>(syms[r].node)];
            if (a.len + b.len > max_piece_bytes_) return;
            const std::int32_t id = v_.find(std::string_view(norm).substr(a.start, a.len + b.len));
            if (id == no_token || !mergeable(v_.type(id))) return;
            heap.push({v_.score(id), a.start, l, r, syms[l].node, syms[r].node});
        };
        for (std::int32_t i = 0; i + 1 < static_cast<std::int32_t>(syms.size()); ++i) consider(i, i + 1);

        while (!heap.empty()) {
            const candidate c = heap.top();
            heap.pop();
            symbol& l = syms[c.left];
            symbol& r = syms[c.right];
            if (l.node != c.left_node || r.node != c.right_node) continue;  // a side has changed since
            const node& a = nodes[static_cast<std::size_t>(l.node)];
            const node& b = nodes[static_cast<std::size_t>(r.node)];
            nodes.push_back({a.start, a.len + b.len, l.node, r.node});
            l.node = static_cast<std::int32_t>(nodes.size() - 1);
            r.node = -1;
            l.next = r.next;
            if (r.next >= 0) syms[r.next].prev = c.left;
            consider(l.prev, c.left);
            consider(c.left, l.next);
        }

        std::vector<std::int32_t> pending;  // nodes to emit, last on top
        bool last_was_unk = false;          // sentencepiece collapses a run of unknowns into one
        for (std::int32_t s = 0; s >= 0; s = syms[s].next) {
            pending.push_back(syms[s].node);
            while (!pending.empty()) {
                const node& nd = nodes[static_cast<std::size_t>(pending.back())];
                pending.pop_back();
                const std::string_view t = std::string_view(norm).substr(nd.start, nd.len);
                const std::int32_t id = v_.find(t);
                if (id != no_token && emittable(v_.type(id))) {
                    out.push_back(id);
                    last_was_unk = false;
                } else if (nd.left >= 0) {
                    pending.push_back(nd.right);
                    pending.push_back(nd.left);
                } else if (has_all_bytes_) {
                    for (const char ch : t) out.push_back(byte_ids_[static_cast<unsigned char>(ch)]);
                    last_was_unk = false;
                } else if (v_.unk() != no_token) {
                    if (!last_was_unk) out.push_back(v_.unk());
                    last_was_unk = true;
                }
                // else: nothing can stand for it (no byte tokens, no unknown token); it is left
                // out, as the byte-level BPE and Hugging Face's tokenizers do.
            }
        }
    }

    vocab v_;
    std::array<std::int32_t, 256> byte_ids_{};
    bool has_all_bytes_ = false;
    std::size_t max_piece_bytes_ = 0;
    special_matcher always_;        // user-defined pieces
    special_matcher with_control_;  // user-defined, control and unknown pieces
};

}  // namespace lmtk::tokenize
// #include <lmtk/tokenize/tokenizer.hpp>
// lmtk::tokenize::tokenizer: whichever tokenizer a vocabulary calls for, behind one interface.
//
//   tokenizer.ggml.model "llama", no merges   -> spm_tokenizer (SentencePiece scores)
//   tokenizer.ggml.model "llama", with merges -> bpe_tokenizer, byte_fallback (HF tokenizer.json
//                                                BPE converted from SentencePiece)
//   tokenizer.ggml.model "gpt2"               -> bpe_tokenizer, byte_level
//
// A std::variant: the choice is made once, at load; each call is one switch, no virtual calls
// and no allocation beyond what the tokenizer itself does.
// #include <lmtk/core/error.hpp>
// #include <lmtk/tokenize/bpe.hpp>
// lmtk::tokenize::bpe_tokenizer: merge-rank BPE, as Hugging Face `tokenizers` and GPT-2 define
// it, in its two common dialects:
//
//   byte_level     (tokenizer.ggml.model "gpt2"; GPT-2, Llama 3, Qwen, DeepSeek, ...): the text
//                  is split by the family's pre-tokenizer (pre_tokenizer.hpp), each chunk's bytes
//                  are written as GPT-2's printable stand-ins
//                  (' ' -> 'Ġ'), and merges run within a chunk. Every byte is a token, so
//                  nothing is unknown.
//   byte_fallback  (tokenizer.ggml.model "llama" with merges; Llama/Mistral/TinyStories
//                  tokenizer.json files converted from SentencePiece): spaces become U+2581 "▁"
//                  (with one prepended when add_space_prefix), merges run over the whole
//                  stretch, and a character the vocabulary lacks becomes its UTF-8 bytes as
//                  <0xXX> tokens, or the unknown token (a run of them fused into one).
//
// encode, per stretch of text between special tokens:
//   1. initial symbols: one token per character (or per byte stand-in);
//   2. repeatedly merge the adjacent pair with the lowest merge rank (leftmost on ties) into
//      the token the merge produces; a min-heap of candidate pairs makes this O(n log n);
//   3. emit the symbols' ids.
// Unlike spm_tokenizer, which merges whatever concatenation has the best score, only listed
// merges apply: this is what the checkpoint's own tokenizer does.
// #include <lmtk/core/error.hpp>
// #include <lmtk/tokenize/pre_tokenizer.hpp>
// #include <lmtk/tokenize/special_tokens.hpp>
// #include <lmtk/tokenize/spm.hpp>
// #include <lmtk/tokenize/unicode.hpp>
// #include <lmtk/tokenize/vocab.hpp>

#include <array>
#include <cstdint>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lmtk::tokenize {

class bpe_tokenizer {
public:
    enum class dialect { byte_level, byte_fallback };

    explicit bpe_tokenizer(vocab v) : v_(std::move(v)) {
        if (v_.model() == "gpt2") {
            dialect_ = dialect::byte_level;
            // The split: tokenizer.json's own patterns, else the family tokenizer.ggml.pre names
            // (an unknown name throws rather than splitting wrongly).
            if (v_.pre_patterns()) {
                pre_ = pre_tokenizer(pre_tokenizer_spec{*v_.pre_patterns(), v_.ignore_merges()});
            } else {
                pre_ = pre_tokenizer(pre_tokenizer_for(v_.pre()));
            }
        } else if (v_.model() == "llama") {
            dialect_ = dialect::byte_fallback;
            if (v_.merges().empty()) fail("bpe_tokenizer: a 'llama' vocabulary without merges is SentencePiece; use spm_tokenizer");
        } else {
            fail("bpe_tokenizer: tokenizer model '", v_.model(), "' is not BPE (supported: gpt2, llama with merges)");
        }

        const auto n = static_cast<std::int32_t>(v_.size());
        byte_ids_.fill(no_token);
        for (std::int32_t id = 0; id < n; ++id) {
            const token_type t = v_.type(id);
            if (dialect_ == dialect::byte_fallback && (t == token_type::byte || t == token_type::undefined)) {
                const int b = detail::parse_byte_token(v_.text(id));
                if (b >= 0 && (byte_ids_[b] == no_token || t == token_type::byte)) byte_ids_[b] = id;
            }
            if (t == token_type::user_defined) {
                always_.add(v_.text(id), id);
                with_control_.add(v_.text(id), id);
            } else if (t == token_type::control || t == token_type::unknown) {
                with_control_.add(v_.text(id), id);
            }
        }
        has_all_bytes_ = true;
        for (const std::int32_t id : byte_ids_) has_all_bytes_ = has_all_bytes_ && id != no_token;
        if (dialect_ == dialect::byte_level) {
            const auto& bm = unicode::byte_map::get();
            for (int b = 0; b < 256; ++b) {
                // A byte-level vocabulary normally has a token for every byte stand-in. Some lack
                // a few control bytes (Falcon's has no token for byte 3): such a byte becomes
                // the unknown token, or, without one, is left out, as Hugging Face's BPE does.
                byte_ids_[b] = v_.find(bm.to_utf8[b]);
            }
        }

        // "left right" -> (rank, result). Merges whose parts or result are not tokens can never
        // apply (HF refuses such files; llama.cpp skips them): skip them too.
        ranks_.reserve(v_.merges().size());
        for (std::size_t r = 0; r < v_.merges().size(); ++r) {
            const std::string& m = v_.merges()[r];
            const std::size_t sp = m.find(' ', 1);
            if (sp == std::string::npos) fail("bpe_tokenizer: merge ", r, " '", m, "' is not two tokens separated by a space");
            const std::string_view a = std::string_view(m).substr(0, sp), b = std::string_view(m).substr(sp + 1);
            const std::int32_t ia = v_.find(a), ib = v_.find(b);
            const std::int32_t ic = v_.find(std::string(a) + std::string(b));
            if (ia == no_token || ib == no_token || ic == no_token) continue;
            ranks_.emplace(key(ia, ib), merge{static_cast<std::uint32_t>(r), ic});  // first listing wins
        }
    }

    dialect kind() const noexcept { return dialect_; }

    // Token ids of `text`: BOS first when add_bos (and the vocabulary has one). With
    // parse_special, control-token texts such as "<|endoftext|>" become their ids.
    std::vector<std::int32_t> encode(std::string_view text, bool add_bos, bool parse_special = false) const {
        std::vector<std::int32_t> out;
        out.reserve(text.size() / 3 + 2);
        if (add_bos && v_.bos() != no_token) out.push_back(v_.bos());
        bool after_special = true;  // the start of the text counts as "after a special token"
        (parse_special ? with_control_ : always_)
            .split(
                text,
                [&](std::string_view fragment) {
                    encode_fragment(fragment, v_.add_space_prefix() && after_special, out);
                    after_special = false;
                },
                [&](std::int32_t id) {
                    out.push_back(id);
                    after_special = true;
                });
        return out;
    }

    // Text of `ids`. skip_special drops control tokens. For byte_fallback the space the space
    // prefix put at the start (and after each control token) is dropped again, as sentencepiece
    // and the HF decoder (Strip) do. An id outside the vocabulary throws.
    std::string decode(std::span<const std::int32_t> ids, bool skip_special = true) const {
        std::string out;
        bool at_prefix = v_.add_space_prefix();
        for (const std::int32_t id : ids) {
            check(id);
            if (v_.type(id) == token_type::control) {
                if (skip_special) continue;
                out += v_.text(id);
                at_prefix = v_.add_space_prefix();
                continue;
            }
            std::string p = piece(id);
            if (at_prefix && !p.empty() && p[0] == ' ') p.erase(0, 1);
            out += p;
            at_prefix = false;
        }
        return out;
    }

    // The raw bytes one token stands for; control tokens are empty. For streaming output:
    // concatenated pieces may split a UTF-8 character across tokens.
    std::string piece(std::int32_t id) const {
        check(id);
        const std::string& t = v_.text(id);
        std::string out;
        switch (v_.type(id)) {
            case token_type::control: return out;
            case token_type::user_defined: return t;  // stored as plain text in both dialects
            case token_type::unknown:
                if (dialect_ == dialect::byte_fallback) return std::string(detail::spm_unk_surface);
                return t;
            case token_type::byte:
                if (const int b = detail::parse_byte_token(t); b >= 0) return std::string(1, static_cast<char>(b));
                break;
            default: break;
        }
        if (dialect_ == dialect::byte_level) {
            // Stand-ins back to bytes; a character outside the table is kept as it is.
            const auto& bm = unicode::byte_map::get();
            for (const unicode::code_point& c : unicode::decode_utf8(t)) {
                if (c.cp < bm.from_cp.size() && bm.from_cp[c.cp] >= 0) out.push_back(static_cast<char>(bm.from_cp[c.cp]));
                else out.append(t, c.offset, c.len);
            }
        } else {
            std::string_view rest = t;
            for (std::size_t p = rest.find(detail::spm_space); p != std::string_view::npos; p = rest.find(detail::spm_space)) {
                out.append(rest.substr(0, p)).push_back(' ');
                rest.remove_prefix(p + detail::spm_space.size());
            }
            out.append(rest);
        }
        return out;
    }

    const vocab& vocabulary() const noexcept { return v_; }
    std::int32_t bos() const noexcept { return v_.bos(); }
    std::int32_t eos() const noexcept { return v_.eos(); }
    bool is_eog(std::int32_t id) const noexcept { return v_.is_eog(id); }
    std::size_t size() const noexcept { return v_.size(); }

private:
    struct merge {
        std::uint32_t rank;
        std::int32_t result;
    };
    static std::uint64_t key(std::int32_t a, std::int32_t b) noexcept {
        return (std::uint64_t(std::uint32_t(a)) << 32) | std::uint32_t(b);
    }

    void check(std::int32_t id) const {
        if (!v_.contains(id)) fail("token id ", id, " is outside the vocabulary of ", v_.size(), " tokens");
    }

    void encode_fragment(std::string_view fragment, bool space_prefix, std::vector<std::int32_t>& out) const {
        if (dialect_ == dialect::byte_level) {
            std::string prefixed;
            if (space_prefix && !fragment.empty() && fragment[0] != ' ') {
                prefixed = " ";
                prefixed += fragment;
                fragment = prefixed;
            }
            std::vector<std::int32_t> syms;
            std::string whole;
            const auto& bm = unicode::byte_map::get();
            pre_.split(fragment, [&](std::string_view chunk) {
                if (pre_.ignore_merges()) {  // a piece that is a token is that token, merges or not
                    whole.clear();
                    for (const char ch : chunk) whole += bm.to_utf8[static_cast<unsigned char>(ch)];
                    if (const std::int32_t id = v_.find(whole); id != no_token) {
                        out.push_back(id);
                        return;
                    }
                }
                syms.clear();
                for (const char ch : chunk) {
                    const std::int32_t id = byte_ids_[static_cast<unsigned char>(ch)];
                    syms.push_back(id == no_token ? v_.unk() : id);
                }
                merge_symbols(syms, out);
            });
            return;
        }

        // byte_fallback: spaces as "▁", one prepended, then one symbol per character.
        std::string norm;
        norm.reserve(fragment.size() + fragment.size() / 2 + detail::spm_space.size());
        if (space_prefix && !fragment.empty()) norm += detail::spm_space;
        for (const char c : fragment) {
            if (c == ' ') norm += detail::spm_space;
            else norm.push_back(c);
        }
        std::vector<std::int32_t> syms;
        syms.reserve(norm.size());
        bool last_unk = false;  // a run of unknown characters becomes one unknown token
        for (std::size_t i = 0; i < norm.size();) {
            const std::size_t n = detail::utf8_char_len(norm, i);
            const std::string_view ch = std::string_view(norm).substr(i, n);
            i += n;
            const std::int32_t id = v_.find(ch);
            if (id != no_token && v_.type(id) != token_type::control && v_.type(id) != token_type::unknown) {
                syms.push_back(id);
                last_unk = false;
            } else if (has_all_bytes_) {
                for (const char b : ch) syms.push_back(byte_ids_[static_cast<unsigned char>(b)]);
                last_unk = false;
            } else if (v_.unk() != no_token) {
                if (!last_unk) syms.push_back(v_.unk());
                last_unk = true;
            }
            // else: no token, no byte tokens, no unknown token. Hugging Face's BPE leaves such a
            // character out (its neighbours become adjacent and may merge); so does lmtk, rather
            // than refusing a prompt at encode time.
        }
        merge_symbols(syms, out);
    }

    // Applies merges to `syms` (token ids, no_token allowed for nothing-mergeable) and appends
    // the result to out.
    void merge_symbols(const std::vector<std::int32_t>& syms, std::vector<std::int32_t>& out) const {
        const auto n = static_cast<std::int32_t>(syms.size());
        if (n == 0) return;
        if (n == 1) {
            if (syms[0] != no_token) out.push_back(syms[0]);
            return;
        }
        struct symbol {
            std::int32_t id, prev, next;
        };
        std::vector<symbol> s(static_cast<std::size_t>(n));
        for (std::int32_t i = 0; i < n; ++i) s[i] = {syms[i], i - 1, i + 1 < n ? i + 1 : -1};

        struct candidate {
            std::uint32_t rank;
            std::int32_t left, right;       // symbol positions
            std::int32_t left_id, right_id;  // stale once either symbol has changed
            std::int32_t result;
        };
        struct later {  // min-heap on (rank, position)
            bool operator()(const candidate& a, const candidate& b) const noexcept {
                return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
            }
        };
        std::priority_queue<candidate, std::vector<candidate>, later> heap;
        auto consider = [&](std::int32_t l, std::int32_t r) {
            if (l < 0 || r < 0 || s[l].id == no_token || s[r].id == no_token) return;
            const auto it = ranks_.find(key(s[l].id, s[r].id));
            if (it == ranks_.end()) return;
            heap.push({it->second.rank, l, r, s[l].id, s[r].id, it->second.result});
        };
        for (std::int32_t i = 0; i + 1 < n; ++i) consider(i, i + 1);

        while (!heap.empty()) {
            const candidate c = heap.top();
            heap.pop();
            symbol& l = s[c.left];
            symbol& r = s[c.right];
            // Stale: the right symbol was absorbed (no longer l's neighbour) or either changed.
            if (l.next != c.right || l.id != c.left_id || r.id != c.right_id) continue;
            l.id = c.result;
            l.next = r.next;
            if (r.next >= 0) s[r.next].prev = c.left;
            r.id = no_token;
            r.prev = r.next = -1;
            consider(l.prev, c.left);
            consider(c.left, l.next);
        }
        for (std::int32_t i = 0; i >= 0; i = s[i].next)
            if (s[i].id != no_token) out.push_back(s[i].id);
    }

    vocab v_;
    dialect dialect_ = dialect::byte_level;
    pre_tokenizer pre_;  // byte_level: how text is cut into pieces before merging
    std::array<std::int32_t, 256> byte_ids_{};  // byte_fallback: <0xXX> ids; byte_level: stand-in ids
    bool has_all_bytes_ = false;
    std::unordered_map<std::uint64_t, merge> ranks_;
    special_matcher always_;        // user-defined pieces
    special_matcher with_control_;  // user-defined, control and unknown pieces
};

}  // namespace lmtk::tokenize
// #include <lmtk/tokenize/spm.hpp>
// #include <lmtk/tokenize/vocab.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace lmtk::tokenize {

class tokenizer {
public:
    explicit tokenizer(spm_tokenizer t) : impl_(std::move(t)) {}
    explicit tokenizer(bpe_tokenizer t) : impl_(std::move(t)) {}

    // The tokenizer `v` calls for (see the table above); `origin` names it in errors.
    static tokenizer from_vocab(vocab v, std::string_view origin = "") {
        const std::string model = v.model();
        try {
            if (model == "llama" && v.merges().empty()) return tokenizer(spm_tokenizer(std::move(v)));
            if (model == "llama" || model == "gpt2") return tokenizer(bpe_tokenizer(std::move(v)));
        } catch (const error& e) {
            if (origin.empty()) throw;
            fail(origin, ": ", e.what());
        }
        fail(origin.empty() ? std::string_view("tokenizer") : origin, ": tokenizer model '", model,
             "' is not supported (supported: llama (SentencePiece or BPE with byte fallback), gpt2 (byte-level BPE))");
    }

    // "spm", "bpe (byte-level)" or "bpe (byte fallback)", for messages.
    std::string_view kind() const noexcept {
        if (std::holds_alternative<spm_tokenizer>(impl_)) return "spm";
        return std::get<bpe_tokenizer>(impl_).kind() == bpe_tokenizer::dialect::byte_level ? "bpe (byte-level)"
                                                                                             : "bpe (byte fallback)";
    }

    std::vector<std::int32_t> encode(std::string_view text, bool add_bos, bool parse_special = false) const {
        return std::visit([&](const auto& t) { return t.encode(text, add_bos, parse_special); }, impl_);
    }
    std::string decode(std::span<const std::int32_t> ids, bool skip_special = true) const {
        return std::visit([&](const auto& t) { return t.decode(ids, skip_special); }, impl_);
    }
    std::string piece(std::int32_t id) const {
        return std::visit([&](const auto& t) { return t.piece(id); }, impl_);
    }
    const vocab& vocabulary() const noexcept {
        return std::visit([](const auto& t) -> const vocab& { return t.vocabulary(); }, impl_);
    }
    std::int32_t bos() const noexcept { return vocabulary().bos(); }
    std::int32_t eos() const noexcept { return vocabulary().eos(); }
    bool is_eog(std::int32_t id) const noexcept {
        return std::visit([&](const auto& t) { return t.is_eog(id); }, impl_);
    }
    std::size_t size() const noexcept { return vocabulary().size(); }

    // The concrete tokenizer, for code that needs its specifics.
    template <class T>
    const T* get_if() const noexcept {
        return std::get_if<T>(&impl_);
    }

private:
    std::variant<spm_tokenizer, bpe_tokenizer> impl_;
};

}  // namespace lmtk::tokenize
// #include <lmtk/tokenize/vocab.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_set>
#include <utility>
#include <vector>

namespace lmtk::tokenize {

// Keys come out sorted (nlohmann::json's std::map): the readers do not care, and an ordered
// object would cost a linear search per insertion, hours for a 256k-token vocabulary.
struct hf_tokenizer_files {
    nlohmann::json tokenizer;         // tokenizer.json
    nlohmann::json tokenizer_config;  // tokenizer_config.json
};

namespace detail {

// SentencePiece BPE as merges: for every token t and every split of t into two tokens (a, b)
// at a character boundary, the merge "a b"; ranked by t's score (best first), then by the
// scores of a and b, as Hugging Face's converter from SentencePiece ranks them.
inline std::vector<std::pair<std::string, std::string>> merges_from_scores(const vocab& v) {
    struct m {
        float score, score_a, score_b;
        std::int32_t id, a, b;
    };
    std::vector<m> all;
    const auto n = static_cast<std::int32_t>(v.size());
    for (std::int32_t id = 0; id < n; ++id) {
        const token_type t = v.type(id);
        if (t != token_type::normal && t != token_type::undefined) continue;
        const std::string& text = v.text(id);
        for (std::size_t cut = 1; cut < text.size(); ++cut) {
            if ((static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) continue;  // inside a character
            const std::int32_t a = v.find(std::string_view(text).substr(0, cut));
            const std::int32_t b = v.find(std::string_view(text).substr(cut));
            if (a == no_token || b == no_token) continue;
            const auto normal = [&](std::int32_t x) { return v.type(x) == token_type::normal || v.type(x) == token_type::undefined; };
            if (!normal(a) || !normal(b)) continue;
            all.push_back({v.score(id), v.score(a), v.score(b), id, a, b});
        }
    }
    std::stable_sort(all.begin(), all.end(), [](const m& x, const m& y) {
        return std::tie(y.score, y.score_a, y.score_b) < std::tie(x.score, x.score_a, x.score_b);
    });
    std::vector<std::pair<std::string, std::string>> out;
    out.reserve(all.size());
    for (const m& x : all) out.emplace_back(v.text(x.a), v.text(x.b));
    return out;
}

inline nlohmann::json token_entry(std::int32_t id, const std::string& content, bool special) {
    return {{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
            {"normalized", false}, {"special", special}};
}

}  // namespace detail

// The Hugging Face files for `tok`. `chat_template`, when given, goes into tokenizer_config.json.
inline hf_tokenizer_files export_hf_tokenizer(const tokenizer& tok, const std::optional<std::string>& chat_template = std::nullopt) {
    using json = nlohmann::json;
    const vocab& v = tok.vocabulary();
    const bool byte_level = tok.kind() == "bpe (byte-level)";
    const bool spm = tok.kind() == "spm";
    const auto n = static_cast<std::int32_t>(v.size());

    json vocab_map = json::object();
    json added = json::array();
    std::unordered_set<std::string_view> seen;
    for (std::int32_t id = 0; id < n; ++id) {
        const std::string& text = v.text(id);
        // A JSON object cannot hold one text twice; later duplicates (placeholders) keep no id.
        if (!seen.insert(text).second) continue;
        vocab_map[text] = id;
        const token_type t = v.type(id);
        if (t == token_type::control || t == token_type::unknown || t == token_type::user_defined)
            added.push_back(detail::token_entry(id, text, t != token_type::user_defined));
    }

    json merges = json::array();
    if (spm) {
        for (auto& [a, b] : detail::merges_from_scores(v)) merges.push_back(json::array({a, b}));
    } else {
        for (const std::string& m : v.merges()) {
            const std::size_t sp = m.find(' ', 1);
            if (sp == std::string::npos) continue;
            merges.push_back(json::array({m.substr(0, sp), m.substr(sp + 1)}));
        }
    }

    json model = {{"type", "BPE"}, {"dropout", nullptr}};
    json t = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", added}};
    if (byte_level) {
        const pre_tokenizer_spec spec =
            v.pre_patterns() ? pre_tokenizer_spec{*v.pre_patterns(), v.ignore_merges()} : pre_tokenizer_for(v.pre());
        json steps = json::array();
        for (const std::string& p : spec.patterns)
            steps.push_back({{"type", "Split"}, {"pattern", {{"Regex", p}}}, {"behavior", "Isolated"}, {"invert", false}});
        steps.push_back({{"type", "ByteLevel"}, {"add_prefix_space", v.add_space_prefix()}, {"trim_offsets", true}, {"use_regex", false}});
        t["normalizer"] = nullptr;
        t["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", steps}};
        t["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
        model["unk_token"] = v.unk() != no_token ? json(v.text(v.unk())) : json(nullptr);
        model["continuing_subword_prefix"] = nullptr;
        model["end_of_word_suffix"] = nullptr;
        model["fuse_unk"] = false;
        model["byte_fallback"] = false;
        model["ignore_merges"] = spec.ignore_merges;
    } else {
        const std::string space(detail::spm_space);
        json norms = json::array();
        if (v.add_space_prefix()) norms.push_back({{"type", "Prepend"}, {"prepend", space}});
        norms.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", space}});
        t["normalizer"] = {{"type", "Sequence"}, {"normalizers", norms}};
        t["pre_tokenizer"] = nullptr;
        json decoders = json::array();
        decoders.push_back({{"type", "Replace"}, {"pattern", {{"String", space}}}, {"content", " "}});
        decoders.push_back({{"type", "ByteFallback"}});
        decoders.push_back({{"type", "Fuse"}});
        if (v.add_space_prefix()) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
        t["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
        model["unk_token"] = v.unk() != no_token ? json(v.text(v.unk())) : json(nullptr);
        model["continuing_subword_prefix"] = nullptr;
        model["end_of_word_suffix"] = nullptr;
        model["fuse_unk"] = true;
        model["byte_fallback"] = true;
        model["ignore_merges"] = false;
    }
    model["vocab"] = std::move(vocab_map);
    model["merges"] = std::move(merges);

    // BOS/EOS around every encoded text, as the vocabulary asks.
    const bool bos = v.add_bos() && v.bos() != no_token, eos = v.add_eos() && v.eos() != no_token;
    if (bos || eos) {
        auto special = [&](std::int32_t id) { return json{{"SpecialToken", {{"id", v.text(id)}, {"type_id", 0}}}}; };
        json single = json::array(), pair = json::array(), specials = json::object();
        if (bos) single.push_back(special(v.bos()));
        single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
        if (eos) single.push_back(special(v.eos()));
        pair = single;
        if (bos) pair.push_back(special(v.bos()));
        pair.push_back({{"Sequence", {{"id", "B"}, {"type_id", 1}}}});
        if (eos) pair.push_back(special(v.eos()));
        for (const std::int32_t id : {bos ? v.bos() : no_token, eos ? v.eos() : no_token})
            if (id != no_token) specials[v.text(id)] = {{"id", v.text(id)}, {"ids", json::array({id})}, {"tokens", json::array({v.text(id)})}};
        t["post_processor"] = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
    } else {
        t["post_processor"] = nullptr;
    }
    t["model"] = std::move(model);

    json cfg = {{"tokenizer_class", "PreTrainedTokenizerFast"}, {"clean_up_tokenization_spaces", false},
                {"add_bos_token", v.add_bos()}, {"add_eos_token", v.add_eos()}};
    if (v.bos() != no_token) cfg["bos_token"] = v.text(v.bos());
    if (v.eos() != no_token) cfg["eos_token"] = v.text(v.eos());
    if (v.unk() != no_token) cfg["unk_token"] = v.text(v.unk());
    if (v.pad() != no_token) cfg["pad_token"] = v.text(v.pad());
    if (chat_template) cfg["chat_template"] = *chat_template;
    return {std::move(t), std::move(cfg)};
}

}  // namespace lmtk::tokenize
// #include <lmtk/tokenize/jinja/template.hpp>
// lmtk::jinja::template_program: renders a model's own Jinja chat template (GGUF
// tokenizer.chat_template, tokenizer_config.json's chat_template) as transformers'
// apply_chat_template does: a sandboxed Jinja2 environment with trim_blocks and lstrip_blocks,
// loop controls, HF's tojson (json.dumps, non-ASCII kept), raise_exception and strftime_now.
//
//   const jinja::template_program t(source);          // parses; a parse error throws
//   std::string prompt = t.render(context);           // context: JSON object (messages, tools,
//                                                     // add_generation_prompt, bos_token, ...)
//
// A template is code from a model file: rendering is bounded (loop iterations, output size,
// call depth) and every unsupported construct is an lmtk::error naming it, never a crash.
// #include <lmtk/tokenize/jinja/parse.hpp>
// The Jinja subset chat templates are written in: lexing (with the whitespace control Hugging
// Face applies: trim_blocks and lstrip_blocks on, `-` and `+` modifiers) and parsing into a tree
// that jinja/template.hpp renders.
//
// Statements: if/elif/else, for (tuple targets, `if` filter, else, loop.*), set (names, tuples,
// namespace attributes, block form), macro (defaults), call-free filter blocks, break/continue
// (the loopcontrols extension HF enables), generation (HF's tag; renders its body).
// Expressions: literals (strings, numbers, lists, dicts, tuples, true/false/none in either case),
// names, .attr, [index], [a:b:c], calls with keyword arguments, filters with arguments, `is`
// tests, not/and/or, comparisons and `in`, + - * / // % ** ~, `a if b else c`.
// Anything else is a parse error naming the construct and its line.
// #include <lmtk/tokenize/jinja/value.hpp>
// The values of lmtk's Jinja interpreter (jinja/template.hpp): what chat templates compute with.
// Python's semantics where a template can see them: truthiness, `str()` of every type (None,
// True, 1.0, ['a'], {'k': 1}), comparisons, and json.dumps for the `tojson` filter (as Hugging
// Face's apply_chat_template defines it: non-ASCII kept, ", " and ": " separators).
//
// Lists and dicts are shared (copying a value copies a pointer); templates run sandboxed, as in
// transformers, so nothing but a namespace() is ever changed after it is made.
// #include <lmtk/core/error.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::jinja {

class value;
using value_list = std::vector<value>;
using value_dict = std::vector<std::pair<std::string, value>>;  // insertion order, as Python's dict
using kwargs = std::vector<std::pair<std::string, value>>;
using function = std::function<value(value_list& args, kwargs& kw)>;

// A template error: the message says what and where (line of the template).
[[noreturn]] inline void template_error(std::string_view what, int line = 0) {
    if (line > 0) fail("chat template, line ", line, ": ", what);
    fail("chat template: ", what);
}

class value {
public:
    enum class type : std::uint8_t { undefined, none, boolean, integer, floating, string, list, dict, ns, callable };

    value() = default;  // undefined
    static value none() { return value(type::none); }
    value(bool b) : t_(type::boolean), i_(b) {}
    value(int i) : t_(type::integer), i_(i) {}
    value(std::int64_t i) : t_(type::integer), i_(i) {}
    value(double d) : t_(type::floating), f_(d) {}
    value(std::string s) : t_(type::string), s_(std::make_shared<const std::string>(std::move(s))) {}
    value(const char* s) : value(std::string(s)) {}
    value(std::string_view s) : value(std::string(s)) {}
    value(value_list l) : t_(type::list) {
        for (const value& x : l) take_nesting(x);
        l_ = std::make_shared<value_list>(std::move(l));
    }
    value(value_dict d, bool is_namespace = false) : t_(is_namespace ? type::ns : type::dict) {
        for (const auto& kv : d) take_nesting(kv.second);
        holds_ns_ = holds_ns_ || is_namespace;
        d_ = std::make_shared<value_dict>(std::move(d));
    }

    // Lists and dicts nest at most this deep: str(), tojson and the destructors recurse, and a
    // hostile template could otherwise build `[[[...]]]` a million levels deep in a loop.
    static constexpr int max_nesting = 256;
    // Whether a namespace is inside (or is) this value: a namespace attribute may not hold one,
    // which is what keeps values free of cycles.
    bool holds_namespace() const noexcept { return holds_ns_; }
    value(function f) : t_(type::callable), fn_(std::make_shared<function>(std::move(f))) {}

    // From parsed JSON; an nlohmann::ordered_json keeps the keys in the order they were written,
    // which a template's tojson shows (Python's dicts keep insertion order).
    template <class Json>
    static value from_json(const Json& j) {
        switch (j.type()) {
            case Json::value_t::null: return none();
            case Json::value_t::boolean: return value(j.template get<bool>());
            case Json::value_t::number_integer: return value(j.template get<std::int64_t>());
            case Json::value_t::number_unsigned:
                return value(static_cast<std::int64_t>(std::min<std::uint64_t>(j.template get<std::uint64_t>(), INT64_MAX)));
            case Json::value_t::number_float: return value(j.template get<double>());
            case Json::value_t::string: return value(j.template get<std::string>());
            case Json::value_t::array: {
                value_list l;
                l.reserve(j.size());
                for (const auto& x : j) l.push_back(from_json(x));
                return value(std::move(l));
            }
            case Json::value_t::object: {
                value_dict d;
                d.reserve(j.size());
                for (auto it = j.begin(); it != j.end(); ++it) d.emplace_back(it.key(), from_json(it.value()));
                return value(std::move(d));
            }
            default: return none();
        }
    }

    // Python generators (what jinja2's select, reject, selectattr, rejectattr and map return):
    // iterable, always true, but without a length, a str() or a JSON form; `|list` makes a list.
    static value generator(value_list l) {
        value v(std::move(l));
        v.generator_ = true;
        return v;
    }
    bool is_generator() const noexcept { return generator_; }
    value as_list() const {
        value v = *this;
        v.generator_ = false;
        v.tuple_ = false;
        return v;
    }
    // Python tuples (tuple literals, dict items): a list that prints as (a, b) and (a,).
    static value tuple(value_list l) {
        value v(std::move(l));
        v.tuple_ = true;
        return v;
    }
    bool is_tuple() const noexcept { return tuple_; }
    // Markup (jinja2's safe strings): adding a plain string to one HTML-escapes the plain one.
    static value markup(std::string s) {
        value v(std::move(s));
        v.markup_ = true;
        return v;
    }
    bool is_markup() const noexcept { return markup_; }
    static std::string html_escape(std::string_view s) {
        std::string out;
        for (const char c : s) {
            switch (c) {
                case '&': out += "&amp;"; break;
                case '<': out += "&lt;"; break;
                case '>': out += "&gt;"; break;
                case '"': out += "&#34;"; break;
                case '\'': out += "&#39;"; break;
                default: out += c;
            }
        }
        return out;
    }

    type kind() const noexcept { return t_; }
    bool is_undefined() const noexcept { return t_ == type::undefined; }
    bool is_none() const noexcept { return t_ == type::none; }
    bool is_bool() const noexcept { return t_ == type::boolean; }
    bool is_int() const noexcept { return t_ == type::integer; }
    bool is_float() const noexcept { return t_ == type::floating; }
    bool is_number() const noexcept { return t_ == type::integer || t_ == type::floating; }
    bool is_string() const noexcept { return t_ == type::string; }
    bool is_list() const noexcept { return t_ == type::list; }
    bool is_dict() const noexcept { return t_ == type::dict || t_ == type::ns; }
    bool is_namespace() const noexcept { return t_ == type::ns; }
    bool is_callable() const noexcept { return t_ == type::callable; }

    bool as_bool() const noexcept { return i_ != 0; }
    std::int64_t as_int() const noexcept {
        if (t_ != type::floating) return i_;
        // Python's int(x) truncates; outside 64 bits (and NaN) lmtk saturates rather than invoke UB.
        if (std::isnan(f_)) return 0;
        if (f_ >= 9.2233720368547758e18) return INT64_MAX;
        if (f_ <= -9.2233720368547758e18) return INT64_MIN;
        return static_cast<std::int64_t>(f_);
    }
    double as_float() const noexcept { return t_ == type::floating ? f_ : static_cast<double>(i_); }
    const std::string& str() const noexcept {
        static const std::string empty;
        return s_ ? *s_ : empty;
    }
    const value_list& list() const noexcept {
        static const value_list empty;
        return l_ ? *l_ : empty;
    }
    const value_dict& dict() const noexcept {
        static const value_dict empty;
        return d_ ? *d_ : empty;
    }
    value_dict& mutable_namespace() const { return *d_; }
    value call(value_list& args, kwargs& kw) const { return (*fn_)(args, kw); }

    // dict[key]; undefined when absent.
    value get(std::string_view key) const {
        for (const auto& [k, v] : dict())
            if (k == key) return v;
        return {};
    }
    bool has(std::string_view key) const {
        for (const auto& kv : dict())
            if (kv.first == key) return true;
        return false;
    }

    // Python's truthiness.
    bool truthy() const noexcept {
        if (generator_) return true;
        switch (t_) {
            case type::undefined:
            case type::none: return false;
            case type::boolean:
            case type::integer: return i_ != 0;
            case type::floating: return f_ != 0.0;
            case type::string: return !str().empty();
            case type::list: return !list().empty();
            case type::dict:
            case type::ns: return !dict().empty();
            case type::callable: return true;
        }
        return false;
    }

    std::size_t length() const {
        if (generator_) template_error("object of type 'generator' has no len()");
        switch (t_) {
            case type::undefined: return 0;  // jinja2's Undefined is an empty sequence
            case type::string: return utf8_length(str());
            case type::list: return list().size();
            case type::dict:
            case type::ns: return dict().size();
            default: template_error(std::string("object of type ") + type_name() + " has no length");
        }
    }

    const char* type_name() const noexcept {
        switch (t_) {
            case type::undefined: return "undefined";
            case type::none: return "NoneType";
            case type::boolean: return "bool";
            case type::integer: return "int";
            case type::floating: return "float";
            case type::string: return "str";
            case type::list: return "list";
            case type::dict: return "dict";
            case type::ns: return "Namespace";
            case type::callable: return "function";
        }
        return "?";
    }

    // Python's str(): what {{ x }} prints.
    std::string to_string() const {
        switch (t_) {
            case type::undefined: return "";
            case type::string: return str();
            default: return repr();
        }
    }

    // Python's repr(), used inside lists and dicts.
    std::string repr() const {
        if (generator_) template_error("a generator (the result of select/map/...) cannot be printed; add |list");
        switch (t_) {
            case type::undefined: return "";
            case type::none: return "None";
            case type::boolean: return i_ ? "True" : "False";
            case type::integer: return std::to_string(i_);
            case type::floating: return float_repr(f_);
            case type::string: return string_repr(str());
            case type::list: {
                std::string out = tuple_ ? "(" : "[";
                for (std::size_t k = 0; k < list().size(); ++k) out += (k ? ", " : "") + list()[k].repr();
                if (tuple_ && list().size() == 1) out += ',';
                return out + (tuple_ ? ")" : "]");
            }
            case type::dict: {
                std::string out = "{";
                bool first = true;
                for (const auto& [key, v] : dict()) {
                    out += (first ? "" : ", ") + string_repr(key) + ": " + v.repr();
                    first = false;
                }
                return out + "}";
            }
            case type::ns: return "<Namespace>";
            case type::callable: return "<function>";
        }
        return "";
    }

    // json.dumps(x, ensure_ascii=False, indent=indent, separators=...) as Python writes it.
    std::string to_json(int indent = -1, std::string_view item_sep = "", std::string_view key_sep = ": ", bool sort_keys = false,
                        bool ensure_ascii = false) const {
        std::string out;
        ensure_ascii_ = ensure_ascii;
        const std::string_view isep = !item_sep.empty() ? item_sep : (indent >= 0 ? std::string_view(",") : std::string_view(", "));
        dump_json(out, indent, 0, isep, key_sep, sort_keys);
        return out;
    }

    // Python's float repr: the shortest text that reads back as the same double, ".0" added
    // to integral values, exponent form past 1e16.
    static std::string float_repr(double d) {
        if (std::isnan(d)) return "nan";
        if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
        if (d == 0.0) return std::signbit(d) ? "-0.0" : "0.0";
        // The fewest significant digits that read back as d.
        char buf[48];
        int prec = 1;
        for (; prec <= 17; ++prec) {
            std::snprintf(buf, sizeof buf, "%.*e", prec - 1, d);
            if (std::strtod(buf, nullptr) == d) break;
        }
        const std::string e_form = buf;  // [-]d.ddde[+-]xx
        const std::size_t epos = e_form.find('e');
        const int exp = std::atoi(e_form.c_str() + epos + 1);
        std::string digits;
        for (std::size_t k = 0; k < epos; ++k)
            if (e_form[k] >= '0' && e_form[k] <= '9') digits += e_form[k];
        const std::string sign = d < 0 ? "-" : "";
        if (exp < -4 || exp >= 16) {  // Python's repr switches to exponent form here
            std::string m = digits.substr(0, 1);
            if (digits.size() > 1) m += "." + digits.substr(1);
            char eb[16];
            std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
            return sign + m + eb;
        }
        std::string out;
        if (exp < 0) {
            out = "0." + std::string(static_cast<std::size_t>(-exp - 1), '0') + digits;
        } else if (static_cast<std::size_t>(exp) + 1 >= digits.size()) {
            out = digits + std::string(static_cast<std::size_t>(exp) + 1 - digits.size(), '0') + ".0";
        } else {
            out = digits.substr(0, static_cast<std::size_t>(exp) + 1) + "." + digits.substr(static_cast<std::size_t>(exp) + 1);
        }
        return sign + out;
    }

    static std::string string_repr(const std::string& s) {
        const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
        const char q = dq ? '"' : '\'';
        std::string out(1, q);
        for (const char c : s) {
            switch (c) {
                case '\\': out += "\\\\"; break;
                case '\n': out += "\\n"; break;
                case '\r': out += "\\r"; break;
                case '\t': out += "\\t"; break;
                default:
                    if (c == q) {
                        out += '\\';
                        out += c;
                    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
                        char b[8];
                        std::snprintf(b, sizeof b, "\\x%02x", static_cast<unsigned char>(c));
                        out += b;
                    } else {
                        out += c;
                    }
            }
        }
        return out + q;
    }

    static std::size_t utf8_length(std::string_view s) noexcept {
        std::size_t n = 0;
        for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
        return n;
    }

private:
    explicit value(type t) : t_(t) {}

    static inline thread_local bool ensure_ascii_ = false;  // json.dumps(ensure_ascii=...) of the dump under way

    static void json_string(std::string& out, std::string_view s) {
        out += '"';
        if (ensure_ascii_) {
            for (std::size_t k = 0; k < s.size();) {
                const auto b = static_cast<unsigned char>(s[k]);
                if (b < 0x80) {
                    json_string_ascii(out, s[k]);
                    ++k;
                    continue;
                }
                const int n = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
                std::uint32_t cp = n == 4 ? (b & 0x07u) : n == 3 ? (b & 0x0Fu) : n == 2 ? (b & 0x1Fu) : b;
                for (int m = 1; m < n && k + static_cast<std::size_t>(m) < s.size(); ++m) cp = (cp << 6) | (static_cast<unsigned char>(s[k + static_cast<std::size_t>(m)]) & 0x3Fu);
                k += static_cast<std::size_t>(n);
                char buf[16];
                if (cp >= 0x10000) {
                    cp -= 0x10000;
                    std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
                } else {
                    std::snprintf(buf, sizeof buf, "\\u%04x", cp);
                }
                out += buf;
            }
            out += '"';
            return;
        }
        for (const char c : s) json_string_ascii(out, c);
        out += '"';
    }
    static void json_string_ascii(std::string& out, char c) {
        {
            switch (c) {
                case '"': out += "\\\""; break;
                case '\\': out += "\\\\"; break;
                case '\n': out += "\\n"; break;
                case '\r': out += "\\r"; break;
                case '\t': out += "\\t"; break;
                case '\b': out += "\\b"; break;
                case '\f': out += "\\f"; break;
                default:
                    if (static_cast<unsigned char>(c) < 0x20) {
                        char b[8];
                        std::snprintf(b, sizeof b, "\\u%04x", static_cast<unsigned char>(c));
                        out += b;
                    } else {
                        out += c;
                    }
            }
        }
    }

    void dump_json(std::string& out, int indent, int depth, std::string_view isep, std::string_view ksep, bool sort_keys) const {
        if (depth > 64) template_error("tojson: value nested too deeply");
        if (generator_) template_error("tojson: Object of type generator is not JSON serializable");
        auto newline = [&](int d) {
            if (indent < 0) return;
            out += '\n';
            out.append(static_cast<std::size_t>(indent * d), ' ');
        };
        switch (t_) {
            case type::undefined:
            case type::none: out += "null"; break;
            case type::boolean: out += i_ ? "true" : "false"; break;
            case type::integer: out += std::to_string(i_); break;
            case type::floating:
                out += std::isnan(f_) ? "NaN" : std::isinf(f_) ? (f_ > 0 ? "Infinity" : "-Infinity") : float_repr(f_);
                break;
            case type::string: json_string(out, str()); break;
            case type::list:
                if (list().empty()) {
                    out += "[]";
                    break;
                }
                out += '[';
                for (std::size_t k = 0; k < list().size(); ++k) {
                    if (k) out += isep;
                    newline(depth + 1);
                    list()[k].dump_json(out, indent, depth + 1, isep, ksep, sort_keys);
                }
                newline(depth);
                out += ']';
                break;
            case type::dict:
            case type::ns: {
                if (dict().empty()) {
                    out += "{}";
                    break;
                }
                std::vector<const std::pair<std::string, value>*> items;
                for (const auto& kv : dict()) items.push_back(&kv);
                if (sort_keys) std::sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
                out += '{';
                bool first = true;
                for (const auto* kv : items) {
                    if (!first) out += isep;
                    first = false;
                    newline(depth + 1);
                    json_string(out, kv->first);
                    out += ksep;
                    kv->second.dump_json(out, indent, depth + 1, isep, ksep, sort_keys);
                }
                newline(depth);
                out += '}';
                break;
            }
            case type::callable: template_error("tojson: a function is not JSON serializable");
        }
    }

    void take_nesting(const value& child) {
        if (child.nesting_ + 1 > max_nesting) template_error("a list or dict nests too deeply (more than 256 levels)");
        nesting_ = std::max<std::uint16_t>(nesting_, static_cast<std::uint16_t>(child.nesting_ + 1));
        holds_ns_ = holds_ns_ || child.holds_ns_;
    }

    type t_ = type::undefined;
    std::uint16_t nesting_ = 0;  // levels of lists/dicts inside this one
    bool holds_ns_ = false;
    bool tuple_ = false;      // a list that Python would hold as a tuple (repr only)
    bool generator_ = false;  // a list made lazily by select/map/...: Python cannot print or dump it
    bool markup_ = false;     // a string marked safe: `+` escapes plain strings joined to it
    std::int64_t i_ = 0;
    double f_ = 0.0;
    std::shared_ptr<const std::string> s_;
    std::shared_ptr<value_list> l_;
    std::shared_ptr<value_dict> d_;
    std::shared_ptr<function> fn_;
};

}  // namespace lmtk::jinja

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::jinja {

struct token {
    enum class kind : std::uint8_t { text, var_begin, var_end, block_begin, block_end, name, string, integer, floating, op, eof } k;
    std::string s;
    std::int64_t i = 0;
    double f = 0;
    int line = 1;
};

// Template source -> tokens. Text between tags is one token; whitespace control is applied here.
inline std::vector<token> lex(std::string_view src) {
    std::vector<token> out;
    std::size_t pos = 0;
    int line = 1;
    bool strip_next = false;  // the previous tag ended with '-'
    auto count_lines = [&](std::string_view s) {
        for (const char c : s) line += c == '\n';
    };
    while (pos <= src.size()) {
        std::size_t start = src.find('{', pos);
        while (start != std::string_view::npos && start + 1 < src.size() && src[start + 1] != '{' && src[start + 1] != '%' &&
               src[start + 1] != '#')
            start = src.find('{', start + 1);
        if (start != std::string_view::npos && start + 1 >= src.size()) start = std::string_view::npos;
        std::string text(src.substr(pos, start == std::string_view::npos ? std::string_view::npos : start - pos));
        if (strip_next) {
            const std::size_t k = text.find_first_not_of(" \t\r\n");
            text.erase(0, k == std::string::npos ? text.size() : k);
            strip_next = false;
        }
        if (start == std::string_view::npos) {
            if (!text.empty()) out.push_back({token::kind::text, text, 0, 0, line});
            break;
        }
        const char opener = src[start + 1];
        std::size_t p = start + 2;
        const bool minus = p < src.size() && src[p] == '-';
        const bool plus = p < src.size() && src[p] == '+';
        if (minus || plus) ++p;
        if (minus) {
            const std::size_t k = text.find_last_not_of(" \t\r\n");
            text.erase(k == std::string::npos ? 0 : k + 1);
        } else if (opener != '{' && !plus) {
            // lstrip_blocks: the blanks between the start of a line and a block or comment tag.
            const std::size_t nl = text.rfind('\n');
            const std::size_t from = nl == std::string::npos ? 0 : nl + 1;
            const bool at_line_start = nl != std::string::npos || pos == 0 || src[pos - 1] == '\n';
            if (at_line_start && text.find_first_not_of(" \t", from) == std::string::npos) text.erase(from);
        }
        if (!text.empty()) {
            out.push_back({token::kind::text, text, 0, 0, line});
        }
        count_lines(src.substr(pos, start - pos));
        if (opener == '#') {
            const std::size_t end = src.find("#}", p);
            if (end == std::string_view::npos) template_error("unterminated comment", line);
            count_lines(src.substr(start, end + 2 - start));
            strip_next = end > p && src[end - 1] == '-';
            pos = end + 2;
            if (!strip_next && pos < src.size() && src[pos] == '\n') ++pos, ++line;  // trim_blocks
            continue;
        }
        const bool is_var = opener == '{';
        out.push_back({is_var ? token::kind::var_begin : token::kind::block_begin, "", 0, 0, line});
        // Tokens until the closing delimiter.
        for (;;) {
            while (p < src.size() && (src[p] == ' ' || src[p] == '\t' || src[p] == '\n' || src[p] == '\r')) line += src[p++] == '\n';
            if (p >= src.size()) template_error(is_var ? "unterminated {{ ... }}" : "unterminated {% ... %}", line);
            const std::string_view rest = src.substr(p);
            const std::string_view closer = is_var ? "}}" : "%}";
            bool end_minus = false;
            if (rest.substr(0, 1) == "-" && rest.substr(1, 2) == closer) end_minus = true;
            if (end_minus || (rest.substr(0, 1) == "+" && rest.substr(1, 2) == closer) || rest.substr(0, 2) == closer) {
                p += (rest[0] == '-' || rest[0] == '+') ? 3 : 2;
                out.push_back({is_var ? token::kind::var_end : token::kind::block_end, "", 0, 0, line});
                strip_next = end_minus;
                if (!is_var && !end_minus && p < src.size() && src[p] == '\n') ++p, ++line;  // trim_blocks
                break;
            }
            const char c = src[p];
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
                std::size_t q = p;
                while (q < src.size() && ((src[q] >= 'a' && src[q] <= 'z') || (src[q] >= 'A' && src[q] <= 'Z') ||
                                          (src[q] >= '0' && src[q] <= '9') || src[q] == '_'))
                    ++q;
                out.push_back({token::kind::name, std::string(src.substr(p, q - p)), 0, 0, line});
                p = q;
            } else if (c >= '0' && c <= '9') {
                std::size_t q = p;
                while (q < src.size() && ((src[q] >= '0' && src[q] <= '9') || src[q] == '_')) ++q;
                bool is_float = false;
                if (q + 1 < src.size() && src[q] == '.' && src[q + 1] >= '0' && src[q + 1] <= '9') {
                    is_float = true;
                    ++q;
                    while (q < src.size() && src[q] >= '0' && src[q] <= '9') ++q;
                }
                if (q < src.size() && (src[q] == 'e' || src[q] == 'E')) {
                    std::size_t r = q + 1;
                    if (r < src.size() && (src[r] == '+' || src[r] == '-')) ++r;
                    if (r < src.size() && src[r] >= '0' && src[r] <= '9') {
                        is_float = true;
                        q = r;
                        while (q < src.size() && src[q] >= '0' && src[q] <= '9') ++q;
                    }
                }
                std::string num;
                for (std::size_t k = p; k < q; ++k)
                    if (src[k] != '_') num += src[k];
                token t{is_float ? token::kind::floating : token::kind::integer, num, 0, 0, line};
                if (is_float) t.f = std::strtod(num.c_str(), nullptr);
                else t.i = std::strtoll(num.c_str(), nullptr, 10);
                out.push_back(std::move(t));
                p = q;
            } else if (c == '\'' || c == '"') {
                std::string s;
                std::size_t q = p + 1;
                for (;;) {
                    if (q >= src.size()) template_error("unterminated string", line);
                    const char d = src[q];
                    if (d == c) break;
                    if (d == '\\' && q + 1 < src.size()) {
                        const char e = src[++q];
                        switch (e) {
                            case 'n': s += '\n'; break;
                            case 't': s += '\t'; break;
                            case 'r': s += '\r'; break;
                            case '\\': s += '\\'; break;
                            case '\'': s += '\''; break;
                            case '"': s += '"'; break;
                            case '0': s += '\0'; break;
                            case 'u': {
                                if (q + 4 >= src.size()) template_error("bad \\u escape", line);
                                const std::uint32_t cp = static_cast<std::uint32_t>(std::strtoul(std::string(src.substr(q + 1, 4)).c_str(), nullptr, 16));
                                q += 4;
                                if (cp < 0x80) s += static_cast<char>(cp);
                                else if (cp < 0x800) s += static_cast<char>(0xC0 | (cp >> 6)), s += static_cast<char>(0x80 | (cp & 0x3F));
                                else s += static_cast<char>(0xE0 | (cp >> 12)), s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
                                     s += static_cast<char>(0x80 | (cp & 0x3F));
                                break;
                            }
                            default: s += '\\', s += e;  // Python keeps unknown escapes
                        }
                        ++q;
                        continue;
                    }
                    line += d == '\n';
                    s += d;
                    ++q;
                }
                out.push_back({token::kind::string, s, 0, 0, line});
                p = q + 1;
            } else {
                static constexpr std::string_view two[] = {"==", "!=", "<=", ">=", "//", "**"};
                std::string op(1, c);
                for (const std::string_view t : two)
                    if (rest.substr(0, 2) == t) op = std::string(t);
                if (op.size() == 1 && std::string_view("+-*/%~|.,:()[]{}<>=!").find(c) == std::string_view::npos)
                    template_error(std::string("unexpected character '") + c + "'", line);
                out.push_back({token::kind::op, op, 0, 0, line});
                p += op.size();
            }
        }
        pos = p;
    }
    out.push_back({token::kind::eof, "", 0, 0, line});
    return out;
}

// ---- the tree -------------------------------------------------------------------------------

struct expr;
using expr_ptr = std::unique_ptr<expr>;
struct expr {
    enum class kind : std::uint8_t {
        literal, name, list, tuple, dict, attr, index, slice, call, filter, test, neg, pos, not_, and_, or_, binary, compare, cond
    } k = kind::literal;
    int line = 0;
    value lit;
    std::string name;  // name, attribute, filter, test, operator
    std::vector<expr_ptr> a;                             // operands / arguments (slice: 3, maybe null)
    std::vector<std::pair<std::string, expr_ptr>> kw;  // keyword arguments
    bool negated = false;                               // `is not`, `not in`

    expr() = default;
    expr(const expr&) = delete;
    expr& operator=(const expr&) = delete;
    // Iterative: a hostile template's long operator chain (`a+a+a+...`, left-deep) must not
    // overflow the stack when its tree is destroyed, even one the parser refuses.
    ~expr() {
        std::vector<expr_ptr> pending;
        auto take = [&pending](expr& e) {
            for (expr_ptr& c : e.a)
                if (c) pending.push_back(std::move(c));
            for (auto& k : e.kw)
                if (k.second) pending.push_back(std::move(k.second));
        };
        take(*this);
        while (!pending.empty()) {
            expr_ptr p = std::move(pending.back());
            pending.pop_back();
            take(*p);
        }
    }
};

// The height of an expression tree, without recursion.
inline int expr_height(const expr& root) {
    int best = 0;
    std::vector<std::pair<const expr*, int>> todo{{&root, 1}};
    while (!todo.empty()) {
        const auto [e, h] = todo.back();
        todo.pop_back();
        best = std::max(best, h);
        for (const expr_ptr& c : e->a)
            if (c) todo.emplace_back(c.get(), h + 1);
        for (const auto& k : e->kw)
            if (k.second) todo.emplace_back(k.second.get(), h + 1);
    }
    return best;
}

struct stmt;
using body = std::vector<std::unique_ptr<stmt>>;
struct stmt {
    enum class kind : std::uint8_t { text, output, if_, for_, set, set_block, macro, break_, continue_, filter_block, block } k = kind::text;
    int line = 0;
    std::string text;                  // text; set_block/macro name
    expr_ptr e;                        // output, set value, for iterable, filter_block filter (applied to "")
    expr_ptr target;                   // set/for target (name, tuple of names, or attr of a namespace)
    expr_ptr cond;                     // for's `if`
    std::vector<std::pair<expr_ptr, body>> branches;  // if/elif (cond, body); else has cond null
    body b, else_b;                    // for body/else, macro/set_block/block body
    std::vector<std::pair<std::string, expr_ptr>> params;  // macro parameters and defaults
};

inline expr_ptr new_expr(expr::kind k, int line) {
    auto e = std::make_unique<expr>();
    e->k = k;
    e->line = line;
    return e;
}
inline std::unique_ptr<stmt> new_stmt(stmt::kind k, int line) {
    auto s = std::make_unique<stmt>();
    s->k = k;
    s->line = line;
    return s;
}

class parser {
public:
    // Nesting the parser accepts: statements inside statements, parentheses/brackets/unary
    // operators inside expressions, and the height of one expression's tree (operator chains
    // included). Real chat templates stay under 12 and 30; the renderer recurses this deep.
    static constexpr int max_nesting = 128;
    static constexpr int max_expr_height = 200;

    explicit parser(std::vector<token> toks) : t_(std::move(toks)) {}

    body parse_template() {
        body b = parse_body({});
        if (peek().k != token::kind::eof) template_error("unexpected end tag", peek().line);
        return b;
    }

private:
    const token& peek(std::size_t ahead = 0) const { return t_[std::min(i_ + ahead, t_.size() - 1)]; }
    const token& next() { return t_[std::min(i_++, t_.size() - 1)]; }
    bool is_op(std::string_view op, std::size_t ahead = 0) const { return peek(ahead).k == token::kind::op && peek(ahead).s == op; }
    bool is_name(std::string_view n, std::size_t ahead = 0) const { return peek(ahead).k == token::kind::name && peek(ahead).s == n; }
    void expect_op(std::string_view op) {
        if (!is_op(op)) template_error("expected '" + std::string(op) + "', found '" + peek().s + "'", peek().line);
        ++i_;
    }
    std::string expect_name() {
        if (peek().k != token::kind::name) template_error("expected a name, found '" + peek().s + "'", peek().line);
        return next().s;
    }
    void expect_block_end() {
        if (peek().k != token::kind::block_end) template_error("expected '%}', found '" + peek().s + "'", peek().line);
        ++i_;
    }

    // Statements until a block tag whose name is in `ends` (left unconsumed after {%).
    body parse_body(std::initializer_list<std::string_view> ends) {
        body out;
        for (;;) {
            const token& t = peek();
            if (t.k == token::kind::eof) {
                if (ends.size() != 0) template_error("missing {% " + std::string(*(ends.end() - 1)) + " %}", t.line);
                return out;
            }
            if (t.k == token::kind::text) {
                auto s = new_stmt(stmt::kind::text, t.line);
                s->text = t.s;
                out.push_back(std::move(s));
                ++i_;
                continue;
            }
            if (t.k == token::kind::var_begin) {
                ++i_;
                auto s = new_stmt(stmt::kind::output, t.line);
                s->e = parse_expr();
                if (peek().k != token::kind::var_end) template_error("expected '}}', found '" + peek().s + "'", peek().line);
                ++i_;
                out.push_back(std::move(s));
                continue;
            }
            if (t.k != token::kind::block_begin) template_error("unexpected '" + t.s + "'", t.line);
            const token& kw = peek(1);
            for (const std::string_view e : ends)
                if (kw.k == token::kind::name && kw.s == e) return out;
            ++i_;
            out.push_back(parse_statement());
        }
    }

    // Counts one level of recursion in the parser; too many is a clear error, not a stack overflow.
    struct nesting {
        parser& p;
        nesting(parser& pp, int line) : p(pp) {
            if (++p.nest_ > max_nesting) template_error("the template nests too deeply", line);
        }
        ~nesting() { --p.nest_; }
        nesting(const nesting&) = delete;
        nesting& operator=(const nesting&) = delete;
    };

    std::unique_ptr<stmt> parse_statement() {
        const int line = peek().line;
        const nesting guard(*this, line);
        const std::string kw = expect_name();
        auto s = new_stmt(stmt::kind::text, line);
        if (kw == "if") {
            s->k = stmt::kind::if_;
            expr_ptr c = parse_expr();
            expect_block_end();
            for (;;) {
                body b = parse_body({"elif", "else", "endif"});
                s->branches.emplace_back(std::move(c), std::move(b));
                ++i_;  // {%
                const std::string which = next().s;
                if (which == "elif") {
                    c = parse_expr();
                    expect_block_end();
                } else if (which == "else") {
                    expect_block_end();
                    s->branches.emplace_back(nullptr, parse_body({"endif"}));
                    i_ += 2;
                    expect_block_end();
                    break;
                } else {
                    expect_block_end();
                    break;
                }
            }
        } else if (kw == "for") {
            s->k = stmt::kind::for_;
            s->target = parse_target();
            if (!is_name("in")) template_error("expected 'in' in for", peek().line);
            ++i_;
            s->e = parse_expr(/*no_cond=*/true);
            if (is_name("if")) {
                ++i_;
                s->cond = parse_expr(true);
            }
            if (is_name("recursive")) template_error("recursive for loops are not supported", line);
            expect_block_end();
            s->b = parse_body({"else", "endfor"});
            ++i_;
            if (next().s == "else") {
                expect_block_end();
                s->else_b = parse_body({"endfor"});
                i_ += 2;
            }
            expect_block_end();
        } else if (kw == "set") {
            s->target = parse_target();
            if (is_op("=")) {
                ++i_;
                s->k = stmt::kind::set;
                s->e = parse_expr();
                if (is_op(",")) {  // set a = 1, 2 -> a tuple
                    auto tup = new_expr(expr::kind::tuple, line);
                    tup->a.push_back(std::move(s->e));
                    while (is_op(",")) {
                        ++i_;
                        tup->a.push_back(parse_expr());
                    }
                    s->e = std::move(tup);
                }
                expect_block_end();
            } else {
                s->k = stmt::kind::set_block;
                if (s->target->k != expr::kind::name) template_error("block set needs a plain name", line);
                if (is_op("|")) template_error("filtered block set is not supported", line);
                expect_block_end();
                s->b = parse_body({"endset"});
                i_ += 2;
                expect_block_end();
            }
        } else if (kw == "macro") {
            s->k = stmt::kind::macro;
            s->text = expect_name();
            expect_op("(");
            while (!is_op(")")) {
                std::string p = expect_name();
                expr_ptr def;
                if (is_op("=")) {
                    ++i_;
                    def = parse_expr();
                }
                s->params.emplace_back(std::move(p), std::move(def));
                if (!is_op(",")) break;
                ++i_;
            }
            expect_op(")");
            expect_block_end();
            s->b = parse_body({"endmacro"});
            i_ += 2;
            if (peek().k == token::kind::name) ++i_;  // {% endmacro name %}
            expect_block_end();
        } else if (kw == "break" || kw == "continue") {
            s->k = kw == "break" ? stmt::kind::break_ : stmt::kind::continue_;
            expect_block_end();
        } else if (kw == "filter") {
            s->k = stmt::kind::filter_block;
            auto f = new_expr(expr::kind::literal, line);
            f->lit = value(std::string());
            s->e = parse_filters(std::move(f), /*first_without_bar=*/true);
            expect_block_end();
            s->b = parse_body({"endfilter"});
            i_ += 2;
            expect_block_end();
        } else if (kw == "generation") {  // transformers' assistant-mask tag: renders its body
            s->k = stmt::kind::block;
            expect_block_end();
            s->b = parse_body({"endgeneration"});
            i_ += 2;
            expect_block_end();
        } else {
            template_error("unsupported statement '" + kw + "'", line);
        }
        return s;
    }

    // A for/set target: name, name.attr (set only), or names separated by commas.
    expr_ptr parse_target() {
        const int line = peek().line;
        auto one = [&]() -> expr_ptr {
            auto n = new_expr(expr::kind::name, line);
            n->name = expect_name();
            if (is_op(".")) {
                ++i_;
                auto a = new_expr(expr::kind::attr, line);
                a->name = expect_name();
                a->a.push_back(std::move(n));
                return a;
            }
            return n;
        };
        const bool paren = is_op("(");
        if (paren) ++i_;
        expr_ptr first = one();
        if (!is_op(",")) {
            if (paren) expect_op(")");
            return first;
        }
        auto tup = new_expr(expr::kind::tuple, line);
        tup->a.push_back(std::move(first));
        while (is_op(",")) {
            ++i_;
            tup->a.push_back(one());
        }
        if (paren) expect_op(")");
        return tup;
    }

    expr_ptr make(expr::kind k, int line) { return new_expr(k, line); }

    expr_ptr parse_expr(bool no_cond = false) {
        const int line = peek().line;
        const nesting guard(*this, line);
        const bool outermost = expr_nest_++ == 0;
        struct leave {
            int& n;
            ~leave() { --n; }
        } left{expr_nest_};
        expr_ptr e = parse_or();
        if (!no_cond && is_name("if")) {
            ++i_;
            auto c = make(expr::kind::cond, line);
            c->a.push_back(parse_or());  // condition
            c->a.push_back(std::move(e));  // then
            if (is_name("else")) {
                ++i_;
                c->a.push_back(parse_expr());
            }
            e = std::move(c);
        }
        if (outermost && expr_height(*e) > max_expr_height) template_error("an expression nests too deeply", line);
        return e;
    }
    expr_ptr parse_or() {
        expr_ptr e = parse_and();
        while (is_name("or")) {
            auto n = make(expr::kind::or_, next().line);
            n->a.push_back(std::move(e));
            n->a.push_back(parse_and());
            e = std::move(n);
        }
        return e;
    }
    expr_ptr parse_and() {
        expr_ptr e = parse_not();
        while (is_name("and")) {
            auto n = make(expr::kind::and_, next().line);
            n->a.push_back(std::move(e));
            n->a.push_back(parse_not());
            e = std::move(n);
        }
        return e;
    }
    expr_ptr parse_not() {
        const nesting guard(*this, peek().line);
        if (is_name("not")) {
            auto n = make(expr::kind::not_, next().line);
            n->a.push_back(parse_not());
            return n;
        }
        return parse_compare();
    }
    expr_ptr parse_compare() {
        expr_ptr e = parse_add();
        for (;;) {
            std::string op;
            bool neg = false;
            if (peek().k == token::kind::op && (peek().s == "==" || peek().s == "!=" || peek().s == "<" || peek().s == ">" ||
                                                peek().s == "<=" || peek().s == ">=")) {
                op = next().s;
            } else if (is_name("in")) {
                ++i_;
                op = "in";
            } else if (is_name("not") && is_name("in", 1)) {
                i_ += 2;
                op = "in";
                neg = true;
            } else {
                return e;
            }
            auto n = make(expr::kind::compare, peek().line);
            n->name = op;
            n->negated = neg;
            n->a.push_back(std::move(e));
            n->a.push_back(parse_add());
            e = std::move(n);
        }
    }
    expr_ptr binary(expr_ptr l, std::string op, expr_ptr r, int line) {
        auto n = make(expr::kind::binary, line);
        n->name = std::move(op);
        n->a.push_back(std::move(l));
        n->a.push_back(std::move(r));
        return n;
    }
    expr_ptr parse_add() {
        expr_ptr e = parse_concat();
        while (is_op("+") || is_op("-")) {
            const token& t = next();
            e = binary(std::move(e), t.s, parse_concat(), t.line);
        }
        return e;
    }
    expr_ptr parse_concat() {
        expr_ptr e = parse_mul();
        while (is_op("~")) {
            const token& t = next();
            e = binary(std::move(e), "~", parse_mul(), t.line);
        }
        return e;
    }
    expr_ptr parse_mul() {
        expr_ptr e = parse_pow();
        while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
            const token& t = next();
            e = binary(std::move(e), t.s, parse_pow(), t.line);
        }
        return e;
    }
    expr_ptr parse_pow() {
        expr_ptr e = parse_unary();
        while (is_op("**")) {
            const token& t = next();
            e = binary(std::move(e), "**", parse_unary(), t.line);
        }
        return e;
    }
    expr_ptr parse_unary() {
        const nesting guard(*this, peek().line);
        if (is_op("-") || is_op("+")) {
            const token& t = next();
            auto n = make(t.s == "-" ? expr::kind::neg : expr::kind::pos, t.line);
            n->a.push_back(parse_unary());
            return n;
        }
        return parse_filters(parse_postfix(parse_primary()), false);
    }

    // Arguments of a call: (a, b, key=c).
    void parse_args(expr& call) {
        expect_op("(");
        while (!is_op(")")) {
            if (peek().k == token::kind::name && is_op("=", 1)) {
                std::string k = next().s;
                ++i_;
                call.kw.emplace_back(std::move(k), parse_expr());
            } else {
                call.a.push_back(parse_expr());
            }
            if (!is_op(",")) break;
            ++i_;
        }
        expect_op(")");
    }

    expr_ptr parse_filters(expr_ptr e, bool first_without_bar) {
        for (;;) {
            if (is_op("|") || first_without_bar) {
                if (!first_without_bar) ++i_;
                first_without_bar = false;
                auto f = make(expr::kind::filter, peek().line);
                f->name = expect_name();
                while (is_op(".")) {  // dotted filter names do not exist in the subset
                    template_error("unsupported filter name", peek().line);
                }
                f->a.push_back(std::move(e));
                if (is_op("(")) parse_args(*f);
                e = std::move(f);
            } else if (is_name("is")) {
                auto t = make(expr::kind::test, next().line);
                if (is_name("not")) {
                    ++i_;
                    t->negated = true;
                }
                if (peek().k == token::kind::name) t->name = next().s;
                else if (is_op("==") || is_op("!=") || is_op("<") || is_op(">") || is_op("<=") || is_op(">=")) t->name = next().s;
                else template_error("expected a test name after 'is'", peek().line);
                t->a.push_back(std::move(e));
                if (is_op("(")) {
                    parse_args(*t);
                } else if (peek().k == token::kind::string || peek().k == token::kind::integer || peek().k == token::kind::floating ||
                           (peek().k == token::kind::name && !is_name("and") && !is_name("or") && !is_name("else") &&
                            !is_name("if") && !is_name("in") && !is_name("not") && !is_name("is"))) {
                    t->a.push_back(parse_primary());  // `x is divisibleby 3`, `x is sameas y`
                }
                e = std::move(t);
            } else {
                return e;
            }
        }
    }

    expr_ptr parse_postfix(expr_ptr e) {
        for (;;) {
            if (is_op(".")) {
                const int line = next().line;
                auto a = make(expr::kind::attr, line);
                if (peek().k == token::kind::integer) a->name = std::to_string(next().i);
                else a->name = expect_name();
                a->a.push_back(std::move(e));
                e = std::move(a);
            } else if (is_op("[")) {
                const int line = next().line;
                expr_ptr lo, hi, step;
                bool slice = false;
                if (!is_op(":")) lo = parse_expr();
                if (is_op(":")) {
                    slice = true;
                    ++i_;
                    if (!is_op("]") && !is_op(":")) hi = parse_expr();
                    if (is_op(":")) {
                        ++i_;
                        if (!is_op("]")) step = parse_expr();
                    }
                }
                expect_op("]");
                auto n = make(slice ? expr::kind::slice : expr::kind::index, line);
                n->a.push_back(std::move(e));
                n->a.push_back(std::move(lo));
                if (slice) {
                    n->a.push_back(std::move(hi));
                    n->a.push_back(std::move(step));
                }
                e = std::move(n);
            } else if (is_op("(")) {
                auto c = make(expr::kind::call, peek().line);
                c->a.push_back(std::move(e));
                parse_args(*c);
                e = std::move(c);
            } else {
                return e;
            }
        }
    }

    expr_ptr parse_primary() {
        const token& t = peek();
        switch (t.k) {
            case token::kind::string: {
                auto n = make(expr::kind::literal, t.line);
                std::string s = next().s;
                while (peek().k == token::kind::string) s += next().s;  // adjacent literals concatenate
                n->lit = value(std::move(s));
                return n;
            }
            case token::kind::integer: {
                auto n = make(expr::kind::literal, t.line);
                n->lit = value(next().i);
                return n;
            }
            case token::kind::floating: {
                auto n = make(expr::kind::literal, t.line);
                n->lit = value(next().f);
                return n;
            }
            case token::kind::name: {
                auto n = make(expr::kind::literal, t.line);
                const std::string& s = t.s;
                if (s == "true" || s == "True") n->lit = value(true);
                else if (s == "false" || s == "False") n->lit = value(false);
                else if (s == "none" || s == "None") n->lit = value::none();
                else {
                    n->k = expr::kind::name;
                    n->name = s;
                }
                ++i_;
                return n;
            }
            case token::kind::op:
                if (t.s == "(") {
                    ++i_;
                    if (is_op(")")) {
                        ++i_;
                        return make(expr::kind::tuple, t.line);
                    }
                    expr_ptr e = parse_expr();
                    if (is_op(",")) {
                        auto tup = make(expr::kind::tuple, t.line);
                        tup->a.push_back(std::move(e));
                        while (is_op(",")) {
                            ++i_;
                            if (is_op(")")) break;
                            tup->a.push_back(parse_expr());
                        }
                        e = std::move(tup);
                    }
                    expect_op(")");
                    return e;
                }
                if (t.s == "[") {
                    ++i_;
                    auto l = make(expr::kind::list, t.line);
                    while (!is_op("]")) {
                        l->a.push_back(parse_expr());
                        if (!is_op(",")) break;
                        ++i_;
                    }
                    expect_op("]");
                    return l;
                }
                if (t.s == "{") {
                    ++i_;
                    auto d = make(expr::kind::dict, t.line);
                    while (!is_op("}")) {
                        d->a.push_back(parse_expr());
                        expect_op(":");
                        d->a.push_back(parse_expr());
                        if (!is_op(",")) break;
                        ++i_;
                    }
                    expect_op("}");
                    return d;
                }
                break;
            default: break;
        }
        template_error("unexpected '" + t.s + "' in an expression", t.line);
    }

    std::vector<token> t_;
    std::size_t i_ = 0;
    int nest_ = 0;       // parser recursion (nesting)
    int expr_nest_ = 0;  // parse_expr calls in progress: 1 is a whole expression
};

}  // namespace lmtk::jinja
// #include <lmtk/tokenize/jinja/value.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <ctime>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::jinja {

class template_program {
public:
    // Limits on what one render may do: a template is untrusted code.
    static constexpr std::size_t max_output = 8u << 20;
    static constexpr std::size_t max_steps = 1'000'000;   // statements and loop iterations
    static constexpr int max_depth = 64;                   // macro calls and nested expressions

    explicit template_program(std::string_view source) : body_(parser(lex(source)).parse_template()) {}

    // `context`: a JSON object (nlohmann::json or ordered_json: see value::from_json).
    template <class Json>
    std::string render(const Json& context) const {
        renderer r;
        r.scopes.emplace_back();
        install_globals(r.scopes.back());
        if (context.is_object())
            for (auto it = context.begin(); it != context.end(); ++it) r.scopes.back()[it.key()] = value::from_json(it.value());
        r.scopes.emplace_back();  // the template's own variables
        std::string out;
        r.out = &out;
        r.exec(body_);
        return out;
    }

private:
    enum class flow { normal, break_, continue_ };
    using scope = std::map<std::string, value, std::less<>>;

    static void install_globals(scope& g) {
        g["raise_exception"] = value(function([](value_list& a, kwargs&) -> value {
            template_error("raise_exception: " + (a.empty() ? std::string() : a[0].to_string()));
        }));
        g["strftime_now"] = value(function([](value_list& a, kwargs&) -> value {
            const std::time_t now = std::time(nullptr);
            std::tm tm{};
            localtime_r(&now, &tm);
            char buf[256];
            const std::string fmt = a.empty() ? std::string("%Y-%m-%d") : a[0].to_string();
            const std::size_t n = std::strftime(buf, sizeof buf, fmt.c_str(), &tm);
            return value(std::string(buf, n));
        }));
        g["range"] = value(function([](value_list& a, kwargs&) -> value {
            std::int64_t lo = 0, hi = 0, step = 1;
            if (a.size() == 1) hi = a[0].as_int();
            else if (a.size() >= 2) lo = a[0].as_int(), hi = a[1].as_int();
            if (a.size() >= 3) step = a[2].as_int();
            if (step == 0) template_error("range() step must not be zero");
            value_list l;
            for (std::int64_t k = lo; step > 0 ? k < hi : k > hi; k += step) {
                if (l.size() >= 1'000'000) template_error("range() too long");
                l.emplace_back(k);
            }
            return value(std::move(l));
        }));
        g["namespace"] = value(function([](value_list& a, kwargs& kw) -> value {
            value_dict d;
            if (!a.empty() && a[0].is_dict()) d = a[0].dict();
            for (auto& [k, v] : kw) d.emplace_back(k, v);
            return value(std::move(d), /*is_namespace=*/true);
        }));
        g["dict"] = value(function([](value_list& a, kwargs& kw) -> value {
            value_dict d;
            if (!a.empty() && a[0].is_dict()) d = a[0].dict();
            for (auto& [k, v] : kw) d.emplace_back(k, v);
            return value(std::move(d));
        }));
    }

    struct renderer {
        std::vector<scope> scopes;
        std::string* out = nullptr;
        std::size_t steps = 0;
        int depth = 0;

        void tick(int line) {
            if (++steps > max_steps) template_error("the template runs too long", line);
        }
        void emit(std::string_view s, int line) {
            if (out->size() + s.size() > max_output) template_error("the rendered text is too long", line);
            out->append(s);
        }
        value lookup(const std::string& name) const {
            for (auto it = scopes.rbegin(); it != scopes.rend(); ++it)
                if (const auto f = it->find(name); f != it->end()) return f->second;
            return {};
        }

        flow exec(const body& b) {
            for (const auto& s : b) {
                const flow f = exec(*s);
                if (f != flow::normal) return f;
            }
            return flow::normal;
        }

        void assign(const expr& target, const value& v, int line) {
            if (target.k == expr::kind::name) {
                scopes.back()[target.name] = v;
            } else if (target.k == expr::kind::attr) {
                const value ns = eval(*target.a[0]);
                if (!ns.is_namespace()) template_error("cannot set an attribute of a " + std::string(ns.type_name()) + " (only of a namespace)", line);
                if (v.holds_namespace()) template_error("a namespace attribute cannot hold a namespace", line);
                value_dict& d = ns.mutable_namespace();
                for (auto& kv : d)
                    if (kv.first == target.name) {
                        kv.second = v;
                        return;
                    }
                d.emplace_back(target.name, v);
            } else if (target.k == expr::kind::tuple) {
                if (!v.is_list() || v.list().size() != target.a.size())
                    template_error("cannot unpack " + std::string(v.type_name()) + " into " + std::to_string(target.a.size()) + " names", line);
                for (std::size_t k = 0; k < target.a.size(); ++k) assign(*target.a[k], v.list()[k], line);
            } else {
                template_error("cannot assign to this expression", line);
            }
        }

        flow exec(const stmt& s) {
            tick(s.line);
            switch (s.k) {
                case stmt::kind::text: emit(s.text, s.line); break;
                case stmt::kind::output: emit(eval(*s.e).to_string(), s.line); break;
                case stmt::kind::if_:
                    for (const auto& [c, b] : s.branches)
                        if (!c || eval(*c).truthy()) return exec(b);
                    break;
                case stmt::kind::for_: return exec_for(s);
                case stmt::kind::set: assign(*s.target, eval(*s.e), s.line); break;
                case stmt::kind::set_block: {
                    std::string captured;
                    std::string* saved = out;
                    out = &captured;
                    exec(s.b);
                    out = saved;
                    scopes.back()[s.target->name] = value(std::move(captured));
                    break;
                }
                case stmt::kind::macro: scopes.back()[s.text] = make_macro(s); break;
                case stmt::kind::break_: return flow::break_;
                case stmt::kind::continue_: return flow::continue_;
                case stmt::kind::filter_block: {
                    std::string captured;
                    std::string* saved = out;
                    out = &captured;
                    exec(s.b);
                    out = saved;
                    // The filter chain was parsed onto an empty string literal: apply it to the body.
                    emit(apply_filter_chain(*s.e, value(std::move(captured))).to_string(), s.line);
                    break;
                }
                case stmt::kind::block: return exec(s.b);
            }
            return flow::normal;
        }

        value apply_filter_chain(const expr& e, value v) {
            if (e.k != expr::kind::filter) return v;
            depth_guard g(*this, e.line);
            value inner = apply_filter_chain(*e.a[0], std::move(v));
            return call_filter(e, inner);
        }

        flow exec_for(const stmt& s) {
            const value seq = eval(*s.e);
            value_list items;
            if (seq.is_list()) items = seq.list();
            else if (seq.is_dict()) for (const auto& kv : seq.dict()) items.emplace_back(kv.first);
            else if (seq.is_string()) for (const std::string& ch : utf8_chars(seq.str())) items.emplace_back(ch);
            else if (seq.is_undefined()) items.clear();  // jinja2's Undefined iterates as empty
            else if (seq.is_none()) template_error("cannot loop over None", s.line);
            else template_error(std::string("cannot loop over a ") + seq.type_name(), s.line);
            scopes.emplace_back();
            if (s.cond) {  // `for x in xs if cond`: filtered before loop.* is computed
                value_list kept;
                for (const value& it : items) {
                    assign(*s.target, it, s.line);
                    if (eval(*s.cond).truthy()) kept.push_back(it);
                }
                items = std::move(kept);
            }
            const auto n = static_cast<std::int64_t>(items.size());
            for (std::int64_t k = 0; k < n; ++k) {
                tick(s.line);
                assign(*s.target, items[static_cast<std::size_t>(k)], s.line);
                value_dict loop{{"index", value(k + 1)},
                                {"index0", value(k)},
                                {"first", value(k == 0)},
                                {"last", value(k == n - 1)},
                                {"length", value(n)},
                                {"revindex", value(n - k)},
                                {"revindex0", value(n - k - 1)},
                                {"previtem", k > 0 ? items[static_cast<std::size_t>(k - 1)] : value()},
                                {"nextitem", k + 1 < n ? items[static_cast<std::size_t>(k + 1)] : value()}};
                loop.emplace_back("cycle", value(function([k](value_list& a, kwargs&) -> value {
                    if (a.empty()) return value();
                    return a[static_cast<std::size_t>(k) % a.size()];
                })));
                scopes.back()["loop"] = value(std::move(loop));
                const flow f = exec(s.b);
                if (f == flow::break_) break;
            }
            if (n == 0 && !s.else_b.empty()) exec(s.else_b);
            scopes.pop_back();
            return flow::normal;
        }

        value make_macro(const stmt& s) {
            const stmt* m = &s;
            renderer* self = this;
            return value(function([m, self](value_list& args, kwargs& kw) -> value {
                if (++self->depth > max_depth) template_error("macros call each other too deeply", m->line);
                self->scopes.emplace_back();
                for (std::size_t k = 0; k < m->params.size(); ++k) {
                    const std::string& name = m->params[k].first;  // not a structured binding: clang 14 cannot capture one
                    const expr_ptr& def = m->params[k].second;
                    value v;
                    if (k < args.size()) v = args[k];
                    else if (const auto it = std::find_if(kw.begin(), kw.end(), [&](auto& p) { return p.first == name; }); it != kw.end())
                        v = it->second;
                    else if (def) v = self->eval(*def);
                    self->scopes.back()[name] = v;
                }
                std::string captured;
                std::string* saved = self->out;
                self->out = &captured;
                self->exec(m->b);
                self->out = saved;
                self->scopes.pop_back();
                --self->depth;
                return value(std::move(captured));
            }));
        }

        static std::vector<std::string> utf8_chars(const std::string& s) {
            std::vector<std::string> out;
            for (std::size_t k = 0; k < s.size();) {
                std::size_t n = 1;
                while (k + n < s.size() && (static_cast<unsigned char>(s[k + n]) & 0xC0) == 0x80) ++n;
                out.push_back(s.substr(k, n));
                k += n;
            }
            return out;
        }

        // ---- expressions ---------------------------------------------------------------------
        struct depth_guard {
            renderer& r;
            explicit depth_guard(renderer& rr, int line) : r(rr) {
                if (++r.depth > max_depth * 4) template_error("expression nested too deeply", line);
            }
            ~depth_guard() { --r.depth; }
        };

        value eval(const expr& e) {
            depth_guard g(*this, e.line);
            switch (e.k) {
                case expr::kind::literal: return e.lit;
                case expr::kind::name: return lookup(e.name);
                case expr::kind::list:
                case expr::kind::tuple: {
                    value_list l;
                    for (const auto& x : e.a) l.push_back(eval(*x));
                    return e.k == expr::kind::tuple ? value::tuple(std::move(l)) : value(std::move(l));
                }
                case expr::kind::dict: {
                    value_dict d;
                    for (std::size_t k = 0; k + 1 < e.a.size(); k += 2) {
                        const value key = eval(*e.a[k]);
                        set_key(d, key.to_string(), eval(*e.a[k + 1]));
                    }
                    return value(std::move(d));
                }
                case expr::kind::attr: return attribute(eval(*e.a[0]), e.name, e.line);
                case expr::kind::index: return subscript(eval(*e.a[0]), eval(*e.a[1]), e.line);
                case expr::kind::slice: return slice(e);
                case expr::kind::call: return call(e);
                case expr::kind::filter: return call_filter(e, eval(*e.a[0]));
                case expr::kind::test: {
                    const bool r = run_test(e);
                    return value(e.negated ? !r : r);
                }
                case expr::kind::neg: {
                    const value v = eval(*e.a[0]);
                    if (v.is_int() || v.is_bool()) return value(checked(0, v.as_int(), '-', e.line));
                    if (v.is_float()) return value(-v.as_float());
                    template_error(std::string("bad operand for unary -: ") + v.type_name(), e.line);
                }
                case expr::kind::pos: return eval(*e.a[0]);
                case expr::kind::not_: return value(!eval(*e.a[0]).truthy());
                case expr::kind::and_: {
                    value l = eval(*e.a[0]);
                    return l.truthy() ? eval(*e.a[1]) : l;
                }
                case expr::kind::or_: {
                    value l = eval(*e.a[0]);
                    return l.truthy() ? l : eval(*e.a[1]);
                }
                case expr::kind::binary: return binary(e.name, eval(*e.a[0]), eval(*e.a[1]), e.line);
                case expr::kind::compare: {
                    const value l = eval(*e.a[0]), r = eval(*e.a[1]);
                    if (e.name == "in") return value(contains(r, l, e.line) != e.negated);
                    return value(compare(e.name, l, r, e.line));
                }
                case expr::kind::cond:
                    if (eval(*e.a[0]).truthy()) return eval(*e.a[1]);
                    return e.a.size() > 2 ? eval(*e.a[2]) : value();
            }
            return {};
        }

        static void set_key(value_dict& d, const std::string& k, value v) {
            for (auto& kv : d)
                if (kv.first == k) {
                    kv.second = std::move(v);
                    return;
                }
            d.emplace_back(k, std::move(v));
        }

        value attribute(const value& obj, const std::string& name, int line) {
            if (obj.is_undefined()) template_error("'" + name + "' of an undefined value", line);
            if (obj.is_dict()) {
                value v = obj.get(name);
                if (!v.is_undefined()) return v;
            }
            if (obj.is_list() && !name.empty() && name[0] >= '0' && name[0] <= '9') return subscript(obj, value(static_cast<std::int64_t>(std::stoll(name))), line);
            return {};  // methods are resolved at the call (see call())
        }

        value subscript(const value& obj, const value& key, int line) {
            if (obj.is_undefined()) template_error("subscript of an undefined value", line);
            if (obj.is_dict()) return obj.get(key.to_string());
            if (obj.is_list() || obj.is_string()) {
                if (!key.is_int() && !key.is_bool()) return {};
                const std::int64_t n = obj.is_list() ? static_cast<std::int64_t>(obj.list().size()) : static_cast<std::int64_t>(obj.length());
                std::int64_t k = key.as_int();
                if (k < 0) k += n;
                if (k < 0 || k >= n) return {};
                if (obj.is_list()) return obj.list()[static_cast<std::size_t>(k)];
                return value(utf8_chars(obj.str())[static_cast<std::size_t>(k)]);
            }
            return {};
        }

        value slice(const expr& e) {
            const value obj = eval(*e.a[0]);
            if (!obj.is_list() && !obj.is_string()) template_error(std::string("cannot slice a ") + obj.type_name(), e.line);
            value_list items;
            if (obj.is_list()) items = obj.list();
            else for (const auto& ch : utf8_chars(obj.str())) items.emplace_back(ch);
            const auto n = static_cast<std::int64_t>(items.size());
            const std::int64_t step = e.a[3] ? eval(*e.a[3]).as_int() : 1;
            if (step == 0) template_error("slice step cannot be zero", e.line);
            auto bound = [&](const expr_ptr& x, std::int64_t dflt) {
                if (!x) return dflt;
                const value v = eval(*x);
                if (v.is_none()) return dflt;
                std::int64_t k = v.as_int();
                if (k < 0) k += n;
                if (step > 0) return std::clamp<std::int64_t>(k, 0, n);
                return std::clamp<std::int64_t>(k, -1, n - 1);
            };
            const std::int64_t lo = bound(e.a[1], step > 0 ? 0 : n - 1);
            const std::int64_t hi = bound(e.a[2], step > 0 ? n : -1);
            value_list out;
            for (std::int64_t k = lo; step > 0 ? k < hi : k > hi; k += step) out.push_back(items[static_cast<std::size_t>(k)]);
            if (obj.is_list()) return value(std::move(out));
            std::string s;
            for (const value& v : out) s += v.str();
            return value(std::move(s));
        }

        bool contains(const value& hay, const value& needle, int line) {
            if (hay.is_string()) return hay.str().find(needle.to_string()) != std::string::npos;
            if (hay.is_list()) {
                for (const value& v : hay.list())
                    if (equal(v, needle)) return true;
                return false;
            }
            if (hay.is_dict()) return hay.has(needle.to_string());
            if (hay.is_undefined()) return false;  // an empty sequence, as in jinja2
            if (hay.is_none()) template_error("'in' on None", line);
            template_error(std::string("'in' on a ") + hay.type_name(), line);
        }

        static bool equal(const value& a, const value& b) {
            if (a.is_number() && b.is_number()) return a.as_float() == b.as_float();
            if ((a.is_bool() || a.is_number()) && (b.is_bool() || b.is_number())) return a.as_float() == b.as_float();
            if (a.kind() != b.kind()) return false;
            switch (a.kind()) {
                case value::type::undefined:
                case value::type::none: return true;
                case value::type::boolean: return a.as_bool() == b.as_bool();
                case value::type::string: return a.str() == b.str();
                case value::type::list:
                    if (a.list().size() != b.list().size()) return false;
                    for (std::size_t k = 0; k < a.list().size(); ++k)
                        if (!equal(a.list()[k], b.list()[k])) return false;
                    return true;
                case value::type::dict:
                case value::type::ns:
                    if (a.dict().size() != b.dict().size()) return false;
                    for (const auto& [k, v] : a.dict())
                        if (!b.has(k) || !equal(v, b.get(k))) return false;
                    return true;
                default: return false;
            }
        }

        static bool compare(const std::string& op, const value& l, const value& r, int line) {
            if (op == "==") return equal(l, r);
            if (op == "!=") return !equal(l, r);
            int c = 0;
            if ((l.is_number() || l.is_bool()) && (r.is_number() || r.is_bool())) c = l.as_float() < r.as_float() ? -1 : l.as_float() > r.as_float() ? 1 : 0;
            else if (l.is_string() && r.is_string()) c = l.str().compare(r.str());
            else template_error(std::string("cannot compare ") + l.type_name() + " with " + r.type_name() + " using " + op, line);
            if (op == "<") return c < 0;
            if (op == ">") return c > 0;
            if (op == "<=") return c <= 0;
            return c >= 0;
        }

        // Python's integers do not overflow; lmtk's are 64-bit and refuse to (never UB).
        static std::int64_t checked(std::int64_t a, std::int64_t b, char op, int line) {
            std::int64_t out = 0;
            const bool over = op == '+' ? __builtin_add_overflow(a, b, &out)
                              : op == '-' ? __builtin_sub_overflow(a, b, &out)
                                          : __builtin_mul_overflow(a, b, &out);
            if (over) template_error("integer overflow (lmtk's integers are 64-bit)", line);
            return out;
        }

        static value binary(const std::string& op, const value& l, const value& r, int line) {
            if (op == "~") return value(l.to_string() + r.to_string());
            const bool nums = (l.is_number() || l.is_bool()) && (r.is_number() || r.is_bool());
            const bool ints = nums && !l.is_float() && !r.is_float();
            if (op == "+") {
                if (ints) return value(checked(l.as_int(), r.as_int(), '+', line));
                if (nums) return value(l.as_float() + r.as_float());
                if (l.is_string() && r.is_string()) {
                    // Markup + str escapes the str (markupsafe), as a template's "..."|safe + x does.
                    if (l.is_markup() && !r.is_markup()) return value::markup(l.str() + value::html_escape(r.str()));
                    if (r.is_markup() && !l.is_markup()) return value::markup(value::html_escape(l.str()) + r.str());
                    return l.is_markup() ? value::markup(l.str() + r.str()) : value(l.str() + r.str());
                }
                if (l.is_list() && r.is_list()) {
                    value_list out = l.list();
                    out.insert(out.end(), r.list().begin(), r.list().end());
                    return value(std::move(out));
                }
            } else if (op == "-") {
                if (ints) return value(checked(l.as_int(), r.as_int(), '-', line));
                if (nums) return value(l.as_float() - r.as_float());
            } else if (op == "*") {
                if (ints) return value(checked(l.as_int(), r.as_int(), '*', line));
                if (nums) return value(l.as_float() * r.as_float());
                const value& s = l.is_string() ? l : r;
                const value& n = l.is_string() ? r : l;
                if (s.is_string() && (n.is_int() || n.is_bool())) {
                    if (n.as_int() > 0 && s.str().size() > 0 && static_cast<std::uint64_t>(n.as_int()) > max_output / s.str().size())
                        template_error("string repetition too long", line);
                    std::string out;
                    for (std::int64_t k = 0; k < n.as_int(); ++k) out += s.str();
                    return value(std::move(out));
                }
            } else if (op == "/") {
                if (nums) {
                    if (r.as_float() == 0.0) template_error("division by zero", line);
                    return value(l.as_float() / r.as_float());
                }
            } else if (op == "//" || op == "%") {
                if (ints) {
                    const std::int64_t a = l.as_int(), b = r.as_int();
                    if (b == 0) template_error("integer division or modulo by zero", line);
                    if (a == INT64_MIN && b == -1) template_error("integer overflow (lmtk's integers are 64-bit)", line);
                    std::int64_t q = a / b, m = a % b;
                    if (m != 0 && ((m < 0) != (b < 0))) --q, m += b;  // Python floors
                    return value(op == "//" ? q : m);
                }
                if (nums) {
                    if (r.as_float() == 0.0) template_error("float division or modulo by zero", line);
                    const double q = std::floor(l.as_float() / r.as_float());
                    return op == "//" ? value(q) : value(l.as_float() - q * r.as_float());
                }
                if (op == "%" && l.is_string()) return value(percent_format(l.str(), r, line));
            } else if (op == "**") {
                if (ints && r.as_int() >= 0) {
                    std::int64_t out = 1;
                    for (std::int64_t k = 0; k < r.as_int() && k < 64; ++k) out = checked(out, l.as_int(), '*', line);
                    return value(out);
                }
                if (nums) return value(std::pow(l.as_float(), r.as_float()));
            }
            template_error("unsupported operand types for " + op + ": " + l.type_name() + " and " + r.type_name(), line);
        }

        // "%s ... %d" % x (a value or a list of values).
        static std::string percent_format(const std::string& fmt, const value& args, int line) {
            const value_list list = args.is_list() ? args.list() : value_list{args};
            std::string out;
            std::size_t next = 0;
            for (std::size_t k = 0; k < fmt.size(); ++k) {
                if (fmt[k] != '%' || k + 1 >= fmt.size()) {
                    out += fmt[k];
                    continue;
                }
                const char c = fmt[++k];
                if (c == '%') {
                    out += '%';
                    continue;
                }
                if (next >= list.size()) template_error("not enough arguments for format string", line);
                const value& v = list[next++];
                if (c == 's') out += v.to_string();
                else if (c == 'd' || c == 'i') out += std::to_string(v.as_int());
                else if (c == 'r') out += v.repr();
                else template_error(std::string("unsupported format %") + c, line);
            }
            return out;
        }

        // Evaluated arguments of a call/filter/test node (from index `skip` of e.a).
        void args_of(const expr& e, std::size_t skip, value_list& args, kwargs& kw) {
            for (std::size_t k = skip; k < e.a.size(); ++k) args.push_back(eval(*e.a[k]));
            for (const auto& [name, x] : e.kw) kw.emplace_back(name, eval(*x));
        }
        static value arg(value_list& a, kwargs& kw, std::size_t pos, std::string_view name, value dflt = {}) {
            for (auto& [k, v] : kw)
                if (k == name) return v;
            return pos < a.size() ? a[pos] : dflt;
        }

        value call(const expr& e) {
            const expr& callee = *e.a[0];
            value_list args;
            kwargs kw;
            if (callee.k == expr::kind::attr) {
                const value obj = eval(*callee.a[0]);
                if (!(obj.is_dict() && obj.get(callee.name).is_callable())) {
                    args_of(e, 1, args, kw);
                    return method(obj, callee.name, args, kw, e.line);
                }
            }
            const value f = eval(callee);
            if (!f.is_callable()) {
                const std::string what = callee.k == expr::kind::name ? "'" + callee.name + "'" : std::string("this value");
                template_error(what + " is not a function (undefined or unsupported)", e.line);
            }
            args_of(e, 1, args, kw);
            return f.call(args, kw);
        }

        // Python methods of strings, dicts and lists that templates call.
        value method(const value& obj, const std::string& name, value_list& a, kwargs& kw, int line) {
            if (obj.is_string()) {
                const std::string& s = obj.str();
                if (name == "strip" || name == "lstrip" || name == "rstrip") {
                    const value chars = arg(a, kw, 0, "chars");
                    const std::string set = chars.is_string() ? chars.str() : std::string(" \t\n\r\f\v");
                    std::size_t b = 0, en = s.size();
                    if (name != "rstrip") while (b < en && set.find(s[b]) != std::string::npos) ++b;
                    if (name != "lstrip") while (en > b && set.find(s[en - 1]) != std::string::npos) --en;
                    return value(s.substr(b, en - b));
                }
                if (name == "upper" || name == "lower") {
                    std::string out = s;
                    for (char& c : out) c = static_cast<char>(name == "upper" ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
                    return value(std::move(out));
                }
                if (name == "title" || name == "capitalize") return filter_case(name, obj);
                if (name == "startswith" || name == "endswith") {
                    const value p = arg(a, kw, 0, "prefix");
                    auto test = [&](const std::string& x) {
                        if (x.size() > s.size()) return false;
                        return name == "startswith" ? s.compare(0, x.size(), x) == 0 : s.compare(s.size() - x.size(), x.size(), x) == 0;
                    };
                    if (p.is_list()) {
                        for (const value& x : p.list())
                            if (test(x.to_string())) return value(true);
                        return value(false);
                    }
                    return value(test(p.to_string()));
                }
                if (name == "split" || name == "rsplit") {
                    const value sep = arg(a, kw, 0, "sep");
                    const std::int64_t maxsplit = arg(a, kw, 1, "maxsplit", value(-1)).as_int();
                    return value(split(s, sep, maxsplit, name == "rsplit"));
                }
                if (name == "replace") {
                    const std::string from = arg(a, kw, 0, "old").to_string(), to = arg(a, kw, 1, "new").to_string();
                    return value(replace_all(s, from, to, arg(a, kw, 2, "count", value(-1)).as_int(), line));
                }
                if (name == "find" || name == "count" || name == "index" || name == "rfind") {
                    const std::string x = arg(a, kw, 0, "sub").to_string();
                    if (name == "count") {
                        if (x.empty()) return value(static_cast<std::int64_t>(value::utf8_length(s) + 1));
                        std::int64_t c = 0;
                        for (std::size_t p = s.find(x); p != std::string::npos; p = s.find(x, p + x.size())) ++c;
                        return value(c);
                    }
                    const std::size_t p = name == "rfind" ? s.rfind(x) : s.find(x);
                    if (p == std::string::npos) {
                        if (name == "index") template_error("substring not found", line);
                        return value(-1);
                    }
                    return value(static_cast<std::int64_t>(value::utf8_length(std::string_view(s).substr(0, p))));
                }
                if (name == "join") {
                    const value items = arg(a, kw, 0, "iterable");
                    std::string out;
                    bool first = true;
                    for (const value& v : items.list()) {
                        if (!first) out += s;
                        out += v.to_string();
                        first = false;
                    }
                    return value(std::move(out));
                }
                if (name == "splitlines") {
                    value_list out;
                    std::size_t b = 0;
                    for (std::size_t k = 0; k < s.size(); ++k)
                        if (s[k] == '\n') {
                            out.emplace_back(s.substr(b, k - b - (k > b && s[k - 1] == '\r')));
                            b = k + 1;
                        }
                    if (b < s.size()) out.emplace_back(s.substr(b));
                    return value(std::move(out));
                }
                if (name == "isdigit" || name == "isspace" || name == "isalpha" || name == "isalnum" || name == "isupper" ||
                    name == "islower") {
                    if (s.empty()) return value(false);
                    bool ok = true, cased = false;
                    for (const char ch : s) {
                        const auto c = static_cast<unsigned char>(ch);
                        if (name == "isdigit") ok = ok && std::isdigit(c);
                        else if (name == "isspace") ok = ok && std::isspace(c);
                        else if (name == "isalpha") ok = ok && std::isalpha(c);
                        else if (name == "isalnum") ok = ok && std::isalnum(c);
                        else if (name == "isupper") ok = ok && !std::islower(c), cased = cased || std::isupper(c);
                        else ok = ok && !std::isupper(c), cased = cased || std::islower(c);
                    }
                    if (name == "isupper" || name == "islower") ok = ok && cased;
                    return value(ok);
                }
                if (name == "format") {
                    std::string out;
                    std::size_t next = 0;
                    for (std::size_t k = 0; k < s.size(); ++k) {
                        if (s[k] == '{' && k + 1 < s.size() && s[k + 1] == '}') {
                            out += next < a.size() ? a[next++].to_string() : std::string();
                            ++k;
                        } else {
                            out += s[k];
                        }
                    }
                    return value(std::move(out));
                }
            } else if (obj.is_dict()) {
                if (name == "items") {
                    value_list out;
                    for (const auto& [k, v] : obj.dict()) out.push_back(value::tuple(value_list{value(k), v}));
                    return value(std::move(out));
                }
                if (name == "keys" || name == "values") {
                    value_list out;
                    for (const auto& [k, v] : obj.dict()) out.push_back(name == "keys" ? value(k) : v);
                    return value(std::move(out));
                }
                if (name == "get") {
                    const value v = obj.get(arg(a, kw, 0, "key").to_string());
                    return v.is_undefined() ? arg(a, kw, 1, "default", value::none()) : v;
                }
            } else if (obj.is_list()) {
                if (name == "index" || name == "count") {
                    const value x = arg(a, kw, 0, "value");
                    std::int64_t c = 0;
                    for (std::size_t k = 0; k < obj.list().size(); ++k)
                        if (equal(obj.list()[k], x)) {
                            if (name == "index") return value(static_cast<std::int64_t>(k));
                            ++c;
                        }
                    if (name == "index") template_error("value not in list", line);
                    return value(c);
                }
                if (name == "append" || name == "pop" || name == "insert" || name == "extend")
                    template_error("lists cannot be changed in a sandboxed template ('" + name + "')", line);
            } else if (obj.is_undefined()) {
                template_error("'" + name + "' called on an undefined value", line);
            }
            template_error(std::string(obj.type_name()) + " has no method '" + name + "'", line);
        }

        static value_list split(const std::string& s, const value& sep, std::int64_t maxsplit, bool from_right) {
            value_list out;
            if (!sep.is_string()) {  // runs of whitespace, no empty pieces
                std::vector<std::string> words;
                std::size_t k = 0;
                while (k < s.size()) {
                    while (k < s.size() && std::isspace(static_cast<unsigned char>(s[k]))) ++k;
                    if (k >= s.size()) break;
                    std::size_t e = k;
                    while (e < s.size() && !std::isspace(static_cast<unsigned char>(s[e]))) ++e;
                    words.push_back(s.substr(k, e - k));
                    k = e;
                }
                for (auto& w : words) out.emplace_back(std::move(w));
                (void)maxsplit;
                (void)from_right;
                return out;
            }
            const std::string& d = sep.str();
            if (d.empty()) template_error("split(): empty separator");
            std::vector<std::string> parts;
            if (!from_right) {
                std::size_t b = 0;
                for (std::size_t p = s.find(d); p != std::string::npos && (maxsplit < 0 || static_cast<std::int64_t>(parts.size()) < maxsplit);
                     p = s.find(d, b)) {
                    parts.push_back(s.substr(b, p - b));
                    b = p + d.size();
                }
                parts.push_back(s.substr(b));
            } else {
                std::size_t e = s.size();
                std::vector<std::string> rev;
                while (maxsplit < 0 || static_cast<std::int64_t>(rev.size()) < maxsplit) {
                    if (e < d.size()) break;
                    const std::size_t p = s.rfind(d, e - d.size());
                    if (p == std::string::npos) break;
                    rev.push_back(s.substr(p + d.size(), e - p - d.size()));
                    e = p;
                }
                parts.push_back(s.substr(0, e));
                parts.insert(parts.end(), rev.rbegin(), rev.rend());
            }
            for (auto& p : parts) out.emplace_back(std::move(p));
            return out;
        }

        static std::string replace_all(const std::string& s, const std::string& from, const std::string& to, std::int64_t count, int line) {
            if (from.empty()) template_error("replace(): empty pattern is not supported", line);
            std::string out;
            std::size_t b = 0;
            std::int64_t done = 0;
            for (std::size_t p = s.find(from); p != std::string::npos && (count < 0 || done < count); p = s.find(from, b), ++done) {
                out.append(s, b, p - b).append(to);
                b = p + from.size();
                if (out.size() > max_output) template_error("the rendered text is too long", line);
            }
            return out.append(s, b, std::string::npos);
        }

        static value filter_case(const std::string& name, const value& v) {
            std::string s = v.to_string();
            if (name == "capitalize") {
                for (std::size_t k = 0; k < s.size(); ++k) s[k] = static_cast<char>(k == 0 ? std::toupper(static_cast<unsigned char>(s[k])) : std::tolower(static_cast<unsigned char>(s[k])));
            } else {  // title
                bool start = true;
                for (char& c : s) {
                    const auto u = static_cast<unsigned char>(c);
                    c = static_cast<char>(start ? std::toupper(u) : std::tolower(u));
                    start = !std::isalnum(u);
                }
            }
            return value(std::move(s));
        }

        // A filter applied to `v` (e.a[0] is the filtered expression; its value is `v`).
        value call_filter(const expr& e, const value& v) {
            value_list a;
            kwargs kw;
            args_of(e, 1, a, kw);
            return filter(e.name, v, a, kw, e.line);
        }

        value filter(const std::string& name, const value& v, value_list& a, kwargs& kw, int line) {
            if (name == "trim") return method(v.is_string() ? v : value(v.to_string()), "strip", a, kw, line);
            if (name == "upper" || name == "lower") return method(value(v.to_string()), name, a, kw, line);
            if (name == "capitalize" || name == "title") return filter_case(name, v);
            if (name == "length" || name == "count") return value(static_cast<std::int64_t>(v.length()));
            if (name == "string") return value(v.to_string());
            if (name == "safe") return v.is_markup() ? v : value::markup(v.to_string());
            if (name == "e" || name == "escape" || name == "forceescape")
                return v.is_markup() && name != "forceescape" ? v : value::markup(value::html_escape(v.to_string()));
            if (name == "tojson") {
                // HF's signature: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
                const bool ascii = arg(a, kw, 0, "ensure_ascii").truthy();
                const value ind = arg(a, kw, 1, "indent");
                const value seps = arg(a, kw, 2, "separators");
                std::string isep, ksep = ": ";
                if (seps.is_list() && seps.list().size() == 2) isep = seps.list()[0].to_string(), ksep = seps.list()[1].to_string();
                return value(v.to_json(ind.is_int() ? static_cast<int>(ind.as_int()) : -1, isep, ksep, arg(a, kw, 3, "sort_keys").truthy(), ascii));
            }
            if (name == "default" || name == "d") {
                const bool boolean = arg(a, kw, 1, "boolean").truthy();
                if (v.is_undefined() || (boolean && !v.truthy())) return arg(a, kw, 0, "default_value", value(std::string()));
                return v;
            }
            if (name == "replace") return method(value(v.to_string()), "replace", a, kw, line);
            if (name == "join") {
                const std::string sep = arg(a, kw, 0, "d", value(std::string())).to_string();
                const value attr = arg(a, kw, 1, "attribute");
                std::string out;
                bool first = true;
                for (const value& x : iterate(v, line)) {
                    if (!first) out += sep;
                    out += (attr.is_undefined() ? x : attribute(x, attr.to_string(), line)).to_string();
                    first = false;
                }
                return value(std::move(out));
            }
            if (name == "first" || name == "last") {
                const value_list items = iterate(v, line);
                if (items.empty()) return {};
                return name == "first" ? items.front() : items.back();
            }
            if (name == "list") return v.is_list() ? v.as_list() : value(iterate(v, line));
            if (name == "reverse") {
                if (v.is_string()) {
                    auto ch = utf8_chars(v.str());
                    std::string out;
                    for (auto it = ch.rbegin(); it != ch.rend(); ++it) out += *it;
                    return value(std::move(out));
                }
                value_list items = iterate(v, line);
                std::reverse(items.begin(), items.end());
                return value(std::move(items));
            }
            if (name == "items") return method(v, "items", a, kw, line);
            if (name == "dictsort") {
                value_list items = method(v, "items", a, kw, line).list();
                std::stable_sort(items.begin(), items.end(), [](const value& x, const value& y) { return x.list()[0].str() < y.list()[0].str(); });
                return value(std::move(items));
            }
            if (name == "int") {
                if (v.is_string()) {
                    try {
                        return value(static_cast<std::int64_t>(std::stoll(v.str())));
                    } catch (...) {
                        return arg(a, kw, 0, "default", value(0));
                    }
                }
                if (v.is_number() || v.is_bool()) return value(v.as_int());
                return arg(a, kw, 0, "default", value(0));
            }
            if (name == "float") {
                if (v.is_string()) {
                    try {
                        return value(std::stod(v.str()));
                    } catch (...) {
                        return arg(a, kw, 0, "default", value(0.0));
                    }
                }
                if (v.is_number() || v.is_bool()) return value(v.as_float());
                return arg(a, kw, 0, "default", value(0.0));
            }
            if (name == "abs") return v.is_float() ? value(std::fabs(v.as_float())) : value(v.as_int() < 0 ? -v.as_int() : v.as_int());
            if (name == "round") {
                const double p = std::pow(10.0, static_cast<double>(arg(a, kw, 0, "precision", value(0)).as_int()));
                return value(std::nearbyint(v.as_float() * p) / p);
            }
            if (name == "indent") {
                const value w = arg(a, kw, 0, "width", value(4));
                const std::string pad = w.is_string() ? w.str() : std::string(static_cast<std::size_t>(std::max<std::int64_t>(0, w.as_int())), ' ');
                const bool first = arg(a, kw, 1, "first").truthy(), blank = arg(a, kw, 2, "blank").truthy();
                const std::string s = v.to_string();
                std::string out;
                std::size_t b = 0;
                bool is_first = true;
                for (;;) {
                    const std::size_t nl = s.find('\n', b);
                    const std::string ln = s.substr(b, nl == std::string::npos ? std::string::npos : nl - b);
                    if ((!is_first || first) && (blank || !ln.empty())) out += pad;
                    out += ln;
                    if (nl == std::string::npos) break;
                    out += '\n';
                    b = nl + 1;
                    is_first = false;
                }
                return value(std::move(out));
            }
            if (name == "unique") {
                value_list out;
                for (const value& x : iterate(v, line))
                    if (std::none_of(out.begin(), out.end(), [&](const value& y) { return equal(x, y); })) out.push_back(x);
                return value(std::move(out));
            }
            if (name == "sort") {
                value_list items = iterate(v, line);
                const bool rev = arg(a, kw, 0, "reverse").truthy();
                const value attr = arg(a, kw, 2, "attribute");
                auto key = [&](const value& x) { return attr.is_undefined() ? x : attribute(x, attr.to_string(), line); };
                std::stable_sort(items.begin(), items.end(), [&](const value& x, const value& y) {
                    return rev ? compare("<", key(y), key(x), line) : compare("<", key(x), key(y), line);
                });
                return value(std::move(items));
            }
            if (name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject") {
                const bool by_attr = name == "selectattr" || name == "rejectattr";
                const bool keep_when = name == "selectattr" || name == "select";
                const std::string attr = by_attr ? (a.empty() ? std::string() : a[0].to_string()) : std::string();
                const std::size_t test_at = by_attr ? 1 : 0;
                value_list out;
                if (!v.truthy()) return value::generator({});  // jinja2 yields nothing for a false value
                for (const value& x : iterate(v, line)) {
                    const value subject = by_attr ? attribute_or_undefined(x, attr) : x;
                    bool r = false;
                    if (a.size() <= test_at) {
                        r = subject.truthy();
                    } else {
                        value_list targs(a.begin() + static_cast<std::ptrdiff_t>(test_at) + 1, a.end());
                        r = test(a[test_at].to_string(), subject, targs, line);
                    }
                    if (r == keep_when) out.push_back(x);
                }
                return value::generator(std::move(out));
            }
            if (name == "map") {
                const value attr = arg(a, kw, 99, "attribute");
                value_list out;
                if (!v.truthy()) return value::generator({});
                if (!attr.is_undefined()) {
                    const value dflt = arg(a, kw, 99, "default");
                    for (const value& x : iterate(v, line)) {
                        value y = attribute_or_undefined(x, attr.to_string());
                        out.push_back(y.is_undefined() && !dflt.is_undefined() ? dflt : y);
                    }
                    return value::generator(std::move(out));
                }
                if (a.empty()) template_error("map() needs a filter name or attribute=", line);
                const std::string f = a[0].to_string();
                value_list rest(a.begin() + 1, a.end());
                for (const value& x : iterate(v, line)) {
                    value_list fa = rest;
                    kwargs none;
                    out.push_back(filter(f, x, fa, none, line));
                }
                return value::generator(std::move(out));
            }
            if (name == "sum") {
                double total = 0;
                bool all_int = true;
                for (const value& x : iterate(v, line)) total += x.as_float(), all_int = all_int && !x.is_float();
                return all_int ? value(static_cast<std::int64_t>(total)) : value(total);
            }
            if (name == "min" || name == "max") {
                const value_list items = iterate(v, line);
                if (items.empty()) return {};
                value best = items[0];
                for (const value& x : items)
                    if (compare(name == "min" ? "<" : ">", x, best, line)) best = x;
                return best;
            }
            if (name == "wordcount") return value(static_cast<std::int64_t>(split(v.to_string(), value(), -1, false).size()));
            if (name == "format") {
                value_list l = a;
                return value(percent_format(v.to_string(), value(std::move(l)), line));
            }
            template_error("unsupported filter '" + name + "'", line);
        }

        value attribute_or_undefined(const value& x, const std::string& path) {
            value cur = x;
            std::size_t b = 0;
            for (;;) {  // "a.b" walks attributes
                const std::size_t dot = path.find('.', b);
                const std::string part = path.substr(b, dot == std::string::npos ? std::string::npos : dot - b);
                if (!cur.is_dict()) return {};
                cur = cur.get(part);
                if (dot == std::string::npos) return cur;
                b = dot + 1;
            }
        }

        value_list iterate(const value& v, int line) {
            if (v.is_list()) return v.list();
            if (v.is_undefined()) return {};
            if (v.is_dict()) {
                value_list out;
                for (const auto& kv : v.dict()) out.emplace_back(kv.first);
                return out;
            }
            if (v.is_string()) {
                value_list out;
                for (const auto& ch : utf8_chars(v.str())) out.emplace_back(ch);
                return out;
            }
            template_error(std::string("cannot iterate over a ") + (v.is_undefined() ? "undefined value" : v.type_name()), line);
        }

        bool run_test(const expr& e) {
            // `x is defined` must not fail on an undefined x's attributes: evaluate leniently.
            value subject;
            try {
                subject = eval(*e.a[0]);
            } catch (const error&) {
                if (e.name == "defined" || e.name == "undefined") subject = value();
                else throw;
            }
            value_list a;
            kwargs kw;
            args_of(e, 1, a, kw);
            return test(e.name, subject, a, e.line);
        }

        bool test(const std::string& name, const value& v, value_list& a, int line) {
            if (name == "defined") return !v.is_undefined();
            if (name == "undefined") return v.is_undefined();
            if (name == "none") return v.is_none();
            if (name == "string") return v.is_string();
            if (name == "mapping") return v.is_dict();
            if (name == "iterable") return v.is_list() || v.is_dict() || v.is_string();
            if (name == "sequence") return v.is_list() || v.is_dict() || v.is_string();
            if (name == "number") return v.is_number();
            if (name == "integer") return v.is_int();
            if (name == "float") return v.is_float();
            if (name == "boolean") return v.is_bool();
            if (name == "true") return v.is_bool() && v.as_bool();
            if (name == "false") return v.is_bool() && !v.as_bool();
            if (name == "callable") return v.is_callable();
            if (name == "even" || name == "odd") return (v.as_int() % 2 == 0) == (name == "even");
            if (name == "divisibleby") return !a.empty() && a[0].as_int() != 0 && v.as_int() % a[0].as_int() == 0;
            if (name == "eq" || name == "equalto" || name == "==" || name == "sameas") return !a.empty() && equal(v, a[0]);
            if (name == "ne" || name == "!=") return a.empty() || !equal(v, a[0]);
            if (name == "lt" || name == "<" || name == "lessthan") return !a.empty() && compare("<", v, a[0], line);
            if (name == "gt" || name == ">" || name == "greaterthan") return !a.empty() && compare(">", v, a[0], line);
            if (name == "le" || name == "<=") return !a.empty() && compare("<=", v, a[0], line);
            if (name == "ge" || name == ">=") return !a.empty() && compare(">=", v, a[0], line);
            if (name == "in") return !a.empty() && contains(a[0], v, line);
            if (name == "lower" || name == "upper") {
                const std::string s = v.to_string();
                return std::none_of(s.begin(), s.end(), [&](char c) {
                    return name == "lower" ? std::isupper(static_cast<unsigned char>(c)) : std::islower(static_cast<unsigned char>(c));
                });
            }
            template_error("unsupported test '" + name + "'", line);
        }
    };

    body body_;
};

}  // namespace lmtk::jinja
// #include <lmtk/tokenize/pre_tokenizer.hpp>
// #include <lmtk/tokenize/regex.hpp>
// #include <lmtk/tokenize/special_tokens.hpp>
// #include <lmtk/tokenize/spm.hpp>
// #include <lmtk/tokenize/bpe.hpp>
// #include <lmtk/tokenize/tokenizer.hpp>
// #include <lmtk/tokenize/tokenizer_json.hpp>
// Hugging Face tokenizer.json (the `tokenizers` library's file) read natively into a vocab the
// BPE tokenizer runs on. Two families are recognised from what the file states:
//
//   byte-level BPE    pre_tokenizer ByteLevel (GPT-2's regex), decoder ByteLevel
//                     -> model "gpt2", pre "gpt-2"
//   BPE with bytes    normalizer Prepend("▁") + Replace(" " -> "▁"), or pre_tokenizer Metaspace
//   fallback          without splitting; <0xXX> byte tokens when byte_fallback (Llama, Mistral,
//                     TinyStories: converted from SentencePiece) -> model "llama" with merges
//
// Byte-level BPE takes its splits from the file: ByteLevel's own (GPT-2's pattern), Split with a
// Regex or String (behavior Isolated), Digits (pre_tokenizer.hpp runs them). Anything else
// (WordPiece, Unigram, other Split behaviours, ...) is refused by name rather than tokenized
// wrongly. Special tokens come from added_tokens (special -> control, otherwise
// user-defined); BOS/EOS and add_bos from tokenizer_config.json, the post-processor template
// and config.json, in that order of preference.
//
// Scores for the "llama" form are derived from merge ranks (a token made by merge r scores -r),
// so that a SentencePiece-style tokenizer that merges by score (llama.cpp's, for a GGUF written by
// `lmtk convert`) picks merges in the same order; lmtk itself uses the merges.
// #include <lmtk/core/error.hpp>
// #include <lmtk/core/mapped_file.hpp>
// #include <lmtk/io/safetensors.hpp>
// #include <lmtk/tokenize/pre_tokenizer.hpp>
// #include <lmtk/tokenize/regex.hpp>
// #include <lmtk/tokenize/spm.hpp>
// #include <lmtk/tokenize/sentencepiece_model.hpp>
// A SentencePiece tokenizer.model read natively into an SPM vocab, for Hugging Face folders that
// ship tokenizer.model without tokenizer.json (Llama 1/2, Mistral v0.1, TinyLlama...). The file
// is a protobuf ModelProto; only the parts a tokenizer needs are read, in the wire format:
//
//   ModelProto      1: pieces (repeated SentencePiece)   2: trainer_spec   3: normalizer_spec
//   SentencePiece   1: piece (string)   2: score (float)   3: type (1 normal, 2 unknown,
//                   3 control, 4 user defined, 5 unused, 6 byte: the GGUF token types)
//   TrainerSpec     3: model_type (1 unigram, 2 BPE)   40..43: unk/bos/eos/pad id
//   NormalizerSpec  3: add_dummy_prefix (default true)
//
// Every length is checked against the bytes left, so a truncated or hostile file is an error,
// never a read out of bounds. libsentencepiece is the reference this is tested against
// (tests/tokenize/sentencepiece_model.cpp).
// #include <lmtk/core/error.hpp>
// #include <lmtk/core/mapped_file.hpp>
// #include <lmtk/tokenize/vocab.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

namespace lmtk::tokenize {

namespace detail {

// A bounds-checked cursor over protobuf wire-format bytes.
class proto_reader {
public:
    proto_reader(const std::byte* p, std::size_t n, const std::string& origin) : p_(p), end_(p + n), origin_(origin) {}

    bool done() const noexcept { return p_ == end_; }

    std::uint64_t varint() {
        std::uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (p_ == end_) bad("truncated varint");
            const auto b = static_cast<std::uint8_t>(*p_++);
            v |= std::uint64_t(b & 0x7F) << shift;
            if (!(b & 0x80)) return v;
        }
        bad("varint longer than 10 bytes");
    }
    // (field number, wire type) of the next field.
    std::pair<std::uint32_t, std::uint32_t> key() {
        const std::uint64_t k = varint();
        if ((k >> 3) == 0 || (k >> 3) > 0x1FFFFFFF) bad("field number out of range");
        return {static_cast<std::uint32_t>(k >> 3), static_cast<std::uint32_t>(k & 7)};
    }
    // The bytes of a length-delimited field.
    proto_reader sub() {
        const std::uint64_t n = varint();
        if (n > static_cast<std::uint64_t>(end_ - p_)) bad("a field runs past the end of the file");
        proto_reader r(p_, static_cast<std::size_t>(n), origin_);
        p_ += n;
        return r;
    }
    std::string_view bytes() {
        proto_reader r = sub();
        return {reinterpret_cast<const char*>(r.p_), static_cast<std::size_t>(r.end_ - r.p_)};
    }
    float fixed32_float() {
        if (end_ - p_ < 4) bad("truncated 32-bit field");
        float f;
        std::memcpy(&f, p_, 4);  // little-endian on every target lmtk builds for
        p_ += 4;
        return f;
    }
    void skip(std::uint32_t wire) {
        switch (wire) {
            case 0: varint(); return;
            case 1: advance(8); return;
            case 2: sub(); return;
            case 5: advance(4); return;
            default: bad("unsupported wire type " + std::to_string(wire));
        }
    }
    void expect(std::uint32_t wire, std::uint32_t want, const char* what) const {
        if (wire != want) bad(std::string(what) + " has wire type " + std::to_string(wire));
    }
    [[noreturn]] void bad(const std::string& what) const { fail(origin_, ": not a SentencePiece model (", what, ")"); }

private:
    void advance(std::size_t n) {
        if (static_cast<std::size_t>(end_ - p_) < n) bad("truncated field");
        p_ += n;
    }
    const std::byte* p_;
    const std::byte* end_;
    const std::string& origin_;
};

}  // namespace detail

// Pieces, scores and types of tokenizer.model, and its special ids and dummy-prefix setting.
// add_bos follows SentencePiece's Llama convention (true); HF folders override it from
// tokenizer_config.json.
inline vocab_spec sentencepiece_model_spec(const std::string& path) {
    const core::mapped_file file(path);
    detail::proto_reader model(file.data(), file.size(), path);
    vocab_spec s;
    s.model = "llama";
    s.add_bos = true;
    s.add_space_prefix = true;
    std::int64_t model_type = 1;  // unigram unless the trainer spec says otherwise
    std::int64_t ids[4] = {0, 1, 2, -1};  // unk, bos, eos, pad: TrainerSpec's defaults
    while (!model.done()) {
        const auto [field, wire] = model.key();
        if (field == 1) {
            model.expect(wire, 2, "a piece");
            detail::proto_reader piece = model.sub();
            std::string text;
            float score = 0.0f;
            std::uint64_t type = 1;
            while (!piece.done()) {
                const auto [f, w] = piece.key();
                if (f == 1 && w == 2) text = std::string(piece.bytes());
                else if (f == 2 && w == 5) score = piece.fixed32_float();
                else if (f == 3 && w == 0) type = piece.varint();
                else piece.skip(w);
            }
            if (type < 1 || type > 6) model.bad("piece " + std::to_string(s.tokens.size()) + " has type " + std::to_string(type));
            s.tokens.push_back(std::move(text));
            s.scores.push_back(score);
            s.types.push_back(static_cast<token_type>(type));
        } else if (field == 2) {
            model.expect(wire, 2, "the trainer spec");
            detail::proto_reader spec = model.sub();
            while (!spec.done()) {
                const auto [f, w] = spec.key();
                if (w == 0 && (f == 3 || (f >= 40 && f <= 43))) {
                    // int32 fields: a negative value is sign-extended to 64 bits on the wire
                    const auto v = static_cast<std::int64_t>(spec.varint());
                    if (f == 3) model_type = v;
                    else ids[f - 40] = v;
                } else {
                    spec.skip(w);
                }
            }
        } else if (field == 3) {
            model.expect(wire, 2, "the normalizer spec");
            detail::proto_reader spec = model.sub();
            while (!spec.done()) {
                const auto [f, w] = spec.key();
                if (f == 3 && w == 0) s.add_space_prefix = spec.varint() != 0;
                else spec.skip(w);
            }
        } else {
            model.skip(wire);
        }
    }
    if (s.tokens.empty()) model.bad("no pieces");
    // lmtk's SPM tokenizer merges by score, which is SentencePiece's BPE; a unigram model needs
    // Viterbi segmentation, which it does not do.
    if (model_type != 2)
        fail(path, ": SentencePiece model type ", model_type, " (", model_type == 1 ? "unigram" : "not BPE",
             ") is not supported; lmtk tokenizes SentencePiece BPE models (Llama, Mistral)");
    const auto id = [&](std::int64_t v) -> std::int32_t {
        if (v < 0) return no_token;
        if (v >= static_cast<std::int64_t>(s.tokens.size())) fail(path, ": special id ", v, " is outside the ", s.tokens.size(), " pieces");
        return static_cast<std::int32_t>(v);
    };
    s.unk = id(ids[0]);
    s.bos = id(ids[1]);
    s.eos = id(ids[2]);
    s.pad = id(ids[3]);
    return s;
}

inline vocab vocab_from_sentencepiece_model(const std::string& path) { return vocab(sentencepiece_model_spec(path), path); }

}  // namespace lmtk::tokenize
// #include <lmtk/tokenize/vocab.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lmtk::tokenize {

namespace detail {

inline nlohmann::json read_json_file(const std::string& path) {
    const core::mapped_file m(path);
    // tokenizer.json of a 256k vocabulary is ~20 MB; far above that is not a tokenizer.
    if (m.size() > 512u << 20) fail(path, ": implausibly large (", m.size(), " bytes)");
    return safetensors::detail::parse_json(std::string_view(reinterpret_cast<const char*>(m.data()), m.size()), path);
}

inline std::optional<nlohmann::json> read_json_if_exists(const std::filesystem::path& p) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(p, ec)) return std::nullopt;
    return read_json_file(p.string());
}

// {"type": "Sequence", "normalizers": [...]} or a single one -> the list of parts.
inline std::vector<const nlohmann::json*> sequence_parts(const nlohmann::json& j, const char* list_key) {
    std::vector<const nlohmann::json*> out;
    if (j.is_null()) return out;
    if (j.is_object() && j.value("type", "") == "Sequence") {
        const auto it = j.find(list_key);
        if (it != j.end() && it->is_array())
            for (const auto& p : *it) out.push_back(&p);
        return out;
    }
    out.push_back(&j);
    return out;
}

inline std::string string_pattern(const nlohmann::json& pat) {
    if (pat.is_object()) {
        const auto s = pat.find("String");
        if (s != pat.end() && s->is_string()) return s->get<std::string>();
    }
    return std::string("\x01regex");  // a Regex pattern: never equal to a plain string
}

// A token given as "text" or {"content": "text", ...} (tokenizer_config.json).
inline std::optional<std::string> token_text(const nlohmann::json& j) {
    if (j.is_string()) return j.get<std::string>();
    if (j.is_object()) {
        const auto c = j.find("content");
        if (c != j.end() && c->is_string()) return c->get<std::string>();
    }
    return std::nullopt;
}

}  // namespace detail

// Extra facts from next to tokenizer.json; all optional.
struct tokenizer_json_context {
    std::optional<nlohmann::json> tokenizer_config;  // tokenizer_config.json
    std::optional<nlohmann::json> model_config;      // config.json (bos_token_id, eos_token_id)
};

namespace detail {

inline vocab vocab_from_tokenizer_json_value(const std::string& path, const nlohmann::json& j, const tokenizer_json_context& ctx) {
    if (!j.is_object()) fail(path, ": not a JSON object");
    const auto model_it = j.find("model");
    if (model_it == j.end() || !model_it->is_object()) fail(path, ": no 'model' object");
    const nlohmann::json& m = *model_it;
    const std::string type = m.value("type", "");
    if (type != "BPE") fail(path, ": tokenizer model '", type, "' is not supported (supported: BPE)");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
        if (const auto it = m.find(k); it != m.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty()))
            fail(path, ": BPE with ", k, " is not supported");

    // --- which family ----------------------------------------------------------------------
    const nlohmann::json null_json;
    const nlohmann::json& normalizer = j.contains("normalizer") ? j["normalizer"] : null_json;
    const nlohmann::json& pre = j.contains("pre_tokenizer") ? j["pre_tokenizer"] : null_json;
    bool byte_level = false, prepend_space = false, spaces_to_metaspace = false;
    std::vector<std::string> patterns;  // the splits, in order (pre_tokenizer.hpp)
    for (const nlohmann::json* p : detail::sequence_parts(pre, "pretokenizers")) {
        if (!p->is_object()) fail(path, ": malformed pre_tokenizer");
        const std::string t = p->value("type", "");
        if (t == "ByteLevel") {
            byte_level = true;
            prepend_space = prepend_space || p->value("add_prefix_space", false);
            if (p->value("use_regex", true)) patterns.emplace_back(pre_patterns::gpt2);
        } else if (t == "Split") {
            // Only "Isolated" (each match a piece of its own, as every BPE family uses); the
            // other behaviours merge matches into neighbours and would split differently.
            const std::string behavior = p->value("behavior", "");
            if (behavior != "Isolated") fail(path, ": Split pre-tokenizer with behavior '", behavior, "' is not supported (supported: Isolated)");
            if (p->value("invert", false)) fail(path, ": inverted Split pre-tokenizer is not supported");
            const auto pat = p->find("pattern");
            if (pat == p->end() || !pat->is_object()) fail(path, ": Split pre-tokenizer without a pattern");
            if (const auto r = pat->find("Regex"); r != pat->end() && r->is_string()) {
                patterns.push_back(r->get<std::string>());
            } else if (const auto str = pat->find("String"); str != pat->end() && str->is_string() && !str->get<std::string>().empty()) {
                std::string escaped;  // a literal string, as a pattern
                for (const char c : str->get<std::string>()) {
                    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) escaped += '\\';
                    escaped += c;
                }
                patterns.push_back(std::move(escaped));
            } else {
                fail(path, ": Split pre-tokenizer pattern is neither a Regex nor a non-empty String");
            }
            try {
                const regex check(patterns.back());  // a pattern lmtk cannot run fails here, at load, by name
            } catch (const error& e) {
                fail(path, ": ", e.what());
            }
        } else if (t == "Digits") {
            patterns.emplace_back(p->value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)");
        } else if (t == "Metaspace") {
            if (p->value("replacement", "") != std::string(detail::spm_space))
                fail(path, ": Metaspace with a replacement other than U+2581 is not supported");
            // Older files have no `split` key and always split on the metaspace.
            if (p->value("split", true)) fail(path, ": Metaspace pre-tokenizer that splits words is not supported yet");
            const std::string scheme = p->value("prepend_scheme", p->value("add_prefix_space", true) ? "always" : "never");
            spaces_to_metaspace = true;
            prepend_space = scheme == "first" || scheme == "always";
        } else {
            fail(path, ": pre-tokenizer '", t, "' is not supported (supported: ByteLevel, Split (Isolated), Digits, Metaspace)");
        }
    }
    if (!patterns.empty() && !byte_level) fail(path, ": Split or Digits pre-tokenizers without ByteLevel are not supported");
    for (const nlohmann::json* n : detail::sequence_parts(normalizer, "normalizers")) {
        if (!n->is_object()) fail(path, ": malformed normalizer");
        const std::string t = n->value("type", "");
        if (t == "Prepend" && n->value("prepend", "") == std::string(detail::spm_space)) {
            prepend_space = true;
        } else if (t == "Replace" && n->contains("pattern") && detail::string_pattern((*n)["pattern"]) == " " &&
                   n->value("content", "") == std::string(detail::spm_space)) {
            spaces_to_metaspace = true;
        } else if (t == "NFC" && byte_level) {
            // GPT-2 text is assumed NFC already; lmtk does not renormalize (documented limitation).
        } else {
            fail(path, ": normalizer '", t, "' is not supported (supported: Prepend(\"▁\"), Replace(\" \" -> \"▁\"))");
        }
    }
    if (byte_level == spaces_to_metaspace)
        fail(path, byte_level ? ": mixes byte-level and metaspace handling of spaces"
                              : ": neither byte-level nor metaspace BPE (no ByteLevel pre-tokenizer, no \"▁\" normalizer)");

    // --- tokens ------------------------------------------------------------------------------
    const auto vit = m.find("vocab");
    if (vit == m.end() || !vit->is_object() || vit->empty()) fail(path, ": model.vocab is missing or empty");
    // Ids index the token table, so an id sizes an allocation: a single id of 2^24 - 1 in an
    // 86 KB file once cost gigabytes of placeholder tokens before any error. The file lists
    // vocab.size() + added_tokens.size() tokens; ids are refused from that count on, so the
    // table (and its placeholders for holes, which can then only come from added tokens that
    // repeat vocab entries) grows with the file, never with the numbers written in it. Real
    // files number their tokens densely from 0.
    const auto added_it = j.find("added_tokens");
    const std::size_t n_stated =
        vit->size() + (added_it != j.end() && added_it->is_array() ? added_it->size() : std::size_t{0});
    const auto max_tokens = static_cast<std::int64_t>(std::min<std::size_t>(n_stated, std::numeric_limits<std::int32_t>::max()));
    std::vector<std::string> tokens;
    std::vector<bool> present;
    auto place = [&](const std::string& text, const nlohmann::json& id_json) -> std::int32_t {
        if (!id_json.is_number_integer() || id_json.get<std::int64_t>() < 0)
            fail(path, ": token '", text, "' has an invalid id ", id_json.dump());
        if (id_json.get<std::int64_t>() >= max_tokens)
            fail(path, ": token '", text, "' has id ", id_json.dump(), ", but the file lists only ", n_stated,
                 " tokens (vocab and added_tokens), so ids must be below that");
        const auto id = static_cast<std::size_t>(id_json.get<std::int64_t>());
        if (id >= tokens.size()) {
            tokens.resize(id + 1);
            present.resize(id + 1, false);
        }
        if (present[id] && tokens[id] != text)
            fail(path, ": id ", id, " is both '", tokens[id], "' and '", text, "'");
        tokens[id] = text;
        present[id] = true;
        return static_cast<std::int32_t>(id);
    };
    for (auto it = vit->begin(); it != vit->end(); ++it) place(it.key(), *it);

    vocab_spec s;
    s.model = byte_level ? "gpt2" : "llama";
    if (byte_level) {
        s.ignore_merges = m.value("ignore_merges", false);
        s.pre = pre_tokenizer_name(patterns, s.ignore_merges);  // so that `lmtk convert` can name it in a GGUF
        s.pre_patterns = std::move(patterns);
    }
    s.add_space_prefix = prepend_space;
    std::vector<token_type> types;
    std::vector<std::pair<std::int32_t, bool>> added;  // id, special
    if (const auto at = added_it; at != j.end() && !at->is_null()) {
        if (!at->is_array()) fail(path, ": added_tokens is not a list");
        for (const auto& a : *at) {
            if (!a.is_object() || !a.contains("content") || !a["content"].is_string() || !a.contains("id"))
                fail(path, ": malformed entry in added_tokens");
            added.emplace_back(place(a["content"].get<std::string>(), a["id"]), a.value("special", false));
        }
    }
    types.assign(tokens.size(), token_type::normal);
    for (std::size_t i = 0; i < tokens.size(); ++i)
        if (!present[i]) {
            // A hole in the ids: fill it with an unused placeholder, as llama.cpp's converter does.
            tokens[i] = "[PAD" + std::to_string(i) + "]";
            types[i] = token_type::unused;
        }
    for (const auto& [id, special] : added) types[static_cast<std::size_t>(id)] = special ? token_type::control : token_type::user_defined;
    if (!byte_level)
        for (std::size_t i = 0; i < tokens.size(); ++i)
            if (types[i] == token_type::normal && detail::parse_byte_token(tokens[i]) >= 0) types[i] = token_type::byte;
    std::unordered_map<std::string, std::int32_t> id_of;
    id_of.reserve(tokens.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) id_of.emplace(tokens[i], static_cast<std::int32_t>(i));
    auto find = [&](const std::string& t) {
        const auto it = id_of.find(t);
        return it == id_of.end() ? no_token : it->second;
    };
    if (const auto u = m.find("unk_token"); u != m.end() && u->is_string()) {
        s.unk = find(u->get<std::string>());
        if (s.unk != no_token) types[static_cast<std::size_t>(s.unk)] = token_type::unknown;
    }

    // --- merges: "a b" strings, or [a, b] pairs in newer files ------------------------------
    if (const auto mg = m.find("merges"); mg != m.end() && !mg->is_null()) {
        if (!mg->is_array()) fail(path, ": model.merges is not a list");
        s.merges.reserve(mg->size());
        for (const auto& e : *mg) {
            if (e.is_string()) s.merges.push_back(e.get<std::string>());
            else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string())
                s.merges.push_back(e[0].get<std::string>() + " " + e[1].get<std::string>());
            else fail(path, ": malformed entry in model.merges");
        }
    }
    if (!byte_level && s.merges.empty()) fail(path, ": a metaspace BPE tokenizer without merges");
    if (!byte_level) {
        // score(token made by merge r) = -r: earlier merges win in a score-driven merger.
        s.scores.assign(tokens.size(), 0.0f);
        std::vector<bool> scored(tokens.size(), false);
        for (std::size_t r = 0; r < s.merges.size(); ++r) {
            const std::string& mg = s.merges[r];
            const std::size_t sp = mg.find(' ', 1);
            if (sp == std::string::npos) continue;
            const std::int32_t id = find(mg.substr(0, sp) + mg.substr(sp + 1));
            if (id == no_token || scored[static_cast<std::size_t>(id)]) continue;
            scored[static_cast<std::size_t>(id)] = true;
            s.scores[static_cast<std::size_t>(id)] = -static_cast<float>(r);
        }
        // Tokens no merge makes (single characters, bytes, specials) rank below every merge.
        for (std::size_t i = 0; i < tokens.size(); ++i)
            if (!scored[i]) s.scores[i] = -static_cast<float>(s.merges.size());
    }

    // --- BOS / EOS ----------------------------------------------------------------------------
    std::optional<bool> add_bos, add_eos;
    if (ctx.tokenizer_config && ctx.tokenizer_config->is_object()) {
        const nlohmann::json& tc = *ctx.tokenizer_config;
        if (const auto b = tc.find("bos_token"); b != tc.end())
            if (auto t = detail::token_text(*b)) s.bos = find(*t);
        if (const auto e = tc.find("eos_token"); e != tc.end())
            if (auto t = detail::token_text(*e)) s.eos = find(*t);
        if (const auto p = tc.find("pad_token"); p != tc.end())
            if (auto t = detail::token_text(*p)) s.pad = find(*t);
        if (const auto b = tc.find("add_bos_token"); b != tc.end() && b->is_boolean()) add_bos = b->get<bool>();
        if (const auto e = tc.find("add_eos_token"); e != tc.end() && e->is_boolean()) add_eos = e->get<bool>();
    }
    // The post-processor's template says which special token goes before the text.
    if (const auto pp = j.find("post_processor"); pp != j.end() && pp->is_object() && pp->value("type", "") == "TemplateProcessing") {
        const auto single = pp->find("single");
        if (single != pp->end() && single->is_array() && !single->empty()) {
            const nlohmann::json& first = (*single)[0];
            const nlohmann::json& last = single->back();
            auto special_id = [&](const nlohmann::json& e) -> std::int32_t {
                if (!e.is_object() || !e.contains("SpecialToken") || !e["SpecialToken"].is_object()) return no_token;
                const auto id = e["SpecialToken"].find("id");
                return id != e["SpecialToken"].end() && id->is_string() ? find(id->get<std::string>()) : no_token;
            };
            if (const std::int32_t b = special_id(first); b != no_token) {
                if (s.bos == no_token) s.bos = b;
                if (!add_bos) add_bos = true;
            } else if (!add_bos) {
                add_bos = false;
            }
            if (const std::int32_t e = special_id(last); e != no_token && single->size() > 1) {
                if (s.eos == no_token) s.eos = e;
                if (!add_eos) add_eos = true;
            }
        }
    }
    if (ctx.model_config && ctx.model_config->is_object()) {
        // An id or a list of ids (chat models list several end tokens); invalid ones are ignored.
        auto ids_of = [&](const char* key) {
            std::vector<std::int32_t> ids;
            const auto it = ctx.model_config->find(key);
            if (it == ctx.model_config->end()) return ids;
            auto take = [&](const nlohmann::json& x) {
                if (x.is_number_integer() && x.get<std::int64_t>() >= 0 &&
                    static_cast<std::uint64_t>(x.get<std::int64_t>()) < tokens.size())
                    ids.push_back(static_cast<std::int32_t>(x.get<std::int64_t>()));
            };
            if (it->is_array())
                for (const auto& x : *it) take(x);
            else
                take(*it);
            return ids;
        };
        if (const auto b = ids_of("bos_token_id"); s.bos == no_token && !b.empty()) s.bos = b[0];
        const auto e = ids_of("eos_token_id");
        if (s.eos == no_token && !e.empty()) s.eos = e[0];
        for (const std::int32_t id : e)  // a second end id ends generation too
            if (id != s.eos && s.eot == no_token) s.eot = id;
    }
    // GPT-2 style vocabularies mark their end token only through config files; a lone
    // <|endoftext|> is the usual one.
    if (byte_level && s.eos == no_token) s.eos = find("<|endoftext|>");
    s.add_bos = add_bos.value_or(false);
    s.add_eos = add_eos.value_or(false);
    s.tokens = std::move(tokens);
    s.types = std::move(types);
    return vocab(std::move(s), path);
}

}  // namespace detail

// The vocab of tokenizer.json text already parsed (by core::parse_json_file); `origin` names it
// in errors. A value of the wrong JSON type where the reader looks a field up with a default
// (nlohmann's value() throws type_error then) is a broken file too: it ends in lmtk::error like
// every other, not in a library exception the caller did not expect.
inline vocab vocab_from_parsed_tokenizer_json(const nlohmann::json& j, const std::string& origin,
                                              const tokenizer_json_context& ctx = {}) {
    try {
        return detail::vocab_from_tokenizer_json_value(origin, j, ctx);
    } catch (const nlohmann::json::exception& e) {
        fail(origin, ": malformed tokenizer.json (", e.what(), ")");
    }
}

// Reads tokenizer.json at `path`.
inline vocab vocab_from_tokenizer_json(const std::string& path, const tokenizer_json_context& ctx = {}) {
    return vocab_from_parsed_tokenizer_json(detail::read_json_file(path), path, ctx);
}

// The tokenizer of a checkpoint folder: tokenizer.json (preferred, as transformers does), else a
// SentencePiece tokenizer.model, with tokenizer_config.json and config.json beside it.
inline vocab vocab_from_hf_folder(const std::filesystem::path& dir) {
    const auto tj = dir / "tokenizer.json";
    std::error_code ec;
    tokenizer_json_context ctx;
    ctx.tokenizer_config = detail::read_json_if_exists(dir / "tokenizer_config.json");
    ctx.model_config = detail::read_json_if_exists(dir / "config.json");
    if (!std::filesystem::is_regular_file(tj, ec)) {
        const auto sp = dir / "tokenizer.model";
        if (!std::filesystem::is_regular_file(sp, ec)) fail(dir.string(), ": no tokenizer.json or tokenizer.model in the checkpoint folder");
        vocab_spec s = sentencepiece_model_spec(sp.string());
        // tokenizer_config.json says whether BOS/EOS are added; config.json may name other ids.
        const auto flag = [&](const char* key, bool& out) {
            if (!ctx.tokenizer_config || !ctx.tokenizer_config->is_object()) return;
            if (const auto it = ctx.tokenizer_config->find(key); it != ctx.tokenizer_config->end() && it->is_boolean())
                out = it->get<bool>();
        };
        flag("add_bos_token", s.add_bos);
        flag("add_eos_token", s.add_eos);
        const auto id = [&](const char* key, std::int32_t& out) {
            if (!ctx.model_config || !ctx.model_config->is_object()) return;
            const auto it = ctx.model_config->find(key);
            if (it == ctx.model_config->end() || !it->is_number_integer()) return;
            const std::int64_t v = it->get<std::int64_t>();
            if (v >= 0 && v < static_cast<std::int64_t>(s.tokens.size())) out = static_cast<std::int32_t>(v);
        };
        id("bos_token_id", s.bos);
        id("eos_token_id", s.eos);
        return vocab(std::move(s), sp.string());
    }
    return vocab_from_tokenizer_json(tj.string(), ctx);
}

}  // namespace lmtk::tokenize
// #include <lmtk/tokenize/vocab.hpp>
// #include <lmtk/tokenize/load.hpp>
// The tokenizer a model source carries: a GGUF file's vocabulary (tokenizer.ggml.*), or a
// Hugging Face folder's tokenizer.json. Either way one tokenize::tokenizer comes back.
// #include <lmtk/core/error.hpp>
// #include <lmtk/model/hf.hpp>
// #include <lmtk/model/source.hpp>
// #include <lmtk/tokenize/tokenize.hpp>

#include <filesystem>
#include <string>

namespace lmtk::tokenize {

inline tokenizer load_tokenizer(const model::weight_source& src) {
    if (const gguf::file* f = src.gguf_file()) return tokenizer::from_vocab(vocab::from_gguf(*f), f->path());
    if (const auto* hf = dynamic_cast<const model::hf_source*>(&src))
        return tokenizer::from_vocab(vocab_from_hf_folder(hf->directory()), hf->path());
    fail(src.path(), ": this model source carries no tokenizer lmtk can read");
}

// The tokenizer of a model path without loading its weights: a GGUF file (a vocabulary-only
// one works too) or a Hugging Face checkpoint folder.
inline tokenizer load_tokenizer(const std::string& path) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) return tokenizer::from_vocab(vocab_from_hf_folder(path), path);
    const gguf::file f(path);
    return tokenizer::from_vocab(vocab::from_gguf(f), path);
}

}  // namespace lmtk::tokenize
// #include <lmtk/sample/sample.hpp>
// Sampling: candidates, the seeded generator, the stages and the compile-time chain.
// #include <lmtk/sample/candidate.hpp>
// One vocabulary entry as it moves through a sampling chain.
#include <cstdint>
#include <type_traits>

namespace lmtk::sample {

struct candidate {
    std::int32_t id;  // token id
    float logit;      // current (possibly transformed) logit
    float p;          // probability; scratch for filters, the final distribution after a pick
};
static_assert(std::is_trivially_copyable_v<candidate>);
static_assert(sizeof(candidate) == 12, "candidate: padding");

}  // namespace lmtk::sample
// #include <lmtk/sample/chain.hpp>
// lmtk::sample::chain: filters applied left to right, then one pick stage, fixed at compile time.
//
//   namespace s = lmtk::sample;
//   s::chain<s::repetition_penalty, s::top_k, s::top_p, s::temperature, s::dist> sampler{
//       s::repetition_penalty{1.1f, 64}, s::top_k{40}, s::top_p{0.95f, 1},
//       s::temperature{0.8f}, s::dist{}};
//   s::rng gen(seed);
//   s::context ctx{history, gen};
//   std::int32_t token = sampler(logits, ctx);
//   sampler.get<s::temperature>().value = 0.0f;  // parameters change at run time
//
// Chain rules are static_asserts, so a wrong composition does not compile:
//   chain<>                    "a chain needs at least a pick stage"
//   chain<top_k>               "the last stage must pick a token (greedy or dist)"
//   chain<dist, top_k, dist>   "every stage before the last must be a filter"
//   get<S>() with S absent or repeated: "get<S>: S must appear exactly once"
// #include <lmtk/core/error.hpp>
// #include <lmtk/sample/candidate.hpp>
// #include <lmtk/sample/stages.hpp>
// Sampling stages: small aggregates with runtime parameters, composed by lmtk::sample::chain.
//
// A filter stage takes the current candidates and returns the survivors as a subspan (usually a
// prefix) of its input; it may reorder them and rewrite their logits. A pick stage comes last and
// returns the chosen token id. Both see a context: the token history and the seeded generator.
//
// The `p` field of a candidate is scratch while filters run (top_p and repetition_penalty use
// it); after a pick stage it holds the softmax of the surviving candidates' final logits, which
// is what chain::last_candidates() exposes for logprobs.
//
// Logits may be -infinity (a banned token) and +infinity; NaN is not allowed (chain turns NaN
// into -infinity before the first stage).
//
// Semantics follow llama.cpp's samplers, so a user's settings mean the same thing here.
// #include <lmtk/sample/candidate.hpp>
// #include <lmtk/sample/rng.hpp>
// lmtk::sample::rng: xoshiro256** seeded through splitmix64. Small, fast and identical on every
// platform (unlike std::uniform_real_distribution, whose output the standard leaves open), so a
// seed reproduces a run anywhere.
#include <array>
#include <cstdint>
#include <limits>

namespace lmtk::sample {

class rng {
public:
    using result_type = std::uint64_t;  // satisfies std::uniform_random_bit_generator

    explicit rng(std::uint64_t seed = 0) noexcept { reseed(seed); }

    // splitmix64 spreads any seed (0 included) over the 256-bit state, which must not be all zero.
    void reseed(std::uint64_t seed) noexcept {
        for (std::uint64_t& word : s_) {
            seed += 0x9e3779b97f4a7c15ull;
            std::uint64_t z = seed;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            word = z ^ (z >> 31);
        }
    }

    std::uint64_t next() noexcept {
        const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
        const std::uint64_t t = s_[1] << 17;
        s_[2] ^= s_[0];
        s_[3] ^= s_[1];
        s_[1] ^= s_[2];
        s_[0] ^= s_[3];
        s_[2] ^= t;
        s_[3] = rotl(s_[3], 45);
        return result;
    }
    result_type operator()() noexcept { return next(); }
    static constexpr result_type min() noexcept { return 0; }
    static constexpr result_type max() noexcept { return std::numeric_limits<result_type>::max(); }

    // Top 24 bits: every value is exact in a float and strictly below 1.
    float uniform() noexcept { return static_cast<float>(next() >> 40) * 0x1.0p-24f; }
    // Top 53 bits, for sampling from large vocabularies where 2^-24 steps would bias rare tokens.
    double uniform_double() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

    friend bool operator==(const rng&, const rng&) = default;

private:
    static constexpr std::uint64_t rotl(std::uint64_t x, int k) noexcept {
        return (x << k) | (x >> (64 - k));
    }
    std::array<std::uint64_t, 4> s_{};
};

}  // namespace lmtk::sample

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

namespace lmtk::sample {

struct context {
    std::span<const std::int32_t> history;  // tokens so far, oldest first, prompt included
    rng& gen;
};

template <class S>
concept filter_stage = std::copy_constructible<S> &&
    requires(const S& s, std::span<candidate> c, context& ctx) {
        { s(c, ctx) } -> std::same_as<std::span<candidate>>;
    };

template <class S>
concept pick_stage = std::copy_constructible<S> &&
    requires(const S& s, std::span<candidate> c, context& ctx) {
        { s(c, ctx) } -> std::same_as<std::int32_t>;
    };

namespace detail {

inline constexpr float inf = std::numeric_limits<float>::infinity();

// Descending logit; equal logits by ascending id, so every stage's survivors are well defined.
inline bool better(const candidate& a, const candidate& b) noexcept {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

inline std::size_t argmax(std::span<const candidate> c) noexcept {
    std::size_t best = 0;
    for (std::size_t i = 1; i < c.size(); ++i)
        if (better(c[i], c[best])) best = i;
    return best;
}

inline float max_logit(std::span<const candidate> c) noexcept {
    float m = -inf;
    for (const candidate& x : c) m = std::max(m, x.logit);
    return m;
}

// Writes p = exp(logit - max) and returns their sum (in double: 128k small terms). Degenerate
// inputs stay finite: if all logits are -inf every candidate weighs 1 (nothing is preferred);
// if some are +inf, only those weigh 1.
inline double exp_weights(std::span<candidate> c) noexcept {
    const float m = max_logit(c);
    if (m == -inf || m == inf) {
        double sum = 0.0;
        for (candidate& x : c) {
            x.p = (x.logit == m) ? 1.0f : 0.0f;
            sum += x.p;
        }
        return sum;
    }
    double sum = 0.0;
    for (candidate& x : c) {
        x.p = std::exp(x.logit - m);
        sum += x.p;
    }
    return sum;
}

// Finds a token among candidates without allocating. A chain's buffer starts in id order
// (c[id].id == id), the common case when a stage runs first; stable filters keep ids ascending,
// which a binary search handles; anything else falls back to a linear scan.
class token_locator {
public:
    explicit token_locator(std::span<candidate> c) noexcept : c_(c) {}

    candidate* find(std::int32_t id) noexcept {
        if (id < 0) return nullptr;
        const auto u = static_cast<std::size_t>(id);
        if (u < c_.size() && c_[u].id == id) return &c_[u];
        if (!order_known_) {
            by_id_ = std::is_sorted(c_.begin(), c_.end(),
                                    [](const candidate& a, const candidate& b) { return a.id < b.id; });
            order_known_ = true;
        }
        if (by_id_) {
            auto it = std::lower_bound(c_.begin(), c_.end(), id,
                                       [](const candidate& a, std::int32_t v) { return a.id < v; });
            return (it != c_.end() && it->id == id) ? &*it : nullptr;
        }
        auto it = std::find_if(c_.begin(), c_.end(), [id](const candidate& a) { return a.id == id; });
        return it != c_.end() ? &*it : nullptr;
    }

private:
    std::span<candidate> c_;
    bool order_known_ = false;
    bool by_id_ = false;
};

inline std::size_t clamp_keep(std::int32_t min_keep, std::size_t n) noexcept {
    return std::min<std::size_t>(static_cast<std::size_t>(std::max<std::int32_t>(min_keep, 1)), n);
}

}  // namespace detail

// Normalized softmax of the current logits into p; for callers and tests.
inline void softmax(std::span<candidate> c) noexcept {
    const double sum = detail::exp_weights(c);
    for (candidate& x : c) x.p = static_cast<float>(x.p / sum);
}

// ---- filters -------------------------------------------------------------------------------

// Adds a bias to chosen tokens' logits; -infinity bans a token. Ids not among the candidates are
// ignored; a repeated id adds up. Servers fill it from a request's logit_bias.
struct token_bias {
    std::int32_t id;
    float bias;
};
struct logit_bias {
    std::vector<token_bias> biases;

    std::span<candidate> operator()(std::span<candidate> c, context&) const noexcept {
        detail::token_locator find(c);
        for (const token_bias& b : biases)
            if (candidate* x = find.find(b.id)) x->logit += b.bias;
        return c;
    }
};

// Penalizes tokens seen in the last `last_n` history tokens (llama.cpp "penalties"):
// each distinct seen token gets logit > 0 ? logit / penalty : logit * penalty, then
// logit -= count * frequency + presence (OpenAI's frequency and presence penalties).
// last_n == 0 disables it; last_n < 0 looks at the whole history. penalty must be > 0.
struct repetition_penalty {
    float penalty = 1.0f;
    std::int32_t last_n = 64;
    float frequency = 0.0f;
    float presence = 0.0f;

    std::span<candidate> operator()(std::span<candidate> c, context& ctx) const noexcept {
        if (penalty == 1.0f && frequency == 0.0f && presence == 0.0f) return c;
        if (last_n == 0 || ctx.history.empty() || c.empty()) return c;
        const auto window = (last_n < 0 || static_cast<std::size_t>(last_n) >= ctx.history.size())
                                ? ctx.history
                                : ctx.history.last(static_cast<std::size_t>(last_n));
        // Count occurrences in p (scratch), touching only the window's tokens: no pass over the
        // vocabulary and no allocation. The last pass applies each token once and resets its count.
        detail::token_locator find(c);
        for (std::int32_t t : window)
            if (candidate* x = find.find(t)) x->p = 0.0f;
        for (std::int32_t t : window)
            if (candidate* x = find.find(t)) x->p += 1.0f;
        for (std::int32_t t : window) {
            candidate* x = find.find(t);
            if (!x || x->p == 0.0f) continue;
            x->logit = x->logit > 0.0f ? x->logit / penalty : x->logit * penalty;
            x->logit -= x->p * frequency + presence;
            x->p = 0.0f;
        }
        return c;
    }
};

// Divides logits by `value`. 1 is a no-op. value <= 0 means greedy: only the best candidate
// (ties: lowest id) survives, so a following `dist` picks the argmax.
struct temperature {
    float value = 1.0f;

    std::span<candidate> operator()(std::span<candidate> c, context&) const noexcept {
        if (value == 1.0f || c.empty()) return c;
        if (!(value > 0.0f)) {
            std::swap(c[0], c[detail::argmax(c)]);
            return c.first(1);
        }
        for (candidate& x : c) x.logit /= value;
        return c;
    }
};

// Keeps the k best candidates, sorted best first. k <= 0 or k >= size is a no-op (order kept).
// nth_element + sorting the k survivors: O(n + k log k) over a 128k vocabulary.
struct top_k {
    std::int32_t k = 0;

    std::span<candidate> operator()(std::span<candidate> c, context&) const noexcept {
        if (k <= 0 || static_cast<std::size_t>(k) >= c.size()) return c;
        const auto mid = c.begin() + k;
        std::nth_element(c.begin(), mid, c.end(), detail::better);
        std::sort(c.begin(), mid, detail::better);
        return c.first(static_cast<std::size_t>(k));
    }
};

// Nucleus sampling: keeps the smallest set of best candidates whose probability reaches p, and
// at least min_keep. p >= 1 is a no-op. Survivors come in unspecified order (best first when
// the input was sorted, as after top_k).
// Sorts only as needed: sorted input is scanned as is; otherwise a quickselect on the nucleus
// boundary (O(n) expected: halve the range with nth_element, keep the half that crosses p) and a
// sort of the last few dozen candidates. A flat 128k distribution's nucleus can be most of the
// vocabulary, where a sort would cost O(n log n).
struct top_p {
    float p = 1.0f;
    std::int32_t min_keep = 1;

    std::span<candidate> operator()(std::span<candidate> c, context&) const noexcept {
        if (!(p < 1.0f) || c.size() <= 1) return c;
        const std::size_t n = c.size();
        const double target = static_cast<double>(p) * detail::exp_weights(c);
        // [0, lo) is known to be in the nucleus, with weight cum; the boundary lies in [lo, hi].
        std::size_t lo = 0;
        std::size_t hi = n;
        double cum = 0.0;
        if (!std::is_sorted(c.begin(), c.end(), detail::better)) {
            constexpr std::size_t small = 64;
            while (hi - lo > small) {
                const std::size_t mid = lo + (hi - lo) / 2;
                std::nth_element(c.begin() + lo, c.begin() + mid, c.begin() + hi, detail::better);
                double half = 0.0;
                for (std::size_t i = lo; i < mid; ++i) half += c[i].p;
                if (cum + half >= target) {
                    hi = mid;
                } else {
                    cum += half;
                    lo = mid;
                }
            }
            std::sort(c.begin() + lo, c.begin() + hi, detail::better);
        }
        std::size_t m = hi;  // rounding may leave the scan short of target: keep [0, hi)
        for (std::size_t i = lo; i < hi; ++i) {
            cum += c[i].p;
            if (cum >= target) {
                m = i + 1;
                break;
            }
        }
        const std::size_t keep = detail::clamp_keep(min_keep, n);
        if (m < keep) {
            // [0, m) are the best m; bring the next best up to min_keep behind them.
            std::nth_element(c.begin() + m, c.begin() + (keep - 1), c.end(), detail::better);
            m = keep;
        }
        return c.first(m);
    }
};

// Keeps candidates whose probability is at least p times the best one's (llama.cpp min_p),
// and at least min_keep. p <= 0 is a no-op. Compared on logits: logit >= max + log(p), so no
// softmax is needed. Survivors keep their relative order.
struct min_p {
    float p = 0.0f;
    std::int32_t min_keep = 1;

    std::span<candidate> operator()(std::span<candidate> c, context&) const noexcept {
        if (!(p > 0.0f) || c.size() <= 1) return c;
        const float threshold = detail::max_logit(c) + std::log(p);
        const auto below = [threshold](const candidate& x) { return x.logit < threshold; };
        const std::size_t kept = static_cast<std::size_t>(std::count_if(
            c.begin(), c.end(), [&](const candidate& x) { return !below(x); }));
        const std::size_t keep = detail::clamp_keep(min_keep, c.size());
        if (kept >= keep) {
            (void)std::remove_if(c.begin(), c.end(), below);  // stable compaction to the front
            return c.first(kept);
        }
        std::partial_sort(c.begin(), c.begin() + keep, c.end(), detail::better);
        return c.first(keep);
    }
};

// ---- pickers -------------------------------------------------------------------------------
// Callers guarantee at least one candidate (chain does).

// The best candidate; ties go to the lowest id. Leaves p = softmax (for logprobs); draws nothing.
struct greedy {
    std::int32_t operator()(std::span<candidate> c, context&) const noexcept {
        softmax(c);
        return c[detail::argmax(c)].id;
    }
};

// Samples from the softmax of the current logits with ctx.gen; leaves p = that softmax.
// Always consumes exactly one draw, so a seed's stream stays aligned whatever the settings.
// Temperature 0 is handled upstream: `temperature{0}` leaves only the argmax, which dist then
// picks with certainty, so chain<temperature, dist> degrades to greedy.
struct dist {
    std::int32_t operator()(std::span<candidate> c, context& ctx) const noexcept {
        const double sum = detail::exp_weights(c);
        const double u = ctx.gen.uniform_double() * sum;
        // Accumulate in the order sum was formed, so the walk reaches exactly `sum`; rounding of
        // u * sum up to sum falls through to the last candidate with weight.
        std::size_t pick = c.size();
        double acc = 0.0;
        for (std::size_t i = 0; i < c.size(); ++i) {
            acc += c[i].p;
            if (u < acc) {
                pick = i;
                break;
            }
        }
        if (pick == c.size()) {
            pick = c.size() - 1;
            while (pick > 0 && c[pick].p == 0.0f) --pick;
        }
        for (candidate& x : c) x.p = static_cast<float>(x.p / sum);
        return c[pick].id;
    }
};

static_assert(filter_stage<logit_bias> && filter_stage<repetition_penalty> &&
              filter_stage<temperature> && filter_stage<top_k> && filter_stage<top_p> &&
              filter_stage<min_p>);
static_assert(pick_stage<greedy> && pick_stage<dist>);
static_assert(!pick_stage<top_k> && !filter_stage<dist>);

}  // namespace lmtk::sample

#include <boost/hana/all_of.hpp>
#include <boost/hana/at.hpp>
#include <boost/hana/back.hpp>
#include <boost/hana/count.hpp>
#include <boost/hana/drop_back.hpp>
#include <boost/hana/equal.hpp>
#include <boost/hana/for_each.hpp>
#include <boost/hana/index_if.hpp>
#include <boost/hana/integral_constant.hpp>
#include <boost/hana/optional.hpp>
#include <boost/hana/range.hpp>
#include <boost/hana/tuple.hpp>
#include <boost/hana/type.hpp>

#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

namespace lmtk::sample {

namespace detail {
namespace hana = boost::hana;

// Each check passes on an empty list so that only the "needs a pick stage" assert fires there.
template <class... Stages>
constexpr bool last_is_pick() {
    if constexpr (sizeof...(Stages) == 0) {
        return true;
    } else {
        return pick_stage<typename decltype(+hana::back(hana::tuple_t<Stages...>))::type>;
    }
}

template <class... Stages>
constexpr bool rest_are_filters() {
    if constexpr (sizeof...(Stages) == 0) {
        return true;
    } else {
        return hana::all_of(hana::drop_back(hana::tuple_t<Stages...>), [](auto s) {
            return hana::bool_c<filter_stage<typename decltype(s)::type>>;
        });
    }
}
}  // namespace detail

// A filter that can also judge one token (a grammar): while active(), the chain first samples
// without it and keeps the token when accepts() says yes; only a refused token makes it run
// the filter over every candidate and sample again. This is llama.cpp's order too: most steps
// then cost one check instead of one per vocabulary entry. With only temperature and the draw
// after the filter, the token has exactly the filtered distribution; truncating stages after
// it (top-k, top-p, min-p) are applied to the unfiltered candidates on the first try.
template <class S>
concept checking_filter = filter_stage<S> && requires(const S& s, std::int32_t t) {
    { s.active() } -> std::convertible_to<bool>;
    { s.accepts(t) } -> std::convertible_to<bool>;
};

template <class... Stages>
class chain {
    static constexpr std::size_t count = sizeof...(Stages);
    static_assert(count > 0, "a chain needs at least a pick stage (greedy or dist)");
    static_assert(((std::is_same_v<Stages, std::remove_cvref_t<Stages>>) && ...),
                  "stages are plain value types");
    static_assert(detail::last_is_pick<Stages...>(), "the last stage must pick a token (greedy or dist)");
    static_assert(detail::rest_are_filters<Stages...>(), "every stage before the last must be a filter");

public:
    chain() = default;
    explicit chain(Stages... s) requires(sizeof...(Stages) > 0) : stages_(std::move(s)...) {}

    // Samples one token from `logits` (one per vocabulary entry). Throws lmtk::error on empty
    // logits or if a filter removed every candidate; otherwise allocates nothing once the
    // buffer has grown to the vocabulary size.
    std::int32_t operator()(std::span<const float> logits, context& ctx) {
        namespace hana = boost::hana;
        bool checking = false;
        hana::for_each(stages_, [&](const auto& st) {
            if constexpr (checking_filter<std::remove_cvref_t<decltype(st)>>) checking |= bool(st.active());
        });
        if (checking) {
            const std::int32_t token = run(logits, ctx, true);
            bool ok = true;
            hana::for_each(stages_, [&](const auto& st) {
                if constexpr (checking_filter<std::remove_cvref_t<decltype(st)>>)
                    if (ok && st.active()) ok = bool(st.accepts(token));
            });
            if (ok) return token;
        }
        return run(logits, ctx, false);
    }

private:
    std::int32_t run(std::span<const float> logits, context& ctx, bool skip_checking) {
        namespace hana = boost::hana;
        if (logits.empty()) fail("sample::chain: no logits");
        if (logits.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
            fail("sample::chain: vocabulary of ", logits.size(), " entries exceeds int32 ids");
        buf_.resize(logits.size());
        for (std::size_t i = 0; i < logits.size(); ++i) {
            // NaN would break the strict weak order every sorting stage relies on.
            const float l = logits[i];
            buf_[i] = candidate{static_cast<std::int32_t>(i),
                                std::isnan(l) ? -std::numeric_limits<float>::infinity() : l, 0.0f};
        }
        std::span<candidate> c(buf_);
        constexpr auto last = hana::size_c<count - 1>;
        hana::for_each(hana::make_range(hana::size_c<0>, last), [&](auto i) {
            if constexpr (checking_filter<std::remove_cvref_t<decltype(hana::at(stages_, i))>>)
                if (skip_checking) return;
            const std::span<candidate> kept = hana::at(stages_, i)(c, ctx);
            assert(kept.empty() || (kept.data() >= c.data() && kept.data() + kept.size() <= c.data() + c.size()));
            c = kept;
        });
        if (c.empty()) fail("sample::chain: the filters removed every candidate");
        const std::int32_t token = hana::at(stages_, last)(c, ctx);
        first_ = static_cast<std::size_t>(c.data() - buf_.data());
        size_ = c.size();
        return token;
    }

public:

    // The candidates that reached the pick stage in the last call, with p = their softmax (the
    // distribution the token was drawn from); order unspecified. Empty before the first call;
    // valid until the next call.
    std::span<const candidate> last_candidates() const noexcept {
        return std::span<const candidate>(buf_.data() + first_, size_);
    }

    // A stage by type (must occur once) or by position, to change its parameters.
    template <class S>
    S& get() noexcept { return boost::hana::at(stages_, index_of<S>()); }
    template <class S>
    const S& get() const noexcept { return boost::hana::at(stages_, index_of<S>()); }
    template <std::size_t I>
    auto& get() noexcept { return boost::hana::at_c<I>(stages_); }
    template <std::size_t I>
    const auto& get() const noexcept { return boost::hana::at_c<I>(stages_); }

    static constexpr std::size_t size() noexcept { return count; }

private:
    template <class S>
    static constexpr auto index_of() {
        namespace hana = boost::hana;
        constexpr auto types = hana::tuple_t<Stages...>;
        static_assert(hana::count(types, hana::type_c<S>) == hana::size_c<1>,
                      "get<S>: S must appear exactly once in the chain; use get<I>() otherwise");
        if constexpr (hana::count(types, hana::type_c<S>) == hana::size_c<1>)
            return *hana::index_if(types, hana::equal.to(hana::type_c<S>));
        else
            return hana::size_c<0>;  // only reached after the assert above failed
    }

    boost::hana::tuple<Stages...> stages_;
    std::vector<candidate> buf_;
    std::size_t first_ = 0;  // last_candidates() = buf_[first_, first_ + size_)
    std::size_t size_ = 0;
};

}  // namespace lmtk::sample
// #include <lmtk/sample/rng.hpp>
// #include <lmtk/sample/stages.hpp>
// #include <lmtk/sample/json_constraint.hpp>
// Constrained decoding to JSON: the output must be one JSON object (RFC 8259 syntax), as
// Ollama's `format: "json"` and OpenAI's `response_format: {"type": "json_object"}` promise.
//
//   sample::json_prefix state;                      // what has been generated so far
//   sample::json_vocab vocab = ...;                 // each token's bytes, once per model
//   chain.get<sample::json_constraint>() = {&vocab, &state};
//   ... after each sampled token: state.feed(vocab.pieces[tok]);
//
// json_prefix is a byte-level pushdown recogniser: feed() says whether the bytes so far can
// still be completed to a JSON object. The json_constraint stage bans (logit -inf) every
// candidate whose bytes would break that, and every end-of-generation token until the object
// is closed; once it is closed, only end tokens remain. A run of blanks between tokens holds at
// most one line break and 20 bytes (llama.cpp's JSON grammar allows about as much), so that a
// model cannot idle in blank lines forever; nesting stops at 32 levels. Bytes inside strings
// are not checked to be UTF-8 (a string may hold a broken character): the server's JSON mode
// runs the GBNF grammar matcher (grammar.hpp) instead, which checks them. The state is a few dozen bytes, trivially copyable: each candidate is checked
// on a copy, which is the whole cost (about a microsecond per thousand tokens of vocabulary).
// #include <lmtk/sample/candidate.hpp>
// #include <lmtk/sample/stages.hpp>

#include <array>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace lmtk::sample {

class json_prefix {
public:
    static constexpr int max_depth = 32;
    static constexpr int max_blank_run = 20;

    // Feeds bytes; false when they cannot continue a JSON object (the state is then unusable).
    bool feed(std::string_view bytes) noexcept {
        for (const char c : bytes)
            if (!feed(static_cast<unsigned char>(c))) return false;
        return true;
    }

    bool feed(unsigned char c) noexcept {
        const bool blank = c == ' ' || c == '\n' || c == '\t' || c == '\r';
        if (in_string()) {
            blank_run_ = breaks_ = 0;
        } else if (blank && !in_number() && s_ != state::literal) {
            if (s_ == state::done) return false;
            return take_blank(c);
        } else {
            blank_run_ = breaks_ = 0;
        }
        switch (s_) {
            case state::root: return c == '{' && open('{');
            case state::value: return start_value(c);
            case state::array_first:
                if (c == ']') return close(']');
                return start_value(c);
            case state::object_first:
                if (c == '}') return close('}');
                [[fallthrough]];
            case state::object_key:
                if (c != '"') return false;
                s_ = state::string, key_ = true;
                return true;
            case state::colon:
                if (c != ':') return false;
                s_ = state::value;
                return true;
            case state::object_next:
                if (c == ',') return s_ = state::object_key, true;
                return c == '}' && close('}');
            case state::array_next:
                if (c == ',') return s_ = state::value, true;
                return c == ']' && close(']');
            case state::string:
                if (c == '"') {
                    if (key_) return s_ = state::colon, true;
                    return after_value(), true;
                }
                if (c == '\\') return s_ = state::escape, true;
                return c >= 0x20;
            case state::escape:
                if (c == 'u') return s_ = state::unicode, hex_left_ = 4, true;
                if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't')
                    return s_ = state::string, true;
                return false;
            case state::unicode:
                if (!is_hex(c)) return false;
                if (--hex_left_ == 0) s_ = state::string;
                return true;
            case state::literal:
                if (c != static_cast<unsigned char>(literal_[lit_pos_])) return false;
                if (literal_[++lit_pos_] == '\0') after_value();
                return true;
            case state::minus:
                if (c == '0') return s_ = state::zero, true;
                return is_digit(c) && (s_ = state::integer, true);
            case state::zero:
                if (c == '.') return s_ = state::dot, true;
                if (c == 'e' || c == 'E') return s_ = state::exp_mark, true;
                return end_number(c);
            case state::integer:
                if (is_digit(c)) return true;
                if (c == '.') return s_ = state::dot, true;
                if (c == 'e' || c == 'E') return s_ = state::exp_mark, true;
                return end_number(c);
            case state::dot: return is_digit(c) && (s_ = state::fraction, true);
            case state::fraction:
                if (is_digit(c)) return true;
                if (c == 'e' || c == 'E') return s_ = state::exp_mark, true;
                return end_number(c);
            case state::exp_mark:
                if (c == '+' || c == '-') return s_ = state::exp_sign, true;
                return is_digit(c) && (s_ = state::exponent, true);
            case state::exp_sign: return is_digit(c) && (s_ = state::exponent, true);
            case state::exponent:
                if (is_digit(c)) return true;
                return end_number(c);
            case state::done: return false;
        }
        return false;
    }

    // The top-level object is closed: nothing but the end may follow.
    bool complete() const noexcept { return s_ == state::done; }
    // Nothing but blanks so far.
    bool empty() const noexcept { return s_ == state::root; }

private:
    enum class state : std::uint8_t {
        root, value, array_first, array_next, object_first, object_key, colon, object_next,
        string, escape, unicode, literal, minus, zero, integer, dot, fraction, exp_mark, exp_sign, exponent, done
    };

    static bool is_digit(unsigned char c) noexcept { return c >= '0' && c <= '9'; }
    static bool is_hex(unsigned char c) noexcept { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
    bool take_blank(unsigned char c) noexcept {
        if ((c == '\n' || c == '\r') && ++breaks_ > 1) return false;
        return ++blank_run_ <= max_blank_run;
    }
    bool in_string() const noexcept { return s_ == state::string || s_ == state::escape || s_ == state::unicode; }
    bool in_number() const noexcept { return s_ >= state::minus && s_ <= state::exponent; }

    bool open(char bracket) noexcept {
        if (depth_ >= max_depth) return false;
        stack_[depth_++] = bracket;
        s_ = bracket == '{' ? state::object_first : state::array_first;
        return true;
    }
    bool close(char bracket) noexcept {
        if (depth_ == 0 || stack_[depth_ - 1] != (bracket == '}' ? '{' : '[')) return false;
        --depth_;
        after_value();
        return true;
    }
    void after_value() noexcept {
        if (depth_ == 0) s_ = state::done;
        else s_ = stack_[depth_ - 1] == '{' ? state::object_next : state::array_next;
    }
    bool start_value(unsigned char c) noexcept {
        key_ = false;
        switch (c) {
            case '{': return open('{');
            case '[': return open('[');
            case '"': s_ = state::string; return true;
            case '-': s_ = state::minus; return true;
            case '0': s_ = state::zero; return true;
            case 't': return start_literal("true");
            case 'f': return start_literal("false");
            case 'n': return start_literal("null");
            default: return is_digit(c) && (s_ = state::integer, true);
        }
    }
    bool start_literal(const char* word) noexcept {
        literal_ = word;
        lit_pos_ = 1;
        s_ = state::literal;
        return true;
    }
    // A number ends at the first byte that cannot extend it; that byte belongs to what follows.
    bool end_number(unsigned char c) noexcept {
        after_value();
        if (c == ' ' || c == '\n' || c == '\t' || c == '\r') return take_blank(c);
        return feed(c);
    }

    state s_ = state::root;
    bool key_ = false;
    std::uint8_t depth_ = 0;
    std::uint8_t hex_left_ = 0;
    std::uint8_t lit_pos_ = 0;
    std::uint8_t blank_run_ = 0;
    std::uint8_t breaks_ = 0;
    const char* literal_ = nullptr;
    std::array<char, max_depth> stack_{};
};
static_assert(std::is_trivially_copyable_v<json_prefix>);

// Each token's bytes and whether it ends generation, built once per vocabulary.
struct json_vocab {
    std::vector<std::string> pieces;
    std::vector<bool> is_end;
};

// The filter stage. Off (a no-op) while `state` is null.
struct json_constraint {
    const json_vocab* vocab = nullptr;
    const json_prefix* state = nullptr;

    std::span<candidate> operator()(std::span<candidate> c, context&) const noexcept {
        if (!state || !vocab) return c;
        constexpr float banned = -std::numeric_limits<float>::infinity();
        bool any = false;
        for (candidate& x : c) {
            const auto id = static_cast<std::size_t>(x.id);
            bool ok = false;
            if (id < vocab->pieces.size()) {
                if (vocab->is_end[id]) {
                    ok = state->complete();
                } else if (!vocab->pieces[id].empty()) {
                    json_prefix next = *state;
                    ok = next.feed(vocab->pieces[id]);
                }
            }
            if (ok) any = true;
            else x.logit = banned;
        }
        // No token continues the object (a vocabulary without the needed bytes): let it end.
        if (!any)
            for (candidate& x : c)
                if (static_cast<std::size_t>(x.id) < vocab->is_end.size() && vocab->is_end[std::size_t(x.id)]) x.logit = 0.0f;
        return c;
    }
};

}  // namespace lmtk::sample
// #include <lmtk/sample/gbnf.hpp>
// GBNF grammars (llama.cpp's syntax, for constrained generation), parsed once into a flat form
// the matcher (grammar.hpp) walks:
//
//   root   ::= "yes" | "no" ws          # a rule: alternatives of sequences; `root` starts
//   ws     ::= [ \t\n]*                 # character classes, ranges, negation [^...], `.` any
//   item   ::= ("a" | [b-d])+ name{2,4}  # groups, * + ? {m} {m,} {m,n}; "\n" "\x41" "\u00e9"
//
// Every alternative is a run of elements ending in `end`: a character set (ranges of code
// points, possibly negated) or a reference to a rule. Literals become one set per code point;
// groups and repetitions become generated rules (x* is R ::= x R | <empty>), so the matcher only
// knows sets, references and ends. A grammar comes from requests, so the parser is bounded:
// nesting depth, repetition counts and total size are limited, and left recursion (which would
// make the matcher loop) is refused with the rule's name, as is a reference to a rule never
// defined. Errors throw lmtk::error with the line and column.
// #include <lmtk/core/error.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::sample {

struct grammar_element {
    enum kind_t : std::uint8_t { end, chars, rule_ref };
    kind_t kind = end;
    bool negated = false;         // chars: matches a code point in none of the ranges
    std::uint32_t rule = 0;       // rule_ref: the rule
    std::uint32_t first = 0;      // chars: ranges [first, first + count) of grammar::ranges
    std::uint32_t count = 0;
};

struct grammar {
    std::vector<grammar_element> elements;                  // alternatives, each ending in `end`
    std::vector<std::pair<char32_t, char32_t>> ranges;      // inclusive code point ranges
    std::vector<std::vector<std::uint32_t>> alternatives;   // per rule: index of each alternative's first element
    std::vector<std::string> rule_names;                    // generated rules are named after their parent
    std::uint32_t root = 0;
    // Per element: the fewest code points that finish its alternative from there (the element
    // included; 0 at an `end`); unreachable_length where no finite sentence exists. The matcher
    // adds these up over a stack to know how far the text is from a complete sentence.
    std::vector<std::uint32_t> min_tail;
    static constexpr std::uint32_t unreachable_length = 1u << 30;

    // Whether the set element at `i` matches code point c.
    bool matches(std::uint32_t i, char32_t c) const noexcept {
        const grammar_element& e = elements[i];
        bool in = false;
        for (std::uint32_t r = e.first; r < e.first + e.count && !in; ++r) in = ranges[r].first <= c && c <= ranges[r].second;
        return in != e.negated;
    }
    // Whether it may match some code point in [lo, hi] (a character whose last bytes are not
    // known yet).
    bool may_match(std::uint32_t i, char32_t lo, char32_t hi) const noexcept {
        const grammar_element& e = elements[i];
        if (e.negated) {  // false only when one excluded range covers all of [lo, hi]
            for (std::uint32_t r = e.first; r < e.first + e.count; ++r)
                if (ranges[r].first <= lo && hi <= ranges[r].second) return false;
            return true;
        }
        for (std::uint32_t r = e.first; r < e.first + e.count; ++r)
            if (ranges[r].first <= hi && lo <= ranges[r].second) return true;
        return false;
    }
};

namespace gbnf_detail {

// Limits on what a request may ask for: generous for real grammars (llama.cpp's examples and
// JSON-schema grammars use a few hundred elements), small enough that no input can exhaust
// memory or the stack.
inline constexpr std::size_t max_depth = 64;          // nested groups
inline constexpr std::size_t max_repeat = 1000;       // m and n of {m,n}
inline constexpr std::size_t max_elements = 1u << 20; // elements of the flat grammar
inline constexpr std::size_t max_rules = 1u << 16;

struct spec {  // an element while parsing
    grammar_element::kind_t kind = grammar_element::chars;
    bool negated = false;
    std::uint32_t rule = 0;
    std::vector<std::pair<char32_t, char32_t>> ranges;
};
using sequence = std::vector<spec>;

class parser {
public:
    explicit parser(std::string_view text) : s_(text) {}

    grammar parse() {
        skip_space(true);
        while (pos_ < s_.size()) {
            parse_rule();
            skip_space(true);
        }
        const auto root = names_.find("root");
        if (root == names_.end()) fail("grammar: no rule named 'root'");
        for (std::size_t r = 0; r < rules_.size(); ++r)
            if (!defined_[r]) fail("grammar: rule '", names_of_[r], "' is used but never defined");
        build(root->second);
        check_left_recursion();
        compute_min_tail();
        return std::move(g_);
    }

private:
    [[noreturn]] void error(std::string_view what) const {
        std::size_t line = 1, col = 1;
        for (std::size_t i = 0; i < pos_ && i < s_.size(); ++i) {
            if (s_[i] == '\n') ++line, col = 1;
            else ++col;
        }
        fail("grammar: ", what, " at line ", line, ", column ", col);
    }
    bool at_end() const noexcept { return pos_ >= s_.size(); }
    char peek(std::size_t ahead = 0) const noexcept { return pos_ + ahead < s_.size() ? s_[pos_ + ahead] : '\0'; }

    // Blanks and comments; newlines only where `newlines` (inside groups, after ::= and |).
    void skip_space(bool newlines) {
        while (!at_end()) {
            const char c = peek();
            if (c == ' ' || c == '\t' || c == '\r') ++pos_;
            else if (c == '\n' && newlines) ++pos_;
            else if (c == '#') {
                while (!at_end() && peek() != '\n') ++pos_;
            } else
                break;
        }
    }
    static bool is_name_char(char c) noexcept {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    }
    std::string_view parse_name() {
        const std::size_t b = pos_;
        while (!at_end() && is_name_char(peek())) ++pos_;
        if (pos_ == b) error("expected a rule name");
        return s_.substr(b, pos_ - b);
    }
    std::uint32_t rule_id(std::string_view name) {
        const auto it = names_.find(name);
        if (it != names_.end()) return it->second;
        if (rules_.size() >= max_rules) error("too many rules");
        const auto id = static_cast<std::uint32_t>(rules_.size());
        names_.emplace(std::string(name), id);
        names_of_.emplace_back(name);
        rules_.emplace_back();
        defined_.push_back(false);
        return id;
    }
    std::uint32_t new_rule(std::uint32_t parent) {
        return rule_id(names_of_[parent] + "-" + std::to_string(rules_.size()));
    }
    void define(std::uint32_t id, std::vector<sequence> alts) {
        std::size_t n = 0;
        for (const auto& a : alts) n += a.size() + 1;
        if ((total_ += n) > max_elements) error("the grammar is too large");
        rules_[id] = std::move(alts);
        defined_[id] = true;
    }

    void parse_rule() {
        const std::string_view name = parse_name();
        const std::uint32_t id = rule_id(name);
        if (defined_[id]) error("rule '" + std::string(name) + "' is defined twice");
        skip_space(false);
        if (s_.substr(pos_, 3) != "::=") error("expected ::=");
        pos_ += 3;
        skip_space(true);
        define(id, parse_alternates(id, 0));
        skip_space(false);
        if (!at_end() && peek() != '\n') error("expected the end of the rule");
    }

    std::vector<sequence> parse_alternates(std::uint32_t rule, std::size_t depth) {
        std::vector<sequence> alts;
        alts.push_back(parse_sequence(rule, depth));
        while (peek() == '|') {
            ++pos_;
            skip_space(true);
            alts.push_back(parse_sequence(rule, depth));
        }
        return alts;
    }

    sequence parse_sequence(std::uint32_t rule, std::size_t depth) {
        sequence seq;
        std::size_t last = 0;  // where the last unit (the operand of a postfix operator) begins
        bool has_unit = false;
        while (!at_end()) {
            const char c = peek();
            if (c == '"') {
                ++pos_;
                last = seq.size();
                while (peek() != '"') {
                    if (at_end()) error("unterminated string literal");
                    const char32_t cp = parse_char();
                    seq.push_back(spec{grammar_element::chars, false, 0, {{cp, cp}}});
                }
                ++pos_;
                has_unit = true;
            } else if (c == '[') {
                ++pos_;
                spec sp;
                if (peek() == '^') sp.negated = true, ++pos_;
                while (peek() != ']') {
                    if (at_end()) error("unterminated character class");
                    const char32_t lo = parse_char();
                    char32_t hi = lo;
                    if (peek() == '-' && peek(1) != ']' && pos_ + 1 < s_.size()) {
                        ++pos_;
                        hi = parse_char();
                        if (hi < lo) error("a character range runs backwards");
                    }
                    sp.ranges.emplace_back(lo, hi);
                }
                ++pos_;
                last = seq.size();
                seq.push_back(std::move(sp));
                has_unit = true;
            } else if (c == '.') {
                ++pos_;
                last = seq.size();
                seq.push_back(spec{grammar_element::chars, true, 0, {}});  // negation of nothing: any
                has_unit = true;
            } else if (is_name_char(c)) {
                const std::string_view name = parse_name();
                last = seq.size();
                seq.push_back(spec{grammar_element::rule_ref, false, rule_id(name), {}});
                has_unit = true;
            } else if (c == '(') {
                if (depth + 1 > max_depth) error("groups nested too deeply");
                ++pos_;
                skip_space(true);
                const std::uint32_t sub = new_rule(rule);
                define(sub, parse_alternates(sub, depth + 1));
                skip_space(true);
                if (peek() != ')') error("expected )");
                ++pos_;
                last = seq.size();
                seq.push_back(spec{grammar_element::rule_ref, false, sub, {}});
                has_unit = true;
            } else if (c == '*' || c == '+' || c == '?' || c == '{') {
                if (!has_unit) error("a repetition operator with nothing before it");
                std::size_t lo = 0, hi = 0;
                bool unbounded = false;
                ++pos_;
                if (c == '*') unbounded = true;
                else if (c == '+') lo = 1, unbounded = true;
                else if (c == '?') hi = 1;
                else {
                    skip_space(false);
                    lo = parse_count();
                    skip_space(false);
                    if (peek() == ',') {
                        ++pos_;
                        skip_space(false);
                        if (peek() == '}') unbounded = true;
                        else hi = parse_count();
                    } else {
                        hi = lo;
                    }
                    skip_space(false);
                    if (peek() != '}') error("expected } after a repetition count");
                    ++pos_;
                    if (!unbounded && hi < lo) error("a repetition {m,n} with n < m");
                }
                sequence unit(seq.begin() + std::ptrdiff_t(last), seq.end());
                seq.resize(last);
                repeat(rule, std::move(unit), lo, hi, unbounded, seq);
                has_unit = false;  // x** is not allowed, as in llama.cpp
            } else if (c == '|' || c == ')' || c == '\n') {
                break;
            } else {
                error(std::string("unexpected character '") + c + "'");
            }
            skip_space(depth > 0);
        }
        return seq;
    }

    std::size_t parse_count() {
        std::size_t n = 0;
        const std::size_t b = pos_;
        while (peek() >= '0' && peek() <= '9') {
            n = n * 10 + std::size_t(peek() - '0');
            if (n > max_repeat) error("a repetition count above 1000");
            ++pos_;
        }
        if (pos_ == b) error("expected a number");
        return n;
    }

    // unit{lo,hi} (hi unbounded when `unbounded`) appended to `seq`: lo copies of the unit, then
    // either R ::= unit R | <empty>, or hi - lo nested optionals R_k ::= unit R_k+1 | <empty>.
    void repeat(std::uint32_t rule, sequence unit, std::size_t lo, std::size_t hi, bool unbounded, sequence& seq) {
        if ((lo + (unbounded ? 1 : hi)) * (unit.size() + 2) + total_ > max_elements) error("the grammar is too large");
        for (std::size_t i = 0; i < lo; ++i) seq.insert(seq.end(), unit.begin(), unit.end());
        if (unbounded) {
            const std::uint32_t r = new_rule(rule);
            sequence again = unit;
            again.push_back(spec{grammar_element::rule_ref, false, r, {}});
            define(r, {std::move(again), {}});
            seq.push_back(spec{grammar_element::rule_ref, false, r, {}});
            return;
        }
        if (hi == lo) return;
        std::uint32_t next = 0;
        bool has_next = false;
        for (std::size_t k = hi - lo; k-- > 0;) {
            const std::uint32_t r = new_rule(rule);
            sequence body = unit;
            if (has_next) body.push_back(spec{grammar_element::rule_ref, false, next, {}});
            define(r, {std::move(body), {}});
            next = r;
            has_next = true;
        }
        seq.push_back(spec{grammar_element::rule_ref, false, next, {}});
    }

    // One character of a literal or class, with escapes; UTF-8 decoded.
    char32_t parse_char() {
        const auto c = static_cast<unsigned char>(peek());
        if (c == '\\') {
            ++pos_;
            const char e = peek();
            ++pos_;
            switch (e) {
                case 'n': return '\n';
                case 'r': return '\r';
                case 't': return '\t';
                case '\\': return '\\';
                case '"': return '"';
                case '[': return '[';
                case ']': return ']';
                case '-': return '-';
                case '^': return '^';
                case '/': return '/';
                case 'x': return parse_hex(2);
                case 'u': return parse_hex(4);
                case 'U': return parse_hex(8);
                default: --pos_; error("unknown escape");
            }
        }
        if (c < 0x80) {
            ++pos_;
            return c;
        }
        const std::size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
        if (n == 0 || pos_ + n > s_.size()) error("invalid UTF-8");
        char32_t cp = c & (0xFF >> (n + 1));
        for (std::size_t i = 1; i < n; ++i) {
            const auto b = static_cast<unsigned char>(s_[pos_ + i]);
            if ((b & 0xC0) != 0x80) error("invalid UTF-8");
            cp = (cp << 6) | (b & 0x3F);
        }
        pos_ += n;
        return cp;
    }
    char32_t parse_hex(std::size_t digits) {
        char32_t v = 0;
        for (std::size_t i = 0; i < digits; ++i) {
            const char h = peek();
            int d = -1;
            if (h >= '0' && h <= '9') d = h - '0';
            else if (h >= 'a' && h <= 'f') d = h - 'a' + 10;
            else if (h >= 'A' && h <= 'F') d = h - 'A' + 10;
            if (d < 0) error("expected a hexadecimal digit");
            v = v * 16 + char32_t(d);
            ++pos_;
        }
        if (v > 0x10FFFF) error("a code point above U+10FFFF");
        return v;
    }

    void build(std::uint32_t root) {
        g_.root = root;
        g_.rule_names = names_of_;
        g_.alternatives.resize(rules_.size());
        for (std::size_t r = 0; r < rules_.size(); ++r)
            for (const sequence& alt : rules_[r]) {
                g_.alternatives[r].push_back(static_cast<std::uint32_t>(g_.elements.size()));
                for (const spec& sp : alt) {
                    grammar_element e;
                    e.kind = sp.kind;
                    e.negated = sp.negated;
                    e.rule = sp.rule;
                    e.first = static_cast<std::uint32_t>(g_.ranges.size());
                    e.count = static_cast<std::uint32_t>(sp.ranges.size());
                    g_.ranges.insert(g_.ranges.end(), sp.ranges.begin(), sp.ranges.end());
                    g_.elements.push_back(e);
                }
                g_.elements.push_back(grammar_element{});
            }
    }

    // A rule that can reach itself before consuming a character would send the matcher round
    // forever: refused. Nullable rules are found first (a fixpoint), then the "starts with"
    // graph (A starts with B when an alternative of A reaches a reference to B through nullable
    // references only) is searched for a cycle.
    void check_left_recursion() const {
        const std::size_t n = g_.alternatives.size();
        std::vector<bool> nullable(n, false);
        for (bool changed = true; changed;) {
            changed = false;
            for (std::size_t r = 0; r < n; ++r) {
                if (nullable[r]) continue;
                for (const std::uint32_t a : g_.alternatives[r]) {
                    std::uint32_t i = a;
                    while (g_.elements[i].kind == grammar_element::rule_ref && nullable[g_.elements[i].rule]) ++i;
                    if (g_.elements[i].kind == grammar_element::end) {
                        nullable[r] = changed = true;
                        break;
                    }
                }
            }
        }
        std::vector<std::vector<std::uint32_t>> starts(n);
        for (std::size_t r = 0; r < n; ++r)
            for (const std::uint32_t a : g_.alternatives[r])
                for (std::uint32_t i = a; g_.elements[i].kind == grammar_element::rule_ref; ++i) {
                    starts[r].push_back(g_.elements[i].rule);
                    if (!nullable[g_.elements[i].rule]) break;
                }
        // Iterative depth-first search with colours (no recursion: the graph comes from a request).
        std::vector<std::uint8_t> colour(n, 0);  // 0 new, 1 on the path, 2 done
        std::vector<std::pair<std::uint32_t, std::size_t>> path;
        for (std::uint32_t s = 0; s < n; ++s) {
            if (colour[s]) continue;
            path.push_back({s, 0});
            colour[s] = 1;
            while (!path.empty()) {
                auto& [r, k] = path.back();
                if (k < starts[r].size()) {
                    const std::uint32_t t = starts[r][k++];
                    if (colour[t] == 1) fail("grammar: rule '", g_.rule_names[t], "' is left-recursive");
                    if (colour[t] == 0) {
                        colour[t] = 1;
                        path.push_back({t, 0});
                    }
                } else {
                    colour[r] = 2;
                    path.pop_back();
                }
            }
        }
    }

    // Fewest code points of each rule (a fixpoint: every alternative's elements summed, the
    // smallest taken), then of each element's tail within its alternative.
    void compute_min_tail() {
        constexpr std::uint32_t inf = grammar::unreachable_length;
        const auto add = [](std::uint32_t a, std::uint32_t b) { return std::min(grammar::unreachable_length, a + b); };
        std::vector<std::uint32_t> rule_min(g_.alternatives.size(), inf);
        for (bool changed = true; changed;) {
            changed = false;
            for (std::size_t r = 0; r < rule_min.size(); ++r)
                for (const std::uint32_t a : g_.alternatives[r]) {
                    std::uint32_t len = 0;
                    for (std::uint32_t i = a; g_.elements[i].kind != grammar_element::end; ++i)
                        len = add(len, g_.elements[i].kind == grammar_element::chars ? 1 : rule_min[g_.elements[i].rule]);
                    if (len < rule_min[r]) rule_min[r] = len, changed = true;
                }
        }
        g_.min_tail.assign(g_.elements.size(), 0);
        for (std::size_t i = g_.elements.size(); i-- > 0;) {
            const grammar_element& e = g_.elements[i];
            if (e.kind == grammar_element::end) continue;
            g_.min_tail[i] = add(e.kind == grammar_element::chars ? 1 : rule_min[e.rule], g_.min_tail[i + 1]);
        }
    }

    std::string_view s_;
    std::size_t pos_ = 0, total_ = 0;
    std::map<std::string, std::uint32_t, std::less<>> names_;
    std::vector<std::string> names_of_;
    std::vector<std::vector<sequence>> rules_;
    std::vector<bool> defined_;
    grammar g_;
};

}  // namespace gbnf_detail

// Parses GBNF text; throws lmtk::error saying what is wrong and where.
inline grammar parse_gbnf(std::string_view text) { return gbnf_detail::parser(text).parse(); }

}  // namespace lmtk::sample
// #include <lmtk/sample/grammar.hpp>
// Constrained decoding by a GBNF grammar (gbnf.hpp): a pushdown matcher over code points and a
// filter stage that bans every candidate token whose bytes the grammar cannot take next.
//
//   auto g = std::make_shared<const sample::grammar>(sample::parse_gbnf(text));
//   sample::grammar_matcher state(g);               // what has been generated so far
//   chain.get<sample::grammar_constraint>() = {&vocab, &state};   // vocab: each token's bytes
//   ... after each sampled token: state.accept(vocab.pieces[tok]);
//
// The matcher holds a set of stacks, as llama.cpp's does: each stack is a path through the
// rules, its top the next character set to match; a reference on top is replaced by the first
// element of each of its rule's alternatives (one stack each), an alternative's end pops back
// to the element after the reference, and an empty stack means the text so far is a complete
// sentence. Code points are decoded from the tokens' bytes, a character split across tokens
// included (its first bytes are checked against the code points they can still become).
//
// Cost: sets of stacks are interned, and each (set, code point) transition is computed once and
// remembered, so the matcher becomes a lazily built automaton: in a repetitive stretch (inside a
// JSON string) a token costs a hash lookup per character. Checking a whole vocabulary is still
// the expensive case, so grammar_constraint::accepts() lets a caller check the token it sampled
// first and mask everything only when that one is refused (the draw then has exactly the masked
// distribution). Bounds: at most max_stacks stacks of max_depth elements (past them a candidate
// is refused); the remembered sets and transitions are forgotten past max_sets / max_transitions.
// #include <lmtk/sample/candidate.hpp>
// #include <lmtk/sample/gbnf.hpp>
// #include <lmtk/sample/json_constraint.hpp>
// #include <lmtk/sample/stages.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lmtk::sample {

class grammar_matcher {
public:
    static constexpr std::size_t max_stacks = 4096;
    static constexpr std::size_t max_depth = 1024;
    // Interned sets and remembered transitions kept at most (then forgotten, all but the current).
    static constexpr std::size_t max_sets = 1u << 16;
    static constexpr std::size_t max_transitions = 1u << 22;

    // The start: root's alternatives, expanded.
    explicit grammar_matcher(std::shared_ptr<const grammar> g) : g_(std::move(g)) {
        stack_set start;
        work_.clear();
        for (const std::uint32_t a : g_->alternatives[g_->root]) {
            const std::uint32_t st[1] = {a};
            work_.push(st);
        }
        ok_ = expand(start);
        if (ok_) state_.set = intern(start);
    }
    grammar_matcher(const grammar_matcher&) = delete;  // its cache is large: share the grammar instead
    grammar_matcher& operator=(const grammar_matcher&) = delete;
    grammar_matcher(grammar_matcher&&) = default;

    const grammar& rules() const noexcept { return *g_; }

    // Takes a token's bytes; false (and the state unchanged) when the grammar cannot.
    bool accept(std::string_view bytes) {
        position next;
        if (!run(state_, bytes, next)) return false;
        state_ = next;
        trim();
        return true;
    }
    // Whether accept(bytes) would succeed; the state is left as it is.
    bool accepts(std::string_view bytes) const {
        position next;
        return run(state_, bytes, next);
    }
    // A budget of tokens (those this generation may still produce): with one set, a token is
    // accepted only if the text after it can still be finished in the tokens then left, at one
    // code point or more per token, with one step to spare for the end-of-generation token (the fewest
    // code points to a complete sentence, from the grammar's min_tail). Near the limit, this
    // leaves only tokens that move toward closing: a JSON object closes before max_tokens
    // instead of being cut. No budget (the default): only the grammar decides.
    void set_budget(std::optional<std::size_t> tokens_left) noexcept { budget_ = tokens_left; }
    // Code points still needed, at the fewest, to complete a sentence.
    std::size_t distance() const noexcept { return ok_ ? sets_[state_.set].distance : grammar::unreachable_length; }

    // Whether some text starting with ASCII character c could follow (the grammar alone, no
    // budget); false also while a multi-byte character is incomplete. Lets a mask refuse every
    // token that starts with c at once.
    bool can_begin_with(unsigned char c) const {
        return ok_ && c < 0x80 && state_.left == 0 && step(state_.set, c) != dead;
    }
    // The same for two ASCII characters c then d.
    bool can_begin_with(unsigned char c, unsigned char d) const {
        if (!ok_ || c >= 0x80 || d >= 0x80 || state_.left != 0) return false;
        const std::uint32_t s1 = step(state_.set, c);
        return s1 != dead && step(s1, d) != dead;
    }

    // Whether the text so far is a whole sentence of the grammar (generation may end).
    bool complete() const noexcept { return ok_ && state_.left == 0 && sets_[state_.set].has_empty; }
    // Whether anything can follow (false once every stack is empty).
    bool can_continue() const noexcept { return ok_ && sets_[state_.set].has_nonempty; }

private:
    // Stacks stored end to end; stack i is data[begin(i), ends[i]).
    struct stack_set {
        std::vector<std::uint32_t> data;
        std::vector<std::uint32_t> ends;

        void clear() noexcept {
            data.clear();
            ends.clear();
        }
        std::size_t size() const noexcept { return ends.size(); }
        std::span<const std::uint32_t> operator[](std::size_t i) const noexcept {
            const std::uint32_t b = i ? ends[i - 1] : 0;
            return {data.data() + b, ends[i] - b};
        }
        void push(std::span<const std::uint32_t> st) {
            data.insert(data.end(), st.begin(), st.end());
            ends.push_back(static_cast<std::uint32_t>(data.size()));
        }
        bool contains(std::span<const std::uint32_t> st) const noexcept {
            for (std::size_t i = 0; i < size(); ++i) {
                const auto t = (*this)[i];
                if (t.size() == st.size() && std::equal(t.begin(), t.end(), st.begin())) return true;
            }
            return false;
        }
    };
    // An interned set: its stacks in a canonical order, and what the matcher asks of it.
    struct interned {
        stack_set stacks;
        bool has_empty = false, has_nonempty = false;
        std::uint32_t distance = grammar::unreachable_length;  // fewest code points to a complete sentence
    };
    // Where the matcher is: an interned set, and the bits of a character still incomplete.
    struct position {
        std::uint32_t set = 0;
        std::uint32_t partial = 0;  // code point bits so far
        std::uint8_t left = 0;      // bytes of it still to come
        std::uint8_t length = 0;    // bytes of the whole character (its lead byte says)
    };
    // The smallest code point of each UTF-8 length: a character written longer is overlong,
    // not UTF-8 (0xC1 0xBB is not '{', whatever a decoder that only shifts bits says).
    static constexpr char32_t min_of_length[5] = {0, 0, 0x80, 0x800, 0x10000};
    static constexpr std::uint32_t dead = std::numeric_limits<std::uint32_t>::max();

    // The id of `s`'s interned copy: the same set of stacks always gets the same id, so that a
    // transition computed once is remembered for every later visit of that set.
    std::uint32_t intern(const stack_set& s) const {
        order_.resize(s.size());
        for (std::size_t i = 0; i < s.size(); ++i) order_[i] = static_cast<std::uint32_t>(i);
        std::sort(order_.begin(), order_.end(), [&](std::uint32_t a, std::uint32_t b) {
            const auto x = s[a], y = s[b];
            return std::lexicographical_compare(x.begin(), x.end(), y.begin(), y.end());
        });
        key_.clear();
        for (const std::uint32_t i : order_) {
            const auto st = s[i];
            const auto n = static_cast<std::uint32_t>(st.size());
            key_.append(reinterpret_cast<const char*>(&n), sizeof n);
            key_.append(reinterpret_cast<const char*>(st.data()), st.size() * sizeof(std::uint32_t));
        }
        if (const auto it = index_.find(key_); it != index_.end()) return it->second;
        interned in;
        for (const std::uint32_t i : order_) {
            in.stacks.push(s[i]);
            (s[i].empty() ? in.has_empty : in.has_nonempty) = true;
            std::uint32_t d = 0;
            for (const std::uint32_t pos : s[i]) d = std::min(grammar::unreachable_length, d + g_->min_tail[pos]);
            in.distance = std::min(in.distance, d);
        }
        const auto id = static_cast<std::uint32_t>(sets_.size());
        sets_.push_back(std::move(in));
        index_.emplace(key_, id);
        return id;
    }

    // The set after code point c from set `from`, or dead; remembered.
    std::uint32_t step(std::uint32_t from, char32_t c) const {
        const std::uint64_t k = (std::uint64_t{from} << 21) | std::uint64_t(c & 0x1FFFFF);
        if (const auto it = next_.find(k); it != next_.end()) return it->second;
        std::uint32_t to = dead;
        if (advance(sets_[from].stacks, c, tmp_)) to = intern(tmp_);
        next_.emplace(k, to);
        return to;
    }

    // Forgets every remembered set and transition but the current set, when they pass the bounds.
    void trim() {
        if (sets_.size() <= max_sets && next_.size() <= max_transitions) return;
        interned keep = std::move(sets_[state_.set]);
        sets_.clear();
        index_.clear();
        next_.clear();
        state_.set = intern(keep.stacks);
    }

    // Expands the stacks of work_ until each top is a character set (or the stack is empty),
    // adding each distinct result to `out`. False when the bounds are passed.
    bool expand(stack_set& out) const {
        while (work_.size() > 0) {
            const auto last = work_[work_.size() - 1];
            cur_.assign(last.begin(), last.end());
            work_.data.resize(work_.data.size() - last.size());
            work_.ends.pop_back();
            for (;;) {
                if (cur_.empty()) {
                    if (!out.contains(cur_)) out.push(cur_);
                    break;
                }
                const std::uint32_t pos = cur_.back();
                const grammar_element& e = g_->elements[pos];
                if (e.kind == grammar_element::end) {
                    cur_.pop_back();  // back to the element after the reference (or empty: done)
                    continue;
                }
                if (e.kind == grammar_element::chars) {
                    if (!out.contains(cur_)) {
                        if (out.size() >= max_stacks) return false;
                        out.push(cur_);
                    }
                    break;
                }
                // A reference: continue after it once the rule is matched; one stack per alternative.
                if (cur_.size() + 1 > max_depth) return false;
                cur_.back() = pos + 1;
                const auto& alts = g_->alternatives[e.rule];
                for (std::size_t k = alts.size(); k-- > 1;) {
                    cur_.push_back(alts[k]);
                    if (work_.size() >= max_stacks) return false;
                    work_.push(cur_);
                    cur_.pop_back();
                }
                cur_.push_back(alts[0]);
            }
        }
        return true;
    }

    // One code point: every stack whose top set matches moves past it.
    bool advance(const stack_set& in, char32_t c, stack_set& out) const {
        out.clear();
        work_.clear();
        for (std::size_t i = 0; i < in.size(); ++i) {
            const auto st = in[i];
            if (st.empty() || !g_->matches(st.back(), c)) continue;
            work_.push(st);
            work_.data.back() += 1;
        }
        if (work_.size() == 0) return false;
        return expand(out) && out.size() > 0;
    }

    // Whether some stack's top may match a code point that starts with `partial`, `left`
    // continuation bytes still to come.
    bool partial_possible(std::uint32_t set, std::uint32_t partial, std::uint8_t left, std::uint8_t length) const {
        const unsigned bits = 6u * left;
        const char32_t lo = std::max(char32_t(partial << bits), min_of_length[length]);
        const char32_t hi = std::min(char32_t((partial << bits) | ((1u << bits) - 1)), char32_t{0x10FFFF});
        if (lo > hi) return false;
        const stack_set& s = sets_[set].stacks;
        for (std::size_t i = 0; i < s.size(); ++i) {
            const auto st = s[i];
            if (!st.empty() && g_->may_match(st.back(), lo, hi)) return true;
        }
        return false;
    }

    // `from` followed by `bytes`, into `to`.
    bool run(const position& from, std::string_view bytes, position& to) const {
        if (!ok_) return false;
        position p = from;
        for (const char ch : bytes) {
            const auto b = static_cast<unsigned char>(ch);
            if (p.left == 0) {
                if (b < 0x80) p.partial = b, p.length = 1;
                else if ((b & 0xE0) == 0xC0) p.partial = b & 0x1F, p.left = 1, p.length = 2;
                else if ((b & 0xF0) == 0xE0) p.partial = b & 0x0F, p.left = 2, p.length = 3;
                else if ((b & 0xF8) == 0xF0) p.partial = b & 0x07, p.left = 3, p.length = 4;
                else return false;  // a continuation byte with no lead byte, or not UTF-8
            } else {
                if ((b & 0xC0) != 0x80) return false;
                p.partial = (p.partial << 6) | (b & 0x3F);
                --p.left;
            }
            if (p.left > 0) {
                // Refused as soon as no character it can still become is UTF-8 (overlong,
                // above U+10FFFF) or matchable.
                if (!partial_possible(p.set, p.partial, p.left, p.length)) return false;
                continue;
            }
            if (p.partial < min_of_length[p.length] || p.partial > 0x10FFFF || (p.partial >= 0xD800 && p.partial <= 0xDFFF))
                return false;
            p.set = step(p.set, p.partial);
            if (p.set == dead) return false;
            p.partial = 0;
        }
        // With a budget, the tokens left after this one must still be able to finish the
        // sentence (a code point or more each) and leave a step for the end-of-generation token.
        if (budget_ && std::size_t{sets_[p.set].distance} + (p.left > 0 ? 1 : 0) + 2 > *budget_) return false;
        to = p;
        return true;
    }

    std::shared_ptr<const grammar> g_;
    position state_;
    bool ok_ = true;
    std::optional<std::size_t> budget_;
    // The interned sets and their transitions (a lazily built automaton), and scratch kept for
    // its capacity. One matcher serves one sequence, on one thread.
    mutable std::vector<interned> sets_;
    mutable std::unordered_map<std::string, std::uint32_t> index_;
    mutable std::unordered_map<std::uint64_t, std::uint32_t> next_;
    mutable stack_set tmp_, work_;
    mutable std::vector<std::uint32_t> cur_, order_;
    mutable std::string key_;
};

// The filter stage. Off (a no-op) while `state` is null. Token bytes come from the same
// per-vocabulary table the JSON constraint uses.
struct grammar_constraint {
    const json_vocab* vocab = nullptr;
    const grammar_matcher* state = nullptr;

    bool active() const noexcept { return state && vocab; }

    // Whether token `id` may come next: its bytes continue the grammar, or it ends generation
    // and the text is complete.
    bool accepts(std::int32_t id) const {
        const auto i = static_cast<std::size_t>(id);
        if (!state || !vocab || i >= vocab->pieces.size()) return false;
        if (vocab->is_end[i]) return state->complete();
        return !vocab->pieces[i].empty() && state->accepts(vocab->pieces[i]);
    }

    std::span<candidate> operator()(std::span<candidate> c, context&) const {
        if (!state || !vocab) return c;
        constexpr float banned = -std::numeric_limits<float>::infinity();
        bool any = false;
        // Tokens are grouped by their first one or two bytes: where the grammar cannot take
        // them next, every token starting with them is refused without being walked (most of
        // a vocabulary outside a string: " word" after a JSON value fails at 'w').
        // 0: not known yet, 1: may continue, 2: cannot.
        std::array<std::uint8_t, 128> first{};
        thread_local std::array<std::uint8_t, 128 * 128> pair;
        pair.fill(0);
        for (candidate& x : c) {
            if (x.logit == banned) continue;
            const auto id = static_cast<std::size_t>(x.id);
            if (id < vocab->pieces.size() && !vocab->is_end[id] && !vocab->pieces[id].empty()) {
                const std::string& piece = vocab->pieces[id];
                const auto b = static_cast<unsigned char>(piece[0]);
                if (b < 0x80) {
                    if (first[b] == 0) first[b] = state->can_begin_with(b) ? 1 : 2;
                    bool dead_start = first[b] == 2;
                    if (!dead_start && piece.size() >= 2 && static_cast<unsigned char>(piece[1]) < 0x80) {
                        std::uint8_t& v = pair[b * 128 + static_cast<unsigned char>(piece[1])];
                        if (v == 0) v = state->can_begin_with(b, static_cast<unsigned char>(piece[1])) ? 1 : 2;
                        dead_start = v == 2;
                    }
                    if (dead_start) {
                        x.logit = banned;
                        continue;
                    }
                }
            }
            if (accepts(x.id)) any = true;
            else x.logit = banned;
        }
        // Nothing can continue (the grammar is complete, or the vocabulary lacks its bytes):
        // let generation end rather than pick a banned token.
        if (!any)
            for (candidate& x : c)
                if (static_cast<std::size_t>(x.id) < vocab->is_end.size() && vocab->is_end[std::size_t(x.id)]) x.logit = 0.0f;
        return c;
    }
};

}  // namespace lmtk::sample
// #include <lmtk/sample/json_schema.hpp>
// JSON Schema to GBNF: the output of a model constrained by the grammar is a JSON document the
// schema validates. The subset real clients send (Pydantic's model_json_schema(), OpenAI's
// strict json_schema, Ollama's format):
//
//   type (one or a list), enum, const, anyOf / oneOf, $ref to #/$defs/NAME or
//   #/definitions/NAME (recursion allowed), object: properties in declared order, required,
//   additionalProperties (false or absent: none; true or a schema: any number after the
//   declared ones), array: items, prefixItems, minItems, maxItems, string: minLength,
//   maxLength, format date / time / date-time / uuid, integer with minimum / maximum /
//   exclusiveMinimum / exclusiveMaximum (Pydantic's ge, le, gt, lt), number with an integer
//   minimum / maximum (a bounded number is written without an exponent), boolean, null.
//   Annotations (title, description, default, examples, $schema, $id...) are ignored.
//
// Any other keyword that constrains values (pattern, multipleOf, allOf, not, a number's
// exclusive or fractional bounds, ...) is
// refused with lmtk::error naming it: an output the grammar allows must never fail the schema.
// Blanks between tokens are limited as in llama.cpp's JSON grammar (a line break and up to 20
// blanks), so that a model cannot idle in whitespace until its token limit.
// #include <lmtk/core/error.hpp>

#include <cctype>
#include <utility>
#include <limits>
#include <cmath>
#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace lmtk::sample {

namespace json_schema_detail {

using json = nlohmann::ordered_json;  // keeps the properties in the order the schema declares them

// A GBNF string literal holding `bytes` (escaped so the grammar parser reads them back).
inline std::string literal(std::string_view bytes) {
    std::string out = "\"";
    for (const char ch : bytes) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += ch;
        } else if (c == '\n') out += "\\n";
        else if (c == '\r') out += "\\r";
        else if (c == '\t') out += "\\t";
        else if (c < 0x20 || c == 0x7F) {
            static const char* hex = "0123456789ABCDEF";
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else
            out += ch;
    }
    return out + "\"";
}

class converter {
public:
    static constexpr std::size_t max_depth = 64;
    static constexpr std::size_t max_rules = 4096;

    // `prefix` goes before every rule name (the top rule is prefix + "root"), so that several
    // schemas can live in one grammar; the shared JSON rules (json_common_gbnf) are written only
    // without a prefix, and a caller combining schemas writes them once.
    explicit converter(const json& root, std::string prefix = {}) : root_(root), prefix_(std::move(prefix)) {}

    std::string run() {
        const std::string top_name = prefix_ + "root";
        const std::string top = visit(root_, "root", 0);
        std::string out;
        for (const auto& [name, body] : rules_) out += name + " ::= " + body + "\n";
        // The top rule must exist by that name: visit() may have returned another rule or an inline body.
        if (!rules_.count(top_name)) out += top_name + " ::= " + top + "\n";
        if (prefix_.empty()) out += common_rules();
        return out;
    }

    static const char* common_rules() noexcept {
        return R"(ws ::= | " " | "\n" [ \t]{0,20}
json-string ::= "\"" json-char* "\"" ws
json-char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
json-integer ::= "-"? ("0" | [1-9] [0-9]{0,15}) ws
json-number ::= "-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})? ws
json-boolean ::= ("true" | "false") ws
json-null ::= "null" ws
json-value ::= json-object | json-array | json-string | json-number | json-boolean | json-null
json-object ::= "{" ws (json-string ":" ws json-value ("," ws json-string ":" ws json-value)*)? "}" ws
json-array ::= "[" ws (json-value ("," ws json-value)*)? "]" ws
)";
    }

private:
    [[noreturn]] static void unsupported(const std::string& where, const std::string& what) {
        fail("json schema: ", what, " at ", where.empty() ? "the root" : where, " is not supported");
    }

    std::string add_rule(const std::string& hint, const std::string& body) {
        if (rules_.size() >= max_rules) fail("json schema: too large (more than ", max_rules, " rules)");
        std::string name = prefix_;
        for (const char c : hint) name += (std::isalnum(static_cast<unsigned char>(c)) || c == '-') ? c : '-';
        if (name == prefix_) name += "r";
        if (rules_.count(name)) name += "-" + std::to_string(rules_.size());
        rules_[name] = body;
        return name;
    }

    // A literal JSON value (enum / const), followed by blanks.
    static std::string value_literal(const json& v) { return literal(v.dump()) + " ws"; }

    std::string visit(const json& s, const std::string& where, std::size_t depth) {
        if (depth > max_depth) fail("json schema: nested more than ", max_depth, " levels");
        if (s.is_boolean()) {
            if (s.get<bool>()) return "json-value";
            fail("json schema: the schema 'false' at ", where, " admits no value");
        }
        if (!s.is_object()) fail("json schema: a schema must be an object or a boolean at ", where);
        static const std::set<std::string, std::less<>> ignored = {
            "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly",
            "writeOnly", "$defs", "definitions", "strict", "name", "discriminator", "contentMediaType", "contentEncoding"};
        static const std::set<std::string, std::less<>> known = {
            "type", "enum", "const", "anyOf", "oneOf", "$ref", "properties", "required", "additionalProperties",
            "items", "prefixItems", "minItems", "maxItems", "minLength", "maxLength", "format",
            "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};
        for (const auto& [k, v] : s.items()) {
            (void)v;
            if (!known.count(k) && !ignored.count(k)) unsupported(where, "the keyword '" + k + "'");
        }
        if (const auto r = s.find("$ref"); r != s.end()) return ref(*r, where, depth);
        if (const auto e = s.find("enum"); e != s.end()) {
            if (!e->is_array() || e->empty()) fail("json schema: 'enum' at ", where, " must be a non-empty array");
            std::string alts;
            for (const json& v : *e) alts += (alts.empty() ? "" : " | ") + value_literal(v);
            return "(" + alts + ")";
        }
        if (const auto c = s.find("const"); c != s.end()) return value_literal(*c);
        for (const char* key : {"anyOf", "oneOf"})
            if (const auto a = s.find(key); a != s.end()) {
                if (!a->is_array() || a->empty()) fail("json schema: '", key, "' at ", where, " must be a non-empty array");
                if (s.contains("type") || s.contains("properties"))
                    unsupported(where, std::string("'") + key + "' beside 'type' or 'properties'");
                std::string alts;
                for (std::size_t i = 0; i < a->size(); ++i)
                    alts += (alts.empty() ? "" : " | ") + visit((*a)[i], where + "/" + key + "/" + std::to_string(i), depth + 1);
                return "(" + alts + ")";
            }
        const auto t = s.find("type");
        if (t == s.end()) {
            if (s.contains("properties")) return object(s, where, depth);
            if (s.contains("items") || s.contains("prefixItems")) return array(s, where, depth);
            return "json-value";
        }
        if (t->is_array()) {
            if (t->empty()) fail("json schema: 'type' at ", where, " is an empty list");
            std::string alts;
            for (const json& one : *t) alts += (alts.empty() ? "" : " | ") + typed(s, one, where, depth);
            return "(" + alts + ")";
        }
        return typed(s, *t, where, depth);
    }

    std::string typed(const json& s, const json& type, const std::string& where, std::size_t depth) {
        if (!type.is_string()) fail("json schema: 'type' at ", where, " must be a string or a list of strings");
        const std::string& t = type.get_ref<const std::string&>();
        if (t == "object") return object(s, where, depth);
        if (t == "array") return array(s, where, depth);
        if (t == "string") return string(s, where);
        if (t == "integer") return integer(s, where);
        if (t == "number") return number(s, where);
        if (t == "boolean") return "json-boolean";
        if (t == "null") return "json-null";
        fail("json schema: unknown type '", t, "' at ", where);
    }

    // ---- bounded numbers ------------------------------------------------------------------
    // Decimal integers of json-integer's size (16 digits) bound every range.
    static constexpr std::int64_t max_magnitude = 9999999999999999;
    static constexpr std::int64_t unbounded = std::numeric_limits<std::int64_t>::max();

    // A bound's value: a number within json-integer's size.
    static double bound_of(const json& v, const char* key, const std::string& where) {
        if (!v.is_number()) fail("json schema: '", key, "' at ", where, " must be a number");
        const double d = v.get<double>();
        if (!(std::fabs(d) <= double(max_magnitude))) fail("json schema: '", key, "' at ", where, " is out of range");
        return d;
    }

    // The integers [lo, hi] a schema's bounds allow; `for_number`: bounds that are not whole
    // numbers, or exclusive ones, are refused (a number's grammar handles only those).
    static std::pair<std::int64_t, std::int64_t> integer_bounds(const json& s, const std::string& where, bool for_number) {
        std::int64_t lo = -unbounded, hi = unbounded;
        for (const char* key : {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}) {
            const auto it = s.find(key);
            if (it == s.end()) continue;
            const double d = bound_of(*it, key, where);
            const bool exclusive = key[0] == 'e';
            const bool lower = std::string_view(key).find("inimum") != std::string_view::npos;
            if (for_number && (exclusive || d != std::floor(d)))
                unsupported(where, std::string("a number's '") + key + "' other than an inclusive whole number");
            if (lower) lo = std::max(lo, exclusive ? std::int64_t(std::floor(d)) + 1 : std::int64_t(std::ceil(d)));
            else hi = std::min(hi, exclusive ? std::int64_t(std::ceil(d)) - 1 : std::int64_t(std::floor(d)));
        }
        if (lo > hi) fail("json schema: the bounds at ", where.empty() ? "the root" : where, " admit no value");
        return {lo, hi};
    }

    // Digit strings of equal length from x to y (x <= y), as a GBNF sequence.
    static std::string same_length_range(const std::string& x, const std::string& y) {
        if (x.empty()) return "";
        if (x == y) return literal(x);
        const auto digit = [](char a, char b) {
            if (a == b) return std::string("\"") + a + "\"";
            return std::string("[") + a + "-" + b + "]";
        };
        const auto any = [](std::size_t n) { return n == 0 ? std::string() : n == 1 ? std::string("[0-9]") : "[0-9]{" + std::to_string(n) + "}"; };
        const auto join = [](std::string a, const std::string& b) { return b.empty() ? a : a + " " + b; };
        if (x[0] == y[0]) return join(literal(x.substr(0, 1)), same_length_range(x.substr(1), y.substr(1)));
        const std::size_t n = x.size() - 1;
        const bool x_rest_zero = x.find_first_not_of('0', 1) == std::string::npos;
        const bool y_rest_nine = y.find_first_not_of('9', 1) == std::string::npos;
        std::string alts;
        const auto add = [&](const std::string& a) { alts += (alts.empty() ? "" : " | ") + a; };
        char mid_lo = x[0], mid_hi = y[0];
        if (!x_rest_zero) {
            add(join(literal(x.substr(0, 1)), same_length_range(x.substr(1), std::string(n, '9'))));
            ++mid_lo;
        }
        if (!y_rest_nine) --mid_hi;
        if (mid_lo <= mid_hi) add(join(digit(mid_lo, mid_hi), any(n)));
        if (!y_rest_nine) add(join(literal(y.substr(0, 1)), same_length_range(std::string(n, '0'), y.substr(1))));
        return "(" + alts + ")";
    }

    // Decimal integers without sign or leading zeros from a to b (0 <= a <= b <= max_magnitude).
    static std::string magnitude_range(std::int64_t a, std::int64_t b) {
        std::string alts;
        const auto add = [&](const std::string& x) { alts += (alts.empty() ? "" : " | ") + x; };
        if (a == 0) {
            add("\"0\"");
            if (b == 0) return alts;
            a = 1;
        }
        const std::string sa = std::to_string(a), sb = std::to_string(b);
        for (std::size_t len = sa.size(); len <= sb.size(); ++len) {
            const std::string lo = len == sa.size() ? sa : "1" + std::string(len - 1, '0');
            const std::string hi = len == sb.size() ? sb : std::string(len, '9');
            add(same_length_range(lo, hi));
        }
        return "(" + alts + ")";
    }

    // Integers in [lo, hi] (either side may be unbounded).
    static std::string integer_range(std::int64_t lo, std::int64_t hi) {
        std::string alts;
        const auto add = [&](const std::string& x) { alts += (alts.empty() ? "" : " | ") + x; };
        if (hi >= 0) add(magnitude_range(std::max<std::int64_t>(lo, 0), std::min(hi, max_magnitude)));
        if (lo < 0) add("\"-\" " + magnitude_range(hi < 0 ? -hi : 1, std::min(lo == -unbounded ? max_magnitude : -lo, max_magnitude)));
        return "(" + alts + ")";
    }

    std::string integer(const json& s, const std::string& where) {
        const auto [lo, hi] = integer_bounds(s, where, false);
        if (lo == -unbounded && hi == unbounded) return "json-integer";
        return integer_range(lo, hi) + " ws";
    }

    // A number in [lo, hi] (whole bounds): its integer part below the upper bound with any
    // fraction, or equal to it with a fraction of zeros; the negative side mirrored.
    std::string number(const json& s, const std::string& where) {
        const auto [lo, hi] = integer_bounds(s, where, true);
        if (lo == -unbounded && hi == unbounded) return "json-number";
        const std::string frac = "(\".\" [0-9]{1,16})?", zeros = "(\".\" \"0\"{1,16})?";
        const auto side = [&](std::int64_t a, std::int64_t b) {  // magnitudes [a, b], b may be unbounded
            std::string alts;
            const std::int64_t top = std::min(b, max_magnitude);
            if (top > a || b == unbounded) alts = magnitude_range(a, b == unbounded ? top : top - 1) + " " + frac;
            if (b != unbounded) alts += (alts.empty() ? "" : " | ") + magnitude_range(top, top) + " " + zeros;
            return "(" + alts + ")";
        };
        std::string alts;
        if (hi >= 0) alts = side(std::max<std::int64_t>(lo, 0), hi);
        if (lo < 0) alts += (alts.empty() ? "" : " | ") + std::string("\"-\" ") + side(hi >= 0 ? 0 : -hi, lo == -unbounded ? unbounded : -lo);
        return "(" + alts + ") ws";
    }

    std::string ref(const json& r, const std::string& where, std::size_t depth) {
        if (!r.is_string()) fail("json schema: '$ref' at ", where, " must be a string");
        const std::string& target = r.get_ref<const std::string&>();
        std::string name;
        const json* defs = nullptr;
        for (const char* prefix : {"#/$defs/", "#/definitions/"})
            if (target.rfind(prefix, 0) == 0) {
                name = target.substr(std::string_view(prefix).size());
                const auto d = root_.find(std::string_view(prefix).substr(2, std::string_view(prefix).size() - 3));
                if (d != root_.end() && d->is_object()) defs = &*d;
            }
        if (target == "#") {
            refs_["#"] = prefix_ + "root";
            return prefix_ + "root";
        }
        if (!defs || name.empty() || !defs->contains(name)) unsupported(where, "the reference '" + target + "'");
        if (const auto it = refs_.find(target); it != refs_.end()) return it->second;
        // Named before it is visited, so that a recursive reference finds it.
        std::string rule = prefix_ + "def-" + name;
        for (char& c : rule)
            if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-')) c = '-';
        if (rules_.count(rule)) rule += "-" + std::to_string(rules_.size());
        refs_[target] = rule;
        rules_[rule] = "";  // reserved
        rules_[rule] = visit((*defs)[name], target, depth + 1);
        return rule;
    }

    std::string string(const json& s, const std::string& where) {
        if (const auto f = s.find("format"); f != s.end() && f->is_string()) {
            const std::string& fmt = f->get_ref<const std::string&>();
            const std::string date = R"([0-9]{4} "-" ("0" [1-9] | "1" [0-2]) "-" ("0" [1-9] | [12] [0-9] | "3" [01]))";
            const std::string time = R"(([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,9})? ("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9]))";
            if (fmt == "date") return "\"\\\"\" " + date + " \"\\\"\" ws";
            if (fmt == "time") return "\"\\\"\" " + time + " \"\\\"\" ws";
            if (fmt == "date-time") return "\"\\\"\" " + date + " \"T\" " + time + " \"\\\"\" ws";
            if (fmt == "uuid")
                return R"("\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12} "\"" ws)";
            // Other formats (email, uri, ...) are annotations by default in JSON Schema: any string.
        }
        const auto lo = s.find("minLength"), hi = s.find("maxLength");
        if (lo == s.end() && hi == s.end()) return "json-string";
        const auto bound = [&](const json& v, const char* key) {
            if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() > 1000)
                fail("json schema: '", key, "' at ", where, " must be an integer from 0 to 1000");
            return static_cast<std::size_t>(v.get<std::int64_t>());
        };
        const std::size_t min = lo == s.end() ? 0 : bound(*lo, "minLength");
        const std::string rep = hi == s.end() ? "{" + std::to_string(min) + ",}"
                                              : "{" + std::to_string(min) + "," + std::to_string(bound(*hi, "maxLength")) + "}";
        if (hi != s.end() && bound(*hi, "maxLength") < min) fail("json schema: maxLength < minLength at ", where);
        return "\"\\\"\" json-char" + rep + " \"\\\"\" ws";
    }

    std::string array(const json& s, const std::string& where, std::size_t depth) {
        const auto count = [&](const char* key, std::size_t dflt) {
            const auto v = s.find(key);
            if (v == s.end()) return dflt;
            if (!v->is_number_integer() || v->get<std::int64_t>() < 0 || v->get<std::int64_t>() > 1000)
                fail("json schema: '", key, "' at ", where, " must be an integer from 0 to 1000");
            return static_cast<std::size_t>(v->get<std::int64_t>());
        };
        std::vector<std::string> prefix;
        if (const auto p = s.find("prefixItems"); p != s.end()) {
            if (!p->is_array()) fail("json schema: 'prefixItems' at ", where, " must be an array");
            for (std::size_t i = 0; i < p->size(); ++i)
                prefix.push_back(visit((*p)[i], where + "/prefixItems/" + std::to_string(i), depth + 1));
        }
        std::string item = "json-value";
        bool more = true;
        if (const auto it = s.find("items"); it != s.end()) {
            if (it->is_boolean() && !it->get<bool>()) more = false;
            else item = visit(*it, where + "/items", depth + 1);
        } else if (!prefix.empty()) {
            more = true;  // items absent: anything may follow the prefix
        }
        const std::size_t min = count("minItems", 0);
        const std::size_t max = count("maxItems", static_cast<std::size_t>(-1));
        if (max < min) fail("json schema: maxItems < minItems at ", where);
        if (!prefix.empty() && (min > prefix.size() || s.contains("maxItems")))
            unsupported(where, "'minItems' or 'maxItems' with 'prefixItems'");
        std::string body = "\"[\" ws ";
        if (!prefix.empty()) {
            // The prefix items in order, each optional only with all that follow it.
            std::string tail = more ? "(\",\" ws " + item + ")*" : "";
            std::string inner;
            for (std::size_t i = prefix.size(); i-- > 0;) {
                const std::string rest = i + 1 < prefix.size() ? "(\",\" ws " + inner + ")?" : tail;
                inner = prefix[i] + " " + rest;
            }
            body += min == prefix.size() ? inner : "(" + inner + ")?";
        } else if (more && max > 0) {
            const std::string item_rule = add_rule(where.empty() ? "item" : where + "-item", item);
            if (min == 0) {
                body += "(" + item_rule + " (\",\" ws " + item_rule + ")" +
                        (max == static_cast<std::size_t>(-1) ? std::string("*") : "{0," + std::to_string(max - 1) + "}") + ")?";
            } else {
                body += item_rule + " (\",\" ws " + item_rule + ")" +
                        (max == static_cast<std::size_t>(-1) ? "{" + std::to_string(min - 1) + ",}"
                                                              : "{" + std::to_string(min - 1) + "," + std::to_string(max - 1) + "}");
            }
        } else if (min > 0) {
            fail("json schema: an array at ", where, " needs ", min, " items but allows none");
        }
        return body + " \"]\" ws";
    }

    std::string object(const json& s, const std::string& where, std::size_t depth) {
        std::vector<std::pair<std::string, std::string>> props;  // key literal + ':' + value, in order
        std::vector<bool> required;
        std::set<std::string> req;
        if (const auto r = s.find("required"); r != s.end()) {
            if (!r->is_array()) fail("json schema: 'required' at ", where, " must be an array");
            for (const json& k : *r) {
                if (!k.is_string()) fail("json schema: 'required' at ", where, " must list strings");
                req.insert(k.get<std::string>());
            }
        }
        if (const auto p = s.find("properties"); p != s.end()) {
            if (!p->is_object()) fail("json schema: 'properties' at ", where, " must be an object");
            // nlohmann::json (std::map) sorts keys; the declared order is the one in the text,
            // which ordered_json keeps: the caller parses schemas with ordered_json.
            for (const auto& [k, v] : p->items()) {
                const std::string value = visit(v, where + "/" + k, depth + 1);
                props.emplace_back(k, literal(json(k).dump()) + " ws \":\" ws " + value);
                required.push_back(req.count(k) > 0);
            }
        }
        for (const std::string& k : req) {
            bool found = false;
            for (const auto& p : props) found |= p.first == k;
            if (!found) unsupported(where, "a required property ('" + k + "') without a schema in 'properties'");
        }
        // Other properties: where additionalProperties allows them, or where nothing is declared
        // at all (a bare {"type": "object"} is any object). Absent beside declared properties,
        // none are generated: still valid, and the object closes sooner.
        std::string extra;
        const auto a = s.find("additionalProperties");
        const bool extras = a == s.end() ? props.empty() : !(a->is_boolean() && !a->get<bool>());
        if (extras) {
            const std::string value = a == s.end() || a->is_boolean() ? "json-value" : visit(*a, where + "/additionalProperties", depth + 1);
            extra = add_rule(where.empty() ? "extra" : where + "-extra", "json-string \":\" ws " + value);
        }
        // first_i: properties i.. when none has been written yet; rest_i: after one has.
        const std::size_t n = props.size();
        std::vector<std::string> rest(n + 1), first(n + 1);
        rest[n] = extra.empty() ? "" : "(\",\" ws " + extra + ")*";
        first[n] = extra.empty() ? "" : "(" + extra + " (\",\" ws " + extra + ")*)?";
        const std::string base = where.empty() ? "obj" : where;
        for (std::size_t i = n; i-- > 0;) {
            const std::string kv = add_rule(base + "-" + props[i].first, props[i].second);
            const std::string r_next = rest[i + 1].empty() ? "" : " " + rest[i + 1];
            std::string r = "\",\" ws " + kv + r_next;
            std::string f = kv + r_next;
            if (!required[i]) {
                r = "(" + r + ")" + (rest[i + 1].empty() ? "?" : " | " + rest[i + 1]);
                f = "(" + f + (first[i + 1].empty() ? ")?" : " | " + first[i + 1] + ")");
            }
            rest[i] = add_rule(base + "-rest", r);
            first[i] = add_rule(base + "-first", f);
        }
        return "\"{\" ws " + (first[0].empty() ? std::string() : first[0] + " ") + "\"}\" ws";
    }

    const json& root_;
    std::string prefix_;
    std::map<std::string, std::string> rules_;
    std::map<std::string, std::string> refs_;
};

}  // namespace json_schema_detail

// GBNF text for documents `schema` validates; throws lmtk::error naming what it cannot express.
// Properties come in the order `schema` holds them: the declared order for nlohmann::ordered_json
// (parse the schema's text with it), sorted by key for nlohmann::json.
inline std::string json_schema_to_gbnf(const nlohmann::ordered_json& schema) {
    return json_schema_detail::converter(schema).run();
}
inline std::string json_schema_to_gbnf(const nlohmann::json& schema) {
    return json_schema_to_gbnf(nlohmann::ordered_json::parse(schema.dump()));
}
// The rules of `schema` alone, every name starting with `prefix` (which must be a GBNF name:
// letters, digits, '-'), the top one named prefix + "root"; they refer to the shared JSON rules
// of json_common_gbnf(), which a grammar combining several schemas writes once.
inline std::string json_schema_rules(const nlohmann::ordered_json& schema, const std::string& prefix) {
    if (prefix.empty()) fail("json_schema_rules: the prefix must not be empty");
    return json_schema_detail::converter(schema, prefix).run();
}
inline std::string json_common_gbnf() { return json_schema_detail::converter::common_rules(); }

}  // namespace lmtk::sample
// #include <lmtk/generate/timings.hpp>
// Timings of one generation, reported the way llama.cpp users read them.
#include <chrono>
#include <cstddef>
#include <cstdio>

namespace lmtk {

struct timings {
    double load_ms = 0.0;
    std::size_t n_prompt = 0;   // prompt tokens evaluated
    double prompt_ms = 0.0;
    std::size_t n_eval = 0;     // generated tokens evaluated one at a time
    double eval_ms = 0.0;
    std::size_t n_sample = 0;
    double sample_ms = 0.0;

    static double per_second(std::size_t n, double ms) noexcept { return ms > 0.0 ? 1e3 * double(n) / ms : 0.0; }
    double prompt_tokens_per_second() const noexcept { return per_second(n_prompt, prompt_ms); }
    double eval_tokens_per_second() const noexcept { return per_second(n_eval, eval_ms); }

    void print(std::FILE* out) const {
        auto line = [out](const char* what, double ms, std::size_t n, const char* unit) {
            if (n == 0) {
                std::fprintf(out, "lmtk: %16s = %10.2f ms\n", what, ms);
                return;
            }
            std::fprintf(out, "lmtk: %16s = %10.2f ms / %5zu %s (%8.2f ms per token, %8.2f tokens per second)\n", what, ms,
                         n, unit, ms / double(n), per_second(n, ms));
        };
        line("load time", load_ms, 0, "");
        line("sample time", sample_ms, n_sample, "runs  ");
        line("prompt eval time", prompt_ms, n_prompt, "tokens");
        line("eval time", eval_ms, n_eval, "runs  ");
        std::fprintf(out, "lmtk: %16s = %10.2f ms / %5zu tokens\n", "total time", load_ms + prompt_ms + eval_ms + sample_ms,
                     n_prompt + n_eval);
    }
};

// Milliseconds since construction (steady clock).
class stopwatch {
public:
    stopwatch() noexcept : start_(std::chrono::steady_clock::now()) {}
    double ms() const noexcept {
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
    }

private:
    std::chrono::steady_clock::time_point start_;
};

}  // namespace lmtk
// #include <lmtk/generate/text_stream.hpp>
// Turns token pieces into text that is safe to show: it holds back an incomplete UTF-8
// sequence (a character split across byte tokens) and any tail that could be the start of a
// stop string, and reports when a stop string has appeared. Text before a stop string is
// emitted; the stop string itself and anything after it are not.
#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace lmtk {

class text_stream {
public:
    text_stream() = default;
    explicit text_stream(std::vector<std::string> stops) : stops_(std::move(stops)) {
        stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
    }

    // Adds a piece; appends what may be shown now to `out`. Returns true when a stop string
    // has been seen (generation should end).
    bool push(std::string_view piece, std::string& out) {
        pending_.append(piece);
        std::size_t stop_at = std::string::npos;
        for (const auto& s : stops_) stop_at = std::min(stop_at, pending_.find(s));
        if (stop_at != std::string::npos) {
            out.append(pending_, 0, stop_at);
            pending_.clear();
            return true;
        }
        std::size_t safe = complete_utf8_prefix(pending_);
        for (const auto& s : stops_) {
            // Longest proper prefix of s that ends pending_.
            for (std::size_t k = std::min(s.size() - 1, pending_.size()); k > 0; --k) {
                if (std::string_view(pending_).substr(pending_.size() - k) == std::string_view(s).substr(0, k)) {
                    safe = std::min(safe, pending_.size() - k);
                    break;
                }
            }
        }
        out.append(pending_, 0, safe);
        pending_.erase(0, safe);
        return false;
    }

    // End of generation: whatever is still held back is shown (an incomplete UTF-8 tail too:
    // the bytes are the model's output).
    void flush(std::string& out) {
        out += pending_;
        pending_.clear();
    }

    // Length of the longest prefix of s that does not end inside a UTF-8 sequence.
    static std::size_t complete_utf8_prefix(std::string_view s) noexcept {
        const std::size_t n = s.size();
        // Look back at most 3 bytes for the lead byte of the last sequence.
        for (std::size_t back = 1; back <= std::min<std::size_t>(4, n); ++back) {
            const auto c = static_cast<unsigned char>(s[n - back]);
            if ((c & 0xC0) == 0x80) continue;  // continuation byte
            std::size_t len = 1;
            if ((c & 0xE0) == 0xC0) len = 2;
            else if ((c & 0xF0) == 0xE0) len = 3;
            else if ((c & 0xF8) == 0xF0) len = 4;
            return len > back ? n - back : n;
        }
        return n;
    }

private:
    std::vector<std::string> stops_;
    std::string pending_;
};

}  // namespace lmtk
// #include <lmtk/generate/piece_iterator.hpp>
// lmtk::piece_iterator<G>: input iteration over a generation that hands out text with
// `bool next(std::string& out)` (false once it has ended), so that
//   for (const std::string& piece : g.stream(prompt, opt)) ...
// reads the same for a local pipeline's generation and the remote ones; read_all() is the loop
// their generate() shares.
#include <cstddef>
#include <iterator>
#include <string>
#include <string_view>

namespace lmtk {

template <class G>
class piece_iterator {
public:
    using value_type = std::string;
    using difference_type = std::ptrdiff_t;
    piece_iterator() = default;
    explicit piece_iterator(G* g) : g_(g) { ++*this; }
    const std::string& operator*() const noexcept { return cur_; }
    piece_iterator& operator++() {
        if (g_ && !g_->next(cur_)) g_ = nullptr;
        return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(std::default_sentinel_t) const noexcept { return g_ == nullptr; }

private:
    G* g_ = nullptr;
    std::string cur_;
};

// Reads g to its end, handing each piece to on_text(std::string_view); returns all the text.
template <class G, class OnText>
std::string read_all(G& g, OnText&& on_text) {
    std::string text, piece;
    while (g.next(piece)) {
        text += piece;
        on_text(std::string_view(piece));
    }
    return text;
}

}  // namespace lmtk
// #include <lmtk/generate/pipeline.hpp>
// The generation pipeline: a model format set x a compute target x a sampler chain, fixed at
// compile time, e.g.
//
//   using my_pipeline = lmtk::pipeline<lmtk::quant::default_set, lmtk::target::cpu<>,
//                                      lmtk::sample::chain<lmtk::sample::top_k, lmtk::sample::dist>>;
//   my_pipeline p("model.gguf");
//   for (const std::string& text : p.stream("Once upon a time", {.max_tokens = 64})) std::cout << text;
//
// Streaming comes as a pull iterator (`stream`) and as a callback (`generate`); both stop on
// end-of-generation tokens, a token limit, a stop string or a full context. A new prompt that
// extends the previous conversation reuses the cached prefix instead of evaluating it again.
// What a generation does is lmtk::sequence's (sequence.hpp); the pipeline runs its tokens.
// #include <lmtk/core/error.hpp>
// #include <lmtk/generate/completion.hpp>
// What one generation is asked to do and what it yields, shared by the local pipeline, the
// server's engine and the remote models (no model, no HTTP here).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

// #include <lmtk/generate/timings.hpp>

namespace lmtk {

enum class finish_reason { none, end_of_text, stop_string, max_tokens, context_full };

constexpr std::string_view to_string(finish_reason r) noexcept {
    switch (r) {
        case finish_reason::none: return "none";
        case finish_reason::end_of_text: return "end_of_text";
        case finish_reason::stop_string: return "stop_string";
        case finish_reason::max_tokens: return "max_tokens";
        case finish_reason::context_full: return "context_full";
    }
    return "none";
}

struct generate_options {
    int max_tokens = 128;                 // < 0: until the context is full
    std::vector<std::string> stop;        // stop strings (not included in the output)
    std::optional<bool> add_bos;          // default: what the model's metadata says
    bool parse_special = false;           // turn "<s>"-like text in the prompt into control tokens
    bool ignore_eos = false;
    std::optional<std::uint64_t> seed;    // reseed the sampler's generator for this request
};

struct completion {
    std::string text;
    std::vector<std::int32_t> tokens;     // generated tokens (an end-of-generation token excluded)
    std::size_t n_prompt_tokens = 0;
    finish_reason finish = finish_reason::none;
    timings time;
};

}  // namespace lmtk
// #include <lmtk/generate/piece_iterator.hpp>
// #include <lmtk/generate/sequence.hpp>
// lmtk::sequence: the generation of one sequence, written once. The local pipeline drives one
// over its context; the server's engine drives one per slot, N of them batched in each forward
// pass. Everything that decides what a generation does lives here:
//
//   - the context-fit rule (fits_context): the only place that says whether a request can run;
//   - prefix reuse: the longest prefix of the prompt the cache already holds is kept, at least
//     one prompt token is run again so that there are fresh logits;
//   - prompt feeding in chunks of any size (unfed() / fed());
//   - one step per set of fresh logits: sample through the chain, log-probabilities when asked,
//     then the end rules in one order (end-of-generation token, stop string, token limit, full
//     context), and the text that is safe to show (text_stream: no half UTF-8 character, no
//     possible beginning of a stop string).
//
// The caller owns the model context and runs the tokens: the prompt tokens unfed() names, then
// after each step() that goes on, the token pending() names.
//
//   sequence seq(prompt, {.max_tokens = 64, .stop = {"\n"}});
//   ctx.truncate(seq.begin(cached));                 // cached: the tokens the cache holds
//   ctx.decode(seq.unfed()); seq.fed(seq.unfed().size(), cached);
//   std::string text;
//   while (seq.step(ctx.logits(), chain, gen, pieces, ctx.n_past(), ctx.n_ctx(), text)) {
//       ctx.decode({seq.pending()}); seq.ran_pending(cached);
//   }
// #include <lmtk/core/error.hpp>
// #include <lmtk/generate/completion.hpp>
// #include <lmtk/generate/text_stream.hpp>
// #include <lmtk/sample/sample.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace lmtk {

// The context-fit rule, the one place that says whether a request can run: its prompt and the
// tokens it must be able to generate fit in the context together. A generation needs room for
// one token (it then ends with context_full at the latest), LMTP's GENERATE for all of its
// max_tokens, scoring (the logits at every prompt position) for none.
constexpr bool fits_context(std::size_t n_prompt, std::size_t n_generate, std::size_t n_ctx) noexcept {
    return n_prompt > 0 && n_prompt <= n_ctx && n_generate <= n_ctx - n_prompt;
}

// Why a request does not fit, for error messages; empty when it does.
inline std::string context_fit_error(std::size_t n_prompt, std::size_t n_generate, std::size_t n_ctx) {
    if (fits_context(n_prompt, n_generate, n_ctx)) return {};
    if (n_prompt == 0) return "the prompt is empty (and the model adds no BOS token): nothing to condition on";
    if (n_generate <= 1)
        return detail::concat("the prompt has ", n_prompt, " tokens, which does not fit in the context of ", n_ctx,
                              " tokens", n_generate == 1 ? " with room for one generated token" : "");
    return detail::concat("the prompt (", n_prompt, " tokens) plus max_tokens (", n_generate, ") exceed the context of ",
                          n_ctx, " tokens");
}

// Log-probabilities of one token under the model's distribution: raw logits plus logit_bias,
// before temperature and truncation (what OpenAI and llama.cpp report).
struct token_logprobs {
    std::int32_t id = 0;
    float logprob = 0.0f;
    std::vector<std::pair<std::int32_t, float>> top;  // best first
};

// log_softmax over logits + bias: the chosen token and the k best.
inline token_logprobs logprobs_of(std::span<const float> logits, std::span<const sample::token_bias> bias,
                                  std::int32_t chosen, int k) {
    thread_local std::vector<float> z;
    z.assign(logits.begin(), logits.end());
    for (const sample::token_bias& b : bias)
        if (b.id >= 0 && static_cast<std::size_t>(b.id) < z.size()) z[std::size_t(b.id)] += b.bias;
    float mx = -std::numeric_limits<float>::infinity();
    for (float& v : z) {
        if (std::isnan(v)) v = -std::numeric_limits<float>::infinity();
        mx = std::max(mx, v);
    }
    double sum = 0.0;
    if (std::isfinite(mx))
        for (const float v : z) sum += std::exp(double(v) - mx);
    const double lse = std::isfinite(mx) ? mx + std::log(sum) : 0.0;
    auto lp = [&](std::int32_t id) {
        // JSON has no -inf: clamp to the most negative float, as llama.cpp does.
        const double v = double(z[std::size_t(id)]) - lse;
        return std::isfinite(v) ? static_cast<float>(v) : std::numeric_limits<float>::lowest();
    };
    token_logprobs out;
    out.id = chosen;
    out.logprob = lp(chosen);
    const std::size_t n = std::min<std::size_t>(static_cast<std::size_t>(std::max(k, 0)), z.size());
    if (n > 0) {
        thread_local std::vector<std::int32_t> ids;
        ids.resize(z.size());
        for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>(i);
        std::partial_sort(ids.begin(), ids.begin() + std::ptrdiff_t(n), ids.end(), [&](std::int32_t a, std::int32_t b) {
            return z[std::size_t(a)] > z[std::size_t(b)] || (z[std::size_t(a)] == z[std::size_t(b)] && a < b);
        });
        for (std::size_t i = 0; i < n; ++i) out.top.emplace_back(ids[i], lp(ids[i]));
    }
    return out;
}

struct sequence_options {
    int max_tokens = -1;                   // < 0: until the context is full
    std::vector<std::string> stop;         // stop strings (not included in the text)
    bool ignore_eos = false;
    int top_logprobs = -1;                 // < 0: none; else that many alternatives per token
    std::span<const sample::token_bias> logit_bias;  // added before the logprobs are taken (it outlives the sequence)
};

class sequence {
public:
    static constexpr std::size_t no_limit = static_cast<std::size_t>(-1);

    sequence(std::span<const std::int32_t> prompt, sequence_options opt)
        : prompt_(prompt.begin(), prompt.end()), opt_(std::move(opt)), text_(opt_.stop), history_(prompt_) {}

    // ---- the prompt ----------------------------------------------------------------------------
    // Keeps the longest prefix of the prompt that `cached` (the tokens the cache holds, in
    // order) already has, at most `keep_limit` tokens and never the whole prompt; cuts `cached`
    // to it and returns its length: the caller truncates its cache to the same length.
    std::size_t begin(std::vector<std::int32_t>& cached, std::size_t keep_limit = no_limit) {
        std::size_t common = 0;
        while (common < cached.size() && common < prompt_.size() && cached[common] == prompt_[common]) ++common;
        if (common == prompt_.size() && common > 0) --common;  // fresh logits need one token run
        common = std::min(common, keep_limit);
        cached.resize(common);
        fed_ = n_cached_ = common;
        return common;
    }

    // Prompt tokens not yet in the cache; fed(n) records that the first n of them went in.
    std::span<const std::int32_t> unfed() const noexcept { return std::span(prompt_).subspan(fed_); }
    void fed(std::size_t n, std::vector<std::int32_t>& cached) {
        cached.insert(cached.end(), prompt_.begin() + std::ptrdiff_t(fed_), prompt_.begin() + std::ptrdiff_t(fed_ + n));
        fed_ += n;
    }
    bool prompt_done() const noexcept { return fed_ == prompt_.size(); }
    std::size_t n_fed() const noexcept { return fed_; }
    std::size_t n_cached() const noexcept { return n_cached_; }
    const std::vector<std::int32_t>& prompt() const noexcept { return prompt_; }

    // ---- generation --------------------------------------------------------------------------
    // One step from fresh logits (those after the whole prompt, or after pending()): samples a
    // token through `chain`, applies the end rules and appends the text that may be shown now
    // to `out`. `piece(id)` gives a token's bytes and `is_eog(id)` whether it ends generation;
    // `n_past` is how many tokens the cache holds. Returns true while the generation goes on:
    // then pending() is the token to run next.
    template <class Chain, class Piece, class IsEog>
    bool step(std::span<const float> logits, Chain& chain, sample::rng& gen, Piece&& piece, IsEog&& is_eog,
              std::size_t n_past, std::size_t n_ctx, std::string& out) {
        pending_ = -1;
        if (reached_limit()) return end(finish_reason::max_tokens, out);  // max_tokens 0: nothing is sampled
        sample::context sc{history_, gen};
        const std::int32_t tok = chain(logits, sc);
        std::optional<token_logprobs> lp;
        if (opt_.top_logprobs >= 0) lp = logprobs_of(logits, opt_.logit_bias, tok, opt_.top_logprobs);
        if (!opt_.ignore_eos && is_eog(tok)) {
            end_token_ = lp ? std::move(*lp) : token_logprobs{tok, 0.0f, {}};
            return end(finish_reason::end_of_text, out);
        }
        tokens_.push_back(tok);
        history_.push_back(tok);
        if (lp) logprobs_.push_back(std::move(*lp));
        if (text_.push(piece(tok), out)) return end(finish_reason::stop_string, out);
        // The limits are checked before the token just sampled is run: nobody needs the logits
        // that would follow it.
        if (reached_limit()) return end(finish_reason::max_tokens, out);
        if (n_past >= n_ctx) return end(finish_reason::context_full, out);
        pending_ = tok;
        return true;
    }

    // The sampled token still to be run through the model; -1 when none.
    std::int32_t pending() const noexcept { return pending_; }
    // The pending token went through the model.
    void ran_pending(std::vector<std::int32_t>& cached) {
        cached.push_back(pending_);
        pending_ = -1;
    }

    // Ends the generation from outside (a client that left: finish_reason::none); flushes the
    // text held back into `out`.
    bool end(finish_reason why, std::string& out) {
        if (finish_ == finish_reason::none) finish_ = why;
        text_.flush(out);
        pending_ = -1;
        return false;
    }

    bool finished() const noexcept { return finish_ != finish_reason::none; }
    finish_reason finish() const noexcept { return finish_; }
    const std::vector<std::int32_t>& tokens() const noexcept { return tokens_; }
    const std::vector<std::int32_t>& history() const noexcept { return history_; }
    // Per generated token when top_logprobs >= 0; the end-of-generation token that ended the
    // generation is not among them but in end_token() (LMTP reports it, the text APIs do not).
    const std::vector<token_logprobs>& logprobs() const noexcept { return logprobs_; }
    const std::optional<token_logprobs>& end_token() const noexcept { return end_token_; }
    const sequence_options& options() const noexcept { return opt_; }

private:
    bool reached_limit() const noexcept {
        return opt_.max_tokens >= 0 && tokens_.size() >= static_cast<std::size_t>(opt_.max_tokens);
    }

    std::vector<std::int32_t> prompt_;
    sequence_options opt_;
    text_stream text_;
    std::vector<std::int32_t> history_;    // prompt and generated tokens: what penalties look at
    std::vector<std::int32_t> tokens_;
    std::vector<token_logprobs> logprobs_;
    std::optional<token_logprobs> end_token_;
    std::size_t fed_ = 0, n_cached_ = 0;
    std::int32_t pending_ = -1;
    finish_reason finish_ = finish_reason::none;
};

}  // namespace lmtk
// #include <lmtk/generate/timings.hpp>
// #include <lmtk/model/llama.hpp>
// #include <lmtk/sample/sample.hpp>
// #include <lmtk/tokenize/load.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lmtk {

struct pipeline_options {
    model::load_options load;
    model::context_options context;
    std::uint64_t seed = 0x6c6d746b;      // "lmtk"
};

namespace detail {

// The model and its tokenizer, loaded and checked against each other: what pipeline and
// batch_pipeline both start from.
template <class Model>
void load_model_and_tokenizer(const std::string& path, const model::load_options& opt, std::unique_ptr<Model>& model,
                              std::unique_ptr<tokenize::tokenizer>& tok) {
    model = std::make_unique<Model>(path, opt);
    tok = std::make_unique<tokenize::tokenizer>(tokenize::load_tokenizer(model->source()));
    if (tok->size() != model->n_vocab())
        fail(path, ": the tokenizer has ", tok->size(), " tokens but the model's vocabulary has ", model->n_vocab());
}

}  // namespace detail

template <class Set, class Target, class Chain, class KV = model::kv_f32>
class pipeline {
public:
    using model_type = model::llama<Set, Target>;
    using context_type = model::llama_context<model_type, KV>;
    using tokenizer_type = tokenize::tokenizer;
    using sampler_type = Chain;

    explicit pipeline(const std::string& model_path, pipeline_options opt = {}, Chain chain = Chain{})
        : chain_(std::move(chain)), gen_(opt.seed) {
        const stopwatch load;
        detail::load_model_and_tokenizer(model_path, opt.load, model_, tokenizer_);
        context_ = std::make_unique<context_type>(*model_, opt.context);
        time_.load_ms = load.ms();
    }

    const model_type& model() const noexcept { return *model_; }
    context_type& context() noexcept { return *context_; }
    const tokenizer_type& tokenizer() const noexcept { return *tokenizer_; }
    Chain& sampler() noexcept { return chain_; }
    const timings& last_timings() const noexcept { return time_; }

    std::vector<std::int32_t> tokenize(std::string_view text, const generate_options& opt = {}) const {
        return tokenizer_->encode(text, opt.add_bos.value_or(tokenizer_->vocabulary().add_bos()), opt.parse_special);
    }

    // A generation in progress: call next() (or iterate) to get text as it is produced.
    class generation {
    public:
        generation(pipeline& p, std::string_view prompt, generate_options opt)
            : p_(&p), seq_(p.tokenize(prompt, opt), sequence_options{.max_tokens = opt.max_tokens,
                                                                     .stop = std::move(opt.stop),
                                                                     .ignore_eos = opt.ignore_eos}) {
            if (const std::string why = context_fit_error(seq_.prompt().size(), 1, p.context_->n_ctx()); !why.empty())
                fail(why, " (use a larger -c or a shorter prompt)");
            if (opt.seed) p.gen_.reseed(*opt.seed);
            const double load_ms = p.time_.load_ms;
            p.time_ = timings{};
            p.time_.load_ms = load_ms;
        }
        generation(const generation&) = delete;
        generation& operator=(const generation&) = delete;
        generation(generation&&) noexcept = default;
        generation& operator=(generation&&) noexcept = default;

        // Replaces `out` with the next piece of text; false once the generation has ended
        // and everything has been returned.
        bool next(std::string& out) {
            out.clear();
            auto& ctx = *p_->context_;
            const auto& tok = *p_->tokenizer_;
            while (!seq_.finished()) {
                if (!seq_.prompt_done()) {
                    evaluate_prompt();
                } else if (seq_.pending() >= 0) {
                    const stopwatch sw;
                    const std::int32_t t = seq_.pending();
                    ctx.decode(std::span(&t, 1));
                    seq_.ran_pending(p_->cached_);
                    p_->time_.eval_ms += sw.ms();
                    ++p_->time_.n_eval;
                }
                const stopwatch sw;
                seq_.step(ctx.logits(), p_->chain_, p_->gen_, [&](std::int32_t id) { return tok.piece(id); },
                          [&](std::int32_t id) { return tok.is_eog(id); }, ctx.n_past(), ctx.n_ctx(), out);
                p_->time_.sample_ms += sw.ms();
                ++p_->time_.n_sample;
                if (!out.empty()) return true;
            }
            return false;
        }

        finish_reason finish() const noexcept { return seq_.finish(); }
        const std::vector<std::int32_t>& tokens() const noexcept { return seq_.tokens(); }
        std::size_t n_prompt_tokens() const noexcept { return seq_.prompt().size(); }

        // Input iteration: for (const std::string& piece : generation) ...
        using iterator = piece_iterator<generation>;
        iterator begin() { return iterator(this); }
        std::default_sentinel_t end() const noexcept { return {}; }

    private:
        // The prompt in one pass after the cached prefix (the context splits it into batches).
        void evaluate_prompt() {
            p_->context_->truncate(seq_.begin(p_->cached_));
            const auto rest = seq_.unfed();
            const stopwatch sw;
            p_->context_->decode(rest);
            p_->time_.prompt_ms += sw.ms();
            p_->time_.n_prompt += rest.size();
            seq_.fed(rest.size(), p_->cached_);
        }

        pipeline* p_;
        sequence seq_;
    };

    generation stream(std::string_view prompt, generate_options opt = {}) { return generation(*this, prompt, std::move(opt)); }

    // Runs to the end, calling on_text(std::string_view) for each piece of text.
    template <class OnText>
    completion generate(std::string_view prompt, generate_options opt, OnText&& on_text) {
        generation g = stream(prompt, std::move(opt));
        completion c;
        c.text = read_all(g, on_text);
        c.tokens = g.tokens();
        c.n_prompt_tokens = g.n_prompt_tokens();
        c.finish = g.finish();
        c.time = time_;
        return c;
    }
    completion generate(std::string_view prompt, generate_options opt = {}) {
        return generate(prompt, std::move(opt), [](std::string_view) {});
    }

private:
    std::unique_ptr<model_type> model_;
    std::unique_ptr<tokenizer_type> tokenizer_;
    std::unique_ptr<context_type> context_;
    Chain chain_;
    sample::rng gen_;
    timings time_;
    std::vector<std::int32_t> cached_;  // tokens whose keys/values are in the context
};

}  // namespace lmtk
// #include <lmtk/generate/batch_pipeline.hpp>
// Many prompts, one model, one forward pass per step for all of them: the library's batch
// generation, the same pipeline type as lmtk::pipeline with the same one-line `using`:
//
//   using my_batch = lmtk::batch_pipeline<lmtk::quant::default_set, lmtk::target::cpu<>,
//                                         lmtk::sample::chain<lmtk::sample::top_k, lmtk::sample::dist>>;
//   my_batch b("model.gguf", {.context = {.n_ctx = 512, .n_seq = 8}});
//   std::vector<lmtk::completion> out = b.generate(prompts, {.max_tokens = 64});
//
// Up to context.n_seq prompts run together, each in a sequence of the context with its own KV
// cache; their rows go through the network in one decode_batch() per step, so the weights are
// read once per step for all of them (decode is bound by reading weights: N sequences cost
// little more than one). A prompt that ends frees its sequence for the next one. Each prompt
// is an lmtk::sequence (sequence.hpp): the same end rules, stop strings and text as the
// single pipeline, with its own copy of the sampler chain and its own generator, seeded from
// the options' seed plus the prompt's index, so a prompt's result does not depend on which
// others share its batch (up to float rounding of the batched arithmetic).
// #include <lmtk/core/error.hpp>
// #include <lmtk/generate/completion.hpp>
// #include <lmtk/generate/pipeline.hpp>
// #include <lmtk/generate/sequence.hpp>
// #include <lmtk/generate/timings.hpp>
// #include <lmtk/model/llama.hpp>
// #include <lmtk/sample/sample.hpp>
// #include <lmtk/tokenize/load.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lmtk {

template <class Set, class Target, class Chain, class KV = model::kv_f32>
class batch_pipeline {
public:
    using model_type = model::llama<Set, Target>;
    using context_type = model::llama_context<model_type, KV>;
    using tokenizer_type = tokenize::tokenizer;
    using sampler_type = Chain;

    // context.n_seq is the number of prompts run together (at least 1).
    explicit batch_pipeline(const std::string& model_path, pipeline_options opt = {}, Chain chain = Chain{})
        : chain_(std::move(chain)), seed_(opt.seed) {
        const stopwatch load;
        detail::load_model_and_tokenizer(model_path, opt.load, model_, tokenizer_);
        opt.context.n_seq = std::max<std::size_t>(1, opt.context.n_seq);
        context_ = std::make_unique<context_type>(*model_, opt.context);
        time_.load_ms = load.ms();
    }

    const model_type& model() const noexcept { return *model_; }
    context_type& context() noexcept { return *context_; }
    const tokenizer_type& tokenizer() const noexcept { return *tokenizer_; }
    // The last generate() call's totals over all its prompts.
    const timings& last_timings() const noexcept { return time_; }

    // One completion per prompt, in the prompts' order.
    std::vector<completion> generate(std::span<const std::string> prompts, const generate_options& opt = {}) {
        return generate(prompts, opt, [](std::size_t, std::string_view) {});
    }

    // As above, calling on_text(prompt_index, piece) as each prompt's text is produced (the
    // pieces of different prompts interleave).
    template <class OnText>
    std::vector<completion> generate(std::span<const std::string> prompts, const generate_options& opt, OnText&& on_text) {
        context_type& ctx = *context_;
        const tokenizer_type& tok = *tokenizer_;
        const double load_ms = time_.load_ms;
        time_ = timings{};
        time_.load_ms = load_ms;

        // Every prompt is tokenized and checked before any runs: one that cannot fit fails the
        // call at once, not after the others have been generated.
        std::vector<std::vector<std::int32_t>> ids(prompts.size());
        for (std::size_t i = 0; i < prompts.size(); ++i) {
            ids[i] = tok.encode(prompts[i], opt.add_bos.value_or(tok.vocabulary().add_bos()), opt.parse_special);
            if (const std::string why = context_fit_error(ids[i].size(), 1, ctx.n_ctx()); !why.empty())
                fail("prompt ", i, ": ", why, " (use a larger n_ctx or a shorter prompt)");
        }

        struct running {
            std::size_t index, slot;
            sequence seq;
            Chain chain;
            sample::rng gen;
            std::vector<std::int32_t> cached;  // what this slot's cache holds
            std::string text;
        };
        std::vector<completion> out(prompts.size());
        std::vector<running> live;
        std::vector<std::size_t> free_slots;
        for (std::size_t s = ctx.n_seq(); s-- > 0;) free_slots.push_back(s);
        std::size_t next = 0;
        const std::uint64_t seed = opt.seed.value_or(seed_);
        const sequence_options seq_opt{.max_tokens = opt.max_tokens, .stop = opt.stop, .ignore_eos = opt.ignore_eos,
                                       .top_logprobs = -1, .logit_bias = {}};
        std::vector<model::batch_entry> batch;
        std::vector<float> logits;
        std::string piece;

        while (next < prompts.size() || !live.empty()) {
            // Start prompts in the free sequences.
            while (next < prompts.size() && !free_slots.empty()) {
                const std::size_t slot = free_slots.back();
                free_slots.pop_back();
                ctx.truncate(0, slot);
                live.push_back(running{next, slot, sequence(ids[next], seq_opt), chain_, sample::rng(seed + next), {}, {}});
                live.back().seq.begin(live.back().cached);
                ++next;
            }
            // One row per sequence that has a token to run; the prompt rows of a new sequence
            // all go in, and only its last asks for logits.
            batch.clear();
            std::size_t n_prompt_rows = 0;
            for (running& r : live) {
                const auto slot = static_cast<std::uint32_t>(r.slot);
                if (!r.seq.prompt_done()) {
                    const auto rest = r.seq.unfed();
                    for (std::size_t k = 0; k < rest.size(); ++k) batch.push_back({rest[k], slot, k + 1 == rest.size()});
                    n_prompt_rows += rest.size();
                    r.seq.fed(rest.size(), r.cached);
                } else {
                    batch.push_back({r.seq.pending(), slot, true});
                    r.seq.ran_pending(r.cached);
                }
            }
            logits.resize(live.size() * std::size_t{model_->n_vocab()});
            const stopwatch sw;
            ctx.decode_batch(batch, logits.data());
            const double ms = sw.ms();
            // Time split between prompt and generated rows in proportion to their counts.
            const double prompt_share = batch.empty() ? 0.0 : double(n_prompt_rows) / double(batch.size());
            time_.prompt_ms += ms * prompt_share;
            time_.eval_ms += ms * (1.0 - prompt_share);
            time_.n_prompt += n_prompt_rows;
            time_.n_eval += batch.size() - n_prompt_rows;

            // One step of each sequence from its row of logits, in the order the rows were asked.
            const stopwatch ss;
            for (std::size_t k = 0; k < live.size(); ++k) {
                running& r = live[k];
                piece.clear();
                const std::span<const float> row(logits.data() + k * model_->n_vocab(), model_->n_vocab());
                r.seq.step(row, r.chain, r.gen, [&](std::int32_t id) { return tok.piece(id); },
                           [&](std::int32_t id) { return tok.is_eog(id); }, ctx.n_past(r.slot), ctx.n_ctx(), piece);
                ++time_.n_sample;
                if (!piece.empty()) {
                    r.text += piece;
                    on_text(r.index, std::string_view(piece));
                }
            }
            time_.sample_ms += ss.ms();
            // Finished sequences hand their slot on.
            for (std::size_t k = 0; k < live.size();) {
                running& r = live[k];
                if (!r.seq.finished()) {
                    ++k;
                    continue;
                }
                completion& c = out[r.index];
                c.text = std::move(r.text);
                c.tokens = r.seq.tokens();
                c.n_prompt_tokens = r.seq.prompt().size();
                c.finish = r.seq.finish();
                free_slots.push_back(r.slot);
                live.erase(live.begin() + std::ptrdiff_t(k));
            }
        }
        for (completion& c : out) c.time = time_;
        return out;
    }

private:
    std::unique_ptr<model_type> model_;
    std::unique_ptr<tokenizer_type> tokenizer_;
    std::unique_ptr<context_type> context_;
    Chain chain_;
    std::uint64_t seed_;
    timings time_;
};

}  // namespace lmtk
