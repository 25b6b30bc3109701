// A light consumer: reads a GGUF model's metadata and round-trips a prompt through its tokenizer.
#include <lmtk/lmtk.hpp>

#include <iostream>

int main(int argc, char** argv) try {
    if (argc < 3) return 2;
    const lmtk::gguf::file f(argv[1]);
    const auto tok = lmtk::tokenize::spm_tokenizer(lmtk::tokenize::vocab::from_gguf(f));
    const auto ids = tok.encode(argv[2], true);
    std::cout << f.require<std::string>("general.architecture") << ' ' << ids.size() << " tokens: " << tok.decode(ids)
              << '\n';
} catch (const lmtk::error& e) {
    std::cerr << "error: " << e.what() << '\n';
    return 1;
}
