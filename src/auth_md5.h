/* PostgreSQL md5 authentication: "md5" + hex(md5(hex(md5(password || user)) || salt)). */
#ifndef PGMOAT_AUTH_MD5_H
#define PGMOAT_AUTH_MD5_H

#include <stdbool.h>
#include <stdint.h>
#include "util.h"

#define MD5_PASSWD_LEN 35	/* "md5" + 32 hex */

/* out: "md5" + hex(md5(password || user)), NUL-terminated (36 bytes). */
void auth_md5_stored(const char *password, const char *user, char out[MD5_PASSWD_LEN + 1]);

/*
 * The response a client sends for salt. `secret` is either a plain password
 * or an already-hashed "md5..." stored secret (as in userlist.txt).
 */
void auth_md5_response(const char *secret, const char *user, const uint8_t salt[4],
		       char out[MD5_PASSWD_LEN + 1]);

/* Check a client's md5 response against the stored secret (plain or md5); constant time. */
bool auth_md5_check(const char *secret, const char *user, const uint8_t salt[4],
		    const char *response);

bool auth_md5_is_hash(const char *secret);

#endif
