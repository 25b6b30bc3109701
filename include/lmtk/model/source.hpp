#pragma once
// Where a model's weights and hyperparameters come from. A GGUF file is one source; a Hugging
// Face checkpoint directory is another. The model binds its weights from a source once, at load,
// by GGUF tensor names (blk.N.attn_q.weight ...), so the forward pass never knows which it was.
// The virtual calls here happen only while loading, never per token.
#include <lmtk/core/error.hpp>
#include <lmtk/core/mapped_file.hpp>
#include <lmtk/io/gguf.hpp>
#include <lmtk/model/hparams.hpp>
#include <lmtk/quant/group_layout.hpp>

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace lmtk::model {

// A matrix that an AWQ or GPTQ checkpoint stores quantized, repacked at load into blocks of
// quant::group_layout: `rows` rows of cols / block_elems blocks. With act-order, column k of the
// blocks holds input input_perm[k].
struct group_tensor {
    quant::group_format format;
    const std::byte* data = nullptr;
    std::size_t rows = 0, cols = 0;
    const std::uint32_t* input_perm = nullptr;  // nullptr: the identity
};

class weight_source {
public:
    virtual ~weight_source() = default;

    virtual const std::string& path() const noexcept = 0;
    virtual const llama_hparams& hparams() const noexcept = 0;
    // A tensor by its GGUF name, in GGUF orientation (ne[0] = contiguous input dimension).
    virtual const gguf::tensor_info* find_tensor(std::string_view name) const noexcept = 0;
    // The GGUF file behind this source, for metadata such as the vocabulary; nullptr otherwise.
    virtual const gguf::file* gguf_file() const noexcept { return nullptr; }
    // A matrix by its GGUF name when the source holds it in an AWQ/GPTQ group format (checked
    // before find_tensor); nullptr otherwise.
    virtual const group_tensor* find_group_tensor(std::string_view) const noexcept { return nullptr; }
    // The loader copied [p, p + n) elsewhere and will not read it again: a mapped source may
    // drop those pages from memory (they stay readable).
    virtual void release(const std::byte* /*p*/, std::size_t /*n*/) const noexcept {}
    // The mapped file that holds [p, p + n), if [p, p + n) is read from one; nullptr for bytes
    // the source holds in memory of its own. Asked once at load, so that rows can later be
    // read with the file's own read_at() (no virtual call, no pages mapped in).
    virtual const core::mapped_file* mapping_of(const std::byte* /*p*/, std::size_t /*n*/) const noexcept { return nullptr; }

    const gguf::tensor_info& tensor(std::string_view name) const {
        const gguf::tensor_info* t = find_tensor(name);
        if (!t) fail(path(), ": tensor '", name, "' is missing");
        return *t;
    }
};

class gguf_source final : public weight_source {
public:
    explicit gguf_source(const std::string& path) : file_(path), hp_(llama_hparams::from_gguf(file_)) {}
    // A file already open (read from a memfd or checked beforehand).
    explicit gguf_source(gguf::file f) : file_(std::move(f)), hp_(llama_hparams::from_gguf(file_)) {}

    const std::string& path() const noexcept override { return file_.path(); }
    const llama_hparams& hparams() const noexcept override { return hp_; }
    const gguf::tensor_info* find_tensor(std::string_view name) const noexcept override { return file_.find_tensor(name); }
    const gguf::file* gguf_file() const noexcept override { return &file_; }
    void release(const std::byte* p, std::size_t n) const noexcept override { file_.mapping().release(p, n); }
    const core::mapped_file* mapping_of(const std::byte* p, std::size_t n) const noexcept override {
        return file_.mapping().contains(p, n) ? &file_.mapping() : nullptr;
    }

private:
    gguf::file file_;
    llama_hparams hp_;
};

}  // namespace lmtk::model

// open_weights(path), for a GGUF file or a Hugging Face checkpoint folder, lives with the HF
// source it needs. Included last: hf.hpp builds on the classes above, whichever header comes first.
#include <lmtk/model/hf.hpp>
