#pragma once
// llama.cpp's tokenizer test vectors beside a vocabulary GGUF: NAME.gguf.inp holds the inputs,
// each followed by "\n__ggml_vocab_test__\n" (the newline before the separator is framing, not
// text); NAME.gguf.out holds one line of space-separated ids per case.
#include <catch2/catch.hpp>

#include <cstdint>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace lmtk::test {

inline std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) FAIL("cannot open " << path);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

struct vocab_case {
    std::string text;
    std::vector<std::int32_t> expected;
};

inline std::vector<vocab_case> load_vocab_vectors(const std::string& gguf_path) {
    const std::string inp = read_all(gguf_path + ".inp");
    const std::string out = read_all(gguf_path + ".out");
    constexpr std::string_view sep = "\n__ggml_vocab_test__\n";
    std::vector<vocab_case> cases;
    for (std::size_t pos = 0; pos < inp.size();) {
        const std::size_t end = inp.find(sep, pos);
        REQUIRE(end != std::string::npos);  // nothing may follow the last separator
        cases.push_back({inp.substr(pos, end - pos), {}});
        pos = end + sep.size();
    }
    std::istringstream lines(out);
    std::string line;
    std::size_t i = 0;
    for (; std::getline(lines, line); ++i) {
        REQUIRE(i < cases.size());
        std::istringstream nums(line);
        for (std::int32_t id; nums >> id;) cases[i].expected.push_back(id);
    }
    REQUIRE(i == cases.size());
    return cases;
}

}  // namespace lmtk::test
