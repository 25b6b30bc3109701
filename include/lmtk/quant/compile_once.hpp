#pragma once
// For programs of several translation units: compile the kernels of quant::default_set on the
// default CPU target once instead of once per unit. Every unit that loads models includes this
// header (the lmtk tool and the tests force it in); exactly one unit defines
// LMTK_COMPILE_DEFAULT_KERNELS_HERE before including it and holds the kernels. The load-time
// dispatch (resolve, resolve_group) is the only code that names the kernels, so declaring its two
// functions extern keeps every other unit from instantiating them.
#include <optional>

#include <lmtk/quant/dispatch.hpp>
#include <lmtk/target/cpu.hpp>

#ifdef LMTK_COMPILE_DEFAULT_KERNELS_HERE
#define LMTK_DEFAULT_KERNELS_LINKAGE
#else
#define LMTK_DEFAULT_KERNELS_LINKAGE extern
#endif

LMTK_DEFAULT_KERNELS_LINKAGE template std::optional<lmtk::quant::weight_ops>
lmtk::quant::resolve<lmtk::quant::default_set, lmtk::target::cpu<>::arch>(lmtk::quant::ggml_type) noexcept;
LMTK_DEFAULT_KERNELS_LINKAGE template std::optional<lmtk::quant::weight_ops>
lmtk::quant::resolve_group<lmtk::quant::default_set, lmtk::target::cpu<>::arch>(const lmtk::quant::group_format&) noexcept;

#undef LMTK_DEFAULT_KERNELS_LINKAGE
