#pragma once
// A fresh scratch folder per use, removed afterwards; the process id and a counter in its name
// keep parallel test runs apart.
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include <unistd.h>

namespace lmtk::test {

class temp_dir {
public:
    explicit temp_dir(const std::string& tag = "test") {
        static std::atomic<int> n{0};
        dir = std::filesystem::temp_directory_path() /
              ("lmtk-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(n.fetch_add(1)));
        std::filesystem::create_directories(dir);
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;

    std::string file(const std::string& name) const { return (dir / name).string(); }
    // Everything in the folder, sorted (to prove no temporary file is left behind).
    std::vector<std::string> listing() const {
        std::vector<std::string> names;
        for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
        std::sort(names.begin(), names.end());
        return names;
    }

    std::filesystem::path dir;
};

}  // namespace lmtk::test
