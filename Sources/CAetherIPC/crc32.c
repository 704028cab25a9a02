#include "aether_ipc.h"

#include <string.h>

// CRC-32/ISO-HDLC: reflected polynomial 0xEDB88320, init and xorout 0xFFFFFFFF — the checksum
// of zlib's crc32() and Python's zlib.crc32(), so the Python runtime needs only the stdlib.

static uint32_t table[8][256];

__attribute__((constructor)) static void build_tables(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xFF];
    }
}

// Works on the inverted register: callers of the public functions see plain CRC values.
static uint32_t slice8_raw(uint32_t c, const unsigned char *p, size_t n) {
    while (n && ((uintptr_t)p & 7)) {
        c = table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
        n--;
    }
    while (n >= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= c;
        c = table[7][lo & 0xFF] ^ table[6][(lo >> 8) & 0xFF] ^ table[5][(lo >> 16) & 0xFF] ^ table[4][lo >> 24]
            ^ table[3][hi & 0xFF] ^ table[2][(hi >> 8) & 0xFF] ^ table[1][(hi >> 16) & 0xFF] ^ table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) c = table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c;
}

uint32_t aether_crc32_slice8(uint32_t crc, const void *data, size_t length) {
    return ~slice8_raw(~crc, (const unsigned char *)data, length);
}

// Table lookups gain nothing from fusing (they run at ~1/20 of memcpy speed): copy, then
// checksum the destination while it is in cache.
uint32_t aether_crc32_copy_slice8(uint32_t crc, void *destination, const void *source, size_t length) {
    if (length) memcpy(destination, source, length);
    return ~slice8_raw(~crc, (const unsigned char *)destination, length);
}

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

int aether_crc32_has_pclmul(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    return (ecx & bit_PCLMUL) && (ecx & bit_SSE4_1);
}

// The folding kernels below exist twice: checksum only, and copy + checksum ("fused"), which
// stores every vector it loads from the source to the destination before folding that same
// register, so the bytes are read once and the checksum is exactly that of the bytes stored.
// Both come from one always-inlined body with a constant `copying` flag (AETHER_FOLD_BODY),
// so the folding arithmetic is written once.
#define AETHER_PCLMUL __attribute__((target("pclmul,sse4.1")))
#define AETHER_VPCLMUL __attribute__((target("vpclmulqdq,avx2,pclmul,sse4.1")))
#define AETHER_INLINE static inline __attribute__((always_inline))

// Loads 16 bytes at `offset`, storing them to the destination too when copying.
#define AETHER_LOAD128(offset)                                                                  \
    ({                                                                                          \
        __m128i loaded_ = _mm_loadu_si128((const __m128i *)(src + (offset)));                   \
        if (copying) _mm_storeu_si128((__m128i *)(dst + (offset)), loaded_);                    \
        loaded_;                                                                                \
    })
#define AETHER_LOAD256(offset)                                                                  \
    ({                                                                                          \
        __m256i loaded_ = _mm256_loadu_si256((const __m256i *)(src + (offset)));                \
        if (copying) _mm256_storeu_si256((__m256i *)(dst + (offset)), loaded_);                 \
        loaded_;                                                                                \
    })

