/*
 * JWT verification and key loading (see auth_jwt.h for the rules).
 *
 * libjwt checks RS and ES signatures (HS ones are checked here, in constant
 * time); everything it would otherwise decide for us
 * is decided here first: the header is parsed by us, the key is chosen by
 * kid, and the header's alg must equal the alg configured for that key before
 * libjwt sees the token, so an RS256 public key is never used as an HS256
 * secret. The payload is parsed again by us with duplicate keys refused.
 */
#include "auth_jwt.h"

#include <ctype.h>
#include <errno.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define JWT_MAX_HEADER 2048	/* decoded header bytes */

/* ------------------------------------------------------------- keys */

static void jwt_key_clear(JwtKey *k)
{
	free(k->kid);
	if (k->material)
		util_wipe(k->material, k->len);
	free(k->material);
}

void jwt_config_free(JwtConfig *jc)
{
	for (int i = 0; i < jc->nkeys; i++)
		jwt_key_clear(&jc->keys[i]);
	free(jc->keys);
	free(jc->issuer);
	strlist_free(&jc->audience);
	free(jc->role_claim);
	free(jc->user_claim);
	memset(jc, 0, sizeof(*jc));
}

static bool alg_is_hmac(int alg)
{
	return alg == JWT_ALG_HS256 || alg == JWT_ALG_HS384 || alg == JWT_ALG_HS512;
}

static bool alg_is_rsa(int alg)
{
	return alg == JWT_ALG_RS256 || alg == JWT_ALG_RS384 || alg == JWT_ALG_RS512;
}

/* The EC curve an ES alg requires (RFC 7518 3.4). */
static const char *alg_ec_group(int alg)
{
	switch (alg) {
	case JWT_ALG_ES256: return "prime256v1";
	case JWT_ALG_ES384: return "secp384r1";
	case JWT_ALG_ES512: return "secp521r1";
	default: return NULL;
	}
}

/* An alg name we verify, or -1 ("none", EdDSA and anything unknown). */
static int alg_parse(const char *name)
{
	if (!name || strcmp(name, "none") == 0)
		return -1;
	jwt_alg_t a = jwt_str_alg(name);
	if (a == JWT_ALG_INVAL || a == JWT_ALG_NONE || strcmp(jwt_alg_str(a), name) != 0)
		return -1;
	return (int)a;
}

static void jwt_add_key(JwtConfig *jc, const char *kid, int alg, unsigned char *material,
			size_t len)
{
	jc->keys = xrealloc(jc->keys, sizeof(*jc->keys) * (size_t)(jc->nkeys + 1));
	JwtKey *k = &jc->keys[jc->nkeys++];
	k->kid = kid ? xstrdup(kid) : NULL;
	k->alg = alg;
	k->material = material;
	k->len = len;
}

/* Does the key suit the alg? NULL: yes; else why not. */
static const char *pkey_suits_alg(EVP_PKEY *pkey, int alg)
{
	if (alg_is_rsa(alg))
		return EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA ? NULL : "not an RSA public key";
	const char *group = alg_ec_group(alg);
	char name[64];
	size_t nlen = 0;
	if (!group || EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC)
		return "not an EC public key";
	if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof(name),
					    &nlen) || strcmp(name, group) != 0)
		return "EC key on the wrong curve for its alg";
	return NULL;
}

/* The public key re-written as PEM (what libjwt reads); NULL on failure. */
static unsigned char *pkey_to_pem(EVP_PKEY *pkey, size_t *len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	unsigned char *out = NULL;
	char *data;
	if (bio && PEM_write_bio_PUBKEY(bio, pkey)) {
		long n = BIO_get_mem_data(bio, &data);
		if (n > 0) {
			out = xmalloc((size_t)n + 1);
			memcpy(out, data, (size_t)n);
			out[n] = '\0';
			*len = (size_t)n;
		}
	}
	BIO_free(bio);
	return out;
}

/* A PEM public key for an RS or ES alg; the material is re-encoded, so junk around it goes. */
static bool load_public_key(JwtConfig *jc, const char *kid, int alg, const char *text,
			    char *err, size_t errlen)
{
	BIO *bio = BIO_new_mem_buf(text, -1);
	EVP_PKEY *pkey = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
	const char *why = pkey ? pkey_suits_alg(pkey, alg) : "no PEM public key in the file";
	size_t len = 0;
	unsigned char *pem = why ? NULL : pkey_to_pem(pkey, &len);
	if (!why && !pem)
		why = "cannot re-encode the key";
	if (why)
		snprintf(err, errlen, "%s", why);
	else
		jwt_add_key(jc, kid, alg, pem, len);
	EVP_PKEY_free(pkey);
	BIO_free(bio);
	return why == NULL;
}

