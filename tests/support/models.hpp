#pragma once
// Where tests find the shared real model files: $LMTK_TEST_MODELS, else ../shared/models.
#include <cstdlib>
#include <filesystem>
#include <string>

namespace lmtk::test {

inline std::filesystem::path models_dir() {
    if (const char* env = std::getenv("LMTK_TEST_MODELS"); env && *env) return env;
    return std::filesystem::path("..") / "shared" / "models";
}

inline std::string model_path(const std::string& relative) { return (models_dir() / relative).string(); }

}  // namespace lmtk::test
