// SpeexDSP's echo canceller (MDF) and preprocessor behind the same kind of C interface as
// WebRTC's, loaded with dlopen. SpeexDSP takes 16-bit samples; the float ↔ int16 conversions
// happen here, in preallocated buffers.
#include <speex/speex_echo.h>
#include <speex/speex_preprocess.h>

#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capture_processing.h"

typedef SpeexEchoState *(*echo_init_fn)(int, int);
typedef void (*echo_destroy_fn)(SpeexEchoState *);
typedef void (*echo_reset_fn)(SpeexEchoState *);
typedef void (*echo_cancellation_fn)(SpeexEchoState *, const spx_int16_t *, const spx_int16_t *, spx_int16_t *);
typedef int (*echo_ctl_fn)(SpeexEchoState *, int, void *);
typedef SpeexPreprocessState *(*preprocess_init_fn)(int, int);
typedef void (*preprocess_destroy_fn)(SpeexPreprocessState *);
typedef int (*preprocess_run_fn)(SpeexPreprocessState *, spx_int16_t *);
typedef int (*preprocess_ctl_fn)(SpeexPreprocessState *, int, void *);

static struct {
    echo_init_fn echo_init;
    echo_destroy_fn echo_destroy;
    echo_reset_fn echo_reset;
    echo_cancellation_fn echo_cancellation;
    echo_ctl_fn echo_ctl;
    preprocess_init_fn preprocess_init;
    preprocess_destroy_fn preprocess_destroy;
    preprocess_run_fn preprocess_run;
    preprocess_ctl_fn preprocess_ctl;
} speex;

static pthread_mutex_t speex_lock = PTHREAD_MUTEX_INITIALIZER;
static int speex_tried = 0, speex_ok = 0;
static char speex_error[512];

struct dx_speex {
    SpeexEchoState *echo;
    SpeexPreprocessState *preprocess;
    int chunk;
    int filter_frames;
    spx_int16_t *far;
    spx_int16_t *near;
    spx_int16_t *out;
    spx_int32_t *impulse;
};

int dx_speex_load(const char *path, char *error, size_t error_size) {
    pthread_mutex_lock(&speex_lock);
    if (!speex_tried) {
        speex_tried = 1;
        // DUPLEX_SPEEXDSP_LIBRARY names another file (tests point it at a missing one).
        const char *override_file = getenv("DUPLEX_SPEEXDSP_LIBRARY");
        const char *file = path ? path : (override_file && *override_file ? override_file : "libspeexdsp.so.1");
        void *library = dlopen(file, RTLD_NOW | RTLD_LOCAL);
        if (!library) {
            snprintf(speex_error, sizeof speex_error, "cannot load %s (%s): install Debian's libspeexdsp1", file, dlerror());
        } else {
            const char *missing = NULL;
#define LOOK(field, name) if (!missing && !(*(void **)&speex.field = dlsym(library, name))) missing = name
            LOOK(echo_init, "speex_echo_state_init");
            LOOK(echo_destroy, "speex_echo_state_destroy");
            LOOK(echo_reset, "speex_echo_state_reset");
            LOOK(echo_cancellation, "speex_echo_cancellation");
            LOOK(echo_ctl, "speex_echo_ctl");
            LOOK(preprocess_init, "speex_preprocess_state_init");
            LOOK(preprocess_destroy, "speex_preprocess_state_destroy");
            LOOK(preprocess_run, "speex_preprocess_run");
            LOOK(preprocess_ctl, "speex_preprocess_ctl");
#undef LOOK
            if (missing) {
                snprintf(speex_error, sizeof speex_error, "%s lacks %s: not SpeexDSP 1.2", file, missing);
                dlclose(library);
            } else {
                speex_ok = 1;
            }
        }
    }
    int ok = speex_ok;
    if (!ok && error && error_size) snprintf(error, error_size, "%s", speex_error);
    pthread_mutex_unlock(&speex_lock);
    return ok;
}

