/* Ahead-of-time compiled kernels of the vsgen v1 stream (docs/stream-v1.md).
 *
 * Plain C, no Python API and no library calls: loaded with ctypes, which
 * releases the GIL for the duration of each call, so threads run in
 * parallel.  Built with -ffp-contract=off and without -ffast-math: every
 * + - * / is one IEEE 754 operation rounded to nearest, never fused, so the
 * bytes equal the NumPy path's on every CPU.  The tables and constants are
 * passed in from Python (vsgen's generated tables module), so nothing here
 * can go stale.
 *
 * The body is compiled once per x86-64 level (baseline, v3 = AVX2+FMA, v4 =
 * AVX-512); the caller picks one with vsgen_native_level(), or a lower one
 * on request.  Other architectures get the baseline build only.
 */
#include <stdint.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The bytes depend on every operation being rounded on its own. */
#ifdef __FAST_MATH__
#error "vsgen's kernels must not be built with -ffast-math"
#endif
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define GAMMA 0x9E3779B97F4A7C15ULL
#define MIX1 0xBF58476D1CE4E5B9ULL
#define MIX2 0x94D049BB133111EBULL
#define LOW32 0xFFFFFFFFULL
#define UNIT53 (1.0 / 9007199254740992.0)
#define UNIFORM32_SCALE (1.0f / 8388608.0f)
#define UNIFORM64_SCALE (1.0 / 4503599627370496.0)
/* Values per hot pass: the miss flags stay in L1 and misses are redone while hot. */
#define BLOCK 2048
/* Values per block of a float16/bfloat16 fill: 16 KiB of float32 buffer on the
 * stack (about 66 KiB with the normal kernel's own arrays); 8192 was no faster. */
#define NARROW_BLOCK 4096

/* Layout of the constants array built by _native.py. */
#define C_R 0
#define C_INV_R 1
#define C_LN2_HI 2
#define C_LN2_LO 3
#define C_LOG2E 4
#define C_SQRT2 5
#define C_EXP 6
#define C_LOG 20
#define C_POW2_NEG 32
#define C_COUNT 96

#define fabsf __builtin_fabsf
#define fabs __builtin_fabs

#if defined(_WIN32)
#define EXPORT __declspec(dllexport)
#else
#define EXPORT __attribute__((visibility("default")))
#endif

/* One ziggurat: width/inside have 512 entries (sign folded in; float32/int32
 * or float64/int64 by precision), low/high 256 (float64). */
struct zig {
    const void *width;
    const void *inside;
    const double *low;
    const double *high;
    int64_t has_tail;
};

EXPORT int64_t vsgen_native_abi(void) { return 2; }

#define NAME(x) x##_base
#include "_native_kernels_body.h"
#undef NAME

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HAVE_LEVELS 1
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#define NAME(x) x##_v3
#include "_native_kernels_body.h"
#undef NAME
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
#define NAME(x) x##_v4
#include "_native_kernels_body.h"
#undef NAME
#pragma GCC pop_options
#endif

/* The best level this CPU runs: 0 baseline, 3 AVX2+FMA, 4 AVX-512. */
EXPORT int64_t vsgen_native_level(void)
{
#ifdef HAVE_LEVELS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) {
        return 4;
    }
    if (__builtin_cpu_supports("x86-64-v3")) {
        return 3;
    }
#endif
    return 0;
}
