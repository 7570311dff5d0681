/* Counts heap allocations of a process: build as a shared object and LD_PRELOAD it.
 *
 *   cc -O2 -shared -fPIC -o tools/reference/out/alloc_count.so tools/alloc_count.c
 *   LD_PRELOAD=tools/reference/out/alloc_count.so duplex codec bench ...
 *
 * Every malloc, calloc, realloc, memalign, posix_memalign, aligned_alloc and valloc call is
 * counted (then forwarded to glibc's own implementation); `duplex codec bench` reads the count
 * through dlsym("duplex_alloc_count") around each encodeStep/decodeStep, so the number it reports
 * is exactly the allocations made inside the codec per frame, by any library (Swift runtime,
 * Foundation, OpenBLAS). Frees are not counted: an allocation is the event the real-time path
 * must not have. tools/bench_mimi.py builds and uses it. */
#define _GNU_SOURCE
#include <stddef.h>
#include <errno.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static long counter;

long duplex_alloc_count(void) { return __atomic_load_n(&counter, __ATOMIC_RELAXED); }

static inline void count(void) { __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED); }

void *malloc(size_t n) { count(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count(); return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { count(); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { count(); return __libc_memalign(a, n); }
void *valloc(size_t n) { count(); return __libc_memalign(4096, n); }
int posix_memalign(void **out, size_t a, size_t n) {
    count();
    void *p = __libc_memalign(a, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
