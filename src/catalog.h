/*
 * Catalog lookups for masking: a RowDescription names each column's source
 * by table OID and attribute number; policies name columns by schema, table
 * and column. A Catalog resolves OIDs to names for one pool (database and
 * server user), on its own connection (libpq, non-blocking, on the event
 * loop), never on a client's server connection: a query injected there could
 * break the client's protocol state (an aborted transaction, an unsynced
 * extended-protocol batch).
 *
 * Entries expire after CATALOG_TTL, and the whole cache is dropped when a
 * statement through pgmoat may have changed the schema, so an OID reused by
 * DROP + CREATE, or a renamed column, is looked up again. A view (or
 * materialized view) is "tainted" when it depends, directly or through other
 * views, on a column that P.masks protects: its columns cannot be mapped to
 * the protected ones, so results from it are refused.
 *
 * A lookup that fails or runs past CATALOG_TIMEOUT fails every waiter; the
 * waiter must then refuse the result (fail closed).
 */
#ifndef PGMOAT_CATALOG_H
#define PGMOAT_CATALOG_H

#include "pgmoat.h"

#define CATALOG_TTL (10 * USEC_PER_SEC)
#define CATALOG_TIMEOUT (5 * USEC_PER_SEC)

typedef struct Catalog Catalog;

typedef struct CatalogRel {
	uint32_t oid;
	char *schema;
	char *name;
	char *qualified;	/* "schema.name" */
	char relkind;		/* 'r', 'v', 'm', 'p', 'f', ... */
	int ncols;
	char **cols;		/* by attnum - 1; NULL for a dropped column */
	char *taint;		/* a view over a protected column: which one; else NULL */
	usec_t fetched;
} CatalogRel;

/* Called once per waiter when a lookup it waited for ends; ok=false: failed. */
typedef void (*CatalogDoneFn)(Server *s, bool ok);

/* Called after every lookup (the names of tainted views were refreshed, or it failed). */
typedef void (*CatalogViewsFn)(Pool *pool);

Catalog *catalog_new(Pool *pool, CatalogDoneFn done, CatalogViewsFn views_done);
void catalog_free(Catalog *cat);

typedef enum { CATALOG_READY, CATALOG_WAIT, CATALOG_FAIL } CatalogStatus;
/*
 * Are all these OIDs known and fresh? READY: use catalog_get. WAIT: s is called
 * back through done. FAIL: the lookup cannot even start.
 */
CatalogStatus catalog_resolve(Catalog *cat, const uint32_t *oids, int n, Server *s);
/* A known relation, or NULL (not a relation any more, or never looked up). */
const CatalogRel *catalog_get(const Catalog *cat, uint32_t oid);
/* s is going away: it is no longer called back. */
void catalog_forget_waiter(Catalog *cat, Server *s);
/* The schema may have changed: everything is looked up again. */
void catalog_invalidate(Catalog *cat);

/*
 * Names ("schema.view" and "view") of the views that read a protected column,
 * for the statement-time guard; refreshed in the background once older than
 * CATALOG_TTL. NONE: never loaded yet (a lookup may be in flight); FAILED: the
 * last lookup failed and nothing was ever loaded.
 */
typedef enum { CATALOG_VIEWS_NONE, CATALOG_VIEWS_OK, CATALOG_VIEWS_FAILED } CatalogViews;
const StrList *catalog_tainted_views(Catalog *cat, CatalogViews *state);
/* Start a lookup (with no OIDs) if none is in flight: the view names are refreshed. */
void catalog_refresh_views(Catalog *cat);

#endif