/* HMAC secrets: at least as long as the hash (RFC 7518 3.2), and never a PEM file. */
static bool load_secret(JwtConfig *jc, const char *kid, int alg, char *text, char *err,
			size_t errlen)
{
	size_t need = alg == JWT_ALG_HS256 ? 32 : alg == JWT_ALG_HS384 ? 48 : 64;
	size_t len = strlen(text);
	if (strstr(text, "-----BEGIN")) {
		snprintf(err, errlen, "an HS secret file must not hold a PEM key (alg confusion)");
		return false;
	}
	if (len < need) {
		snprintf(err, errlen, "the secret is %zu bytes; %s needs at least %zu", len,
			 jwt_alg_str(alg), need);
		return false;
	}
	jwt_add_key(jc, kid, alg, (unsigned char *)xstrdup(text), len);
	return true;
}

bool jwt_config_add_key_file(JwtConfig *jc, const char *kid, const char *alg, const char *path,
			     char *err, size_t errlen)
{
	int a = alg_parse(alg);
	if (a < 0) {
		snprintf(err, errlen, "unsupported alg '%s' (RS256/384/512, ES256/384/512, "
			 "HS256/384/512)", alg ? alg : "");
		return false;
	}
	char *text = util_read_file(path, JWT_MAX_KEY_FILE, alg_is_hmac(a));
	if (!text) {
		snprintf(err, errlen, "cannot read key file '%s': %s", path, strerror(errno));
		return false;
	}
	char why[256] = "";
	bool ok = alg_is_hmac(a) ? load_secret(jc, kid, a, text, why, sizeof(why))
				 : load_public_key(jc, kid, a, text, why, sizeof(why));
	if (!ok)
		snprintf(err, errlen, "key file '%s': %s", path, why);
	util_wipe(text, strlen(text));
	free(text);
	return ok;
}

/* ---------------------------------------------------------- base64url */

/* Decode unpadded base64url; NULL when not valid or longer than max. */
static unsigned char *b64url_decode(const char *s, size_t n, size_t max, size_t *out_len)
{
	if (n % 4 == 1 || n / 4 * 3 + 3 > max + 3)
		return NULL;
	size_t padded = (n + 3) / 4 * 4;
	char *std = xmalloc(padded + 1);
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (ch == '-')
			ch = '+';
		else if (ch == '_')
			ch = '/';
		else if (!isalnum((unsigned char)ch))
			ch = '!';	/* not base64url (also no blanks, which the decoder skips) */
		std[i] = ch;
	}
	memset(std + n, '=', padded - n);
	std[padded] = '\0';
	unsigned char *out = xmalloc(padded / 4 * 3 + 1);
	int len = padded ? EVP_DecodeBlock(out, (unsigned char *)std, (int)padded) : 0;
	free(std);
	if (len < 0 || (size_t)len < padded - n) {
		free(out);
		return NULL;
	}
	*out_len = (size_t)len - (padded - n);	/* EVP_DecodeBlock counts the padding as zeros */
	if (*out_len > max) {
		free(out);
		return NULL;
	}
	out[*out_len] = '\0';
	return out;
}

