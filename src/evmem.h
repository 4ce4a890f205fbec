/*
 * libevent's memory functions: a per-thread cache of the evbuffer chains
 * the data path frees and allocates again on every message (evmem.c).
 */
#ifndef PGMOAT_EVMEM_H
#define PGMOAT_EVMEM_H

/* Call before any other libevent function. */
void evmem_install(void);
/* Give the calling thread's cached blocks back to malloc (before it exits). */
void evmem_release_thread_cache(void);

#endif
