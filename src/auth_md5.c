/*
 * PostgreSQL's md5 password scheme. The stored form is
 * "md5" + hex(md5(password || user)); on the wire the client answers a
 * 4-byte salt with "md5" + hex(md5(hex(stored) || salt)).
 */
#include "auth_md5.h"

#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>

#define MD5_DIGEST_LEN 16
#define MD5_HEX_LEN 32

/* "md5" + hex(md5(a || b)) into out; aborts only if the digest itself is unavailable. */
static void md5_hex2(const void *a, size_t alen, const void *b, size_t blen,
		     char out[MD5_PASSWD_LEN + 1])
{
	uint8_t digest[MD5_DIGEST_LEN];
	unsigned int dlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	/* md5 auth cannot be served without MD5 (e.g. a FIPS provider): fail loudly. */
	if (!ctx || EVP_DigestInit_ex(ctx, EVP_md5(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, a, alen) != 1 || EVP_DigestUpdate(ctx, b, blen) != 1 ||
	    EVP_DigestFinal_ex(ctx, digest, &dlen) != 1 || dlen != MD5_DIGEST_LEN)
		abort();
	EVP_MD_CTX_free(ctx);
	memcpy(out, "md5", 3);
	util_hex(digest, MD5_DIGEST_LEN, out + 3);
	util_wipe(digest, sizeof(digest));
}

bool auth_md5_is_hash(const char *secret)
{
	if (strncmp(secret, "md5", 3) != 0 || strlen(secret) != MD5_PASSWD_LEN)
		return false;
	return strspn(secret + 3, "0123456789abcdef") == MD5_HEX_LEN;
}

void auth_md5_stored(const char *password, const char *user, char out[MD5_PASSWD_LEN + 1])
{
	md5_hex2(password, strlen(password), user, strlen(user), out);
}

void auth_md5_response(const char *secret, const char *user, const uint8_t salt[4],
		       char out[MD5_PASSWD_LEN + 1])
{
	char stored[MD5_PASSWD_LEN + 1];

	if (auth_md5_is_hash(secret))
		memcpy(stored, secret, sizeof(stored));
	else
		auth_md5_stored(secret, user, stored);
	md5_hex2(stored + 3, MD5_HEX_LEN, salt, 4, out);
	util_wipe(stored, sizeof(stored));
}

bool auth_md5_check(const char *secret, const char *user, const uint8_t salt[4],
		    const char *response)
{
	char expected[MD5_PASSWD_LEN + 1];
	bool ok;

	auth_md5_response(secret, user, salt, expected);
	/* The length is public (always 35 for a well-formed answer); the content is not. */
	ok = strnlen(response, MD5_PASSWD_LEN + 1) == MD5_PASSWD_LEN &&
	     util_secure_equal(expected, response, MD5_PASSWD_LEN);
	util_wipe(expected, sizeof(expected));
	return ok;
}
