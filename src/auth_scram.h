/*
 * SCRAM-SHA-256 (RFC 5802/7677) both ways, without channel binding:
 *  - ScramServer verifies a client against a stored verifier
 *    ("SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>") or a plain password;
 *  - ScramClient logs pgmoat into a PostgreSQL server with a plain password, or
 *    with the ClientKey/ServerKey recovered from a client's successful SCRAM
 *    exchange (pgbouncer's pass-through trick: the keys work for any nonce when
 *    the server's verifier has the same salt and iterations).
 * Every message from the peer is untrusted: attribute order, base64, nonce
 * prefix, iteration caps (SCRAM_MAX_ITERATIONS) and lengths are all checked.
 * Ownership: out buffers are malloc'd and owned by the caller.
 */
#ifndef PGMOAT_AUTH_SCRAM_H
#define PGMOAT_AUTH_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "util.h"

#define SCRAM_KEY_LEN 32
#define SCRAM_MAX_ITERATIONS 100000	/* a server demanding more is refused */
#define SCRAM_DEFAULT_ITERATIONS 4096
#define SCRAM_MAX_MESSAGE 1024	/* longer client/server messages are refused */

typedef struct ScramKeys {
	uint8_t client_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
	bool valid;
} ScramKeys;

typedef struct ScramServer {
	int state;		/* internal */
	char *client_first_bare;
	char *server_first;
	char *nonce;		/* client nonce + server nonce */
	char *salt_b64;
	int iterations;
	uint8_t stored_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
	ScramKeys recovered;	/* ClientKey recovered from the proof on success */
	bool doomed;		/* unknown user: run the exchange, then fail */
	char gs2_flag;		/* 'n' or 'y' from client-first: c= must echo the same header */
	bool in_use;		/* initialised: holds secrets to wipe (a trust login never does) */
} ScramServer;

/*
 * secret: SCRAM verifier or plain password; NULL: a doomed exchange for an unknown user.
 * A string with the verifier prefix that does not parse, or an md5 hash, is refused
 * (false): using it as a plain password would make the stored hash the password.
 */
bool scram_server_init(ScramServer *ss, const char *secret) MUST_CHECK;
/*
 * A doomed exchange whose fake salt is derived from the user name and a
 * per-process random key, so probing two unknown names does not reveal that
 * both are unknown (PostgreSQL's mock authentication). Always fails at the end.
 */
bool scram_server_init_mock(ScramServer *ss, const char *user) MUST_CHECK;
/* client-first-message -> server-first-message. */
bool scram_server_first(ScramServer *ss, const uint8_t *in, size_t len, char **out,
			size_t *out_len, char *err, size_t errlen) MUST_CHECK;
/* client-final-message -> server-final-message; false on a bad proof. */
bool scram_server_final(ScramServer *ss, const uint8_t *in, size_t len, char **out,
			size_t *out_len, char *err, size_t errlen) MUST_CHECK;
void scram_server_free(ScramServer *ss);

/* A ScramClient must be zeroed ({0}) before scram_client_first(). */
typedef struct ScramClient {
	int state;
	char *client_nonce;
	char *client_first_bare;
	char *auth_message;
	uint8_t server_key[SCRAM_KEY_LEN];	/* to verify the server's signature */
} ScramClient;

/* client-first-message ("n,,n=,r=<nonce>"). */
bool scram_client_first(ScramClient *sc, char **out, size_t *out_len) MUST_CHECK;
/*
 * server-first-message -> client-final-message. Uses `password` when not NULL,
 * otherwise `keys` (which must be valid).
 */
bool scram_client_final(ScramClient *sc, const uint8_t *in, size_t len, const char *password,
			const ScramKeys *keys, char **out, size_t *out_len, char *err,
			size_t errlen) MUST_CHECK;
/* server-final-message: checks the server signature. */
bool scram_client_verify(ScramClient *sc, const uint8_t *in, size_t len, char *err,
			 size_t errlen) MUST_CHECK;
void scram_client_free(ScramClient *sc);

/* Check a cleartext password against a stored SCRAM verifier (auth_type=plain). */
bool scram_verify_plain(const char *verifier, const char *password) MUST_CHECK;

/*
 * Build a verifier from a password (for tests and tooling), in PostgreSQL's
 * format; malloc'd, NULL when iterations <= 0 or salt_len is 0.
 */
char *scram_make_verifier(const char *password, const uint8_t *salt, size_t salt_len,
			  int iterations);

/*
 * Test hooks: fix the nonce instead of drawing it at random, so the RFC 7677
 * vectors can be replayed. Call after scram_server_init() (server part of the
 * nonce) or on a zeroed ScramClient before scram_client_first().
 */
void scram_server_set_nonce_for_test(ScramServer *ss, const char *server_nonce);
void scram_client_set_nonce_for_test(ScramClient *sc, const char *client_nonce);

#endif
