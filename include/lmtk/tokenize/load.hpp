#pragma once
// The tokenizer a model source carries. GGUF files hold their vocabulary in metadata.
#include <lmtk/core/error.hpp>
#include <lmtk/model/source.hpp>
#include <lmtk/tokenize/tokenize.hpp>

namespace lmtk::tokenize {

inline spm_tokenizer load_tokenizer(const model::weight_source& src) {
    if (const gguf::file* f = src.gguf_file()) return spm_tokenizer(vocab::from_gguf(*f));
    fail(src.path(), ": this model source carries no tokenizer lmtk can read");
}

}  // namespace lmtk::tokenize
