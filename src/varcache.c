/*
 * Tracked session parameters and the SQL that re-synchronises a server with
 * what its client believes.
 */
#include "varcache.h"
#include "list.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Canonical spelling, as PostgreSQL reports them in ParameterStatus. */
static const char *const var_names[VAR_COUNT] = {
	[VAR_CLIENT_ENCODING] = "client_encoding",
	[VAR_DATESTYLE] = "DateStyle",
	[VAR_TIMEZONE] = "TimeZone",
	[VAR_INTERVALSTYLE] = "IntervalStyle",
	[VAR_STANDARD_CONFORMING_STRINGS] = "standard_conforming_strings",
	[VAR_APPLICATION_NAME] = "application_name",
};

_Static_assert(VAR_COUNT == 6, "varcache_lookup's switch names every tracked parameter");

int varcache_lookup(const char *name)
{
	/*
	 * Every startup parameter and ParameterStatus comes through here: the
	 * names' first letters differ, so the first letter (folded) picks the one
	 * candidate to compare (conn8: no loop over the table).
	 */
	int id;
	switch (name[0] | 0x20) {
	case 'c': id = VAR_CLIENT_ENCODING; break;
	case 'd': id = VAR_DATESTYLE; break;
	case 't': id = VAR_TIMEZONE; break;
	case 'i': id = VAR_INTERVALSTYLE; break;
	case 's': id = VAR_STANDARD_CONFORMING_STRINGS; break;
	case 'a': id = VAR_APPLICATION_NAME; break;
	default: return -1;
	}
	return strcasecmp(name, var_names[id]) == 0 ? id : -1;
}

const char *varcache_name(VarId id)
{
	if ((int)id < 0 || id >= VAR_COUNT)
		return NULL;
	return var_names[id];
}

/* ---- interned values --------------------------------------------------- */

typedef struct VarValue {
	struct VarValue *next;	/* in its bucket */
	uint32_t refs;
	uint32_t hash;
	char str[];
} VarValue;

#define VAR_BUCKETS_MIN 64

typedef struct VarPool {
	VarValue **buckets;
	uint32_t nbuckets;	/* a power of two */
	uint32_t count;
} VarPool;

static __thread VarPool var_pool;

static uint32_t var_hash(const char *s, size_t *len)
{
	uint32_t h = 2166136261u;	/* FNV-1a: short strings, no adversary gains from a collision */
	const char *p = s;
	for (; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	*len = (size_t)(p - s);
	return h;
}

static void var_pool_grow(VarPool *vp)
{
	uint32_t n = vp->nbuckets ? vp->nbuckets * 2 : VAR_BUCKETS_MIN;
	VarValue **b = xcalloc(n, sizeof(*b));
	for (uint32_t i = 0; i < vp->nbuckets; i++) {
		VarValue *v, *next;
		for (v = vp->buckets[i]; v; v = next) {
			next = v->next;
			v->next = b[v->hash & (n - 1)];
			b[v->hash & (n - 1)] = v;
		}
	}
	free(vp->buckets);
	vp->buckets = b;
	vp->nbuckets = n;
}

/* A reference to the interned copy of s. */
static const char *var_intern(const char *s)
{
	VarPool *vp = &var_pool;
	size_t len;
	uint32_t h = var_hash(s, &len);
	if (vp->count >= vp->nbuckets)
		var_pool_grow(vp);
	VarValue **head = &vp->buckets[h & (vp->nbuckets - 1)];
	for (VarValue *v = *head; v; v = v->next) {
		if (v->hash == h && strcmp(v->str, s) == 0) {
			v->refs++;
			return v->str;
		}
	}
	VarValue *v = xmalloc(sizeof(*v) + len + 1);
	memcpy(v->str, s, len + 1);
	v->hash = h;
	v->refs = 1;
	v->next = *head;
	*head = v;
	vp->count++;
	return v->str;
}

/* One more reference to an interned value. */
static const char *var_share(const char *s)
{
	if (s)
		container_of(s, VarValue, str)->refs++;
	return s;
}

static void var_release(const char *s)
{
	if (!s)
		return;
	VarPool *vp = &var_pool;
	VarValue *v = container_of(s, VarValue, str);
	if (--v->refs > 0)
		return;
	VarValue **link = &vp->buckets[v->hash & (vp->nbuckets - 1)];
	while (*link != v)
		link = &(*link)->next;
	*link = v->next;
	vp->count--;
	free(v);
}

/* ---- caches ------------------------------------------------------------- */

void varcache_set_id(VarCache *vc, VarId id, const char *value)
{
	if ((int)id < 0 || id >= VAR_COUNT)
		return;
	const char *v = value ? var_intern(value) : NULL;	/* (before the release: value may be it) */
	var_release(vc->values[id]);
	vc->values[id] = v;
}

bool varcache_set(VarCache *vc, const char *name, const char *value)
{
	int id = varcache_lookup(name);
	if (id < 0)
		return false;
	const char *old = vc->values[id];
	if (old == value || (old && value && strcmp(old, value) == 0))
		return false;
	varcache_set_id(vc, (VarId)id, value);
	return true;
}

void varcache_copy(VarCache *dst, const VarCache *src)
{
	if (dst == src)
		return;
	for (int i = 0; i < VAR_COUNT; i++) {
		const char *v = var_share(src->values[i]);	/* (before the release: it may be the same) */
		var_release(dst->values[i]);
		dst->values[i] = v;
	}
}

void varcache_fill_unset(VarCache *dst, const VarCache *src)
{
	for (int i = 0; i < VAR_COUNT; i++)
		if (!dst->values[i])
			dst->values[i] = var_share(src->values[i]);
}

bool varcache_same(const VarCache *a, const VarCache *b)
{
	return memcmp(a->values, b->values, sizeof(a->values)) == 0;
}

void varcache_free(VarCache *vc)
{
	for (int i = 0; i < VAR_COUNT; i++) {
		var_release(vc->values[i]);
		vc->values[i] = NULL;
	}
}

/*
 * Append value as a SQL literal. Without backslashes a standard literal with
 * doubled quotes means the same thing whatever standard_conforming_strings
 * says; with one, E'' with doubled backslashes is unambiguous too.
 */
static char *sql_append_literal(char *p, const char *value)
{
	bool escape = strchr(value, '\\') != NULL;

	if (escape)
		*p++ = 'E';
	*p++ = '\'';
	for (const char *s = value; *s; s++) {
		if (*s == '\'' || (escape && *s == '\\'))
			*p++ = *s;
		*p++ = *s;
	}
	*p++ = '\'';
	return p;
}

char *varcache_sync_sql(const VarCache *client, const VarCache *server)
{
	size_t need = 1;
	char *sql, *p;

	for (int i = 0; i < VAR_COUNT; i++) {
		const char *v = client->values[i];
		if (v && v != server->values[i])	/* (interned: equal values, equal pointers) */
			need += strlen("SET =E'';") + strlen(var_names[i]) + 2 * strlen(v);
	}
	if (need == 1)
		return NULL;
	sql = p = xmalloc(need);
	for (int i = 0; i < VAR_COUNT; i++) {
		const char *v = client->values[i];
		if (!v || v == server->values[i])
			continue;
		p = stpcpy(p, "SET ");
		p = stpcpy(p, var_names[i]);
		*p++ = '=';
		p = sql_append_literal(p, v);
		*p++ = ';';
	}
	*p = '\0';
	return sql;
}
