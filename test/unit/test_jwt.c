/*
 * JWT verification (auth_jwt.c): signatures, key choice, alg confusion, time
 * claims, iss/aud, size bounds, JWKS. Keys are made fresh per run with
 * OpenSSL and tokens are minted with libjwt (or by hand for forged ones).
 */
#include <criterion/criterion.h>
#include <jwt.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "src/auth_jwt.h"

#define NOW ((time_t)1800000000)
#define HS_SECRET "0123456789abcdef0123456789abcdef-test-secret"

static char dir[] = "/tmp/test_jwt.XXXXXX";
static char *rsa_priv, *rsa_pub, *ec_priv, *ec_pub, *rsa2_priv;

static char *pem_of(EVP_PKEY *k, bool priv)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data;
	cr_assert(priv ? PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL)
		       : PEM_write_bio_PUBKEY(b, k));
	long n = BIO_get_mem_data(b, &data);
	char *out = strndup(data, (size_t)n);
	BIO_free(b);
	return out;
}

static char *write_file(const char *name, const char *text)
{
	char *path = xasprintf("%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static void setup(void)
{
	cr_assert_not_null(mkdtemp(dir));
	EVP_PKEY *rsa = EVP_RSA_gen(2048), *rsa2 = EVP_RSA_gen(2048), *ec = EVP_EC_gen("P-256");
	cr_assert(rsa && rsa2 && ec);
	rsa_priv = pem_of(rsa, true);
	rsa_pub = pem_of(rsa, false);
	rsa2_priv = pem_of(rsa2, true);
	ec_priv = pem_of(ec, true);
	ec_pub = pem_of(ec, false);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(rsa2);
	EVP_PKEY_free(ec);
	free(write_file("rsa.pem", rsa_pub));
	free(write_file("ec.pem", ec_pub));
	free(write_file("hs.key", HS_SECRET "\n"));
}

static void teardown(void)
{
	const char *files[] = { "rsa.pem", "ec.pem", "hs.key", "jwks.json", "bad.key" };
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char *p = xasprintf("%s/%s", dir, files[i]);
		unlink(p);
		free(p);
	}
	rmdir(dir);
	free(rsa_priv);
	free(rsa_pub);
	free(rsa2_priv);
	free(ec_priv);
	free(ec_pub);
}

TestSuite(jwt, .init = setup, .fini = teardown);

static void add_key(JwtConfig *jc, const char *kid, const char *alg, const char *file)
{
	char err[512] = "";
	char *path = xasprintf("%s/%s", dir, file);
	cr_assert(jwt_config_add_key_file(jc, kid, alg, path, err, sizeof(err)), "%s", err);
	free(path);
}

/* rsa-1 (RS256), ec-1 (ES256), hs-1 (HS256); iss and aud checked; leeway 30 s. */
static void std_config(JwtConfig *jc)
{
	memset(jc, 0, sizeof(*jc));
	add_key(jc, "rsa-1", "RS256", "rsa.pem");
	add_key(jc, "ec-1", "ES256", "ec.pem");
	add_key(jc, "hs-1", "HS256", "hs.key");
	jc->issuer = xstrdup("https://token.example");
	strlist_add(&jc->audience, "pgmoat");
	jc->leeway = 30 * USEC_PER_SEC;
}

/* A token signed by libjwt; claims is a JSON object text. kid NULL: no kid header. */
static char *mint(jwt_alg_t alg, const char *key, const char *kid, const char *claims)
{
	jwt_t *j;
	cr_assert_eq(jwt_new(&j), 0);
	cr_assert_eq(jwt_add_grants_json(j, claims), 0);
	if (kid)
		cr_assert_eq(jwt_add_header(j, "kid", kid), 0);
	cr_assert_eq(jwt_set_alg(j, alg, (const unsigned char *)key, (int)strlen(key)), 0);
	char *tok = jwt_encode_str(j);
	cr_assert_not_null(tok);
	jwt_free(j);
	return tok;
}

static const char *GOOD = "{\"sub\":\"ci\",\"iss\":\"https://token.example\",\"aud\":\"pgmoat\","
			  "\"exp\":1800000600,\"iat\":1800000000,\"db_role\":\"reader\"}";

static json_t *verify(const JwtConfig *jc, const char *tok, char *err, size_t errlen)
{
	return jwt_verify(jc, tok, strlen(tok), NOW, err, errlen);
}

static void expect_ok(const JwtConfig *jc, const char *tok)
{
	char err[256] = "";
	json_t *claims = verify(jc, tok, err, sizeof(err));
	cr_assert_not_null(claims, "refused a good token: %s", err);
	cr_assert_str_eq(jwt_claim_string(claims, "sub"), "ci");
	json_decref(claims);
}

static void expect_refused(const JwtConfig *jc, const char *tok, const char *why)
{
	char err[256] = "";
	json_t *claims = verify(jc, tok, err, sizeof(err));
	cr_assert_null(claims, "accepted a bad token (want: %s)", why);
	cr_assert(strstr(err, why), "error '%s' lacks '%s'", err, why);
}

static void check_claims_refused(const char *claims, const char *why)
{
	JwtConfig jc;
	std_config(&jc);
	char *tok = mint(JWT_ALG_RS256, rsa_priv, "rsa-1", claims);
	expect_refused(&jc, tok, why);
	free(tok);
	jwt_config_free(&jc);
}

Test(jwt, good_tokens_of_every_configured_alg_are_accepted)
{
	JwtConfig jc;
	std_config(&jc);
	char *rs = mint(JWT_ALG_RS256, rsa_priv, "rsa-1", GOOD);
	char *es = mint(JWT_ALG_ES256, ec_priv, "ec-1", GOOD);
	char *hs = mint(JWT_ALG_HS256, HS_SECRET, "hs-1", GOOD);
	expect_ok(&jc, rs);
	expect_ok(&jc, es);
	expect_ok(&jc, hs);
	free(rs);
	free(es);
	free(hs);
	jwt_config_free(&jc);
}

Test(jwt, expired_and_future_tokens_are_refused_leeway_applies)
{
	check_claims_refused("{\"sub\":\"ci\",\"iss\":\"https://token.example\",\"aud\":\"pgmoat\","
			     "\"exp\":1799999960}", "expired");
	check_claims_refused("{\"sub\":\"ci\",\"iss\":\"https://token.example\",\"aud\":\"pgmoat\","
			     "\"exp\":1800000600,\"nbf\":1800000100}", "nbf");
	check_claims_refused("{\"sub\":\"ci\",\"iss\":\"https://token.example\",\"aud\":\"pgmoat\","
			     "\"exp\":1800000600,\"iat\":1800000100}", "iat");
	check_claims_refused("{\"sub\":\"ci\",\"iss\":\"https://token.example\",\"aud\":\"pgmoat\"}",
			     "no exp");
	check_claims_refused("{\"sub\":\"ci\",\"iss\":\"https://token.example\",\"aud\":\"pgmoat\","
			     "\"exp\":\"tomorrow\"}", "not a number");
	/* 20 s past exp is inside the 30 s leeway */
	JwtConfig jc;
	std_config(&jc);
	char *tok = mint(JWT_ALG_RS256, rsa_priv, "rsa-1",
			 "{\"sub\":\"ci\",\"iss\":\"https://token.example\",\"aud\":\"pgmoat\","
			 "\"exp\":1799999980}");
	expect_ok(&jc, tok);
	free(tok);
	jwt_config_free(&jc);
}

Test(jwt, wrong_issuer_or_audience_is_refused_aud_may_be_a_list)
{
	check_claims_refused("{\"sub\":\"ci\",\"iss\":\"https://evil.example\",\"aud\":\"pgmoat\","
			     "\"exp\":1800000600}", "iss");
	check_claims_refused("{\"sub\":\"ci\",\"aud\":\"pgmoat\",\"exp\":1800000600}", "iss");
	check_claims_refused("{\"sub\":\"ci\",\"iss\":\"https://token.example\",\"aud\":\"other\","
			     "\"exp\":1800000600}", "aud");
	check_claims_refused("{\"sub\":\"ci\",\"iss\":\"https://token.example\","
			     "\"aud\":[\"a\",\"b\"],\"exp\":1800000600}", "aud");
	JwtConfig jc;
	std_config(&jc);
	char *tok = mint(JWT_ALG_RS256, rsa_priv, "rsa-1",
			 "{\"sub\":\"ci\",\"iss\":\"https://token.example\",\"aud\":[\"x\",\"pgmoat\"],"
			 "\"exp\":1800000600}");
	expect_ok(&jc, tok);
	free(tok);
	jwt_config_free(&jc);
}

Test(jwt, max_ttl_bounds_the_lifetime_and_needs_iat)
{
	JwtConfig jc;
	std_config(&jc);
	jc.max_ttl = 3600 * USEC_PER_SEC;
	char *ok = mint(JWT_ALG_RS256, rsa_priv, "rsa-1", GOOD);
	char *long_lived = mint(JWT_ALG_RS256, rsa_priv, "rsa-1",
				"{\"sub\":\"ci\",\"iss\":\"https://token.example\",\"aud\":\"pgmoat\","
				"\"iat\":1800000000,\"exp\":1800007201}");
	char *no_iat = mint(JWT_ALG_RS256, rsa_priv, "rsa-1",
			    "{\"sub\":\"ci\",\"iss\":\"https://token.example\",\"aud\":\"pgmoat\","
			    "\"exp\":1800000600}");
	expect_ok(&jc, ok);
	expect_refused(&jc, long_lived, "max_ttl");
	expect_refused(&jc, no_iat, "no iat");
	free(ok);
	free(long_lived);
	free(no_iat);
	jwt_config_free(&jc);
}

/* base64url without padding, for hand-made tokens. */
static char *b64url(const char *s)
{
	size_t n = strlen(s);
	unsigned char *out = malloc(n * 2 + 8);
	int len = EVP_EncodeBlock(out, (const unsigned char *)s, (int)n);
	while (len > 0 && out[len - 1] == '=')
		len--;
	out[len] = '\0';
	for (int i = 0; i < len; i++)
		out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
	return (char *)out;
}

Test(jwt, alg_none_is_refused_with_or_without_a_signature)
{
	JwtConfig jc;
	std_config(&jc);
	char *h = b64url("{\"alg\":\"none\",\"kid\":\"rsa-1\"}"), *p = b64url(GOOD);
	char *unsigned_tok = xasprintf("%s.%s.", h, p);
	char *with_sig = xasprintf("%s.%s.c2ln", h, p);
	expect_refused(&jc, unsigned_tok, "unsigned");
	expect_refused(&jc, with_sig, "alg not accepted");
	free(h);
	free(p);
	free(unsigned_tok);
	free(with_sig);
	jwt_config_free(&jc);
}

Test(jwt, hs256_signed_with_the_rsa_public_key_is_refused)
{
	/* The classic confusion: the attacker knows the public key and uses it as an HMAC secret. */
	JwtConfig jc;
	std_config(&jc);
	char *forged = mint(JWT_ALG_HS256, rsa_pub, "rsa-1", GOOD);
	expect_refused(&jc, forged, "alg does not match");
	/* and with only that one key configured, no kid needed: still refused */
	JwtConfig one = { 0 };
	add_key(&one, NULL, "RS256", "rsa.pem");
	char *forged_nokid = mint(JWT_ALG_HS256, rsa_pub, NULL, GOOD);
	char *good_nokid = mint(JWT_ALG_RS256, rsa_priv, NULL, GOOD);
	expect_refused(&one, forged_nokid, "alg does not match");
	expect_ok(&one, good_nokid);
	free(forged);
	free(forged_nokid);
	free(good_nokid);
	jwt_config_free(&one);
	jwt_config_free(&jc);
}

Test(jwt, alg_mismatch_unknown_kid_and_wrong_key_are_refused)
{
	JwtConfig jc;
	std_config(&jc);
	char *rs384 = mint(JWT_ALG_RS384, rsa_priv, "rsa-1", GOOD);
	char *unknown = mint(JWT_ALG_RS256, rsa_priv, "rsa-9", GOOD);
	char *other_key = mint(JWT_ALG_RS256, rsa2_priv, "rsa-1", GOOD);
	char *no_kid = mint(JWT_ALG_RS256, rsa_priv, NULL, GOOD);
	expect_refused(&jc, rs384, "alg does not match");
	expect_refused(&jc, unknown, "unknown kid");
	expect_refused(&jc, other_key, "bad signature");
	expect_refused(&jc, no_kid, "no kid");
	free(rs384);
	free(unknown);
	free(other_key);
	free(no_kid);
	jwt_config_free(&jc);
}

Test(jwt, tampered_payload_fails_the_signature)
{
	JwtConfig jc;
	std_config(&jc);
	char *tok = mint(JWT_ALG_RS256, rsa_priv, "rsa-1", GOOD);
	char *p = b64url("{\"sub\":\"admin\",\"iss\":\"https://token.example\",\"aud\":\"pgmoat\","
			 "\"exp\":1800000600}");
	char *dot1 = strchr(tok, '.'), *dot2 = strchr(dot1 + 1, '.');
	*dot1 = '\0';
	char *forged = xasprintf("%s.%s%s", tok, p, dot2);
	expect_refused(&jc, forged, "bad signature");
	free(p);
	free(forged);
	free(tok);
	jwt_config_free(&jc);
}

/*
 * A refused token leaves nothing on this thread's OpenSSL error queue: TLS
 * connections served by the same thread read it after a failed SSL call to
 * say why, and would report the token's reason as theirs.
 */
Test(jwt, a_refused_token_leaves_no_openssl_error_behind)
{
	JwtConfig jc;
	std_config(&jc);
	char *other_key = mint(JWT_ALG_RS256, rsa2_priv, "rsa-1", GOOD);
	char *es = mint(JWT_ALG_ES256, ec_priv, "ec-1", GOOD);
	char *es_flipped = xasprintf("%.*s.%s", (int)(strrchr(es, '.') - es), es,
				     "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
	char *garbage_sig = xasprintf("%.*s.AAAA", (int)(strrchr(other_key, '.') - other_key), other_key);
	const char *tokens[] = { other_key, es_flipped, garbage_sig };
	for (size_t i = 0; i < sizeof(tokens) / sizeof(tokens[0]); i++) {
		ERR_clear_error();
		char err[256] = "";
		json_t *claims = jwt_verify(&jc, tokens[i], strlen(tokens[i]), NOW, err, sizeof(err));
		cr_assert_null(claims, "token %zu was accepted", i);
		cr_expect_eq(ERR_peek_error(), 0, "token %zu (%s) left an OpenSSL error: %s", i, err,
			     ERR_reason_error_string(ERR_peek_error()));
	}
	free(garbage_sig);
	free(es_flipped);
	free(es);
	free(other_key);
	jwt_config_free(&jc);
}

Test(jwt, oversized_and_garbage_tokens_are_refused)
{
	JwtConfig jc;
	std_config(&jc);
	char *big = malloc(JWT_MAX_TOKEN + 2);
	memset(big, 'a', JWT_MAX_TOKEN + 1);
	big[JWT_MAX_TOKEN + 1] = '\0';
	expect_refused(&jc, big, "too large");
	expect_refused(&jc, "", "empty");
	expect_refused(&jc, "not-a-token", "compact JWS");
	expect_refused(&jc, "a.b.c.d.e", "compact JWS");
	expect_refused(&jc, "!!!.???.sig", "header");
	char *h = b64url("[1,2]");
	char *arr = xasprintf("%s.e30.c2ln", h);
	expect_refused(&jc, arr, "header");
	char *h2 = b64url("{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"crit\":[\"exp\"]}");
	char *crit = xasprintf("%s.e30.c2ln", h2);
	expect_refused(&jc, crit, "critical");
	char *h3 = b64url("{\"alg\":\"RS256\",\"alg\":\"HS256\",\"kid\":\"rsa-1\"}");
	char *dup = xasprintf("%s.e30.c2ln", h3);
	expect_refused(&jc, dup, "header");
	free(h);
	free(arr);
	free(h2);
	free(crit);
	free(h3);
	free(dup);
	free(big);
	jwt_config_free(&jc);
}

Test(jwt, key_files_are_checked_against_their_alg)
{
	JwtConfig jc = { 0 };
	char err[512] = "";
	char *rsa = xasprintf("%s/rsa.pem", dir), *ec = xasprintf("%s/ec.pem", dir);
	char *bad = write_file("bad.key", "short");
	cr_assert_not(jwt_config_add_key_file(&jc, "k", "ES256", rsa, err, sizeof(err)));
	cr_assert(strstr(err, "EC"), "%s", err);
	cr_assert_not(jwt_config_add_key_file(&jc, "k", "RS256", ec, err, sizeof(err)));
	cr_assert(strstr(err, "RSA"), "%s", err);
	cr_assert_not(jwt_config_add_key_file(&jc, "k", "HS256", rsa, err, sizeof(err)));
	cr_assert(strstr(err, "PEM"), "%s", err);
	cr_assert_not(jwt_config_add_key_file(&jc, "k", "HS256", bad, err, sizeof(err)));
	cr_assert(strstr(err, "at least"), "%s", err);
	cr_assert_not(jwt_config_add_key_file(&jc, "k", "none", rsa, err, sizeof(err)));
	cr_assert_not(jwt_config_add_key_file(&jc, "k", "EdDSA", rsa, err, sizeof(err)));
	cr_assert(strstr(err, "unsupported"), "%s", err);
	cr_assert_eq(jc.nkeys, 0);
	free(rsa);
	free(ec);
	free(bad);
	jwt_config_free(&jc);
}

/* The JWK of a public key, from its components as OpenSSL reports them. */
static char *jwk_of_pem(const char *pem, const char *kid)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	EVP_PKEY *k = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
	BIO_free(b);
	cr_assert_not_null(k);
	char *out;
	if (EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA) {
		BIGNUM *n = NULL, *e = NULL;
		cr_assert(EVP_PKEY_get_bn_param(k, "n", &n) && EVP_PKEY_get_bn_param(k, "e", &e));
		unsigned char nb[512], eb[8];
		int nl = BN_bn2bin(n, nb), el = BN_bn2bin(e, eb);
		unsigned char nt[1024], et[16];
		int a = EVP_EncodeBlock(nt, nb, nl), c = EVP_EncodeBlock(et, eb, el);
		nt[a] = et[c] = '\0';
		char *ns = strndup((char *)nt, (size_t)a), *es = strndup((char *)et, (size_t)c);
		for (char *p = ns; *p; p++) *p = *p == '+' ? '-' : *p == '/' ? '_' : *p == '=' ? '\0' : *p;
		for (char *p = es; *p; p++) *p = *p == '+' ? '-' : *p == '/' ? '_' : *p == '=' ? '\0' : *p;
		out = xasprintf("{\"kty\":\"RSA\",\"kid\":\"%s\",\"use\":\"sig\",\"n\":\"%s\",\"e\":\"%s\"}",
				kid, ns, es);
		free(ns);
		free(es);
		BN_free(n);
		BN_free(e);
	} else {
		BIGNUM *x = NULL, *y = NULL;
		cr_assert(EVP_PKEY_get_bn_param(k, "qx", &x) && EVP_PKEY_get_bn_param(k, "qy", &y));
		unsigned char xb[32], yb[32], xt[64], yt[64];
		BN_bn2binpad(x, xb, 32);
		BN_bn2binpad(y, yb, 32);
		int a = EVP_EncodeBlock(xt, xb, 32), c = EVP_EncodeBlock(yt, yb, 32);
		xt[a] = yt[c] = '\0';
		for (unsigned char *p = xt; *p; p++) *p = *p == '+' ? '-' : *p == '/' ? '_' : *p == '=' ? '\0' : *p;
		for (unsigned char *p = yt; *p; p++) *p = *p == '+' ? '-' : *p == '/' ? '_' : *p == '=' ? '\0' : *p;
		out = xasprintf("{\"kty\":\"EC\",\"kid\":\"%s\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}",
				kid, xt, yt);
		BN_free(x);
		BN_free(y);
	}
	EVP_PKEY_free(k);
	return out;
}

Test(jwt, jwks_keys_verify_tokens_and_foreign_kinds_are_skipped)
{
	char *r = jwk_of_pem(rsa_pub, "j-rsa"), *e = jwk_of_pem(ec_pub, "j-ec");
	char *text = xasprintf("{\"keys\":[%s,%s,{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AA\"},"
			       "{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}", r, e);
	char *path = write_file("jwks.json", text);
	JwtConfig jc = { 0 };
	char err[512] = "";
	int skipped = -1;
	cr_assert(jwt_config_add_jwks_file(&jc, path, &skipped, err, sizeof(err)), "%s", err);
	cr_assert_eq(jc.nkeys, 2);
	cr_assert_eq(skipped, 2);
	char *rs = mint(JWT_ALG_RS256, rsa_priv, "j-rsa", GOOD);
	char *es = mint(JWT_ALG_ES256, ec_priv, "j-ec", GOOD);
	char *confused = mint(JWT_ALG_HS256, rsa_pub, "j-rsa", GOOD);
	expect_ok(&jc, rs);
	expect_ok(&jc, es);
	expect_refused(&jc, confused, "alg does not match");
	free(rs);
	free(es);
	free(confused);
	jwt_config_free(&jc);
	free(path);
	path = write_file("jwks.json", "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"x\",\"n\":\"!!\",\"e\":\"AQAB\"}]}");
	cr_assert_not(jwt_config_add_jwks_file(&jc, path, &skipped, err, sizeof(err)));
	cr_assert(strstr(err, "invalid"), "%s", err);
	jwt_config_free(&jc);
	free(path);
	free(text);
	free(r);
	free(e);
}

/* header.payload signed RS256 with rsa_priv by hand (for headers and payloads libjwt won't make). */
static char *sign_rs256(const char *header, const char *payload)
{
	char *h = b64url(header), *p = b64url(payload);
	char *input = xasprintf("%s.%s", h, p);
	BIO *b = BIO_new_mem_buf(rsa_priv, -1);
	EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char sig[512];
	size_t siglen = sizeof(sig);
	cr_assert(k && ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k) == 1 &&
		  EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)input, strlen(input)) == 1);
	sig[siglen] = '\0';
	unsigned char enc[1024];
	int n = EVP_EncodeBlock(enc, sig, (int)siglen);
	while (n > 0 && enc[n - 1] == '=')
		n--;
	enc[n] = '\0';
	for (int i = 0; i < n; i++)
		enc[i] = enc[i] == '+' ? '-' : enc[i] == '/' ? '_' : enc[i];
	char *tok = xasprintf("%s.%s", input, enc);
	EVP_MD_CTX_free(ctx);
	EVP_PKEY_free(k);
	BIO_free(b);
	free(h);
	free(p);
	free(input);
	return tok;
}

