#pragma once
// The tokenizer a model source carries: a GGUF file's vocabulary (tokenizer.ggml.*), or a
// Hugging Face folder's tokenizer.json. Either way one tokenize::tokenizer comes back.
#include <lmtk/core/error.hpp>
#include <lmtk/model/hf.hpp>
#include <lmtk/model/source.hpp>
#include <lmtk/tokenize/tokenize.hpp>

#include <filesystem>
#include <string>

namespace lmtk::tokenize {

inline tokenizer load_tokenizer(const model::weight_source& src) {
    if (const gguf::file* f = src.gguf_file()) return tokenizer::from_vocab(vocab::from_gguf(*f), f->path());
    if (const auto* hf = dynamic_cast<const model::hf_source*>(&src))
        return tokenizer::from_vocab(vocab_from_hf_folder(hf->directory()), hf->path());
    fail(src.path(), ": this model source carries no tokenizer lmtk can read");
}

// The tokenizer of a model path without loading its weights: a GGUF file (a vocabulary-only
// one works too) or a Hugging Face checkpoint folder.
inline tokenizer load_tokenizer(const std::string& path) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) return tokenizer::from_vocab(vocab_from_hf_folder(path), path);
    const gguf::file f(path);
    return tokenizer::from_vocab(vocab::from_gguf(f), path);
}

}  // namespace lmtk::tokenize
