#ifndef DUPLEX_ALLOC_COUNTER_H
#define DUPLEX_ALLOC_COUNTER_H
#include <stdint.h>
/// Switches counting of malloc/calloc/realloc/memalign calls on (1) or off (0), process-wide.
void duplex_alloc_counting(int enabled);
/// 1 when the counter interposes malloc; 0 in a sanitizer build, where it counts nothing.
int duplex_alloc_counter_available(void);
/// Allocations counted so far.
uint64_t duplex_alloc_count(void);
#endif
