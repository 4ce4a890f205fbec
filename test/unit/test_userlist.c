#include <criterion/criterion.h>
Test(empty, empty) { cr_assert(1); }
