/*
 * JWT client authentication (auth.type = jwt): the client sends a compact
 * JWS as its cleartext password; pgmoat verifies it against configured keys.
 *
 * What a token must satisfy (doc/auth.md has the operator's view):
 * - three base64url segments, at most JWT_MAX_TOKEN bytes, no "crit" header;
 * - header "alg" equal to the alg configured for the key it selects ("none"
 *   never is; the token cannot pick another alg for a key: no alg confusion);
 * - "kid" selects the key; a token without kid is accepted only when exactly
 *   one key is configured;
 * - a valid signature (libjwt), then the claims: exp required; nbf and iat,
 *   when present, not in the future; iss and aud when configured; with
 *   max_ttl, iat required and exp - iat <= max_ttl. All times +- leeway.
 *
 * Keys are loaded when the configuration is (a broken key file fails the
 * load, so a reload keeps the old keys). The verifier is pure: it takes the
 * time as an argument and touches no global state, for unit tests and fuzzing.
 */
#ifndef PGMOAT_AUTH_JWT_H
#define PGMOAT_AUTH_JWT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>
#include "util.h"

#define JWT_MAX_TOKEN 16384	/* bytes of a compact JWS we look at */
#define JWT_MAX_KEY_FILE 65536

typedef struct JwtKey {
	char *kid;		/* NULL: the key has no kid */
	int alg;		/* libjwt's jwt_alg_t */
	unsigned char *material;	/* PEM public key, or the HMAC secret */
	size_t len;
} JwtKey;

typedef struct JwtConfig {
	bool configured;	/* YAML auth.jwt was given */
	JwtKey *keys;		/* keys: entries and jwks_file keys, in file order */
	int nkeys;
	char *issuer;		/* NULL: iss not checked */
	StrList audience;	/* empty: aud not checked; else aud must name one of these */
	usec_t leeway;		/* clock skew allowed on exp, nbf, iat */
	usec_t max_ttl;		/* 0: no bound on exp - iat */
	char *role_claim;	/* NULL: no role mapping */
	char *user_claim;	/* NULL: "sub"; the startup user must equal it */
	bool allow_insecure;	/* accept tokens over plain TCP (loopback tests) */
} JwtConfig;

void jwt_config_free(JwtConfig *jc);

/* Add one key from a file: PEM public key for RS and ES algs, raw secret for HS. */
bool jwt_config_add_key_file(JwtConfig *jc, const char *kid, const char *alg, const char *path,
			     char *err, size_t errlen);

/* Add the RSA and EC signing keys of a JWKS file; *skipped counts keys of other kinds. */
bool jwt_config_add_jwks_file(JwtConfig *jc, const char *path, int *skipped, char *err,
			      size_t errlen);

/*
 * Verify a token. Returns its claims (a JSON object, owned by the caller), or
 * NULL with the reason in err. The reason never contains the token.
 */
json_t *jwt_verify(const JwtConfig *jc, const char *token, size_t len, time_t now, char *err,
		   size_t errlen);

/* The claim's value when it is a string, else NULL. */
const char *jwt_claim_string(const json_t *claims, const char *name);

/* The claim the startup user name must equal. */
const char *jwt_user_claim(const JwtConfig *jc);

#endif