/* A JSON object from a base64url segment; duplicate names refused. */
static json_t *segment_json(const char *s, size_t n, size_t max)
{
	size_t len;
	unsigned char *raw = b64url_decode(s, n, max, &len);
	if (!raw)
		return NULL;
	json_t *j = json_loadb((const char *)raw, len, JSON_REJECT_DUPLICATES, NULL);
	free(raw);
	if (!json_is_object(j)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

/* ------------------------------------------------------------- JWKS */

static BIGNUM *jwk_bn(const json_t *jwk, const char *name)
{
	const char *s = json_string_value(json_object_get(jwk, name));
	size_t len;
	unsigned char *raw = s ? b64url_decode(s, strlen(s), 1024, &len) : NULL;
	BIGNUM *bn = raw && len ? BN_bin2bn(raw, (int)len, NULL) : NULL;
	free(raw);
	return bn;
}

/* The uncompressed EC point 04 || x || y, coordinates padded to the field size. */
static unsigned char *jwk_ec_point(const json_t *jwk, size_t field, size_t *len)
{
	BIGNUM *x = jwk_bn(jwk, "x"), *y = jwk_bn(jwk, "y");
	unsigned char *pt = NULL;
	if (x && y) {
		pt = xmalloc(1 + 2 * field);
		pt[0] = 0x04;
		if (BN_bn2binpad(x, pt + 1, (int)field) < 0 ||
		    BN_bn2binpad(y, pt + 1 + field, (int)field) < 0) {
			free(pt);
			pt = NULL;
		}
		*len = 1 + 2 * field;
	}
	BN_free(x);
	BN_free(y);
	return pt;
}

static int jwk_ec_alg(const char *crv, size_t *field)
{
	if (crv && strcmp(crv, "P-256") == 0) { *field = 32; return JWT_ALG_ES256; }
	if (crv && strcmp(crv, "P-384") == 0) { *field = 48; return JWT_ALG_ES384; }
	if (crv && strcmp(crv, "P-521") == 0) { *field = 66; return JWT_ALG_ES512; }
	return -1;
}

/* Build the public key of an RSA or EC JWK; *alg gets its alg (declared or implied). */
static EVP_PKEY *jwk_to_pkey(const json_t *jwk, int *alg)
{
	const char *kty = json_string_value(json_object_get(jwk, "kty"));
	const char *declared = json_string_value(json_object_get(jwk, "alg"));
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	BIGNUM *n = NULL, *e = NULL;
	unsigned char *pt = NULL;
	const char *type = NULL;
	size_t field = 0, ptlen = 0;
	bool ok = false;

	if (kty && strcmp(kty, "RSA") == 0) {
		type = "RSA";
		*alg = declared ? alg_parse(declared) : JWT_ALG_RS256;
		n = jwk_bn(jwk, "n");
		e = jwk_bn(jwk, "e");
		ok = alg_is_rsa(*alg) && n && e && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
		     OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e);
	} else if (kty && strcmp(kty, "EC") == 0) {
		type = "EC";
		int implied = jwk_ec_alg(json_string_value(json_object_get(jwk, "crv")), &field);
		*alg = declared ? alg_parse(declared) : implied;
		pt = implied >= 0 && *alg == implied ? jwk_ec_point(jwk, field, &ptlen) : NULL;
		ok = pt && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
							   alg_ec_group(*alg), 0) &&
		     OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, ptlen);
	}
	OSSL_PARAM *params = ok ? OSSL_PARAM_BLD_to_param(bld) : NULL;
	EVP_PKEY_CTX *ctx = params ? EVP_PKEY_CTX_new_from_name(NULL, type, NULL) : NULL;
	EVP_PKEY *pkey = NULL;
	if (ctx && EVP_PKEY_fromdata_init(ctx) > 0)
		(void)EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
	free(pt);
	return pkey;
}

/* A signing key of the set: add it (true), skip it (*skipped), or fail on a broken one. */
static bool jwks_add_one(JwtConfig *jc, const json_t *jwk, int *skipped, char *err, size_t errlen)
{
	const char *kty = json_string_value(json_object_get(jwk, "kty"));
	const char *use = json_string_value(json_object_get(jwk, "use"));
	const json_t *kidv = json_object_get(jwk, "kid");
	if (!kty || (use && strcmp(use, "sig") != 0) ||
	    (strcmp(kty, "RSA") != 0 && strcmp(kty, "EC") != 0)) {
		(*skipped)++;	/* oct, OKP (EdDSA), encryption keys: not ours to use */
		return true;
	}
	if (kidv && !json_is_string(kidv)) {
		snprintf(err, errlen, "a key's kid is not a string");
		return false;
	}
	int alg = -1;
	EVP_PKEY *pkey = jwk_to_pkey(jwk, &alg);
	size_t len = 0;
	unsigned char *pem = pkey ? pkey_to_pem(pkey, &len) : NULL;
	EVP_PKEY_free(pkey);
	if (!pem) {
		snprintf(err, errlen, "key '%s' (%s): invalid or unsupported parameters",
			 kidv ? json_string_value(kidv) : "(no kid)", kty);
		return false;
	}
	jwt_add_key(jc, json_string_value(kidv), alg, pem, len);
	return true;
}

