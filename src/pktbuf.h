/*
 * Builder for outgoing protocol messages with a sticky failure flag: write
 * freely, check pktbuf_ok() once. The buffer owns its memory; pktbuf_free()
 * releases it (a PktBuf on the stack must always be freed).
 */
#ifndef PGMOAT_PKTBUF_H
#define PGMOAT_PKTBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "util.h"

typedef struct PktBuf {
	uint8_t *data;
	size_t len;
	size_t cap;
	size_t msg_start;	/* offset of the message being built; SIZE_MAX when none */
	bool failed;		/* sticky: set by any failed write, checked once */
	bool borrowed;		/* data is the caller's (pktbuf_init_on) until it outgrows it */
	size_t max;		/* grow limit; 0 = 1 GiB */
} PktBuf;

void pktbuf_init(PktBuf *pb);
/*
 * Start in the caller's storage (a stack array for a message of known size):
 * no allocation unless it grows beyond cap. Still pktbuf_free() it; data is
 * only valid while that storage is.
 */
void pktbuf_init_on(PktBuf *pb, void *storage, size_t cap);
void pktbuf_free(PktBuf *pb);
void pktbuf_reset(PktBuf *pb);
static inline bool pktbuf_ok(const PktBuf *pb) { return !pb->failed; }

/* Typed message: start writes type + length placeholder, finish patches length. */
void pktbuf_start(PktBuf *pb, uint8_t type);
/* Untyped startup-style packet (length first). */
void pktbuf_start_untyped(PktBuf *pb);
void pktbuf_finish(PktBuf *pb);

void pktbuf_put_uint8(PktBuf *pb, uint8_t v);
void pktbuf_put_int16(PktBuf *pb, int16_t v);
void pktbuf_put_int32(PktBuf *pb, int32_t v);
void pktbuf_put_uint32(PktBuf *pb, uint32_t v);
void pktbuf_put_bytes(PktBuf *pb, const void *p, size_t n);
void pktbuf_put_cstring(PktBuf *pb, const char *s);	/* with NUL */

/* Whole messages. */
void pktbuf_error(PktBuf *pb, const char *severity, const char *sqlstate, const char *msg);
void pktbuf_errorf(PktBuf *pb, const char *severity, const char *sqlstate, const char *fmt, ...)
	PRINTF_LIKE(4, 5);
void pktbuf_notice(PktBuf *pb, const char *sqlstate, const char *msg);
void pktbuf_ready(PktBuf *pb, char tx_status);
void pktbuf_auth_ok(PktBuf *pb);
void pktbuf_auth_cleartext(PktBuf *pb);
void pktbuf_auth_md5(PktBuf *pb, const uint8_t salt[4]);
void pktbuf_auth_sasl(PktBuf *pb, const char *mechanism);
void pktbuf_auth_sasl_continue(PktBuf *pb, const void *data, size_t len);
void pktbuf_auth_sasl_final(PktBuf *pb, const void *data, size_t len);
void pktbuf_param_status(PktBuf *pb, const char *name, const char *value);
void pktbuf_backend_key(PktBuf *pb, uint32_t pid, uint32_t key);
/* Write pid and key into the BackendKeyData message at msg (its type byte), already built. */
void pktbuf_set_backend_key(uint8_t *msg, uint32_t pid, uint32_t key);
void pktbuf_query(PktBuf *pb, const char *sql);
void pktbuf_terminate(PktBuf *pb);
void pktbuf_password(PktBuf *pb, const char *password);	/* 'p' with C string */
void pktbuf_sasl_initial(PktBuf *pb, const char *mech, const void *data, size_t len);
void pktbuf_sasl_response(PktBuf *pb, const void *data, size_t len);
void pktbuf_cancel_request(PktBuf *pb, uint32_t pid, uint32_t key);
/* StartupMessage: params is name,value,name,value,...,NULL. */
void pktbuf_startup(PktBuf *pb, const char *const *params);

/* Result sets for the admin console: text columns. */
typedef enum { COLTYPE_TEXT, COLTYPE_INT4, COLTYPE_INT8, COLTYPE_NUMERIC, COLTYPE_TIMESTAMPTZ, COLTYPE_BOOL,
	       COLTYPE_BYTEA } ColType;
void pktbuf_row_description(PktBuf *pb, int ncols, const char *const *names, const ColType *types);
/* DataRow of text values; NULL value = SQL NULL. */
void pktbuf_data_row(PktBuf *pb, int ncols, const char *const *values);
void pktbuf_command_complete(PktBuf *pb, const char *tag);
void pktbuf_empty_query(PktBuf *pb);

#endif
