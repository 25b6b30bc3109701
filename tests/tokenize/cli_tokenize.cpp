// `lmtk tokenize` end to end: the binary named by $LMTK_CLI (ctest sets it) on llama.cpp's test
// vectors, with and without BOS. Skipped with a warning when the CLI is not available.
#include <catch2/catch.hpp>

#include "support/models.hpp"
#include "support/vocab_vectors.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>  // getpid; popen/pclose come from <cstdio> on POSIX

namespace {

// Runs the CLI with `input` on stdin; returns its stdout, or fails the test on a non-zero exit.
std::string run_cli(const std::string& cli, const std::string& flags, const std::string& input) {
    const auto in_path = std::filesystem::temp_directory_path() /
                         ("lmtk_cli_tokenize_" + std::to_string(::getpid()) + ".txt");
    {
        std::ofstream f(in_path, std::ios::binary);
        f << input;
    }
    const std::string cmd = "'" + cli + "' tokenize " + flags + " < '" + in_path.string() + "'";
    std::FILE* p = ::popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    std::string out;
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
    const int status = ::pclose(p);
    std::filesystem::remove(in_path);
    INFO(cmd);
    REQUIRE(status == 0);
    return out;
}

}  // namespace

TEST_CASE("lmtk tokenize: vocabulary-only GGUF, test vectors", "[tokenize][cli]") {
    const char* cli = std::getenv("LMTK_CLI");
    if (!cli || !std::filesystem::exists(cli)) {
        WARN("LMTK_CLI is not set or does not exist: skipped");
        return;
    }
    const std::string model = lmtk::test::model_path("vocab/ggml-vocab-llama-spm.gguf");
    const std::string flags = "-m '" + model + "'";
    CHECK(run_cli(cli, flags, "Hello world!") == "1 15043 3186 29991\n");
    CHECK(run_cli(cli, flags + " --no-bos", "Hello world!") == "15043 3186 29991\n");
    CHECK(run_cli(cli, flags + " --no-bos", "") == "\n");

    // Every vector case through the binary.
    std::size_t n = 0;
    for (const lmtk::test::vocab_case& c : lmtk::test::load_vocab_vectors(model)) {
        INFO("case " << n++);
        std::string expected;
        for (const std::int32_t id : c.expected) expected += (expected.empty() ? "" : " ") + std::to_string(id);
        CHECK(run_cli(cli, flags + " --no-bos", c.text) == expected + "\n");
    }
    CHECK(n == 46);
}
