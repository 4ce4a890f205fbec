/*
 * libFuzzer target for SCRAM-SHA-256. The first byte picks a role, the rest
 * is split at '\n' into up to three parts:
 *   0: ScramServer (RFC 7677 verifier): client-first, then client-final
 *   1: ScramClient (recovered keys, no PBKDF2): server-first, then server-final
 *   2: scram_server_init with the first part as the stored verifier, then
 *      client-first and client-final
 *   3: mock ScramServer for the user in the first part, then client-first and
 *      client-final (must never succeed)
 * Nonces are fixed so the fuzzer can reach the final steps.
 */
#include "auth_scram.h"

#include <stdlib.h>
#include <string.h>

#define FUZZ_VERIFIER "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==" \
	"$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
#define FUZZ_CNONCE "rOprNGfwEbeRWgbNEkqO"
#define FUZZ_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An exact-size copy, so reads past the peer's message are caught. */
static uint8_t *dup_exact(const uint8_t *p, size_t n)
{
	uint8_t *c = malloc(n ? n : 1);
	if (n)
		memcpy(c, p, n);
	return c;
}

static void fuzz_server(ScramServer *ss, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	char *out = NULL, err[128];
	size_t olen;

	scram_server_set_nonce_for_test(ss, FUZZ_SNONCE);
	if (scram_server_first(ss, a, alen, &out, &olen, err, sizeof(err))) {
		if (strlen(out) != olen)
			abort();
		free(out);
		out = NULL;
		if (scram_server_final(ss, b, blen, &out, &olen, err, sizeof(err))) {
			if (ss->doomed || !ss->recovered.valid)
				abort();	/* a doomed exchange must never succeed */
			free(out);
		}
	}
	scram_server_free(ss);
}

static void fuzz_client(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	ScramClient sc = { 0 };
	ScramKeys keys = { .valid = true };
	char *out = NULL, err[128];
	size_t olen;

	memset(keys.client_key, 0x11, SCRAM_KEY_LEN);
	memset(keys.server_key, 0x22, SCRAM_KEY_LEN);
	scram_client_set_nonce_for_test(&sc, FUZZ_CNONCE);
	if (!scram_client_first(&sc, &out, &olen))
		abort();
	free(out);
	out = NULL;
	if (scram_client_final(&sc, a, alen, NULL, &keys, &out, &olen, err, sizeof(err))) {
		free(out);
		(void)scram_client_verify(&sc, b, blen, err, sizeof(err));
	}
	scram_client_free(&sc);
}

/* Split at '\n' into up to FUZZ_PARTS exact-size copies; missing parts are empty. */
#define FUZZ_PARTS 3
static void split_parts(const uint8_t *p, size_t n, uint8_t **part, size_t *plen)
{
	for (int i = 0; i < FUZZ_PARTS; i++) {
		const uint8_t *nl = (n && i < FUZZ_PARTS - 1) ? memchr(p, '\n', n) : NULL;
		size_t len = nl ? (size_t)(nl - p) : n;
		part[i] = dup_exact(p, len);
		plen[i] = len;
		p += len;
		n -= len;
		if (nl) {
			p++;
			n--;
		}
	}
}

static char *as_cstring(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);
	if (n)
		memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ScramServer ss;
	uint8_t *part[FUZZ_PARTS];
	size_t plen[FUZZ_PARTS];
	char *s;

	if (size < 1)
		return 0;
	split_parts(data + 1, size - 1, part, plen);
	switch (data[0] % 4) {
	case 0:
		if (scram_server_init(&ss, FUZZ_VERIFIER))
			fuzz_server(&ss, part[0], plen[0], part[1], plen[1]);
		break;
	case 1:
		fuzz_client(part[0], plen[0], part[1], plen[1]);
		break;
	case 2:
		/* Only verifiers: a plain password costs a PBKDF2 per run. */
		s = as_cstring(part[0], plen[0]);
		if (strncmp(s, "SCRAM-SHA-256$", 14) == 0 && scram_server_init(&ss, s))
			fuzz_server(&ss, part[1], plen[1], part[2], plen[2]);
		free(s);
		break;
	default:
		s = as_cstring(part[0], plen[0]);
		if (scram_server_init_mock(&ss, s))
			fuzz_server(&ss, part[1], plen[1], part[2], plen[2]);
		free(s);
		break;
	}
	for (int i = 0; i < FUZZ_PARTS; i++)
		free(part[i]);
	return 0;
}
