// Counts heap allocations so benchmarks can prove the real-time path allocates nothing per frame.
// Linked into the duplex executable only: its malloc family interposes glibc's (the executable's
// definitions win symbol resolution) and forwards to glibc's own entry points. Counting is off
// until a benchmark switches it on; when off the cost is one relaxed load per call.
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc_counter.h"

// Under a sanitizer the sanitizer owns malloc (its interceptors must see every call): the
// counter then interposes nothing and says so, and benchmarks report "not counted".
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define DUPLEX_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define DUPLEX_SANITIZED 1
#endif
#endif

#ifdef DUPLEX_SANITIZED
void duplex_alloc_counting(int enabled) { (void)enabled; }
uint64_t duplex_alloc_count(void) { return 0; }
int duplex_alloc_counter_available(void) { return 0; }
#else

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static atomic_int counting;
static atomic_uint_fast64_t allocations;

static inline void note(void) {
    if (atomic_load_explicit(&counting, memory_order_relaxed))
        atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
}

int duplex_alloc_counter_available(void) { return 1; }
void duplex_alloc_counting(int enabled) { atomic_store(&counting, enabled); }
uint64_t duplex_alloc_count(void) { return atomic_load(&allocations); }

void *malloc(size_t n) { note(); return __libc_malloc(n); }
void *calloc(size_t count, size_t size) { note(); return __libc_calloc(count, size); }
void *realloc(void *p, size_t n) { note(); return __libc_realloc(p, n); }
void free(void *p) { __libc_free(p); }
void *memalign(size_t alignment, size_t n) { note(); return __libc_memalign(alignment, n); }
void *aligned_alloc(size_t alignment, size_t n) { note(); return __libc_memalign(alignment, n); }
int posix_memalign(void **out, size_t alignment, size_t n) {
    note();
    void *p = __libc_memalign(alignment, n);
    if (!p) return 12; /* ENOMEM */
    *out = p;
    return 0;
}
#endif
