#pragma once
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
