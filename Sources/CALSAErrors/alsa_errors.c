#include "alsa_errors.h"

#include <alsa/asoundlib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum { SLOTS = 16, SLOT_BYTES = 256 };

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static char slots[SLOTS][SLOT_BYTES];
/* Messages reported so far (slot = index % SLOTS). Written under the lock; read without it, so
   taking a mark before a transfer costs one atomic load and never blocks an audio thread. */
static _Atomic uint64_t written;

static void handler(const char *file, int line, const char *function, int err, const char *fmt, ...) {
    (void)file; (void)line; (void)function;
    char text[SLOT_BYTES];
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    if (n < 0) { text[0] = 0; n = 0; }
    if ((size_t)n >= sizeof text) n = (int)sizeof text - 1;
    /* Like alsa-lib's own printer: a system error's text after the message. */
    if (err != 0 && (size_t)n < sizeof text - 1) {
        snprintf(text + n, sizeof text - (size_t)n, ": %s", snd_strerror(err));
    }
    /* Messages end with a newline now and then; the caller joins them on one line. */
    size_t length = strlen(text);
    while (length > 0 && (text[length - 1] == '\n' || text[length - 1] == ' ')) text[--length] = 0;

    pthread_mutex_lock(&lock);
    uint64_t index = atomic_load_explicit(&written, memory_order_relaxed);
    memcpy(slots[index % SLOTS], text, length + 1);
    atomic_store_explicit(&written, index + 1, memory_order_release);
    pthread_mutex_unlock(&lock);
}

static void install_once(void) { snd_lib_error_set_handler(handler); }

void duplex_alsa_errors_install(void) { pthread_once(&once, install_once); }

uint64_t duplex_alsa_errors_count(void) { return atomic_load_explicit(&written, memory_order_acquire); }

int duplex_alsa_errors_message(uint64_t index, char *out, size_t capacity) {
    if (capacity == 0) return 0;
    int kept = 0;
    pthread_mutex_lock(&lock);
    uint64_t count = atomic_load_explicit(&written, memory_order_relaxed);
    if (index < count && count - index <= SLOTS) {
        snprintf(out, capacity, "%s", slots[index % SLOTS]);
        kept = 1;
    }
    pthread_mutex_unlock(&lock);
    if (!kept) out[0] = 0;
    return kept;
}

int duplex_alsa_errors_capacity(void) { return SLOTS; }
