#include "auth_scram.h"
