/* One build of the vsgen v1 kernels (docs/stream-v1.md), included once per
 * instruction set by _native_kernels.c, with NAME(x) giving each copy its own
 * symbols.  It transcribes the NumPy reference (_reference.py), whose bytes
 * it gives on every CPU. */

static inline uint64_t NAME(mix64)(uint64_t z)
{
    z = (z ^ (z >> 30)) * MIX1;
    z = (z ^ (z >> 27)) * MIX2;
    return z ^ (z >> 31);
}

static inline uint64_t NAME(extra_word)(uint64_t extra_base, int64_t j)
{
    return NAME(mix64)(extra_base + (uint64_t)(j + 1) * GAMMA);
}

static inline double NAME(exp_neg)(double t, const double *restrict c)
{
    const double *coef = c + C_EXP;
    int64_t k = (int64_t)(t * c[C_LOG2E] + 0.5);
    double kf = (double)k;
    double s = (kf * c[C_LN2_HI] - t) + kf * c[C_LN2_LO];
    double s2 = s * s;
    double s4 = s2 * s2;
    double s8 = s4 * s4;
    double b0 = (coef[0] + coef[1] * s) + (coef[2] + coef[3] * s) * s2;
    double b1 = (coef[4] + coef[5] * s) + (coef[6] + coef[7] * s) * s2;
    double b2 = (coef[8] + coef[9] * s) + (coef[10] + coef[11] * s) * s2;
    double b3 = coef[12] + coef[13] * s;
    return ((b0 + b1 * s4) + (b2 + b3 * s4) * s8) * c[C_POW2_NEG + k];
}

static double NAME(neg_log_unit)(uint64_t word, const double *restrict c)
{
    const double *coef = c + C_LOG;
    uint64_t n = (word >> 11) + 1;
    int64_t b = 0;
    for (int step = 32; step >= 1; step >>= 1) {
        if ((n >> (b + step)) != 0) {
            b += step;
        }
    }
    double mantissa = (double)(int64_t)n * c[C_POW2_NEG + b];
    if (mantissa > c[C_SQRT2]) {
        mantissa = mantissa * 0.5;
        b += 1;
    }
    double s = (mantissa - 1.0) / (mantissa + 1.0);
    double s2 = s * s;
    double q = coef[11];
    for (int i = 10; i >= 0; i--) {
        q = q * s2 + coef[i];
    }
    double log_mantissa = (s + s) * q;
    double e = (double)(b - 53);
    return -(e * c[C_LN2_HI] + (e * c[C_LN2_LO] + log_mantissa));
}

/* Marsaglia's tail beyond r; *j is the index's word counter. */
static double NAME(tail)(uint64_t extra_base, int64_t *j, const double *restrict c)
{
    for (;;) {
        double a = NAME(neg_log_unit)(NAME(extra_word)(extra_base, *j), c) * c[C_INV_R];
        double b = NAME(neg_log_unit)(NAME(extra_word)(extra_base, *j + 1), c);
        *j += 2;
        if (b + b > a * a) {
            return c[C_R] + a;
        }
    }
}

static int NAME(under_density)(uint64_t extra_base, int64_t j, int64_t layer, double magnitude,
                               const struct zig *restrict z, const double *restrict c)
{
    double u = (double)(int64_t)(NAME(extra_word)(extra_base, j) >> 11) * UNIT53;
    double y = z->low[layer] + u * (z->high[layer] - z->low[layer]);
    return y < NAME(exp_neg)(0.5 * (magnitude * magnitude), c);
}

/* The rare path of a float32 index from its state: candidate (x, h) that
 * failed the hot test, private words used so far j.  With `redraw`, the
 * candidate has already failed its wedge test too (words 0 .. j - 1 used), and
 * the next step is a fresh candidate. */
static float NAME(continue_f32)(uint64_t extra_base, int64_t j, float x, uint64_t h, int redraw,
                                const struct zig *restrict z, const double *restrict c)
{
    const float *width = (const float *)z->width;
    const int32_t *inside = (const int32_t *)z->inside;
    for (;;) {
        if (!redraw) {
            int64_t layer = (int64_t)(h & 255);
            if (z->has_tail && layer == 0) {
                float value = (float)NAME(tail)(extra_base, &j, c);
                return ((h >> 8) & 1) ? -value : value;
            }
            int accepted = NAME(under_density)(extra_base, j, layer, (double)fabsf(x), z, c);
            j += 1;
            if (accepted) {
                return x;
            }
        }
        redraw = 0;
        h = NAME(extra_word)(extra_base, j) & LOW32;
        j += 1;
        int32_t u = (int32_t)(h >> 9);
        x = (float)u * width[h & 511];
        if (u < inside[h & 511]) {
            return x;
        }
    }
}

