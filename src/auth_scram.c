/*
 * SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding.
 *
 *   SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, i)
 *   ClientKey = HMAC(SaltedPassword, "Client Key"), StoredKey = H(ClientKey)
 *   ServerKey = HMAC(SaltedPassword, "Server Key")
 *   AuthMessage = client-first-bare "," server-first "," client-final-without-proof
 *   ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage)
 *   ServerSignature = HMAC(ServerKey, AuthMessage)
 *
 * Password normalization: the password is used as-is. RFC 5802 asks for
 * SASLprep, which is the identity on printable ASCII; PostgreSQL also falls
 * back to the raw bytes when a password is not valid for SASLprep. A non-ASCII
 * password that SASLprep would change (e.g. one not in NFKC form) therefore
 * does not match a verifier PostgreSQL made from it.
 *
 * Messages from the peer are parsed from a private NUL-terminated copy after
 * checking the size cap and the absence of embedded NULs; attributes must come
 * in the RFC's order.
 */
#include "auth_scram.h"
#include "auth_md5.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define SCRAM_PREFIX "SCRAM-SHA-256$"
#define SCRAM_RAW_NONCE_LEN 18	/* as PostgreSQL: 24 base64 characters */
#define SCRAM_SALT_LEN 16
#define SCRAM_MOCK_SALT_LEN 16

enum { SV_INIT = 0, SV_FIRST_SENT, SV_DONE };
enum { CL_INIT = 0, CL_FIRST_SENT, CL_FINAL_SENT, CL_DONE };

static bool scram_fail(char *err, size_t errlen, const char *fmt, ...) PRINTF_LIKE(3, 4);

static bool scram_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (errlen == 0)
		return false;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return false;
}

/* --- base64 (RFC 4648 with padding; decoding refuses anything non-canonical) --- */

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_encode(const uint8_t *in, size_t len)
{
	char *out = xmalloc((len + 2) / 3 * 4 + 1);
	char *o = out;

	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < len)
			v |= in[i + 2];
		*o++ = b64_chars[(v >> 18) & 63];
		*o++ = b64_chars[(v >> 12) & 63];
		*o++ = i + 1 < len ? b64_chars[(v >> 6) & 63] : '=';
		*o++ = i + 2 < len ? b64_chars[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

static int b64_value(char c)
{
	const char *p = c ? strchr(b64_chars, c) : NULL;
	return p ? (int)(p - b64_chars) : -1;
}

/*
 * Decode exactly inlen characters into out (outcap bytes). Refuses lengths
 * not a multiple of 4, foreign characters, misplaced padding and non-zero
 * padding bits, so one value has one encoding.
 */
static bool b64_decode(const char *in, size_t inlen, uint8_t *out, size_t outcap, size_t *outlen)
{
	size_t n = 0;

	if (inlen % 4 != 0)
		return false;
	for (size_t i = 0; i < inlen; i += 4) {
		bool last = i + 4 == inlen;
		int pad = last ? (in[i + 3] == '=') + (in[i + 2] == '=' && in[i + 3] == '=') : 0;
		int v[4] = { 0, 0, 0, 0 };
		for (int k = 0; k < 4 - pad; k++)
			if ((v[k] = b64_value(in[i + k])) < 0)
				return false;
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
		if ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff)))
			return false;
		if ((size_t)(3 - pad) > outcap - n)
			return false;
		out[n++] = (uint8_t)(w >> 16);
		if (pad < 2)
			out[n++] = (uint8_t)(w >> 8);
		if (pad < 1)
			out[n++] = (uint8_t)w;
	}
	*outlen = n;
	return true;
}

/* --- primitives --- */

static bool scram_hmac(const uint8_t *key, size_t klen, const void *data, size_t dlen,
		       uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int n = 0;
	if (!HMAC(EVP_sha256(), key, (int)klen, data, dlen, out, &n))
		return false;
	return n == SCRAM_KEY_LEN;
}

static bool scram_hash(const uint8_t *in, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int n = 0;
	return EVP_Digest(in, len, out, &n, EVP_sha256(), NULL) == 1 && n == SCRAM_KEY_LEN;
}

