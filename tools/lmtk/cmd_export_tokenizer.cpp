// lmtk export-tokenizer MODEL DIR: writes DIR/tokenizer.json and DIR/tokenizer_config.json, a
// Hugging Face tokenizer that encodes exactly as lmtk does (tokenize/hf_export.hpp), for Python
// clients that tokenize on their side (LMQL, transformers' AutoTokenizer). The GGUF's chat
// template, when it has one, goes into tokenizer_config.json.
#include "args.hpp"
#include "commands.hpp"

#include <lmtk/io/gguf.hpp>
#include <lmtk/tokenize/hf_export.hpp>
#include <lmtk/tokenize/load.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

namespace lmtk::cli {

int cmd_export_tokenizer(const argv_t& argv) {
    const args a("export-tokenizer", argv, {}, {});
    if (a.positional().size() != 2) fail("lmtk export-tokenizer: expected MODEL DIR");
    const std::string& model = a.positional()[0];
    const std::filesystem::path dir = a.positional()[1];
    const tokenize::tokenizer tok = tokenize::load_tokenizer(model);
    std::optional<std::string> chat_template;
    std::error_code ec;
    if (!std::filesystem::is_directory(model, ec)) {
        const gguf::file f(model);
        if (f.find("tokenizer.chat_template")) chat_template = f.get_or<std::string>("tokenizer.chat_template", "");
    }
    const tokenize::hf_tokenizer_files files = tokenize::export_hf_tokenizer(tok, chat_template);
    std::filesystem::create_directories(dir, ec);
    if (ec) fail("lmtk export-tokenizer: cannot create ", dir.string(), ": ", ec.message());
    for (const auto& [name, j] : {std::pair{"tokenizer.json", &files.tokenizer}, std::pair{"tokenizer_config.json", &files.tokenizer_config}}) {
        const std::filesystem::path p = dir / name;
        std::ofstream out(p, std::ios::binary | std::ios::trunc);
        out << j->dump(2) << '\n';
        if (!out.flush()) fail("lmtk export-tokenizer: error writing ", p.string());
    }
    std::fprintf(stderr, "lmtk export-tokenizer: %s (%s, %zu tokens) -> %s\n", model.c_str(), std::string(tok.kind()).c_str(), tok.size(),
                 dir.string().c_str());
    return 0;
}

}  // namespace lmtk::cli
