#pragma once
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