Test(jwt, hs256_wrong_secret_or_altered_mac_is_refused)
{
	JwtConfig jc;
	std_config(&jc);
	char *wrong = mint(JWT_ALG_HS256, "another-secret-another-secret-another", "hs-1", GOOD);
	char *good = mint(JWT_ALG_HS256, HS_SECRET, "hs-1", GOOD);
	expect_refused(&jc, wrong, "bad signature");
	char *cut = strdup(good);
	cut[strlen(cut) - 2] = '\0';
	expect_refused(&jc, cut, "bad signature");
	char *flipped = strdup(good);
	char *last = flipped + strlen(flipped) - 3;
	*last = *last == 'A' ? 'B' : 'A';
	expect_refused(&jc, flipped, "bad signature");
	expect_ok(&jc, good);
	free(wrong);
	free(good);
	free(cut);
	free(flipped);
	jwt_config_free(&jc);
}

Test(jwt, duplicate_claims_are_refused_even_when_signed_and_typ_must_be_jwt)
{
	JwtConfig jc;
	std_config(&jc);
	char *dup = sign_rs256("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}",
			       "{\"sub\":\"ci\",\"sub\":\"admin\",\"iss\":\"https://token.example\","
			       "\"aud\":\"pgmoat\",\"exp\":1800000600}");
	expect_refused(&jc, dup, "payload");
	/* libjwt 1.10 takes typ JWT (any case) or none; others are refused with that reason */
	char *at = sign_rs256("{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"typ\":\"at+jwt\"}", GOOD);
	expect_refused(&jc, at, "typ is not JWT");
	char *notyp = sign_rs256("{\"alg\":\"RS256\",\"kid\":\"rsa-1\"}", GOOD);
	expect_ok(&jc, notyp);
	free(notyp);
	free(dup);
	free(at);
	jwt_config_free(&jc);
}