bool jwt_config_add_jwks_file(JwtConfig *jc, const char *path, int *skipped, char *err,
			      size_t errlen)
{
	char *text = util_read_file(path, JWT_MAX_KEY_FILE * 4, false);
	if (!text) {
		snprintf(err, errlen, "cannot read jwks_file '%s': %s", path, strerror(errno));
		return false;
	}
	json_error_t jerr;
	json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
	free(text);
	json_t *keys = json_object_get(root, "keys");
	char why[256] = "";
	if (!root)
		snprintf(why, sizeof(why), "line %d: %s", jerr.line, jerr.text);
	else if (!json_is_array(keys))
		snprintf(why, sizeof(why), "no \"keys\" array");
	*skipped = 0;
	for (size_t i = 0; !why[0] && i < json_array_size(keys); i++) {
		json_t *jwk = json_array_get(keys, i);
		if (!json_is_object(jwk))
			snprintf(why, sizeof(why), "key %zu is not an object", i);
		else
			(void)jwks_add_one(jc, jwk, skipped, why, sizeof(why));
	}
	json_decref(root);
	if (why[0])
		snprintf(err, errlen, "jwks_file '%s': %s", path, why);
	return why[0] == '\0';
}

/* ------------------------------------------------------------ verify */

/* The key the header selects; NULL with the reason in why. */
static const JwtKey *select_key(const JwtConfig *jc, const json_t *header, const char **why)
{
	const char *alg = json_string_value(json_object_get(header, "alg"));
	const json_t *kidv = json_object_get(header, "kid");
	int a = alg_parse(alg);
	if (a < 0) {
		*why = alg ? "alg not accepted" : "no alg in the header";
		return NULL;
	}
	if (kidv && !json_is_string(kidv)) {
		*why = "kid is not a string";
		return NULL;
	}
	if (!kidv && jc->nkeys != 1) {
		*why = "no kid in the header, and more than one key is configured";
		return NULL;
	}
	const char *kid = json_string_value(kidv);
	*why = "unknown kid";
	for (int i = 0; i < jc->nkeys; i++) {
		const JwtKey *k = &jc->keys[i];
		if (kid && (!k->kid || strcmp(k->kid, kid) != 0))
			continue;
		if (k->alg == a) {
			*why = NULL;
			return k;
		}
		*why = "alg does not match the key's configured alg";	/* another key may share the kid */
	}
	return NULL;
}

/*
 * HS algs: the MAC is compared in constant time here (libjwt 1.10 compares
 * with strcmp, which leaks how much of a guess is right).
 */
static bool hmac_verifies(const JwtKey *k, const char *token, size_t signed_len, const char *sig)
{
	const EVP_MD *md = k->alg == JWT_ALG_HS256 ? EVP_sha256()
			   : k->alg == JWT_ALG_HS384 ? EVP_sha384() : EVP_sha512();
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	size_t got_len = 0;
	unsigned char *got = b64url_decode(sig, strlen(sig), EVP_MAX_MD_SIZE, &got_len);
	bool ok = got && HMAC(md, k->material, (int)k->len, (const unsigned char *)token, signed_len,
			      mac, &maclen) && got_len == maclen && CRYPTO_memcmp(got, mac, maclen) == 0;
	free(got);
	return ok;
}

/* RS and ES algs: libjwt (with OpenSSL) checks the signature. */
static bool pubkey_verifies(const JwtKey *k, const char *token)
{
	jwt_t *jwt = NULL;
	bool ok = jwt_decode(&jwt, token, k->material, (int)k->len) == 0 && jwt &&
		  (int)jwt_get_alg(jwt) == k->alg;
	jwt_free(jwt);
	return ok;
}

/* Header checks and the signature; NULL: verified. */
static const char *check_signature(const JwtConfig *jc, const char *token, size_t hlen)
{
	json_t *header = segment_json(token, hlen, JWT_MAX_HEADER);
	const char *typ = json_string_value(json_object_get(header, "typ"));
	const char *why = NULL;
	const JwtKey *k = NULL;
	if (!header)
		why = "the header is not base64url JSON object";
	else if (json_object_get(header, "crit"))
		why = "critical header extensions are not supported";
	else if (typ && strcasecmp(typ, "JWT") != 0)
		why = "typ is not JWT";	/* libjwt 1.10 refuses others: say so plainly */
	else
		k = select_key(jc, header, &why);
	if (k) {
		const char *sig = strrchr(token, '.') + 1;
		size_t signed_len = (size_t)(sig - 1 - token);
		bool ok = alg_is_hmac(k->alg) ? hmac_verifies(k, token, signed_len, sig)
					      : pubkey_verifies(k, token);
		if (!ok) {
			why = "bad signature";
			/*
			 * OpenSSL left its reasons on this thread's queue: TLS
			 * connections served here read it after a failed call.
			 */
			ERR_clear_error();
		}
	}
	json_decref(header);
	return why;
}

