#include "janitor.h"
