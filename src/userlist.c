#include "userlist.h"