Test(jwt, blanks_in_a_segment_are_not_skipped)
{
	JwtConfig jc;
	std_config(&jc);
	char *good = mint(JWT_ALG_RS256, rsa_priv, "rsa-1", GOOD);
	char *spaced = xasprintf(" %s", good);
	char *nl = strdup(good);
	*strchr(nl, '.') = '\n';
	expect_refused(&jc, spaced, "header");
	expect_refused(&jc, nl, "compact JWS");
	expect_ok(&jc, good);
	free(good);
	free(spaced);
	free(nl);
	jwt_config_free(&jc);
}

Test(jwt, a_kid_shared_by_two_keys_of_different_algs_finds_the_right_one)
{
	JwtConfig jc = { 0 };
	add_key(&jc, "same", "ES256", "ec.pem");
	add_key(&jc, "same", "RS256", "rsa.pem");
	char *rs = mint(JWT_ALG_RS256, rsa_priv, "same", GOOD);
	char *es = mint(JWT_ALG_ES256, ec_priv, "same", GOOD);
	char *hs = mint(JWT_ALG_HS256, rsa_pub, "same", GOOD);
	expect_ok(&jc, rs);
	expect_ok(&jc, es);
	expect_refused(&jc, hs, "alg does not match");
	free(rs);
	free(es);
	free(hs);
	jwt_config_free(&jc);
}