static float NAME(slow_f32)(int64_t position, float x, uint64_t h, uint64_t key_extra,
                            const struct zig *restrict z, const double *restrict c)
{
    uint64_t extra_base = NAME(mix64)(key_extra + (uint64_t)position * GAMMA);
    return NAME(continue_f32)(extra_base, 0, x, h, 0, z, c);
}

/* The misses of one float32 block (offsets[0 .. misses - 1] into block, whose
 * first index is `first`), in two passes: the first wedge test of every miss
 * runs branch-free over all of them (it vectorises; a tail miss computes one
 * it ignores), then each miss is finished on its own from that state. */
static void NAME(resolve_f32)(float *restrict block, const int32_t *restrict offsets,
                              int64_t misses, int64_t first, uint64_t key_main,
                              uint64_t key_extra, float m, const struct zig *restrict z,
                              const double *restrict c)
{
    const float *width = (const float *)z->width;
    float xs[BLOCK];
    uint32_t hs[BLOCK];
    uint64_t bases[BLOCK];
    uint8_t under[BLOCK];
    for (int64_t j = 0; j < misses; j++) {
        int64_t position = first + offsets[j];
        uint64_t w = NAME(mix64)(key_main + (uint64_t)(position >> 1) * GAMMA);
        uint32_t h = (uint32_t)((w >> (32 * (position & 1))) & LOW32);
        hs[j] = h;
        xs[j] = (float)(int32_t)(h >> 9) * width[h & 511];
        bases[j] = NAME(mix64)(key_extra + (uint64_t)position * GAMMA);
    }
    for (int64_t j = 0; j < misses; j++) {
        int64_t layer = (int64_t)(hs[j] & 255);
        double u = (double)(int64_t)(NAME(extra_word)(bases[j], 0) >> 11) * UNIT53;
        double y = z->low[layer] + u * (z->high[layer] - z->low[layer]);
        double magnitude = (double)fabsf(xs[j]);
        under[j] = y < NAME(exp_neg)(0.5 * (magnitude * magnitude), c);
    }
    for (int64_t j = 0; j < misses; j++) {
        uint32_t h = hs[j];
        float value;
        if (z->has_tail && (h & 255) == 0) {
            value = NAME(continue_f32)(bases[j], 0, xs[j], h, 0, z, c);
        } else if (under[j]) {
            value = xs[j];
        } else {
            value = NAME(continue_f32)(bases[j], 1, xs[j], h, 1, z, c);
        }
        block[offsets[j]] = value * m;
    }
}

static double NAME(slow_f64)(int64_t position, double x, uint64_t h, uint64_t key_extra,
                             const struct zig *restrict z, const double *restrict c)
{
    uint64_t extra_base = NAME(mix64)(key_extra + (uint64_t)position * GAMMA);
    int64_t j = 0;
    const double *width = (const double *)z->width;
    const int64_t *inside = (const int64_t *)z->inside;
    for (;;) {
        int64_t layer = (int64_t)(h & 255);
        if (z->has_tail && layer == 0) {
            double value = NAME(tail)(extra_base, &j, c);
            return ((h >> 8) & 1) ? -value : value;
        }
        int accepted = NAME(under_density)(extra_base, j, layer, fabs(x), z, c);
        j += 1;
        if (accepted) {
            return x;
        }
        h = NAME(extra_word)(extra_base, j);
        j += 1;
        int64_t u = (int64_t)(h >> 11);
        x = (double)u * width[h & 511];
        if (u < inside[h & 511]) {
            return x;
        }
    }
}

/* z for one float32 index from its 32-bit word h (range edges). */
static float NAME(value_f32)(uint32_t h, int64_t position, uint64_t key_extra,
                             const struct zig *restrict z, const double *restrict c)
{
    const float *width = (const float *)z->width;
    const int32_t *inside = (const int32_t *)z->inside;
    int32_t u = (int32_t)(h >> 9);
    float x = (float)u * width[h & 511];
    if (u < inside[h & 511]) {
        return x;
    }
    return NAME(slow_f32)(position, x, h, key_extra, z, c);
}

