// WebRTC's audio processing module (0.3, the C++ API Debian ships) behind a C interface.
// Only `AudioProcessing::Create` is looked up with dlsym; everything else is a virtual call
// through the object it returns, or inline in the headers, so nothing links against the library.
#ifndef WEBRTC_POSIX
#define WEBRTC_POSIX 1
#endif
#ifndef WEBRTC_AUDIO_PROCESSING_ONLY_BUILD
#define WEBRTC_AUDIO_PROCESSING_ONLY_BUILD 1
#endif
#include <webrtc/modules/audio_processing/include/audio_processing.h>

#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capture_processing.h"

namespace {

typedef webrtc::AudioProcessing *(*CreateFunction)(const webrtc::Config &);

CreateFunction create_function = nullptr;
char load_error[512] = "";
pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
bool load_tried = false;

void copy_message(char *error, size_t size, const char *message) {
    if (error && size > 0) snprintf(error, size, "%s", message);
}

}  // namespace

struct dx_webrtc {
    webrtc::AudioProcessing *apm;
    webrtc::StreamConfig stream;
    int chunk;
    bool echo_cancellation;
    float *far_copy;
};

extern "C" int dx_webrtc_load(const char *path, char *error, size_t error_size) {
    pthread_mutex_lock(&load_lock);
    if (!load_tried) {
        load_tried = true;
        // DUPLEX_WEBRTC_APM_LIBRARY names another file (tests point it at a missing one).
        const char *override_file = getenv("DUPLEX_WEBRTC_APM_LIBRARY");
        const char *file = path ? path : (override_file && *override_file ? override_file : "libwebrtc_audio_processing.so.1");
        void *library = dlopen(file, RTLD_NOW | RTLD_LOCAL);
        if (!library) {
            snprintf(load_error, sizeof load_error, "cannot load %s (%s): install Debian's libwebrtc-audio-processing1", file, dlerror());
        } else {
            // Itanium-mangled webrtc::AudioProcessing::Create(webrtc::Config const&).
            void *symbol = dlsym(library, "_ZN6webrtc15AudioProcessing6CreateERKNS_6ConfigE");
            if (!symbol) {
                snprintf(load_error, sizeof load_error, "%s has no webrtc::AudioProcessing::Create(Config const&): not the 0.3 API duplex uses", file);
                dlclose(library);
            } else {
                create_function = reinterpret_cast<CreateFunction>(symbol);
            }
        }
    }
    int ok = create_function != nullptr;
    if (!ok) copy_message(error, error_size, load_error);
    pthread_mutex_unlock(&load_lock);
    return ok;
}