/* A NumericDate claim: false when present but not a number. */
static bool claim_time(const json_t *claims, const char *name, bool *present, double *out)
{
	const json_t *v = json_object_get(claims, name);
	*present = v != NULL;
	*out = json_is_number(v) ? json_number_value(v) : 0;
	return !v || json_is_number(v);
}

static const char *check_times(const JwtConfig *jc, const json_t *claims, time_t now)
{
	double exp, nbf, iat, t = (double)now, leeway = (double)jc->leeway / USEC_PER_SEC;
	bool has_exp, has_nbf, has_iat;
	if (!claim_time(claims, "exp", &has_exp, &exp) || !claim_time(claims, "nbf", &has_nbf, &nbf) ||
	    !claim_time(claims, "iat", &has_iat, &iat))
		return "exp, nbf or iat is not a number";
	if (!has_exp)
		return "no exp claim";
	if (t > exp + leeway)
		return "token expired";
	if (has_nbf && t + leeway < nbf)
		return "token not valid yet (nbf)";
	if (has_iat && t + leeway < iat)
		return "token issued in the future (iat)";
	if (jc->max_ttl > 0 && !has_iat)
		return "no iat claim (max_ttl is set)";
	if (jc->max_ttl > 0 && exp - iat > (double)jc->max_ttl / USEC_PER_SEC)
		return "token lifetime exceeds max_ttl";
	return NULL;
}

static bool aud_matches(const JwtConfig *jc, const json_t *aud)
{
	if (json_is_string(aud))
		return strlist_contains(&jc->audience, json_string_value(aud));
	for (size_t i = 0; i < json_array_size(aud); i++) {
		const char *s = json_string_value(json_array_get(aud, i));
		if (s && strlist_contains(&jc->audience, s))
			return true;
	}
	return false;
}

static const char *check_claims(const JwtConfig *jc, const json_t *claims, time_t now)
{
	const char *why = check_times(jc, claims, now);
	if (why)
		return why;
	const char *iss = jwt_claim_string(claims, "iss");
	if (jc->issuer && (!iss || strcmp(iss, jc->issuer) != 0))
		return "wrong or missing iss";
	if (jc->audience.count > 0 && !aud_matches(jc, json_object_get(claims, "aud")))
		return "wrong or missing aud";
	return NULL;
}

json_t *jwt_verify(const JwtConfig *jc, const char *token, size_t len, time_t now, char *err,
		   size_t errlen)
{
	const char *dot1 = len ? memchr(token, '.', len) : NULL;
	const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
	const char *end = token + len;
	json_t *claims = NULL;
	const char *why = NULL;

	if (len == 0 || len > JWT_MAX_TOKEN)
		why = len ? "token too large" : "empty token";
	else if (memchr(token, '\0', len) || !dot2 || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1)))
		why = "not a compact JWS (three base64url parts)";
	else if (dot2 + 1 == end)
		why = "unsigned token";
	if (!why) {
		char *copy = xstrndup(token, len);	/* libjwt wants a C string */
		why = check_signature(jc, copy, (size_t)(dot1 - token));
		free(copy);
	}
	if (!why) {
		claims = segment_json(dot1 + 1, (size_t)(dot2 - dot1 - 1), JWT_MAX_TOKEN);
		why = claims ? check_claims(jc, claims, now) : "the payload is not a JSON object";
	}
	if (why) {
		snprintf(err, errlen, "%s", why);
		json_decref(claims);
		return NULL;
	}
	return claims;
}

const char *jwt_claim_string(const json_t *claims, const char *name)
{
	return json_string_value(json_object_get(claims, name));
}

const char *jwt_user_claim(const JwtConfig *jc)
{
	return jc->user_claim ? jc->user_claim : "sub";
}