/* The offsets of the set flags among missed[0 .. count - 1] (about 1.5 % of
 * them), in order, into offsets; returns how many.  On x86 sixty-four flags
 * become one bit mask (SSE2, in every x86-64 CPU) whose set bits are walked. */
static inline int64_t NAME(collect_misses)(const uint8_t *restrict missed, int64_t count,
                                           int32_t *restrict offsets)
{
    int64_t misses = 0;
    int64_t k = 0;
#if defined(__SSE2__)
    const __m128i zero = _mm_setzero_si128();
    for (; k + 64 <= count; k += 64) {
        uint64_t clear = 0;
        for (int part = 0; part < 4; part++) {
            __m128i flags = _mm_loadu_si128((const __m128i *)(missed + k + 16 * part));
            uint64_t bits = (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(flags, zero));
            clear |= bits << (16 * part);
        }
        uint64_t set = ~clear;
        while (set != 0) {
            offsets[misses++] = (int32_t)(k + __builtin_ctzll(set));
            set &= set - 1;
        }
    }
#endif
    for (; k < count; k++) {
        offsets[misses] = (int32_t)k;
        misses += missed[k];
    }
    return misses;
}

/* Hot pass over `pairs` words: branch-free so that it vectorises.  `table`
 * packs each index's inside bound (high half) and width (low half, float32
 * bits), so one gather serves both lookups. */
static void NAME(hot_f32)(float *restrict out, uint8_t *restrict missed, uint64_t first_pair,
                          int64_t pairs, uint64_t key_main, float m,
                          const uint64_t *restrict table)
{
    for (int64_t k = 0; k < pairs; k++) {
        uint64_t w = NAME(mix64)(key_main + (first_pair + (uint64_t)k) * GAMMA);
        uint32_t lo = (uint32_t)w;
        uint32_t hi = (uint32_t)(w >> 32);
        uint64_t entry_lo = table[lo & 511];
        uint64_t entry_hi = table[hi & 511];
        int32_t u_lo = (int32_t)(lo >> 9);
        int32_t u_hi = (int32_t)(hi >> 9);
        float width_lo, width_hi;
        uint32_t bits_lo = (uint32_t)entry_lo, bits_hi = (uint32_t)entry_hi;
        __builtin_memcpy(&width_lo, &bits_lo, 4);
        __builtin_memcpy(&width_hi, &bits_hi, 4);
        out[2 * k] = ((float)u_lo * width_lo) * m;
        out[2 * k + 1] = ((float)u_hi * width_hi) * m;
        missed[2 * k] = u_lo >= (int32_t)(entry_lo >> 32);
        missed[2 * k + 1] = u_hi >= (int32_t)(entry_hi >> 32);
    }
}

static void NAME(hot_f64)(double *restrict out, uint8_t *restrict missed, uint64_t first,
                          int64_t count, uint64_t key_main, double m,
                          const double *restrict width, const int64_t *restrict inside)
{
    for (int64_t k = 0; k < count; k++) {
        uint64_t h = NAME(mix64)(key_main + (first + (uint64_t)k) * GAMMA);
        int64_t u = (int64_t)(h >> 11);
        out[k] = ((double)u * width[h & 511]) * m;
        missed[k] = u >= inside[h & 511];
    }
}

EXPORT void NAME(vsgen_normal_f32)(float *out, int64_t n, int64_t start, uint64_t key_main,
                                   uint64_t key_extra, double multiplier, const struct zig *z,
                                   const double *c)
{
    float m = (float)multiplier;
    const float *width = (const float *)z->width;
    const int32_t *inside = (const int32_t *)z->inside;
    uint8_t missed[BLOCK];
    int32_t offsets[BLOCK];
    uint64_t table[512];
    for (int index = 0; index < 512; index++) {
        uint32_t bits;
        __builtin_memcpy(&bits, &width[index], 4);
        table[index] = ((uint64_t)(uint32_t)inside[index] << 32) | bits;
    }
    int64_t i = 0;
    if (n > 0 && (start & 1)) {
        uint64_t w = NAME(mix64)(key_main + (uint64_t)(start >> 1) * GAMMA);
        out[0] = NAME(value_f32)((uint32_t)(w >> 32), start, key_extra, z, c) * m;
        i = 1;
    }
    while (n - i >= 2) {
        int64_t count = (n - i) & ~(int64_t)1;
        if (count > BLOCK) {
            count = BLOCK;
        }
        float *block = out + i;
        NAME(hot_f32)(block, missed, (uint64_t)(start + i) >> 1, count >> 1, key_main, m, table);
        int64_t misses = NAME(collect_misses)(missed, count, offsets);
        NAME(resolve_f32)(block, offsets, misses, start + i, key_main, key_extra, m, z, c);
        i += count;
    }
    if (i < n) {
        uint64_t w = NAME(mix64)(key_main + (uint64_t)((start + i) >> 1) * GAMMA);
        out[i] = NAME(value_f32)((uint32_t)w, start + i, key_extra, z, c) * m;
    }
}

