#include "varcache.h"
