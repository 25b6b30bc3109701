// libFuzzer harness: safetensors files, config.json and the Hugging Face checkpoint reader
// (AWQ/GPTQ quantization configs and their repacking included), and a model bound from it.
//
// The input is a small container of the files of a checkpoint folder:
//   u8 flags | u16le n | n bytes: config.json | (flags & 1: u16le m | m bytes: quantize_config.json)
//   | the rest: model.safetensors
// The files are written into a scratch folder of this process and read as `lmtk run -m FOLDER`
// reads them: hf_source (config, quantization config, safetensors header, AWQ/GPTQ repacking),
// then the Llama binding and a two-token decode, so shapes that slipped through would be read
// past under ASan.
// lmtk::error is the only acceptable failure; anything else escapes to libFuzzer as a finding.
#include <lmtk/core/error.hpp>
#include <lmtk/io/safetensors.hpp>
#include <lmtk/model/hf.hpp>
#include <lmtk/model/llama.hpp>
#include <lmtk/quant/awq.hpp>
#include <lmtk/quant/bf16.hpp>
#include <lmtk/quant/f16.hpp>
#include <lmtk/quant/f32.hpp>
#include <lmtk/quant/gptq.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace {

namespace q = lmtk::quant;
// F32/F16/BF16 and the group-32 AWQ/GPTQ formats the seeds use; other group sizes are refused
// by name at binding, after the same repacking (the harness must build in seconds).
using fuzz_set = q::with_group_formats<q::set<q::f32, q::f16, q::bf16>, q::awq4<32>, q::gptq<4, 32, false>,
                                       q::gptq<4, 32, true>, q::gptq<3, 32, false>>;
using model_t = lmtk::model::llama<fuzz_set, lmtk::target::cpu<>>;

// The scratch folder, made once and removed at exit: under $TMPDIR, else in memory (/dev/shm)
// where there is one, since every input writes its files anew.
const std::filesystem::path& folder() {
    static const std::filesystem::path dir = [] {
        const char* tmp = std::getenv("TMPDIR");
        std::error_code ec;
        const std::string base = tmp && *tmp ? tmp : std::filesystem::is_directory("/dev/shm", ec) ? "/dev/shm" : "/tmp";
        std::string templ = base + "/lmtk-fuzz-safetensors-XXXXXX";
        if (!::mkdtemp(templ.data())) std::abort();
        std::atexit([] {
            std::error_code ec;
            std::filesystem::remove_all(folder(), ec);
        });
        return std::filesystem::path(templ);
    }();
    return dir;
}

void put(const std::string& name, std::string_view bytes) {
    const std::string p = (folder() / name).string();
    const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) std::abort();
    for (std::size_t done = 0; done < bytes.size();) {
        const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n <= 0) std::abort();
        done += static_cast<std::size_t>(n);
    }
    ::close(fd);
}

void drop(const std::string& name) { ::unlink((folder() / name).c_str()); }

// Takes a u16le length and that many bytes from the front of `in` (fewer if it is shorter).
std::string_view take(std::string_view& in) {
    if (in.size() < 2) {
        in = {};
        return {};
    }
    const std::size_t n = static_cast<unsigned char>(in[0]) | std::size_t(static_cast<unsigned char>(in[1])) << 8;
    in.remove_prefix(2);
    const std::string_view out = in.substr(0, n);
    in.remove_prefix(out.size());
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::uint8_t flags = data[0];
    std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
    const std::string_view config = take(in);
    put("config.json", config);
    if (flags & 1) put("quantize_config.json", take(in));
    else drop("quantize_config.json");
    put("model.safetensors", in);

    try {
        const model_t m(std::make_unique<lmtk::model::hf_source>(folder().string()));
        lmtk::model::llama_context<model_t> ctx(m, {.n_ctx = 4, .n_threads = 1});
        const std::vector<std::int32_t> ids = {0, static_cast<std::int32_t>(m.n_vocab() - 1)};
        (void)ctx.decode(ids);
    } catch (const lmtk::error&) {
        // a refused checkpoint: the expected outcome for most inputs
    }
    return 0;
}