EXPORT void NAME(vsgen_normal_f64)(double *out, int64_t n, int64_t start, uint64_t key_main,
                                   uint64_t key_extra, double multiplier, const struct zig *z,
                                   const double *c)
{
    const double *width = (const double *)z->width;
    const int64_t *inside = (const int64_t *)z->inside;
    uint8_t missed[BLOCK];
    for (int64_t i = 0; i < n; i += BLOCK) {
        int64_t count = n - i < BLOCK ? n - i : BLOCK;
        double *block = out + i;
        NAME(hot_f64)(block, missed, (uint64_t)(start + i), count, key_main, multiplier, width,
                      inside);
        for (int64_t k = 0; k < count; k++) {
            if (missed[k]) {
                int64_t position = start + i + k;
                uint64_t h = NAME(mix64)(key_main + (uint64_t)position * GAMMA);
                double x = (double)(int64_t)(h >> 11) * width[h & 511];
                block[k] = NAME(slow_f64)(position, x, h, key_extra, z, c) * multiplier;
            }
        }
    }
}

static inline float NAME(uniform_value_f32)(uint32_t h)
{
    return (float)(int32_t)(h >> 8) * UNIFORM32_SCALE - 1.0f;
}

EXPORT void NAME(vsgen_uniform_f32)(float *restrict out, int64_t n, int64_t start,
                                    uint64_t key_main, double multiplier)
{
    float m = (float)multiplier;
    int64_t i = 0;
    if (n > 0 && (start & 1)) {
        uint64_t w = NAME(mix64)(key_main + (uint64_t)(start >> 1) * GAMMA);
        out[0] = NAME(uniform_value_f32)((uint32_t)(w >> 32)) * m;
        i = 1;
    }
    int64_t pairs = (n - i) >> 1;
    uint64_t first_pair = (uint64_t)(start + i) >> 1;
    float *restrict body = out + i;
    for (int64_t k = 0; k < pairs; k++) {
        uint64_t w = NAME(mix64)(key_main + (first_pair + (uint64_t)k) * GAMMA);
        body[2 * k] = NAME(uniform_value_f32)((uint32_t)w) * m;
        body[2 * k + 1] = NAME(uniform_value_f32)((uint32_t)(w >> 32)) * m;
    }
    i += 2 * pairs;
    if (i < n) {
        uint64_t w = NAME(mix64)(key_main + (uint64_t)((start + i) >> 1) * GAMMA);
        out[i] = NAME(uniform_value_f32)((uint32_t)w) * m;
    }
}

EXPORT void NAME(vsgen_uniform_f64)(double *restrict out, int64_t n, int64_t start,
                                    uint64_t key_main, double multiplier)
{
    for (int64_t i = 0; i < n; i++) {
        uint64_t w = NAME(mix64)(key_main + (uint64_t)(start + i) * GAMMA);
        out[i] = ((double)(int64_t)(w >> 11) * UNIFORM64_SCALE - 1.0) * multiplier;
    }
}

/* float32 bits -> binary16 bits, rounded to nearest, ties to even (IEEE 754,
 * as NumPy's float32 -> float16 cast): overflow gives infinity, underflow a
 * signed zero, NaN a quiet NaN.  Every case is computed and one selected, so
 * that the loops calling this vectorise. */
