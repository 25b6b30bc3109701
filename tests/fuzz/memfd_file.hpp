#pragma once
// A file that holds the fuzzer's input, for readers that open and map a path: one memfd per
// process and name, refilled for every input, reached as /proc/self/fd/N (no disk involved).
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <string>

namespace lmtk::fuzz {

// `Tag` keeps one descriptor per call site (a harness may map two inputs at once).
template <class Tag>
const std::string& memfd_file(const void* data, std::size_t size) {
    static const int fd = ::memfd_create("lmtk-fuzz", MFD_CLOEXEC);
    static const std::string path = "/proc/self/fd/" + std::to_string(fd);
    if (fd < 0 || ::ftruncate(fd, 0) != 0) std::abort();
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (std::size_t done = 0; done < size;) {
        const ssize_t n = ::pwrite(fd, bytes + done, size - done, static_cast<off_t>(done));
        if (n <= 0) std::abort();
        done += static_cast<std::size_t>(n);
    }
    return path;
}

}  // namespace lmtk::fuzz