/* ClientKey and ServerKey from a password; the salted password never leaves this function. */
static bool scram_keys_from_password(const char *password, const uint8_t *salt, size_t salt_len,
				     int iterations, uint8_t client_key[SCRAM_KEY_LEN],
				     uint8_t server_key[SCRAM_KEY_LEN])
{
	uint8_t salted[SCRAM_KEY_LEN];
	bool ok = PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, iterations,
				    EVP_sha256(), SCRAM_KEY_LEN, salted) == 1 &&
		  scram_hmac(salted, sizeof(salted), "Client Key", 10, client_key) &&
		  scram_hmac(salted, sizeof(salted), "Server Key", 10, server_key);
	util_wipe(salted, sizeof(salted));
	return ok;
}

static char *scram_random_nonce(void)
{
	uint8_t raw[SCRAM_RAW_NONCE_LEN];
	if (!util_random_bytes(raw, sizeof(raw)))
		return NULL;
	return b64_encode(raw, sizeof(raw));
}

/* --- attribute parsing over a NUL-terminated message --- */

/* A private NUL-terminated copy of a peer message, or NULL with err set. */
static char *scram_copy_message(const uint8_t *in, size_t len, char *err, size_t errlen)
{
	if (len > SCRAM_MAX_MESSAGE) {
		scram_fail(err, errlen, "SCRAM message too long");
		return NULL;
	}
	if (len == 0 || memchr(in, '\0', len)) {
		scram_fail(err, errlen, "malformed SCRAM message (empty or contains NUL)");
		return NULL;
	}
	return xstrndup((const char *)in, len);
}

/* "<attr>=<value>" at *p, value up to ',' or the end; *p is left on the ',' or NUL. */
static bool scram_read_attr(const char **p, char attr, const char **val, size_t *vlen)
{
	if ((*p)[0] != attr || (*p)[1] != '=')
		return false;
	*val = *p + 2;
	*vlen = strcspn(*val, ",");
	*p = *val + *vlen;
	return true;
}

static bool scram_expect_comma(const char **p)
{
	if (**p != ',')
		return false;
	(*p)++;
	return true;
}

/* Skip ",x=value" extensions up to the end of the message. */
static bool scram_skip_extensions(const char **p)
{
	while (**p == ',') {
		const char *val;
		size_t vlen;
		(*p)++;
		char a = **p;
		if (!((a >= 'a' && a <= 'z') || (a >= 'A' && a <= 'Z')) || !scram_read_attr(p, a, &val, &vlen))
			return false;
	}
	return **p == '\0';
}

/* RFC 5802 printable: %x21-2B / %x2D-7E, at least one character. */
static bool scram_nonce_valid(const char *s, size_t len)
{
	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
			return false;
	return true;
}

/* A decimal iteration count; false on anything but 1..max. */
static bool scram_parse_iterations(const char *s, size_t len, long max, int *out)
{
	long v = 0;
	if (len == 0 || len > 10)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v <= 0 || v > max)
		return false;
	*out = (int)v;
	return true;
}

static char *scram_auth_message(const char *client_first_bare, const char *server_first,
				const char *client_final, size_t client_final_len)
{
	return xasprintf("%s,%s,%.*s", client_first_bare, server_first, (int)client_final_len,
			 client_final);
}

static void scram_set_out(const char *msg, char **out, size_t *out_len)
{
	*out = xstrdup(msg);
	*out_len = strlen(msg);
}

/* --- server --- */

static uint8_t mock_key[SCRAM_KEY_LEN];
static bool mock_key_ok;
static pthread_once_t mock_key_once = PTHREAD_ONCE_INIT;

static void mock_key_init(void)
{
	mock_key_ok = util_random_bytes(mock_key, sizeof(mock_key));
}

/* "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>" into ss. */
static bool scram_parse_verifier(ScramServer *ss, const char *secret)
{
	const char *p = secret + strlen(SCRAM_PREFIX);
	const char *colon = strchr(p, ':');
	const char *dollar = colon ? strchr(colon + 1, '$') : NULL;
	const char *colon2 = dollar ? strchr(dollar + 1, ':') : NULL;
	uint8_t salt[SCRAM_MAX_MESSAGE];
	size_t n;

	if (!colon2 || !scram_parse_iterations(p, (size_t)(colon - p), INT_MAX, &ss->iterations))
		return false;
	const char *salt_b64 = colon + 1;
	size_t salt_b64_len = (size_t)(dollar - salt_b64);
	if (!b64_decode(salt_b64, salt_b64_len, salt, sizeof(salt), &n) || n == 0)
		return false;
	if (!b64_decode(dollar + 1, (size_t)(colon2 - dollar - 1), ss->stored_key, SCRAM_KEY_LEN, &n) ||
	    n != SCRAM_KEY_LEN)
		return false;
	if (!b64_decode(colon2 + 1, strlen(colon2 + 1), ss->server_key, SCRAM_KEY_LEN, &n) ||
	    n != SCRAM_KEY_LEN)
		return false;
	ss->salt_b64 = xstrndup(salt_b64, salt_b64_len);
	return true;
}