static inline uint16_t NAME(half_bits)(uint32_t f)
{
    uint32_t sign = (f >> 16) & 0x8000u;
    uint32_t a = f & 0x7FFFFFFFu;
    /* A normal binary16 (|x| >= 2**-14): exponent rebiased from 127 to 15,
     * 13 bits rounded off; a carry may reach infinity (0x7C00), as it should. */
    uint32_t r = a - 0x38000000u;
    uint32_t normal = (r + 0xFFFu + ((r >> 13) & 1u)) >> 13;
    /* A subnormal binary16 (or zero): the 24-bit significand in units of
     * 2**-24, i.e. shifted right by 126 - e (capped: from 25 on, all is lost). */
    int32_t shift = 126 - (int32_t)(a >> 23);
    shift = shift < 14 ? 14 : shift;
    shift = shift > 25 ? 25 : shift;
    uint32_t significand = (a & 0x7FFFFFu) | 0x800000u;
    uint32_t q = significand >> shift;
    uint32_t rest = significand & ((1u << shift) - 1u);
    uint32_t halfway = 1u << (shift - 1);
    uint32_t subnormal = q + ((uint32_t)(rest > halfway) | ((uint32_t)(rest == halfway) & q));
    uint32_t special = a > 0x7F800000u ? 0x7E00u : 0x7C00u; /* NaN, or infinity/overflow */
    uint32_t magnitude = a >= 0x38800000u ? normal : subnormal;
    magnitude = a >= 0x47800000u ? special : magnitude;
    return (uint16_t)(sign | magnitude);
}

/* float32 bits -> bfloat16 bits, rounded to nearest, ties to even (as
 * ml_dtypes' cast); NaN stays a quiet NaN of the same sign. */
static inline uint16_t NAME(bfloat16_bits)(uint32_t f)
{
    if ((f & 0x7FFFFFFFu) > 0x7F800000u) {
        return (uint16_t)((f >> 16) | 0x40u);
    }
    return (uint16_t)((f + 0x7FFFu + ((f >> 16) & 1u)) >> 16);
}

/* The bits of x clamped to [lo, hi] (NaN passes unchanged). */
static inline uint32_t NAME(clamped_bits)(float x, float lo, float hi)
{
    x = x < lo ? lo : x;
    x = x > hi ? hi : x;
    uint32_t bits;
    __builtin_memcpy(&bits, &x, 4);
    return bits;
}

/* out[i] = in[i] clamped to [low, high] (when `clamp`), then rounded to
 * binary16 (`bfloat16` = 0) or bfloat16 (1).  Clamping in float32 first gives
 * the bytes of rounding first and clamping after: low and high are values of
 * the 16-bit type, which rounding keeps, and rounding is monotone. */
EXPORT void NAME(vsgen_round_16)(uint16_t *restrict out, const float *restrict in, int64_t n,
                                 int64_t bfloat16, int64_t clamp, double low, double high)
{
    float lo = (float)low, hi = (float)high;
    if (!clamp) {
        lo = -__builtin_inff();
        hi = __builtin_inff();
    }
    /* Two loops, so that each vectorises with its own conversion. */
    if (bfloat16) {
        for (int64_t i = 0; i < n; i++) {
            out[i] = NAME(bfloat16_bits)(NAME(clamped_bits)(in[i], lo, hi));
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            out[i] = NAME(half_bits)(NAME(clamped_bits)(in[i], lo, hi));
        }
    }
}

/* out[i] = the float32 value of index start + i (vsgen_normal_f32 with
 * ziggurat z, or vsgen_uniform_f32 when z is NULL) rounded to a 16-bit type
 * and clamped (vsgen_round_16), block by block through a buffer that stays
 * in the core's cache: the bytes of filling float32 and rounding after. */
EXPORT void NAME(vsgen_fill_16)(uint16_t *out, int64_t n, int64_t start, uint64_t key_main,
                                uint64_t key_extra, double multiplier, const struct zig *z,
                                const double *c, int64_t bfloat16, int64_t clamp, double low,
                                double high)
{
    float buffer[NARROW_BLOCK];
    for (int64_t i = 0; i < n; i += NARROW_BLOCK) {
        int64_t count = n - i < NARROW_BLOCK ? n - i : NARROW_BLOCK;
        if (z != 0) {
            NAME(vsgen_normal_f32)(buffer, count, start + i, key_main, key_extra, multiplier, z, c);
        } else {
            NAME(vsgen_uniform_f32)(buffer, count, start + i, key_main, multiplier);
        }
        NAME(vsgen_round_16)(out + i, buffer, count, bfloat16, clamp, low, high);
    }
}
