/*
 * libevent's allocations, with a per-thread cache of freed blocks.
 *
 * An evbuffer frees a chain as soon as it is drained, and the next read
 * reserves a new one: on the data path every message costs a malloc and a
 * free of a 1-32 KB block, which glibc serves from its bins with
 * consolidation passes. Chains are always a power of two in size, so a few
 * freed blocks per size are kept and handed out again (pgbouncer keeps its
 * buffers in slabs for the same reason). A connection's libevent objects
 * (its bufferevent, evbuffers, events, callback entries: a dozen blocks under
 * 1 KB) are kept the same way, by size rounded up to 16 bytes, so that a
 * connection per transaction does not cost a dozen mallocs and frees. Larger
 * blocks go straight to malloc. Every block carries a header saying which it is.
 */
#include "evmem.h"

#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EVMEM_SMALL_STEP 16
#define EVMEM_SMALL_MAX 1024	/* libevent's objects, and its smallest chains */
#define EVMEM_SMALL_CLASSES (EVMEM_SMALL_MAX / EVMEM_SMALL_STEP)
#define EVMEM_CHAIN_MIN_SHIFT 11	/* chains above the small sizes: 2 KB... */
#define EVMEM_CHAIN_MAX_SHIFT 15	/* ...up to READ_CHUNK's (msgio.c): 32 KB */
#define EVMEM_CLASSES (EVMEM_SMALL_CLASSES + EVMEM_CHAIN_MAX_SHIFT - EVMEM_CHAIN_MIN_SHIFT + 1)
#define EVMEM_KEEP 32		/* freed blocks kept per size and thread */
#define EVMEM_RAW (-1)

/* 16 bytes: keeps malloc's alignment for what follows */
typedef struct EvmemHeader {
	size_t size;		/* bytes asked for */
	int64_t cls;		/* size class, or EVMEM_RAW */
} EvmemHeader;

static __thread EvmemHeader *evmem_cache[EVMEM_CLASSES][EVMEM_KEEP];
static __thread int evmem_cached[EVMEM_CLASSES];

/* The class of a size: small ones by 16 bytes, chains by exact power of two; EVMEM_RAW otherwise. */
static int evmem_class(size_t n)
{
	if (n <= EVMEM_SMALL_MAX)
		return n == 0 ? 0 : (int)((n - 1) / EVMEM_SMALL_STEP);
	for (int shift = EVMEM_CHAIN_MIN_SHIFT; shift <= EVMEM_CHAIN_MAX_SHIFT; shift++)
		if (n == (size_t)1 << shift)
			return EVMEM_SMALL_CLASSES + shift - EVMEM_CHAIN_MIN_SHIFT;
	return EVMEM_RAW;
}

/* Usable bytes of a block of class cls (any block of the class fits any size of it). */
static size_t evmem_class_size(int cls)
{
	if (cls < EVMEM_SMALL_CLASSES)
		return (size_t)(cls + 1) * EVMEM_SMALL_STEP;
	return (size_t)1 << (cls - EVMEM_SMALL_CLASSES + EVMEM_CHAIN_MIN_SHIFT);
}

static void *evmem_malloc(size_t n)
{
	int cls = evmem_class(n);
	EvmemHeader *h = NULL;
	if (cls == EVMEM_RAW)
		h = malloc(sizeof(*h) + n);
	else if (evmem_cached[cls] > 0)
		h = evmem_cache[cls][--evmem_cached[cls]];
	else
		h = malloc(sizeof(*h) + evmem_class_size(cls));
	if (!h)
		return NULL;
	h->size = n;
	h->cls = cls;
	return h + 1;
}

static void evmem_free(void *p)
{
	if (!p)
		return;
	EvmemHeader *h = (EvmemHeader *)p - 1;
	int cls = (int)h->cls;
	if (cls != EVMEM_RAW && evmem_cached[cls] < EVMEM_KEEP)
		evmem_cache[cls][evmem_cached[cls]++] = h;
	else
		free(h);
}

static void *evmem_realloc(void *p, size_t n)
{
	if (!p)
		return evmem_malloc(n);
	EvmemHeader *h = (EvmemHeader *)p - 1;
	if (h->cls != EVMEM_RAW && evmem_class(n) == h->cls) {	/* fits the block it has */
		h->size = n;
		return p;
	}
	if (h->cls == EVMEM_RAW && evmem_class(n) == EVMEM_RAW) {
		EvmemHeader *grown = realloc(h, sizeof(*h) + n);
		if (!grown)
			return NULL;
		grown->size = n;
		return grown + 1;
	}
	void *q = evmem_malloc(n);
	if (!q)
		return NULL;
	memcpy(q, p, h->size < n ? h->size : n);
	evmem_free(p);
	return q;
}

/* Under ASan every chain stays malloc's, so that a use after free is still seen. */
#ifdef __SANITIZE_ADDRESS__
#define EVMEM_ENABLED 0
#else
#define EVMEM_ENABLED 1
#endif

void evmem_install(void)
{
	if (EVMEM_ENABLED)
		event_set_mem_functions(evmem_malloc, evmem_realloc, evmem_free);
}

void evmem_release_thread_cache(void)
{
	for (int cls = 0; cls < EVMEM_CLASSES; cls++)
		while (evmem_cached[cls] > 0)
			free(evmem_cache[cls][--evmem_cached[cls]]);
}
