#pragma once
// The weight kernels of quant::default_set, and attention, for each instruction-set level, chosen
// at load.
//
// src/cpu_kernels.cpp is compiled once per level with that level's flags (CMake target
// lmtk::cpu_kernels) and defines one kernel_table each. The symbols of each compiled copy are
// renamed apart after compilation (cmake/isolate_kernels.cmake), so the inline functions and
// template instances that every copy contains (a quantizer, std::vector's members) can never be
// merged by the linker into the copy of a higher level: the AVX-512 build of a helper must not be
// what the SSE4.2 path calls. A program that links lmtk::cpu_kernels asks for a table once per
// model (target::cpu_dispatch does this in model::llama) and binds every tensor through it.
#include <cstdlib>
#include <memory>
#include <type_traits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <lmtk/core/error.hpp>
#include <lmtk/model/attention.hpp>
#include <lmtk/quant/dispatch.hpp>
#include <lmtk/target/isa.hpp>

namespace lmtk::quant {

struct kernel_table {
    target::isa isa;
    std::optional<weight_ops> (*resolve)(ggml_type) noexcept;
    std::optional<weight_ops> (*resolve_group)(const group_format&) noexcept;
    // The attention of a forward pass at this level, per KV cache type: after the matmuls the
    // largest share of a long prompt's time, too much to leave at the program's SSE4.2 floor.
    template <class KV>
    using make_attention = std::unique_ptr<model::attention_pass<KV>> (*)(const model::llama_hparams&, std::size_t n_ctx,
                                                                          std::size_t n_batch, core::thread_pool&);
    make_attention<model::kv_f32> attention_f32;
    make_attention<model::kv_f16> attention_f16;

    template <class KV>
    make_attention<KV> attention() const noexcept {
        if constexpr (std::is_same_v<KV, model::kv_f16>) return attention_f16;
        else return attention_f32;
    }
};

}  // namespace lmtk::quant

// Every level compiled into this program, lowest first (defined by lmtk::cpu_kernels).
extern "C" const lmtk::quant::kernel_table* const* lmtk_cpu_kernel_tables(std::size_t* count) noexcept;

namespace lmtk::quant {

inline std::span<const kernel_table* const> compiled_kernel_tables() noexcept {
    std::size_t n = 0;
    const kernel_table* const* t = lmtk_cpu_kernel_tables(&n);
    return {t, n};
}

// The tables of every compiled level this CPU can run, lowest first.
inline std::vector<const kernel_table*> runnable_kernel_tables() {
    std::vector<const kernel_table*> out;
    const target::isa host = target::host_isa();
    for (const kernel_table* t : compiled_kernel_tables())
        if (t->isa <= host) out.push_back(t);
    return out;
}

// The table a model uses: `request` ("avx2", ...; empty: the LMTK_CPU environment variable,
// and if that is unset or empty the highest compiled level the CPU runs). Asking for a level the
// CPU cannot run, or one this build did not compile, is an error rather than a silent fallback:
// the override exists to measure and test a named path.
inline const kernel_table& choose_kernels(std::string_view request = {}) {
    std::string from_env;
    if (request.empty())
        if (const char* e = std::getenv("LMTK_CPU"); e && *e) request = from_env = e;
    const target::isa host = target::host_isa();
    const kernel_table* best = nullptr;
    std::string names;
    for (const kernel_table* t : compiled_kernel_tables()) {
        names += names.empty() ? "" : ", ";
        names += target::isa_name(t->isa);
        if (request.empty()) {
            if (t->isa <= host && (!best || t->isa > best->isa)) best = t;
        } else if (const auto want = target::parse_isa(request); want && t->isa == *want) {
            if (t->isa > host)
                fail("LMTK_CPU/--cpu ", request, ": this CPU runs at most ", target::isa_name(host));
            best = t;
        }
    }
    if (!best && !request.empty())
        fail("LMTK_CPU/--cpu '", request, "' is not a kernel level of this build (compiled: ", names, ")");
    if (!best) fail("no kernel level of this build runs on this CPU (compiled: ", names, "; CPU: ", target::isa_name(host), ")");
    return *best;
}

}  // namespace lmtk::quant