// Folds the remaining 16-byte blocks into the 128-bit remainder `x1`, then reduces it to the
// 32-bit CRC (128 -> 64 bits, Barrett reduction). `len` is a multiple of 16.
AETHER_INLINE AETHER_PCLMUL uint32_t reduce128_body(
    __m128i x1, unsigned char *dst, const unsigned char *src, size_t len, const int copying) {
    static const uint64_t __attribute__((aligned(16))) k3k4[] = {0x01751997d0, 0x00ccaa009e};
    static const uint64_t __attribute__((aligned(16))) k5k0[] = {0x0163cd6124, 0x0000000000};
    static const uint64_t __attribute__((aligned(16))) poly[] = {0x01db710641, 0x01f7011641};
    __m128i x0 = _mm_load_si128((const __m128i *)k3k4), x2, x3, x5;

    // Remaining 16-byte blocks.
    while (len >= 16) {
        x2 = AETHER_LOAD128(0);
        x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
        x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
        x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
        src += 16;
        if (copying) dst += 16;
        len -= 16;
    }

    // 128 -> 64 bits.
    x2 = _mm_clmulepi64_si128(x1, x0, 0x10);
    x3 = _mm_setr_epi32(~0, 0, ~0, 0);
    x1 = _mm_srli_si128(x1, 8);
    x1 = _mm_xor_si128(x1, x2);
    x0 = _mm_loadl_epi64((const __m128i *)k5k0);
    x2 = _mm_srli_si128(x1, 4);
    x1 = _mm_and_si128(x1, x3);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_xor_si128(x1, x2);

    // Barrett reduction to 32 bits.
    x0 = _mm_load_si128((const __m128i *)poly);
    x2 = _mm_and_si128(x1, x3);
    x2 = _mm_clmulepi64_si128(x2, x0, 0x10);
    x2 = _mm_and_si128(x2, x3);
    x2 = _mm_clmulepi64_si128(x2, x0, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    return (uint32_t)_mm_extract_epi32(x1, 1);
}

// Folding with carry-less multiplication, after Intel's "Fast CRC Computation for Generic
// Polynomials Using PCLMULQDQ Instruction" (Gopal et al., 2009), with the bit-reflected
// constants for 0xEDB88320 from the paper's appendix (as in zlib's crc32_simd.c). Needs
// length >= 64 and a multiple of 16; works on the inverted register.
AETHER_INLINE AETHER_PCLMUL uint32_t fold_body(
    uint32_t crc, unsigned char *dst, const unsigned char *src, size_t len, const int copying) {
    static const uint64_t __attribute__((aligned(16))) k1k2[] = {0x0154442bd4, 0x01c6e41596};
    static const uint64_t __attribute__((aligned(16))) k3k4[] = {0x01751997d0, 0x00ccaa009e};
    __m128i x0, x1, x2, x3, x4, x5, x6, x7, x8, y5, y6, y7, y8;

    x1 = AETHER_LOAD128(0x00);
    x2 = AETHER_LOAD128(0x10);
    x3 = AETHER_LOAD128(0x20);
    x4 = AETHER_LOAD128(0x30);
    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)crc));
    x0 = _mm_load_si128((const __m128i *)k1k2);
    src += 64;
    if (copying) dst += 64;
    len -= 64;

    // Four independent 128-bit lanes, folded 64 bytes at a time.
    while (len >= 64) {
        x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
        x6 = _mm_clmulepi64_si128(x2, x0, 0x00);
        x7 = _mm_clmulepi64_si128(x3, x0, 0x00);
        x8 = _mm_clmulepi64_si128(x4, x0, 0x00);
        x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
        x2 = _mm_clmulepi64_si128(x2, x0, 0x11);
        x3 = _mm_clmulepi64_si128(x3, x0, 0x11);
        x4 = _mm_clmulepi64_si128(x4, x0, 0x11);
        y5 = AETHER_LOAD128(0x00);
        y6 = AETHER_LOAD128(0x10);
        y7 = AETHER_LOAD128(0x20);
        y8 = AETHER_LOAD128(0x30);
        x1 = _mm_xor_si128(_mm_xor_si128(x1, x5), y5);
        x2 = _mm_xor_si128(_mm_xor_si128(x2, x6), y6);
        x3 = _mm_xor_si128(_mm_xor_si128(x3, x7), y7);
        x4 = _mm_xor_si128(_mm_xor_si128(x4, x8), y8);
        src += 64;
        if (copying) dst += 64;
        len -= 64;
    }

    // Fold the four lanes into one.
    x0 = _mm_load_si128((const __m128i *)k3k4);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x3), x5);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x4), x5);
    return reduce128_body(x1, dst, src, len, copying);
}

AETHER_PCLMUL static uint32_t fold_raw(uint32_t crc, const unsigned char *buf, size_t len) {
    return fold_body(crc, NULL, buf, len, 0);
}

AETHER_PCLMUL static uint32_t copy_fold_raw(uint32_t crc, unsigned char *dst, const unsigned char *src, size_t len) {
    return fold_body(crc, dst, src, len, 1);
}

uint32_t aether_crc32_pclmul(uint32_t crc, const void *data, size_t length) {
    const unsigned char *p = (const unsigned char *)data;
    uint32_t c = ~crc;
    if (length >= 64) {
        size_t chunk = length & ~(size_t)15;
        c = fold_raw(c, p, chunk);
        p += chunk;
        length -= chunk;
    }
    return ~slice8_raw(c, p, length);
}

uint32_t aether_crc32_copy_pclmul(uint32_t crc, void *destination, const void *source, size_t length) {
    unsigned char *dst = (unsigned char *)destination;
    const unsigned char *src = (const unsigned char *)source;
    uint32_t c = ~crc;
    if (length >= 64) {
        size_t chunk = length & ~(size_t)15;
        c = copy_fold_raw(c, dst, src, chunk);
        dst += chunk;
        src += chunk;
        length -= chunk;
    }
    // The last bytes (< 64, or < 16 after folding): copy, then checksum what was stored.
    if (length) memcpy(dst, src, length);
    return ~slice8_raw(c, dst, length);
}

