/* Periodic maintenance: every timeout of pgbouncer, lifetimes, min_pool_size. */
#ifndef PGMOAT_JANITOR_H
#define PGMOAT_JANITOR_H

#include "pgmoat.h"

void janitor_start(Worker *w);
void janitor_stop(void);
void janitor_run(void);

#endif
