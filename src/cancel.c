#include "cancel.h"
