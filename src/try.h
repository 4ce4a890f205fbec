/*
 * `pgmoat try`: run the policies of a config on SQL without a server.
 *
 *   pgmoat try CONFIG [--user U] [--db D] [--claims JSON] [--role R] [--extended] SQL...
 *   pgmoat try CONFIG --cases FILE
 *
 * CONFIG is a pgmoat.yaml (its policy block is used) or a single policy .lua.
 * The first form prints every policy's decision, with its reason, for each
 * statement of each SQL argument (one argument = one simple Query). The second
 * runs a table of cases (format in doc/policies.md) and exits 1 on a mismatch.
 */
#ifndef PGMOAT_TRY_H
#define PGMOAT_TRY_H

#include "policy.h"

/*
 * The policy engine of CONFIG (a pgmoat.yaml's policy block, or one .lua),
 * tracing on; NULL with the reason printed to stderr. Also used by replay.
 */
PolicyEngine *try_engine(const char *path);

/* argv[0] is "try". Returns the process exit code. */
int try_main(int argc, char **argv);

#endif
