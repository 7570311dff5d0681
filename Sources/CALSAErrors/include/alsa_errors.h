#ifndef DUPLEX_ALSA_ERRORS_H
#define DUPLEX_ALSA_ERRORS_H

#include <stddef.h>
#include <stdint.h>

/// alsa-lib reports its own errors by printing them to stderr through a C-variadic handler
/// (`ALSA lib confmisc.c:855:(parse_card) cannot find card '0'`), which Swift cannot implement.
/// This handler keeps them instead: the last few messages, formatted with vsnprintf into fixed
/// slots under a mutex (error path only, never per period), so duplex can fold them into its own
/// error and alsa-lib prints nothing.

/// Installs the handler with `snd_lib_error_set_handler`; once per process, safe from any thread.
void duplex_alsa_errors_install(void);

/// How many messages alsa-lib has reported so far (a mark to collect the ones after it); one
/// atomic load, no lock.
uint64_t duplex_alsa_errors_count(void);

/// Copies message number `index` (0-based, counted since install) into `out` (NUL-terminated,
/// truncated to `capacity`). Returns 0 when that message is no longer kept (or not yet written).
int duplex_alsa_errors_message(uint64_t index, char *out, size_t capacity);

/// How many messages are kept (older ones are overwritten).
int duplex_alsa_errors_capacity(void);

#endif
