/*
 * The session parameters a pooler must keep in step: each client remembers
 * what it believes, each server what it has; when a client gets a server whose
 * values differ, the difference is SET on the server before the client's
 * first message (pgbouncer's varcache).
 */
#ifndef PGMOAT_VARCACHE_H
#define PGMOAT_VARCACHE_H

#include <stdbool.h>
#include "util.h"

typedef enum {
	VAR_CLIENT_ENCODING,
	VAR_DATESTYLE,
	VAR_TIMEZONE,
	VAR_INTERVALSTYLE,
	VAR_STANDARD_CONFORMING_STRINGS,
	VAR_APPLICATION_NAME,
	VAR_COUNT
} VarId;

/*
 * Values are interned per thread and shared by reference (pgbouncer's
 * strpool): thousands of clients believing client_encoding is "UTF8" hold one
 * copy, a login allocates nothing for values already held, and two caches
 * agree on a parameter when they hold the same pointer. A VarCache belongs to
 * the thread that set its values.
 */
typedef struct VarCache {
	const char *values[VAR_COUNT];	/* a reference each; NULL = unknown */
} VarCache;

/* -1 when name is not a tracked parameter (case-insensitive). */
int varcache_lookup(const char *name);
const char *varcache_name(VarId id);
/* True when the value changed. */
bool varcache_set(VarCache *vc, const char *name, const char *value);
void varcache_set_id(VarCache *vc, VarId id, const char *value);
void varcache_copy(VarCache *dst, const VarCache *src);
/* Each value dst lacks, taken (shared) from src. */
void varcache_fill_unset(VarCache *dst, const VarCache *src);
/* Both hold the same value for every parameter. */
bool varcache_same(const VarCache *a, const VarCache *b);
void varcache_free(VarCache *vc);
/*
 * SQL that makes `server` match `client`: "SET client_encoding='UTF8';..."
 * for every known client value that differs. NULL when nothing differs.
 * Values are quoted as literals; the caller frees the result.
 */
char *varcache_sync_sql(const VarCache *client, const VarCache *server);

#endif
