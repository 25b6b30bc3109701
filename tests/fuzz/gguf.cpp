// libFuzzer harness: the GGUF reader, and a model bound from what it read, as `lmtk run` does.
//
// The input is a whole GGUF file. It is read through a memfd (the reader maps a path), then:
// the vocabulary (tokenizer.ggml.*) becomes a tokenizer that encodes and decodes a short text;
// the weights are bound to a Llama model (shapes checked against the hyperparameters); and a
// context of a few positions decodes two tokens, so shapes that slipped through would be read
// past by the forward pass under ASan. lmtk::error is the only acceptable failure: any other
// exception escapes and libFuzzer reports it, like a crash.
//
// The formats compiled in are a few common ones rather than default_set: the harness must
// build in seconds, and a tensor of a type left out is refused by name, which is a load error
// like any other (binding is the same code for every type).
#include "memfd_file.hpp"

#include <lmtk/core/error.hpp>
#include <lmtk/io/gguf.hpp>
#include <lmtk/model/llama.hpp>
#include <lmtk/model/source.hpp>
#include <lmtk/quant/f16.hpp>
#include <lmtk/quant/f32.hpp>
#include <lmtk/quant/q4_0.hpp>
#include <lmtk/quant/q8_0.hpp>
#include <lmtk/tokenize/tokenizer.hpp>
#include <lmtk/tokenize/vocab.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <sys/mman.h>
#include <unistd.h>

struct input_path_tag;  // this harness's memfd (memfd_file.hpp)

namespace {

using fuzz_set = lmtk::quant::set<lmtk::quant::f32, lmtk::quant::f16, lmtk::quant::q8_0, lmtk::quant::q4_0>;
using model_t = lmtk::model::llama<fuzz_set, lmtk::target::cpu<>>;


void exercise_tokenizer(const lmtk::gguf::file& f) {
    const lmtk::tokenize::tokenizer tok = lmtk::tokenize::tokenizer::from_vocab(lmtk::tokenize::vocab::from_gguf(f), f.path());
    for (const bool special : {false, true}) {
        const std::vector<std::int32_t> ids = tok.encode("Hello world! <s> \xE2\x96\x81x \xF0\x9F\x98\x80 \xFF", true, special);
        (void)tok.decode(ids, !special);
        for (const std::int32_t id : ids) (void)tok.piece(id);
    }
}

void exercise_model(lmtk::gguf::file f) {
    const model_t m(std::make_unique<lmtk::model::gguf_source>(std::move(f)));
    lmtk::model::llama_context<model_t> ctx(m, {.n_ctx = 4, .n_threads = 1});
    const std::vector<std::int32_t> ids = {0, static_cast<std::int32_t>(m.n_vocab() - 1)};
    (void)ctx.decode(ids);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string& path = lmtk::fuzz::memfd_file<input_path_tag>(data, size);
    try {
        lmtk::gguf::file f(path);
        try {
            exercise_tokenizer(f);
        } catch (const lmtk::error&) {
            // no usable vocabulary: the weights are still worth binding
        }
        exercise_model(std::move(f));
    } catch (const lmtk::error&) {
        // a refused file: the expected outcome for most inputs
    }
    return 0;
}