/* A plain password gets a fresh salt, as if PostgreSQL had just stored it. */
static bool scram_server_from_password(ScramServer *ss, const char *password)
{
	uint8_t salt[SCRAM_SALT_LEN], client_key[SCRAM_KEY_LEN];
	bool ok = util_random_bytes(salt, sizeof(salt)) &&
		  scram_keys_from_password(password, salt, sizeof(salt), SCRAM_DEFAULT_ITERATIONS,
					   client_key, ss->server_key) &&
		  scram_hash(client_key, sizeof(client_key), ss->stored_key);
	util_wipe(client_key, sizeof(client_key));
	if (!ok)
		return false;
	ss->iterations = SCRAM_DEFAULT_ITERATIONS;
	ss->salt_b64 = b64_encode(salt, sizeof(salt));
	return true;
}

bool scram_server_init(ScramServer *ss, const char *secret)
{
	memset(ss, 0, sizeof(*ss));
	ss->in_use = true;
	if (!secret)
		return scram_server_init_mock(ss, "");
	if (strncmp(secret, SCRAM_PREFIX, strlen(SCRAM_PREFIX)) == 0) {
		if (scram_parse_verifier(ss, secret))
			return true;
	} else if (!auth_md5_is_hash(secret) && scram_server_from_password(ss, secret)) {
		return true;
	}
	scram_server_free(ss);
	return false;
}

bool scram_server_init_mock(ScramServer *ss, const char *user)
{
	uint8_t mac[SCRAM_KEY_LEN];

	memset(ss, 0, sizeof(*ss));
	ss->in_use = true;
	ss->doomed = true;
	if (pthread_once(&mock_key_once, mock_key_init) != 0 || !mock_key_ok)
		return false;
	/* Random keys: no proof can match them, and doomed is checked as well. */
	if (!scram_hmac(mock_key, sizeof(mock_key), user, strlen(user), mac) ||
	    !util_random_bytes(ss->stored_key, SCRAM_KEY_LEN) ||
	    !util_random_bytes(ss->server_key, SCRAM_KEY_LEN))
		return false;
	ss->salt_b64 = b64_encode(mac, SCRAM_MOCK_SALT_LEN);
	ss->iterations = SCRAM_DEFAULT_ITERATIONS;
	return true;
}

void scram_server_set_nonce_for_test(ScramServer *ss, const char *server_nonce)
{
	free(ss->nonce);
	ss->nonce = xstrdup(server_nonce);
}

/* gs2-header: "n,," or "y,,"; channel binding and authzid are refused by name. */
static bool scram_server_gs2(ScramServer *ss, const char **p, char *err, size_t errlen)
{
	const char *s = *p;

	if (s[0] == 'p')
		return scram_fail(err, errlen, "client requires SCRAM channel binding, but it is not supported");
	if ((s[0] != 'n' && s[0] != 'y') || s[1] != ',')
		return scram_fail(err, errlen, "malformed SCRAM message (unexpected channel-binding flag)");
	if (s[2] == 'a')
		return scram_fail(err, errlen, "client uses authorization identity, but it is not supported");
	if (s[2] != ',')
		return scram_fail(err, errlen, "malformed SCRAM message (unexpected attribute in gs2 header)");
	ss->gs2_flag = s[0];
	*p = s + 3;
	return true;
}