extern "C" dx_webrtc *dx_webrtc_create(int sample_rate, const dx_webrtc_options *options, char *error, size_t error_size) {
    if (!dx_webrtc_load(nullptr, error, error_size)) return nullptr;
    if (sample_rate < 8000 || sample_rate > 48000 || sample_rate % 100 != 0) {
        char message[160];
        snprintf(message, sizeof message, "WebRTC audio processing takes 8000–48000 Hz in whole 10 ms chunks, not %d Hz", sample_rate);
        copy_message(error, error_size, message);
        return nullptr;
    }
    webrtc::Config config;
    // The extended filter covers longer echo tails (rooms, not handsets); delay-agnostic mode
    // finds the remaining speaker-to-microphone delay itself instead of trusting it blindly.
    config.Set<webrtc::ExtendedFilter>(new webrtc::ExtendedFilter(true));
    config.Set<webrtc::DelayAgnostic>(new webrtc::DelayAgnostic(options->delay_agnostic != 0));
    // The experimental AGC drives an analog microphone volume duplex does not own.
    config.Set<webrtc::ExperimentalAgc>(new webrtc::ExperimentalAgc(false));
    webrtc::AudioProcessing *apm = create_function(config);
    if (!apm) {
        copy_message(error, error_size, "webrtc::AudioProcessing::Create failed");
        return nullptr;
    }
    int rc = 0;
    if (options->echo_cancellation) {
        rc |= apm->echo_cancellation()->Enable(true);
        // Moderate (WebRTC's default): measured in the simulated rooms, high suppression adds
        // 5 dB of ERLE on top of 39–40 dB but takes the person's voice down 5 dB instead of 4
        // while both talk.
        rc |= apm->echo_cancellation()->set_suppression_level(webrtc::EchoCancellation::kModerateSuppression);
        rc |= apm->echo_cancellation()->enable_metrics(true);
        rc |= apm->echo_cancellation()->enable_delay_logging(true);
    }
    if (options->noise_suppression) {
        rc |= apm->noise_suppression()->set_level(webrtc::NoiseSuppression::kModerate);
        rc |= apm->noise_suppression()->Enable(true);
    }
    if (options->gain_control) {
        rc |= apm->gain_control()->set_mode(webrtc::GainControl::kAdaptiveDigital);
        // WebRTC's defaults: aim 3 dB below full scale with up to 9 dB of compression gain and
        // a limiter; Mimi was trained on speech around -20 dBFS RMS, which this lands near.
        rc |= apm->gain_control()->set_target_level_dbfs(3);
        rc |= apm->gain_control()->set_compression_gain_db(9);
        rc |= apm->gain_control()->enable_limiter(true);
        rc |= apm->gain_control()->Enable(true);
    }
    if (options->high_pass) rc |= apm->high_pass_filter()->Enable(true);
    webrtc::StreamConfig stream(sample_rate, 1);
    rc |= apm->Initialize(webrtc::ProcessingConfig{{stream, stream, stream, stream}});
    if (rc != 0) {
        char message[160];
        snprintf(message, sizeof message, "WebRTC audio processing refused the configuration at %d Hz (error %d)", sample_rate, rc);
        copy_message(error, error_size, message);
        delete apm;
        return nullptr;
    }
    dx_webrtc *handle = new dx_webrtc;
    handle->apm = apm;
    handle->stream = stream;
    handle->chunk = sample_rate / 100;
    handle->echo_cancellation = options->echo_cancellation != 0;
    handle->far_copy = new float[handle->chunk];
    return handle;
}

extern "C" int dx_webrtc_process(dx_webrtc *h, const float *far, const float *near, float *out, int delay_ms) {
    if (h->echo_cancellation) {
        // ProcessReverseStream may rewrite its output (intelligibility enhancement, off here):
        // give it a scratch copy so the caller's reference stays what was played.
        memcpy(h->far_copy, far, sizeof(float) * h->chunk);
        const float *far_in[1] = {h->far_copy};
        float *far_out[1] = {h->far_copy};
        int rc = h->apm->ProcessReverseStream(far_in, h->stream, h->stream, far_out);
        if (rc != 0) return rc;
        h->apm->set_stream_delay_ms(delay_ms < 0 ? 0 : delay_ms);
    }
    const float *near_in[1] = {near};
    float *near_out[1] = {out};
    return h->apm->ProcessStream(near_in, h->stream, h->stream, near_out);
}

extern "C" void dx_webrtc_read_metrics(dx_webrtc *h, dx_webrtc_metrics *m) {
    m->erle_db = NAN;
    m->erl_db = NAN;
    m->delay_median_ms = -1;
    m->delay_std_ms = -1;
    m->has_echo = 0;
    if (!h->echo_cancellation) return;
    webrtc::EchoCancellation::Metrics metrics;
    if (h->apm->echo_cancellation()->GetMetrics(&metrics) == 0) {
        // -100 is WebRTC's "no value yet".
        if (metrics.echo_return_loss_enhancement.average > -100) m->erle_db = metrics.echo_return_loss_enhancement.average;
        if (metrics.echo_return_loss.average > -100) m->erl_db = metrics.echo_return_loss.average;
    }
    int median = 0, deviation = 0;
    float poor = 0;
    if (h->apm->echo_cancellation()->GetDelayMetrics(&median, &deviation, &poor) == 0 && deviation >= 0) {
        m->delay_median_ms = median;
        m->delay_std_ms = deviation;
    }
    m->has_echo = h->apm->echo_cancellation()->stream_has_echo() ? 1 : 0;
}

extern "C" int dx_webrtc_chunk_frames(const dx_webrtc *h) { return h->chunk; }

extern "C" void dx_webrtc_destroy(dx_webrtc *h) {
    if (!h) return;
    delete h->apm;
    delete[] h->far_copy;
    delete h;
}
