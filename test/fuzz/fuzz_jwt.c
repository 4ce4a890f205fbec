/*
 * libFuzzer target for JWT verification (auth_jwt.c). The first byte picks
 * what the rest is:
 *   even: a whole token, as a client would send it as its password;
 *   odd:  a claims payload, which the target signs with the configured HS256
 *         secret under a fixed header, so the claim checks are reached too.
 * Keys: hs-1 (HS256) and rsa-1 (RS256, a fixed public key), iss and aud set.
 */
#include "auth_jwt.h"

#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char secret[] = "fuzz-secret-fuzz-secret-fuzz-secret-0123";
static const char rsa_pem[] =
	"-----BEGIN PUBLIC KEY-----\n"
	"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAzSrFcVdwGZ2eoRuUf0od\n"
	"DQyEry8QqeIhOp3QAL+Eht8dEwV/3lnVFYaWf/kNLM1zczkRuMDp/Kj6wmA5Jg9u\n"
	"iCnKIKEBGB6NRq2TRXib6wqIH6qBWSTsCobWU29FH6dR2z0ITQVOs7nJQ9QO4cRg\n"
	"ghC+lcaCMdF0s41/YzZPrKk/hEJTpeVBVCkN89u3Vl7H5vbq2Lg3aZfwtGgjBk+8\n"
	"K2YWhSDHYgzQWGlgyZdf58lhpIhXSNPIMd7ENPfTPr/OFWLughurYuuSVIzIbLyB\n"
	"2nTUJotdU6oEHojPtFJg6hW18VjrxLMc8lRPVWFgRaCjE5n09CRd6QxzgefN3aEp\n"
	"TQIDAQAB\n"
	"-----END PUBLIC KEY-----\n";

static JwtConfig *config(void)
{
	static JwtConfig jc;
	static JwtKey keys[2];
	if (jc.nkeys)
		return &jc;
	keys[0] = (JwtKey){ "hs-1", JWT_ALG_HS256, (unsigned char *)secret, sizeof(secret) - 1 };
	keys[1] = (JwtKey){ "rsa-1", JWT_ALG_RS256, (unsigned char *)rsa_pem, sizeof(rsa_pem) - 1 };
	jc.keys = keys;
	jc.nkeys = 2;
	jc.issuer = "https://token.example";
	strlist_add(&jc.audience, "pgmoat");
	jc.leeway = 30 * USEC_PER_SEC;
	jc.max_ttl = 3600 * USEC_PER_SEC;
	return &jc;
}

static size_t b64url(char *out, const uint8_t *in, size_t n)
{
	size_t len = (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
	while (len > 0 && out[len - 1] == '=')
		len--;
	for (size_t i = 0; i < len; i++)
		out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
	out[len] = '\0';
	return len;
}

/* header.payload.signature with the HS256 secret; the caller frees. */
static char *signed_token(const uint8_t *payload, size_t n, size_t *len)
{
	static const char header[] = "{\"alg\":\"HS256\",\"kid\":\"hs-1\",\"typ\":\"JWT\"}";
	char *tok = malloc(n * 2 + 256);
	size_t at = b64url(tok, (const uint8_t *)header, sizeof(header) - 1);
	tok[at++] = '.';
	at += b64url(tok + at, payload, n);
	unsigned char mac[32];
	unsigned int maclen = 0;
	HMAC(EVP_sha256(), secret, (int)sizeof(secret) - 1, (unsigned char *)tok, at, mac, &maclen);
	tok[at++] = '.';
	at += b64url(tok + at, mac, maclen);
	*len = at;
	return tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	size_t len;
	char *tok;
	json_t *claims;

	if (size == 0 || size > JWT_MAX_TOKEN)
		return 0;
	if (data[0] & 1) {
		tok = signed_token(data + 1, size - 1, &len);
	} else {
		len = size - 1;
		tok = malloc(len + 1);
		memcpy(tok, data + 1, len);
		tok[len] = '\0';
	}
	claims = jwt_verify(config(), tok, len, (time_t)1800000000, err, sizeof(err));
	if (claims) {
		(void)jwt_claim_string(claims, "sub");
		json_decref(claims);
	}
	free(tok);
	return 0;
}
