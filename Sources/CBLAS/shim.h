// OpenBLAS's CBLAS interface plus its thread-count controls (the engine always sets them explicitly).
#include <cblas.h>
