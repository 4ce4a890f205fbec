#include "auth_md5.h"