/* client-first-message-bare: [m=...,] n=user,r=nonce[,ext...]; returns the client nonce. */
static bool scram_server_parse_first(ScramServer *ss, const char *msg, const char **cnonce,
				     size_t *cnonce_len, char *err, size_t errlen)
{
	const char *p = msg, *user;
	size_t user_len;

	if (!scram_server_gs2(ss, &p, err, errlen))
		return false;
	ss->client_first_bare = xstrdup(p);
	if (p[0] == 'm' && p[1] == '=')
		return scram_fail(err, errlen, "client requires an unsupported SCRAM extension");
	/* The user name is ignored: PostgreSQL clients send it empty, the startup packet names the user. */
	if (!scram_read_attr(&p, 'n', &user, &user_len) || !scram_expect_comma(&p) ||
	    !scram_read_attr(&p, 'r', cnonce, cnonce_len))
		return scram_fail(err, errlen, "malformed SCRAM message (expected n= and r= attributes)");
	if (!scram_nonce_valid(*cnonce, *cnonce_len))
		return scram_fail(err, errlen, "malformed SCRAM message (invalid nonce)");
	if (!scram_skip_extensions(&p))
		return scram_fail(err, errlen, "malformed SCRAM message (garbage at end of client-first-message)");
	return true;
}

bool scram_server_first(ScramServer *ss, const uint8_t *in, size_t len, char **out,
			size_t *out_len, char *err, size_t errlen)
{
	const char *cnonce = NULL;
	size_t cnonce_len = 0;
	char *snonce = NULL;
	bool ok = false;

	if (ss->state != SV_INIT)
		return scram_fail(err, errlen, "unexpected SCRAM client-first-message");
	ss->state = SV_DONE;	/* any failure ends the exchange */
	char *msg = scram_copy_message(in, len, err, errlen);
	if (!msg)
		return false;
	if (!scram_server_parse_first(ss, msg, &cnonce, &cnonce_len, err, errlen))
		goto out;
	snonce = ss->nonce ? ss->nonce : scram_random_nonce();
	ss->nonce = NULL;
	if (!snonce) {
		scram_fail(err, errlen, "could not generate SCRAM nonce");
		goto out;
	}
	ss->nonce = xasprintf("%.*s%s", (int)cnonce_len, cnonce, snonce);
	ss->server_first = xasprintf("r=%s,s=%s,i=%d", ss->nonce, ss->salt_b64, ss->iterations);
	scram_set_out(ss->server_first, out, out_len);
	ss->state = SV_FIRST_SENT;
	ok = true;
out:
	free(snonce);
	free(msg);
	return ok;
}

/*
 * client-final-message: c=<gs2 header b64>,r=<nonce>[,ext...],p=<proof>.
 * On success *without_proof_len is the length of the signed prefix.
 */
static bool scram_server_parse_final(ScramServer *ss, const char *msg, size_t *without_proof_len,
				     uint8_t proof[SCRAM_KEY_LEN], char *err, size_t errlen)
{
	const char *p = msg, *val;
	size_t vlen, n;
	const char *cbind = ss->gs2_flag == 'y' ? "eSws" : "biws";

	if (!scram_read_attr(&p, 'c', &val, &vlen))
		return scram_fail(err, errlen, "malformed SCRAM message (expected c= attribute)");
	if (vlen != strlen(cbind) || memcmp(val, cbind, vlen) != 0)
		return scram_fail(err, errlen, "SCRAM channel binding check failed");
	if (!scram_expect_comma(&p) || !scram_read_attr(&p, 'r', &val, &vlen))
		return scram_fail(err, errlen, "malformed SCRAM message (expected r= attribute)");
	if (vlen != strlen(ss->nonce) || memcmp(val, ss->nonce, vlen) != 0)
		return scram_fail(err, errlen, "SCRAM nonce mismatch");
	for (;;) {
		const char *sep = p;
		if (!scram_expect_comma(&p))
			return scram_fail(err, errlen, "malformed SCRAM message (expected p= attribute)");
		if (scram_read_attr(&p, 'p', &val, &vlen)) {
			*without_proof_len = (size_t)(sep - msg);
			break;
		}
		char a = *p;
		if (!((a >= 'a' && a <= 'z') || (a >= 'A' && a <= 'Z')) || !scram_read_attr(&p, a, &val, &vlen))
			return scram_fail(err, errlen, "malformed SCRAM message (bad attribute)");
	}
	if (*p != '\0')
		return scram_fail(err, errlen, "malformed SCRAM message (garbage after proof)");
	if (!b64_decode(val, vlen, proof, SCRAM_KEY_LEN, &n) || n != SCRAM_KEY_LEN)
		return scram_fail(err, errlen, "malformed SCRAM message (invalid proof)");
	return true;
}

