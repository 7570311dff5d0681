#include "cquant.h"
// Implementation: see the kernels issue (filled in by the CQuant work).
