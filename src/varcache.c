/*
 * Tracked session parameters and the SQL that re-synchronises a server with
 * what its client believes.
 */
#include "varcache.h"

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

int varcache_lookup(const char *name)
{
	/* every startup parameter and ParameterStatus comes through here: first letters first */
	for (int i = 0; i < VAR_COUNT; i++)
		if ((name[0] | 0x20) == (var_names[i][0] | 0x20) && strcasecmp(name, var_names[i]) == 0)
			return i;
	return -1;
}

const char *varcache_name(VarId id)
{
	if ((int)id < 0 || id >= VAR_COUNT)
		return NULL;
	return var_names[id];
}

static bool var_equal(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

void varcache_set_id(VarCache *vc, VarId id, const char *value)
{
	if ((int)id < 0 || id >= VAR_COUNT)
		return;
	char *copy = value ? xstrdup(value) : NULL;
	free(vc->values[id]);
	vc->values[id] = copy;
}

bool varcache_set(VarCache *vc, const char *name, const char *value)
{
	int id = varcache_lookup(name);
	if (id < 0 || var_equal(vc->values[id], value))
		return false;
	varcache_set_id(vc, (VarId)id, value);
	return true;
}

void varcache_copy(VarCache *dst, const VarCache *src)
{
	if (dst == src)
		return;
	for (int i = 0; i < VAR_COUNT; i++)
		varcache_set_id(dst, (VarId)i, src->values[i]);
}

void varcache_free(VarCache *vc)
{
	for (int i = 0; i < VAR_COUNT; i++) {
		free(vc->values[i]);
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
		if (v && !var_equal(v, server->values[i]))
			need += strlen("SET =E'';") + strlen(var_names[i]) + 2 * strlen(v);
	}
	if (need == 1)
		return NULL;
	sql = p = xmalloc(need);
	for (int i = 0; i < VAR_COUNT; i++) {
		const char *v = client->values[i];
		if (!v || var_equal(v, server->values[i]))
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