/* Check the proof; on success recover ClientKey and sign the exchange. */
static bool scram_server_verify(ScramServer *ss, const char *auth_message,
				const uint8_t proof[SCRAM_KEY_LEN], uint8_t server_sig[SCRAM_KEY_LEN])
{
	uint8_t client_sig[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
	size_t alen = strlen(auth_message);
	bool ok = scram_hmac(ss->stored_key, SCRAM_KEY_LEN, auth_message, alen, client_sig);

	for (int i = 0; i < SCRAM_KEY_LEN; i++)
		client_key[i] = proof[i] ^ client_sig[i];
	ok = ok && scram_hash(client_key, SCRAM_KEY_LEN, stored) &&
	     util_secure_equal(stored, ss->stored_key, SCRAM_KEY_LEN) && !ss->doomed &&
	     scram_hmac(ss->server_key, SCRAM_KEY_LEN, auth_message, alen, server_sig);
	if (ok) {
		memcpy(ss->recovered.client_key, client_key, SCRAM_KEY_LEN);
		memcpy(ss->recovered.server_key, ss->server_key, SCRAM_KEY_LEN);
		ss->recovered.valid = true;
	}
	util_wipe(client_key, sizeof(client_key));
	util_wipe(client_sig, sizeof(client_sig));
	return ok;
}

bool scram_server_final(ScramServer *ss, const uint8_t *in, size_t len, char **out,
			size_t *out_len, char *err, size_t errlen)
{
	uint8_t proof[SCRAM_KEY_LEN], server_sig[SCRAM_KEY_LEN];
	size_t signed_len = 0;
	char *auth_message = NULL, *sig_b64 = NULL;
	bool ok = false;

	if (ss->state != SV_FIRST_SENT)
		return scram_fail(err, errlen, "unexpected SCRAM client-final-message");
	ss->state = SV_DONE;
	char *msg = scram_copy_message(in, len, err, errlen);
	if (!msg)
		return false;
	if (!scram_server_parse_final(ss, msg, &signed_len, proof, err, errlen))
		goto out;
	auth_message = scram_auth_message(ss->client_first_bare, ss->server_first, msg, signed_len);
	if (!scram_server_verify(ss, auth_message, proof, server_sig)) {
		scram_fail(err, errlen, "password authentication failed");
		goto out;
	}
	sig_b64 = b64_encode(server_sig, SCRAM_KEY_LEN);
	*out = xasprintf("v=%s", sig_b64);
	*out_len = strlen(*out);
	ok = true;
out:
	free(sig_b64);
	free(auth_message);
	free(msg);
	util_wipe(proof, sizeof(proof));
	return ok;
}

void scram_server_free(ScramServer *ss)
{
	if (!ss->in_use)
		return;
	free(ss->client_first_bare);
	free(ss->server_first);
	free(ss->nonce);
	free(ss->salt_b64);
	util_wipe(ss, sizeof(*ss));
}

/* --- client --- */

void scram_client_set_nonce_for_test(ScramClient *sc, const char *client_nonce)
{
	free(sc->client_nonce);
	sc->client_nonce = xstrdup(client_nonce);
}

bool scram_client_first(ScramClient *sc, char **out, size_t *out_len)
{
	if (sc->state != CL_INIT)
		return false;
	if (!sc->client_nonce && !(sc->client_nonce = scram_random_nonce()))
		return false;
	sc->client_first_bare = xasprintf("n=,r=%s", sc->client_nonce);
	*out = xasprintf("n,,%s", sc->client_first_bare);
	*out_len = strlen(*out);
	sc->state = CL_FIRST_SENT;
	return true;
}

typedef struct ServerFirst {
	const char *nonce;
	size_t nonce_len;
	uint8_t salt[SCRAM_MAX_MESSAGE];
	size_t salt_len;
	int iterations;
} ServerFirst;

/* server-first-message: r=<nonce>,s=<salt>,i=<iterations>[,ext...]. */
static bool scram_client_parse_first(const ScramClient *sc, const char *msg, ServerFirst *sf,
				     char *err, size_t errlen)
{
	const char *p = msg, *val;
	size_t vlen, cn_len = strlen(sc->client_nonce);

	if (p[0] == 'm' && p[1] == '=')
		return scram_fail(err, errlen, "server requires an unsupported SCRAM extension");
	if (!scram_read_attr(&p, 'r', &sf->nonce, &sf->nonce_len))
		return scram_fail(err, errlen, "malformed SCRAM message (expected r= attribute)");
	if (!scram_nonce_valid(sf->nonce, sf->nonce_len) || sf->nonce_len <= cn_len ||
	    memcmp(sf->nonce, sc->client_nonce, cn_len) != 0)
		return scram_fail(err, errlen, "invalid SCRAM response (nonce mismatch)");
	if (!scram_expect_comma(&p) || !scram_read_attr(&p, 's', &val, &vlen))
		return scram_fail(err, errlen, "malformed SCRAM message (expected s= attribute)");
	if (!b64_decode(val, vlen, sf->salt, sizeof(sf->salt), &sf->salt_len) || sf->salt_len == 0)
		return scram_fail(err, errlen, "malformed SCRAM message (invalid salt)");
	if (!scram_expect_comma(&p) || !scram_read_attr(&p, 'i', &val, &vlen))
		return scram_fail(err, errlen, "malformed SCRAM message (expected i= attribute)");
	if (!scram_parse_iterations(val, vlen, SCRAM_MAX_ITERATIONS, &sf->iterations))
		return scram_fail(err, errlen, "SCRAM iteration count refused (must be 1..%d)",
				  SCRAM_MAX_ITERATIONS);
	if (!scram_skip_extensions(&p))
		return scram_fail(err, errlen, "malformed SCRAM message (garbage at end of server-first-message)");
	return true;
}

/* ClientKey and ServerKey from the password, or the keys recovered from a client. */
static bool scram_client_keys(const ServerFirst *sf, const char *password, const ScramKeys *keys,
			      uint8_t client_key[SCRAM_KEY_LEN], uint8_t server_key[SCRAM_KEY_LEN])
{
	if (password)
		return scram_keys_from_password(password, sf->salt, sf->salt_len, sf->iterations,
						client_key, server_key);
	if (!keys || !keys->valid)
		return false;
	memcpy(client_key, keys->client_key, SCRAM_KEY_LEN);
	memcpy(server_key, keys->server_key, SCRAM_KEY_LEN);
	return true;
}

bool scram_client_final(ScramClient *sc, const uint8_t *in, size_t len, const char *password,
			const ScramKeys *keys, char **out, size_t *out_len, char *err,
			size_t errlen)
{
	ServerFirst sf;
	uint8_t client_key[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN];
	char *without_proof = NULL, *proof_b64 = NULL;
	bool ok = false;

	if (sc->state != CL_FIRST_SENT)
		return scram_fail(err, errlen, "unexpected SCRAM server-first-message");
	sc->state = CL_DONE;
	char *msg = scram_copy_message(in, len, err, errlen);
	if (!msg)
		return false;
	if (!scram_client_parse_first(sc, msg, &sf, err, errlen))
		goto out;
	if (!scram_client_keys(&sf, password, keys, client_key, sc->server_key)) {
		scram_fail(err, errlen, "cannot compute SCRAM keys (no password or recovered keys)");
		goto out;
	}
	without_proof = xasprintf("c=biws,r=%.*s", (int)sf.nonce_len, sf.nonce);
	sc->auth_message = scram_auth_message(sc->client_first_bare, msg, without_proof,
					      strlen(without_proof));
	if (!scram_hash(client_key, SCRAM_KEY_LEN, stored) ||
	    !scram_hmac(stored, SCRAM_KEY_LEN, sc->auth_message, strlen(sc->auth_message), sig)) {
		scram_fail(err, errlen, "SCRAM computation failed");
		goto out;
	}
	for (int i = 0; i < SCRAM_KEY_LEN; i++)
		sig[i] ^= client_key[i];
	proof_b64 = b64_encode(sig, SCRAM_KEY_LEN);
	*out = xasprintf("%s,p=%s", without_proof, proof_b64);
	*out_len = strlen(*out);
	sc->state = CL_FINAL_SENT;
	ok = true;
out:
	util_wipe(client_key, sizeof(client_key));
	util_wipe(sig, sizeof(sig));
	free(proof_b64);
	free(without_proof);
	free(msg);
	return ok;
}

/* A server's e= value, made safe to log: printable ASCII only, bounded. */
static void scram_server_error(const char *val, size_t vlen, char *err, size_t errlen)
{
	char clean[64];
	size_t n = 0;
	for (size_t i = 0; i < vlen && n < sizeof(clean) - 1; i++)
		clean[n++] = (val[i] >= 0x20 && val[i] < 0x7f) ? val[i] : '?';
	clean[n] = '\0';
	scram_fail(err, errlen, "SCRAM authentication failed: server error \"%s\"", clean);
}

bool scram_client_verify(ScramClient *sc, const uint8_t *in, size_t len, char *err, size_t errlen)
{
	uint8_t got[SCRAM_KEY_LEN], want[SCRAM_KEY_LEN];
	const char *p, *val;
	size_t vlen, n;
	bool ok = false;

	if (sc->state != CL_FINAL_SENT)
		return scram_fail(err, errlen, "unexpected SCRAM server-final-message");
	sc->state = CL_DONE;
	char *msg = scram_copy_message(in, len, err, errlen);
	if (!msg)
		return false;
	p = msg;
	if (scram_read_attr(&p, 'e', &val, &vlen)) {
		scram_server_error(val, vlen, err, errlen);
	} else if (!scram_read_attr(&p, 'v', &val, &vlen) || !scram_skip_extensions(&p) ||
		   !b64_decode(val, vlen, got, sizeof(got), &n) || n != SCRAM_KEY_LEN) {
		scram_fail(err, errlen, "malformed SCRAM message (expected v= server signature)");
	} else if (!scram_hmac(sc->server_key, SCRAM_KEY_LEN, sc->auth_message,
			       strlen(sc->auth_message), want) ||
		   !util_secure_equal(got, want, SCRAM_KEY_LEN)) {
		scram_fail(err, errlen, "invalid SCRAM server signature");
	} else {
		ok = true;
	}
	free(msg);
	return ok;
}

void scram_client_free(ScramClient *sc)
{
	free(sc->client_nonce);
	free(sc->client_first_bare);
	free(sc->auth_message);
	util_wipe(sc, sizeof(*sc));
}

char *scram_make_verifier(const char *password, const uint8_t *salt, size_t salt_len,
			  int iterations)
{
	uint8_t client_key[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN], server_key[SCRAM_KEY_LEN];
	char *out = NULL;

	if (iterations <= 0 || salt_len == 0 || salt_len > INT_MAX)
		return NULL;
	if (scram_keys_from_password(password, salt, salt_len, iterations, client_key, server_key) &&
	    scram_hash(client_key, SCRAM_KEY_LEN, stored)) {
		char *s = b64_encode(salt, salt_len);
		char *k1 = b64_encode(stored, SCRAM_KEY_LEN);
		char *k2 = b64_encode(server_key, SCRAM_KEY_LEN);
		out = xasprintf(SCRAM_PREFIX "%d:%s$%s:%s", iterations, s, k1, k2);
		free(s);
		free(k1);
		free(k2);
	}
	util_wipe(client_key, sizeof(client_key));
	util_wipe(server_key, sizeof(server_key));
	return out;
}

bool scram_verify_plain(const char *verifier, const char *password)
{
	ScramServer ss = { .in_use = true };	/* filled by scram_parse_verifier: wiped at the end */
	uint8_t salt[SCRAM_MAX_MESSAGE], client_key[SCRAM_KEY_LEN], server_key[SCRAM_KEY_LEN];
	uint8_t stored[SCRAM_KEY_LEN];
	size_t salt_len = 0;
	bool ok = strncmp(verifier, SCRAM_PREFIX, strlen(SCRAM_PREFIX)) == 0 &&
		  scram_parse_verifier(&ss, verifier) &&
		  b64_decode(ss.salt_b64, strlen(ss.salt_b64), salt, sizeof(salt), &salt_len) &&
		  scram_keys_from_password(password, salt, salt_len, ss.iterations, client_key,
					   server_key) &&
		  scram_hash(client_key, sizeof(client_key), stored) &&
		  util_secure_equal(stored, ss.stored_key, SCRAM_KEY_LEN) &&
		  util_secure_equal(server_key, ss.server_key, SCRAM_KEY_LEN);
	util_wipe(client_key, sizeof(client_key));
	util_wipe(server_key, sizeof(server_key));
	scram_server_free(&ss);
	return ok;
}
