// lmtk tokenize: stdin -> token ids on one line. Reads only the tokenizer (GGUF metadata, or a
// Hugging Face folder's tokenizer.json), so it works on vocabulary-only files (llama.cpp's
// ggml-vocab-*.gguf) as well as full models.
//
// The text is taken byte for byte, a trailing newline included (use `printf` or `echo -n` to
// leave it out). BOS is added when the vocabulary asks for it (tokenizer.ggml.add_bos_token) and
// --no-bos is absent, and EOS likewise; --special parses control-token texts such as "<s>".
#include "args.hpp"
#include "commands.hpp"

#include <lmtk/tokenize/load.hpp>

#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::cli {

namespace {

std::string read_stdin() {
    std::string text;
    char buf[1 << 16];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, stdin)) > 0;) text.append(buf, n);
    if (std::ferror(stdin)) fail("lmtk tokenize: error reading stdin");
    return text;
}

}  // namespace

int cmd_tokenize(const argv_t& argv) {
    const args a("tokenize", argv, {"-m|--model", "--split"}, {"--no-bos", "--special"});
    if (!a.positional().empty()) fail("lmtk tokenize: unexpected argument '", a.positional()[0], "' (text comes from stdin)");
    const tokenize::tokenizer tok = tokenize::load_tokenizer(a.require("-m"));
    const tokenize::vocab& v = tok.vocabulary();

    // --split SEP: stdin holds several texts, each followed by SEP (llama.cpp's .inp files use
    // "\n__ggml_vocab_test__\n"); one line of ids per text.
    const std::string input = read_stdin();
    std::vector<std::string_view> texts;
    if (const std::string sep = a.get("--split").value_or(""); !sep.empty()) {
        for (std::size_t pos = 0; pos < input.size();) {
            const std::size_t end = input.find(sep, pos);
            if (end == std::string::npos) fail("lmtk tokenize: the input does not end with the --split separator");
            texts.push_back(std::string_view(input).substr(pos, end - pos));
            pos = end + sep.size();
        }
    } else {
        texts.push_back(input);
    }

    const bool add_special = !a.has("--no-bos");
    std::string out;
    for (const std::string_view text : texts) {
        std::vector<std::int32_t> ids = tok.encode(text, add_special && v.add_bos(), a.has("--special"));
        if (add_special && v.add_eos() && v.eos() != tokenize::no_token) ids.push_back(v.eos());
        for (std::size_t i = 0; i < ids.size(); ++i) {
            if (i) out.push_back(' ');
            out += std::to_string(ids[i]);
        }
        out.push_back('\n');
    }
    if (std::fwrite(out.data(), 1, out.size(), stdout) != out.size() || std::fflush(stdout) != 0)
        fail("lmtk tokenize: error writing stdout");
    return 0;
}

}  // namespace lmtk::cli
