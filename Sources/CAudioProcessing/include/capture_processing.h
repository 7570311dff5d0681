// Echo cancellation, noise suppression and gain control from system libraries loaded at run time
// (dlopen), so that duplex starts, and falls back with a message, on a machine that lacks them.
//   WebRTC's audio processing module 0.3 (Debian: libwebrtc-audio-processing1), the library
//   PulseAudio's and PipeWire's echo-cancel modules use;
//   SpeexDSP's echo canceller and preprocessor (Debian: libspeexdsp1).
// Both process 10 ms chunks of mono float samples in [-1, 1]. Nothing here allocates after
// creation; each handle belongs to one thread.
#ifndef DUPLEX_CAPTURE_PROCESSING_H
#define DUPLEX_CAPTURE_PROCESSING_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int echo_cancellation;   // 0 or 1
    int noise_suppression;   // 0 or 1 (WebRTC: high level)
    int gain_control;        // 0 or 1 (WebRTC: adaptive digital with limiter)
    int high_pass;           // 0 or 1
    int delay_agnostic;      // 0 or 1: WebRTC estimates the echo path delay itself
} dx_webrtc_options;

typedef struct {
    float erle_db;           // WebRTC's own ERLE (average), or NaN before it has one
    float erl_db;            // echo return loss (far → echo), or NaN
    int delay_median_ms;     // the AEC's delay estimate, -1 before it has one
    int delay_std_ms;
    int has_echo;            // the last chunk might contain echo
} dx_webrtc_metrics;

typedef struct dx_webrtc dx_webrtc;

// Loads the library once; returns 1 when it is usable, else 0 with a reason in `error`.
// `path` overrides the file to load (NULL: libwebrtc_audio_processing.so.1).
int dx_webrtc_load(const char *path, char *error, size_t error_size);
// Any sample rate WebRTC's float interface accepts (it resamples to its native rates
// internally); NULL with a reason when the module refuses the configuration.
dx_webrtc *dx_webrtc_create(int sample_rate, const dx_webrtc_options *options, char *error, size_t error_size);
// One 10 ms chunk: `far` is what the loudspeaker played aligned with `near` (what the microphone
// captured), `delay_ms` the remaining delay between them the caller knows of. `out` may be
// `near`. Returns 0, or WebRTC's error code.
int dx_webrtc_process(dx_webrtc *apm, const float *far, const float *near, float *out, int delay_ms);
void dx_webrtc_read_metrics(dx_webrtc *apm, dx_webrtc_metrics *metrics);
int dx_webrtc_chunk_frames(const dx_webrtc *apm);
void dx_webrtc_destroy(dx_webrtc *apm);

typedef struct dx_speex dx_speex;

int dx_speex_load(const char *path, char *error, size_t error_size);
// `filter_frames`: the echo tail the adaptive filter spans, in samples.
dx_speex *dx_speex_create(int sample_rate, int filter_frames, int echo_cancellation, int noise_suppression,
                          int gain_control, char *error, size_t error_size);
int dx_speex_process(dx_speex *speex, const float *far, const float *near, float *out);
int dx_speex_chunk_frames(const dx_speex *speex);
// Forgets the adaptive filter: after the streams were realigned it would start from a wrong one.
void dx_speex_reset_echo(dx_speex *speex);
// The lag (samples) of the adaptive filter's largest tap: where it found the echo; -1 before.
int dx_speex_echo_lag(dx_speex *speex);
void dx_speex_destroy(dx_speex *speex);

#ifdef __cplusplus
}
#endif

#endif