// The same folding on 256-bit registers (VPCLMULQDQ + AVX2): eight 128-bit lanes, 128 bytes per
// step. The fold constants for a distance of D bits are reflect(x^(D+32) mod P) << 1 and
// reflect(x^(D-32) mod P) << 1; D = 1024 here (the paper's k1, k2 are D = 512, k3, k4 D = 128).
// Needs length >= 128 and a multiple of 16; works on the inverted register.
//
// On AMD Zen 3 (the project's EPYC VMs) one 256-bit VPCLMULQDQ issues every 2 cycles, so this
// loop is bound by the multiplier at 8 bytes per cycle (~22 GB/s); more lanes (8 x 256 bits
// were measured) do not help, while the loads and stores of the fused copy come for free.
AETHER_INLINE AETHER_VPCLMUL uint32_t fold_wide_body(
    uint32_t crc, unsigned char *dst, const unsigned char *src, size_t len, const int copying) {
    const __m256i k = _mm256_setr_epi64x(0x01e88ef372, 0x014a7fe880, 0x01e88ef372, 0x014a7fe880);
    __m256i y0 = AETHER_LOAD256(0x00);
    __m256i y1 = AETHER_LOAD256(0x20);
    __m256i y2 = AETHER_LOAD256(0x40);
    __m256i y3 = AETHER_LOAD256(0x60);
    y0 = _mm256_xor_si256(y0, _mm256_zextsi128_si256(_mm_cvtsi32_si128((int)crc)));
    src += 128;
    if (copying) dst += 128;
    len -= 128;
#define AETHER_FOLD256(y, offset)                                                                          \
    y = _mm256_xor_si256(_mm256_xor_si256(_mm256_clmulepi64_epi128(y, k, 0x00), _mm256_clmulepi64_epi128(y, k, 0x11)), \
                         AETHER_LOAD256(offset))
    while (len >= 128) {
        AETHER_FOLD256(y0, 0x00);
        AETHER_FOLD256(y1, 0x20);
        AETHER_FOLD256(y2, 0x40);
        AETHER_FOLD256(y3, 0x60);
        src += 128;
        if (copying) dst += 128;
        len -= 128;
    }
#undef AETHER_FOLD256
    // Fold the eight lanes, in address order, into one with the 128-bit constants.
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009e, 0x01751997d0);
    __m128i lanes[8] = {
        _mm256_castsi256_si128(y0), _mm256_extracti128_si256(y0, 1), _mm256_castsi256_si128(y1),
        _mm256_extracti128_si256(y1, 1), _mm256_castsi256_si128(y2), _mm256_extracti128_si256(y2, 1),
        _mm256_castsi256_si128(y3), _mm256_extracti128_si256(y3, 1),
    };
    __m128i x1 = lanes[0];
    for (int i = 1; i < 8; i++) {
        __m128i low = _mm_clmulepi64_si128(x1, k3k4, 0x00);
        __m128i high = _mm_clmulepi64_si128(x1, k3k4, 0x11);
        x1 = _mm_xor_si128(_mm_xor_si128(high, low), lanes[i]);
    }
    return reduce128_body(x1, dst, src, len, copying);
}

AETHER_VPCLMUL static uint32_t fold_raw_wide(uint32_t crc, const unsigned char *buf, size_t len) {
    return fold_wide_body(crc, NULL, buf, len, 0);
}

AETHER_VPCLMUL static uint32_t copy_fold_raw_wide(
    uint32_t crc, unsigned char *dst, const unsigned char *src, size_t len) {
    return fold_wide_body(crc, dst, src, len, 1);
}

#undef AETHER_LOAD128
#undef AETHER_LOAD256

int aether_crc32_has_vpclmul(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!aether_crc32_has_pclmul() || !__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
    return (ebx & bit_AVX2) && (ecx & bit_VPCLMULQDQ);
}

uint32_t aether_crc32_vpclmul(uint32_t crc, const void *data, size_t length) {
    // Below 128 bytes there is not one full wide step: the 128-bit kernel does the rest.
    if (length < 128) return aether_crc32_pclmul(crc, data, length);
    size_t chunk = length & ~(size_t)15;
    uint32_t c = fold_raw_wide(~crc, (const unsigned char *)data, chunk);
    return ~slice8_raw(c, (const unsigned char *)data + chunk, length - chunk);
}

uint32_t aether_crc32_copy_vpclmul(uint32_t crc, void *destination, const void *source, size_t length) {
    if (length < 128) return aether_crc32_copy_pclmul(crc, destination, source, length);
    unsigned char *dst = (unsigned char *)destination;
    const unsigned char *src = (const unsigned char *)source;
    size_t chunk = length & ~(size_t)15;
    uint32_t c = copy_fold_raw_wide(~crc, dst, src, chunk);
    if (length > chunk) memcpy(dst + chunk, src + chunk, length - chunk);
    return ~slice8_raw(c, dst + chunk, length - chunk);
}
#else
int aether_crc32_has_pclmul(void) { return 0; }
int aether_crc32_has_vpclmul(void) { return 0; }
uint32_t aether_crc32_vpclmul(uint32_t crc, const void *data, size_t length) {
    return aether_crc32_slice8(crc, data, length);
}
uint32_t aether_crc32_pclmul(uint32_t crc, const void *data, size_t length) {
    return aether_crc32_slice8(crc, data, length);
}
uint32_t aether_crc32_copy_vpclmul(uint32_t crc, void *destination, const void *source, size_t length) {
    return aether_crc32_copy_slice8(crc, destination, source, length);
}
uint32_t aether_crc32_copy_pclmul(uint32_t crc, void *destination, const void *source, size_t length) {
    return aether_crc32_copy_slice8(crc, destination, source, length);
}
#endif
