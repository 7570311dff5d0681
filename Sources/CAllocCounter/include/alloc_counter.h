#ifndef DUPLEX_ALLOC_COUNTER_H
#define DUPLEX_ALLOC_COUNTER_H
#include <stdint.h>
/// Switches counting of malloc/calloc/realloc/memalign calls on (1) or off (0), process-wide.
void duplex_alloc_counting(int enabled);
/// Allocations counted so far.
uint64_t duplex_alloc_count(void);
#endif