dx_speex *dx_speex_create(int sample_rate, int filter_frames, int echo_cancellation, int noise_suppression,
                          int gain_control, char *error, size_t error_size) {
    if (!dx_speex_load(NULL, error, error_size)) return NULL;
    if (sample_rate < 8000 || sample_rate > 48000 || sample_rate % 100 != 0) {
        if (error && error_size) snprintf(error, error_size, "SpeexDSP takes 8000–48000 Hz in whole 10 ms chunks, not %d Hz", sample_rate);
        return NULL;
    }
    dx_speex *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->chunk = sample_rate / 100;
    h->filter_frames = filter_frames;
    h->far = calloc(h->chunk, sizeof(spx_int16_t));
    h->near = calloc(h->chunk, sizeof(spx_int16_t));
    h->out = calloc(h->chunk, sizeof(spx_int16_t));
    h->impulse = calloc(filter_frames > 0 ? filter_frames : 1, sizeof(spx_int32_t));
    if (echo_cancellation) {
        h->echo = speex.echo_init(h->chunk, filter_frames);
        if (h->echo) speex.echo_ctl(h->echo, SPEEX_ECHO_SET_SAMPLING_RATE, &sample_rate);
    }
    if (noise_suppression || gain_control || echo_cancellation) {
        h->preprocess = speex.preprocess_init(h->chunk, sample_rate);
    }
    if ((echo_cancellation && !h->echo) || !h->preprocess || !h->far || !h->near || !h->out || !h->impulse) {
        if (error && error_size) snprintf(error, error_size, "SpeexDSP could not set up a %d-sample filter at %d Hz", filter_frames, sample_rate);
        dx_speex_destroy(h);
        return NULL;
    }
    int on = 1, off = 0;
    speex.preprocess_ctl(h->preprocess, SPEEX_PREPROCESS_SET_DENOISE, noise_suppression ? &on : &off);
    speex.preprocess_ctl(h->preprocess, SPEEX_PREPROCESS_SET_AGC, gain_control ? &on : &off);
    if (gain_control) {
        // Speech around -20 dBFS RMS, the level Mimi was trained on.
        float level = 3277.f;
        speex.preprocess_ctl(h->preprocess, SPEEX_PREPROCESS_SET_AGC_LEVEL, &level);
    }
    // The preprocessor's residual-echo suppressor takes its estimate from the canceller.
    if (h->echo) speex.preprocess_ctl(h->preprocess, SPEEX_PREPROCESS_SET_ECHO_STATE, h->echo);
    return h;
}

static spx_int16_t to_int16(float x) {
    float s = x * 32768.f;
    if (!(s > -32768.f)) return -32768;   // NaN lands here too: a canceller never sees NaN
    if (s > 32767.f) return 32767;
    return (spx_int16_t)lrintf(s);
}

int dx_speex_process(dx_speex *h, const float *far, const float *near, float *out) {
    for (int i = 0; i < h->chunk; i++) {
        h->far[i] = to_int16(far[i]);
        h->near[i] = to_int16(near[i]);
    }
    spx_int16_t *result = h->near;
    if (h->echo) {
        speex.echo_cancellation(h->echo, h->near, h->far, h->out);
        result = h->out;
    }
    speex.preprocess_run(h->preprocess, result);
    for (int i = 0; i < h->chunk; i++) out[i] = result[i] * (1.f / 32768.f);
    return 0;
}

int dx_speex_chunk_frames(const dx_speex *h) { return h->chunk; }

void dx_speex_reset_echo(dx_speex *h) {
    if (h->echo) speex.echo_reset(h->echo);
}

int dx_speex_echo_lag(dx_speex *h) {
    if (!h->echo) return -1;
    int size = 0;
    speex.echo_ctl(h->echo, SPEEX_ECHO_GET_IMPULSE_RESPONSE_SIZE, &size);
    if (size <= 0 || size > h->filter_frames) return -1;
    speex.echo_ctl(h->echo, SPEEX_ECHO_GET_IMPULSE_RESPONSE, h->impulse);
    int best = -1;
    long long peak = 0;
    for (int i = 0; i < size; i++) {
        long long magnitude = llabs((long long)h->impulse[i]);
        if (magnitude > peak) { peak = magnitude; best = i; }
    }
    return best;
}

void dx_speex_destroy(dx_speex *h) {
    if (!h) return;
    if (h->echo) speex.echo_destroy(h->echo);
    if (h->preprocess) speex.preprocess_destroy(h->preprocess);
    free(h->far);
    free(h->near);
    free(h->out);
    free(h->impulse);
    free(h);
}
