#pragma once
// LMTK_INTRINSICS_WARNINGS_OFF / _ON bracket code written with AVX-512 intrinsics.
//
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() (`__m512 __Y = __Y;`), which it
// then reports as uninitialised in every function they are inlined into: a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#define LMTK_INTRINSICS_WARNINGS_OFF                                   \
    _Pragma("GCC diagnostic push")                                     \
    _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")              \
    _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define LMTK_INTRINSICS_WARNINGS_ON _Pragma("GCC diagnostic pop")
#else
#define LMTK_INTRINSICS_WARNINGS_OFF
#define LMTK_INTRINSICS_WARNINGS_ON
#endif
