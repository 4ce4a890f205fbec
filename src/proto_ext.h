/*
 * Bodies of the extended-protocol messages a client sends (Parse, Bind,
 * Describe, Close, Execute), read with bounds-checked cursors. The results
 * point into the body, which must outlive them. Each function is false on
 * any malformed body (short, trailing bytes, negative counts).
 */
#ifndef PGMOAT_PROTO_EXT_H
#define PGMOAT_PROTO_EXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "util.h"

typedef struct ParseBody {
	const char *name;	/* "" is the unnamed statement */
	const char *query;
	int nparams;		/* parameter type OIDs given */
} ParseBody;

typedef struct BindBody {
	const char *portal;
	const char *statement;
	int nparams;		/* parameter values given */
	bool binary_results;	/* some result column asked in binary */
} BindBody;

/* Describe or Close: 'S' (statement) or 'P' (portal) and a name. */
typedef struct TargetBody {
	uint8_t kind;
	const char *name;
} TargetBody;

typedef struct ExecuteBody {
	const char *portal;
	int32_t max_rows;	/* 0: all */
} ExecuteBody;

bool proto_parse_parse(const uint8_t *body, size_t len, ParseBody *out) MUST_CHECK;
bool proto_parse_bind(const uint8_t *body, size_t len, BindBody *out) MUST_CHECK;
bool proto_parse_target(const uint8_t *body, size_t len, TargetBody *out) MUST_CHECK;
bool proto_parse_execute(const uint8_t *body, size_t len, ExecuteBody *out) MUST_CHECK;

#endif
