#include "pktbuf.h"
