#pragma once
// The instruction-set levels lmtk compiles its weight kernels for, and which one this CPU runs.
//
// One binary serves every x86-64 CPU from Nehalem on: the kernels of each level live in their
// own translation unit built with that level's -m flags (src/cpu_kernels.cpp, the lmtk::cpu_kernels
// library), and a model picks one table of them when it loads, by CPUID, the way it picks a
// tensor's format. LMTK_CPU (or load_options::cpu, `lmtk bench --cpu`) forces a lower level, so
// that every level can be tested and measured on a machine that has a higher one.
#include <cstdint>
#include <optional>
#include <string_view>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace lmtk::target {

// Ordered within one architecture: a CPU that runs a level runs every lower one of its family
// (a build compiles the levels of one family only).
enum class isa : std::uint8_t {
    generic,       // whatever the compiler's baseline for the target is (aarch64: Armv8-A NEON)
    sse4_2,        // x86-64-v2: the floor of the portable x86 build
    avx2,          // x86-64-v3: AVX2, FMA, F16C, BMI2
    avx512_vnni,   // x86-64-v4 (AVX-512 F/BW/DQ/VL) plus VNNI
    neon_dotprod,  // aarch64: Armv8.2-A with the dot-product extension (SDOT)
};

constexpr std::string_view isa_name(isa i) noexcept {
    switch (i) {
        case isa::generic: return "generic";
        case isa::sse4_2: return "sse4.2";
        case isa::avx2: return "avx2";
        case isa::avx512_vnni: return "avx512-vnni";
        case isa::neon_dotprod: return "neon-dotprod";
    }
    return "?";
}

// "sse4.2", "avx2", "avx512-vnni" (also "sse42", "avx512", "avx512vnni"), "neon-dotprod"
// (also "dotprod"), "generic".
constexpr std::optional<isa> parse_isa(std::string_view s) noexcept {
    if (s == "generic") return isa::generic;
    if (s == "sse4.2" || s == "sse42" || s == "sse4_2") return isa::sse4_2;
    if (s == "avx2") return isa::avx2;
    if (s == "avx512-vnni" || s == "avx512" || s == "avx512vnni" || s == "avx512_vnni") return isa::avx512_vnni;
    if (s == "neon-dotprod" || s == "neon_dotprod" || s == "dotprod") return isa::neon_dotprod;
    return std::nullopt;
}

namespace detail {

#if defined(__x86_64__) || defined(_M_X64)
struct cpuid_regs {
    unsigned a = 0, b = 0, c = 0, d = 0;
};
inline cpuid_regs cpuid(unsigned leaf, unsigned sub = 0) noexcept {
    cpuid_regs r;
    if (!__get_cpuid_count(leaf, sub, &r.a, &r.b, &r.c, &r.d)) return {};
    return r;
}
// The register state the OS saves on a context switch (XCR0): a CPU may have AVX-512 units that
// the kernel does not enable, and then using them faults.
inline std::uint64_t xcr0() noexcept {
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (std::uint64_t{hi} << 32) | lo;
}
#endif

}  // namespace detail

// The highest level this CPU (and its OS) runs.
inline isa host_isa() noexcept {
#if defined(__x86_64__) || defined(_M_X64)
    const auto l1 = detail::cpuid(1), l7 = detail::cpuid(7);
    const auto bit = [](unsigned reg, int n) { return ((reg >> n) & 1u) != 0; };
    const bool sse42 = bit(l1.c, 20) && bit(l1.c, 23) && bit(l1.c, 19) && bit(l1.c, 9);  // sse4.2 popcnt sse4.1 ssse3
    if (!sse42) return isa::generic;
    const bool osxsave = bit(l1.c, 27);
    const std::uint64_t xcr = osxsave ? detail::xcr0() : 0;
    const bool ymm_state = (xcr & 0x6) == 0x6, zmm_state = (xcr & 0xE6) == 0xE6;
    const bool avx2 = ymm_state && bit(l1.c, 28) && bit(l1.c, 12) && bit(l1.c, 29) &&  // avx fma f16c
                      bit(l7.b, 5) && bit(l7.b, 3) && bit(l7.b, 8);                    // avx2 bmi1 bmi2
    if (!avx2) return isa::sse4_2;
    const bool avx512 = zmm_state && bit(l7.b, 16) && bit(l7.b, 17) && bit(l7.b, 28) &&  // f dq cd
                        bit(l7.b, 30) && bit(l7.b, 31) && bit(l7.c, 11);                  // bw vl vnni
    return avx512 ? isa::avx512_vnni : isa::avx2;
#elif defined(__aarch64__) && defined(__linux__)
    constexpr unsigned long hwcap_asimddp = 1ul << 20;  // HWCAP_ASIMDDP of <asm/hwcap.h>
    return (getauxval(AT_HWCAP) & hwcap_asimddp) ? isa::neon_dotprod : isa::generic;
#else
    return isa::generic;
#endif
}

}  // namespace lmtk::target
