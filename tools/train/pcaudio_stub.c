/* A stand-in for libpcaudio.so.0 (espeak-ng's audio playback library) on a machine without sound:
 * the Debian libpcaudio0 pulls in ALSA and PulseAudio (and through them X11 and systemd), which the
 * GPU machine's image may lack. espeak-ng only calls these to play audio; writing a WAV (-w, --stdout)
 * and printing phonemes (-q --ipa) never open a device, and a NULL device is what espeak-ng treats
 * as "no audio". Built by gpu_run.sh --prepare:
 *   gcc -shared -fPIC -O2 -Wl,-soname,libpcaudio.so.0 -o .debs/lib/libpcaudio.so.0 tools/train/pcaudio_stub.c
 */
#include <stddef.h>

struct audio_object;

struct audio_object *create_audio_device_object(const char *device, const char *application_name,
                                                const char *description) {
    (void)device; (void)application_name; (void)description;
    return NULL;
}
int audio_object_open(struct audio_object *o, int format, unsigned rate, unsigned char channels) {
    (void)o; (void)format; (void)rate; (void)channels;
    return -1;
}
void audio_object_close(struct audio_object *o) { (void)o; }
void audio_object_destroy(struct audio_object *o) { (void)o; }
int audio_object_write(struct audio_object *o, const void *data, size_t bytes) {
    (void)o; (void)data; (void)bytes;
    return -1;
}
int audio_object_drain(struct audio_object *o) { (void)o; return 0; }
int audio_object_flush(struct audio_object *o) { (void)o; return 0; }
const char *audio_object_strerror(struct audio_object *o, int error) { (void)o; (void)error; return "no audio device (stub)"; }
