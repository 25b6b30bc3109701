#pragma once
// A read-only memory mapping of a whole file: weights are used in place from it, or copied
// once into a layout of their own (anonymous_memory, below) with the mapped pages let go, so
// a model costs no second copy of its tensors.
#include <lmtk/core/error.hpp>

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
