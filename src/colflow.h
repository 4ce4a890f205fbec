/*
 * Column flow (masking, issue 4 point 4): where each column reference of a
 * statement's parse tree sends its value. A plain reference in a result's
 * target list reaches the client as is, with its source reported in
 * RowDescription, so the proxy can mask it in flight; a reference inside an
 * expression, a function, a cast, a VALUES list, a set operation, a COPY, or
 * a statement that stores what it reads (INSERT ... SELECT, UPDATE SET, CREATE
 * TABLE AS, CREATE VIEW) is "exposed": its value leaves in a form no mask can
 * find. Predicates (WHERE, JOIN ON, ORDER BY, GROUP BY, ...) send no value.
 *
 * This is policy-independent (it is cached with the statement); maskguard.c
 * matches it against the protected columns. Names are as written, folded.
 */
#ifndef PGMOAT_COLFLOW_H
#define PGMOAT_COLFLOW_H

#include "sqlinfo.h"

struct json_t;

/* Fill st's column-flow fields from the statement node (node name, body). */
void colflow_scan(SqlStatement *st, const char *node, const struct json_t *body);
void colflow_free(SqlStatement *st);

#endif
