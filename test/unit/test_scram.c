/*
 * SCRAM-SHA-256 and md5 authentication. Expected values come from RFC 7677
 * section 3 and from an independent computation with Python's hashlib/hmac.
 */
#include "src/auth_md5.h"
#include "src/auth_scram.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <criterion/criterion.h>

#define RFC_SALT_B64 "W22ZaJ0SNY7soEsUEjb6gQ=="
#define RFC_CNONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_SERVER_FIRST "r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT_B64 ",i=4096"
#define RFC_CLIENT_FINAL_NOPROOF "c=biws,r=" RFC_CNONCE RFC_SNONCE
/* The RFC's exchange, for user "user" and password "pencil". */
#define RFC_CLIENT_FINAL RFC_CLIENT_FINAL_NOPROOF ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
/* The same exchange with the empty user name PostgreSQL clients send (hashlib). */
#define EMPTY_USER_CLIENT_FINAL RFC_CLIENT_FINAL_NOPROOF ",p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k="
#define EMPTY_USER_SERVER_FINAL "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg="
#define RFC_VERIFIER "SCRAM-SHA-256$4096:" RFC_SALT_B64 \
	"$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

static const uint8_t rfc_salt[16] = {
	0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81
};

static const uint8_t *u8(const char *s) { return (const uint8_t *)s; }

/* --- md5 --- */

Test(md5, stored_matches_postgres_format)
{
	char out[MD5_PASSWD_LEN + 1];
	auth_md5_stored("pw", "user", out);
	/* "md5" + md5("pwuser") */
	cr_assert_str_eq(out, "md5871c429757b7a0bf1654fad112b77bd4");
	cr_assert(auth_md5_is_hash(out));
}

Test(md5, response_from_plain_and_hash_agree)
{
	const uint8_t salt[4] = { 1, 2, 3, 4 };
	char a[MD5_PASSWD_LEN + 1], b[MD5_PASSWD_LEN + 1];
	auth_md5_response("pw", "user", salt, a);
	auth_md5_response("md5871c429757b7a0bf1654fad112b77bd4", "user", salt, b);
	cr_assert_str_eq(a, "md546eacb7412409e1444bde22e56e70744");
	cr_assert_str_eq(a, b);
}

Test(md5, check_accepts_right_and_refuses_wrong)
{
	const uint8_t salt[4] = { 1, 2, 3, 4 };
	const uint8_t other[4] = { 1, 2, 3, 5 };
	cr_assert(auth_md5_check("pw", "user", salt, "md546eacb7412409e1444bde22e56e70744"));
	cr_assert(auth_md5_check("md5871c429757b7a0bf1654fad112b77bd4", "user", salt,
				 "md546eacb7412409e1444bde22e56e70744"));
	cr_assert_not(auth_md5_check("pw", "user", other, "md546eacb7412409e1444bde22e56e70744"));
	cr_assert_not(auth_md5_check("pw2", "user", salt, "md546eacb7412409e1444bde22e56e70744"));
	cr_assert_not(auth_md5_check("pw", "user", salt, "md546eacb7412409e1444bde22e56e7074"));
	cr_assert_not(auth_md5_check("pw", "user", salt, "md546eacb7412409e1444bde22e56e707444"));
	cr_assert_not(auth_md5_check("pw", "user", salt, ""));
}

Test(md5, is_hash_requires_exact_shape)
{
	cr_assert_not(auth_md5_is_hash("md5871c429757b7a0bf1654fad112b77bd"));
	cr_assert_not(auth_md5_is_hash("md5871C429757B7A0BF1654FAD112B77BD4"));
	cr_assert_not(auth_md5_is_hash("xyz871c429757b7a0bf1654fad112b77bd4"));
	cr_assert_not(auth_md5_is_hash("pw"));
}

/* --- helpers --- */

static ScramServer server_with_rfc_verifier(void)
{
	ScramServer ss;
	cr_assert(scram_server_init(&ss, RFC_VERIFIER));
	scram_server_set_nonce_for_test(&ss, RFC_SNONCE);
	return ss;
}

static bool server_step(bool final, ScramServer *ss, const char *in, char **out, char *err)
{
	size_t n;
	if (final)
		return scram_server_final(ss, u8(in), strlen(in), out, &n, err, 256);
	return scram_server_first(ss, u8(in), strlen(in), out, &n, err, 256);
}

/* A full exchange between our client and our server; true when both sides accept. */
static bool round_trip(ScramServer *ss, const char *password, const ScramKeys *keys, char *err)
{
	ScramClient sc = { 0 };
	char *m1 = NULL, *m2 = NULL, *m3 = NULL, *m4 = NULL;
	size_t n1, n2, n3, n4;
	bool ok = scram_client_first(&sc, &m1, &n1) &&
		  scram_server_first(ss, u8(m1), n1, &m2, &n2, err, 256) &&
		  scram_client_final(&sc, u8(m2), n2, password, keys, &m3, &n3, err, 256) &&
		  scram_server_final(ss, u8(m3), n3, &m4, &n4, err, 256) &&
		  scram_client_verify(&sc, u8(m4), n4, err, 256);
	free(m1);
	free(m2);
	free(m3);
	free(m4);
	scram_client_free(&sc);
	return ok;
}

/* --- RFC 7677 vectors --- */

Test(scram, verifier_matches_rfc7677_keys)
{
	char *v = scram_make_verifier("pencil", rfc_salt, sizeof(rfc_salt), 4096);
	cr_assert_str_eq(v, RFC_VERIFIER);
	free(v);
	cr_assert_null(scram_make_verifier("pencil", rfc_salt, sizeof(rfc_salt), 0));
	cr_assert_null(scram_make_verifier("pencil", rfc_salt, 0, 4096));
}

Test(scram, server_replays_rfc7677_exchange)
{
	ScramServer ss = server_with_rfc_verifier();
	char *out = NULL, err[256];
	cr_assert(server_step(false, &ss, "n,,n=user,r=" RFC_CNONCE, &out, err), "%s", err);
	cr_assert_str_eq(out, RFC_SERVER_FIRST);
	free(out);
	cr_assert(server_step(true, &ss, RFC_CLIENT_FINAL, &out, err), "%s", err);
	cr_assert_str_eq(out, RFC_SERVER_FINAL);
	cr_assert(ss.recovered.valid);
	free(out);
	scram_server_free(&ss);
}

Test(scram, client_computes_proof_for_rfc7677_server_first)
{
	ScramClient sc = { 0 };
	char *out = NULL, err[256];
	size_t n;
	scram_client_set_nonce_for_test(&sc, RFC_CNONCE);
	cr_assert(scram_client_first(&sc, &out, &n));
	cr_assert_str_eq(out, "n,,n=,r=" RFC_CNONCE);
	cr_assert_eq(n, strlen(out));
	free(out);
	cr_assert(scram_client_final(&sc, u8(RFC_SERVER_FIRST), strlen(RFC_SERVER_FIRST), "pencil",
				     NULL, &out, &n, err, sizeof(err)), "%s", err);
	cr_assert_str_eq(out, EMPTY_USER_CLIENT_FINAL);
	free(out);
	cr_assert(scram_client_verify(&sc, u8(EMPTY_USER_SERVER_FINAL), strlen(EMPTY_USER_SERVER_FINAL),
				      err, sizeof(err)), "%s", err);
	scram_client_free(&sc);
}

Test(scram, client_refuses_forged_server_signature)
{
	ScramClient sc = { 0 };
	char *out = NULL, err[256];
	size_t n;
	scram_client_set_nonce_for_test(&sc, RFC_CNONCE);
	cr_assert(scram_client_first(&sc, &out, &n));
	free(out);
	cr_assert(scram_client_final(&sc, u8(RFC_SERVER_FIRST), strlen(RFC_SERVER_FIRST), "pencil",
				     NULL, &out, &n, err, sizeof(err)));
	free(out);
	/* The RFC's signature belongs to the "n=user" exchange, not this one. */
	cr_assert_not(scram_client_verify(&sc, u8(RFC_SERVER_FINAL), strlen(RFC_SERVER_FINAL), err,
					  sizeof(err)));
	scram_client_free(&sc);
}

/* --- round trips --- */

Test(scram, round_trip_with_plain_password_secret)
{
	ScramServer ss;
	char err[256] = "";
	cr_assert(scram_server_init(&ss, "s3cret"));
	cr_assert_eq(ss.iterations, SCRAM_DEFAULT_ITERATIONS);
	cr_assert(round_trip(&ss, "s3cret", NULL, err), "%s", err);
	cr_assert(ss.recovered.valid);
	scram_server_free(&ss);
}

Test(scram, plain_password_secrets_get_fresh_salts)
{
	ScramServer a, b;
	cr_assert(scram_server_init(&a, "s3cret"));
	cr_assert(scram_server_init(&b, "s3cret"));
	cr_assert_str_neq(a.salt_b64, b.salt_b64);
	scram_server_free(&a);
	scram_server_free(&b);
}

Test(scram, round_trip_with_verifier_secret)
{
	ScramServer ss;
	char err[256] = "";
	cr_assert(scram_server_init(&ss, RFC_VERIFIER));
	cr_assert(round_trip(&ss, "pencil", NULL, err), "%s", err);
	scram_server_free(&ss);
}

Test(scram, wrong_password_fails)
{
	ScramServer ss;
	char err[256] = "";
	cr_assert(scram_server_init(&ss, RFC_VERIFIER));
	cr_assert_not(round_trip(&ss, "pencil2", NULL, err));
	cr_assert_str_eq(err, "password authentication failed");
	cr_assert_not(ss.recovered.valid);
	scram_server_free(&ss);
}

Test(scram, recovered_keys_log_in_again_with_new_nonces)
{
	ScramServer ss1, ss2;
	ScramKeys keys;
	char err[256] = "";
	cr_assert(scram_server_init(&ss1, RFC_VERIFIER));
	cr_assert(round_trip(&ss1, "pencil", NULL, err), "%s", err);
	keys = ss1.recovered;
	scram_server_free(&ss1);
	cr_assert(scram_server_init(&ss2, RFC_VERIFIER));
	cr_assert(round_trip(&ss2, NULL, &keys, err), "%s", err);
	scram_server_free(&ss2);
}

Test(scram, recovered_keys_fail_against_a_different_salt)
{
	ScramServer ss1, ss2;
	ScramKeys keys;
	char err[256] = "";
	const uint8_t other_salt[4] = { 1, 2, 3, 4 };
	char *v = scram_make_verifier("pencil", other_salt, sizeof(other_salt), 4096);
	cr_assert(scram_server_init(&ss1, RFC_VERIFIER));
	cr_assert(round_trip(&ss1, "pencil", NULL, err), "%s", err);
	keys = ss1.recovered;
	scram_server_free(&ss1);
	cr_assert(scram_server_init(&ss2, v));
	cr_assert_not(round_trip(&ss2, NULL, &keys, err));
	scram_server_free(&ss2);
	free(v);
}

Test(scram, client_without_password_or_keys_fails)
{
	ScramServer ss;
	ScramKeys none = { .valid = false };
	char err[256] = "";
	cr_assert(scram_server_init(&ss, RFC_VERIFIER));
	cr_assert_not(round_trip(&ss, NULL, &none, err));
	scram_server_free(&ss);
}

Test(scram, doomed_exchange_fails_even_with_some_password)
{
	ScramServer ss;
	char err[256] = "";
	cr_assert(scram_server_init(&ss, NULL));
	cr_assert(ss.doomed);
	cr_assert_not(round_trip(&ss, "", NULL, err));
	cr_assert_not(ss.recovered.valid);
	scram_server_free(&ss);
}

Test(scram, doomed_exchange_fails_even_when_keys_match)
{
	ScramServer real, doomed;
	ScramKeys keys;
	char err[256] = "";
	cr_assert(scram_server_init(&real, RFC_VERIFIER));
	cr_assert(round_trip(&real, "pencil", NULL, err), "%s", err);
	keys = real.recovered;
	cr_assert(scram_server_init_mock(&doomed, "user"));
	/* Give the doomed exchange the real keys: only the doomed flag can refuse it now. */
	memcpy(doomed.stored_key, real.stored_key, SCRAM_KEY_LEN);
	memcpy(doomed.server_key, real.server_key, SCRAM_KEY_LEN);
	cr_assert_not(round_trip(&doomed, NULL, &keys, err));
	cr_assert_not(doomed.recovered.valid);
	scram_server_free(&real);
	scram_server_free(&doomed);
}

Test(scram, mock_salt_is_stable_per_user_and_differs_between_users)
{
	ScramServer a, b, c;
	cr_assert(scram_server_init_mock(&a, "ghost"));
	cr_assert(scram_server_init_mock(&b, "ghost"));
	cr_assert(scram_server_init_mock(&c, "phantom"));
	cr_assert_str_eq(a.salt_b64, b.salt_b64);
	cr_assert_str_neq(a.salt_b64, c.salt_b64);
	cr_assert_eq(a.iterations, SCRAM_DEFAULT_ITERATIONS);
	scram_server_free(&a);
	scram_server_free(&b);
	scram_server_free(&c);
}

Test(scram, init_refuses_md5_hash_and_broken_verifier)
{
	ScramServer ss;
	cr_assert_not(scram_server_init(&ss, "md5871c429757b7a0bf1654fad112b77bd4"));
	cr_assert_not(scram_server_init(&ss, "SCRAM-SHA-256$4096:" RFC_SALT_B64 "$abc:def"));
	cr_assert_not(scram_server_init(&ss, "SCRAM-SHA-256$x:" RFC_SALT_B64
				       "$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="));
	cr_assert_not(scram_server_init(&ss, "SCRAM-SHA-256$4096:$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="));
}

/* --- malformed client messages --- */

static void assert_first_refused(const char *msg, const char *err_part)
{
	ScramServer ss = server_with_rfc_verifier();
	char *out = NULL, err[256] = "";
	cr_assert_not(server_step(false, &ss, msg, &out, err), "accepted %s", msg);
	cr_assert_null(out);
	if (err_part)
		cr_assert(strstr(err, err_part) != NULL, "error '%s' lacks '%s'", err, err_part);
	scram_server_free(&ss);
}

Test(scram_server, refuses_channel_binding_and_authzid)
{
	assert_first_refused("p=tls-server-end-point,,n=,r=abc", "channel binding");
	assert_first_refused("n,a=admin,n=,r=abc", "authorization identity");
	assert_first_refused("x,,n=,r=abc", "malformed");
}

Test(scram_server, refuses_mandatory_extension_and_missing_nonce)
{
	assert_first_refused("n,,m=ext,n=,r=abc", "extension");
	assert_first_refused("n,,n=", "malformed");
	assert_first_refused("n,,n=,", "malformed");
	assert_first_refused("n,,r=abc", "malformed");
	assert_first_refused("n,,n=,r=", "nonce");
	assert_first_refused("n,,n=,r=ab\x7f", "nonce");
	assert_first_refused("n,,n=,r=abc,", "malformed");
	assert_first_refused("n,", "malformed");
	assert_first_refused("", NULL);
}

Test(scram_server, refuses_messages_over_the_cap_and_with_nul)
{
	ScramServer ss = server_with_rfc_verifier();
	char big[SCRAM_MAX_MESSAGE + 1], *out = NULL, err[256];
	size_t n;
	memset(big, 'a', sizeof(big));
	memcpy(big, "n,,n=,r=", 8);
	cr_assert_not(scram_server_first(&ss, u8(big), sizeof(big), &out, &n, err, sizeof(err)));
	scram_server_free(&ss);
	ss = server_with_rfc_verifier();
	cr_assert_not(scram_server_first(&ss, u8("n,,n=,r=a\0b"), 11, &out, &n, err, sizeof(err)));
	scram_server_free(&ss);
}

Test(scram_server, accepts_y_flag_and_requires_matching_cbind)
{
	ScramServer ss = server_with_rfc_verifier();
	char *out = NULL, err[256];
	cr_assert(server_step(false, &ss, "y,,n=user,r=" RFC_CNONCE, &out, err), "%s", err);
	free(out);
	/* c=biws is "n,,": a downgrade of the announced "y,," header. */
	cr_assert_not(server_step(true, &ss, RFC_CLIENT_FINAL, &out, err));
	cr_assert(strstr(err, "channel binding") != NULL, "%s", err);
	scram_server_free(&ss);
}

static void assert_final_refused(const char *final_msg, const char *err_part)
{
	ScramServer ss = server_with_rfc_verifier();
	char *out = NULL, err[256] = "";
	cr_assert(server_step(false, &ss, "n,,n=user,r=" RFC_CNONCE, &out, err), "%s", err);
	free(out);
	out = NULL;
	cr_assert_not(server_step(true, &ss, final_msg, &out, err), "accepted %s", final_msg);
	cr_assert_null(out);
	if (err_part)
		cr_assert(strstr(err, err_part) != NULL, "error '%s' lacks '%s'", err, err_part);
	cr_assert_not(ss.recovered.valid);
	scram_server_free(&ss);
}

Test(scram_server, final_refuses_wrong_nonce)
{
	assert_final_refused("c=biws,r=" RFC_CNONCE "X,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
			     "nonce");
	assert_final_refused("c=biws,r=" RFC_CNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
			     "nonce");
}

Test(scram_server, final_refuses_bad_proof_encodings)
{
	assert_final_refused(RFC_CLIENT_FINAL_NOPROOF ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ",
			     "proof");
	assert_final_refused(RFC_CLIENT_FINAL_NOPROOF ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7And!Q=",
			     "proof");
	assert_final_refused(RFC_CLIENT_FINAL_NOPROOF ",p=dHzb", "proof");
	assert_final_refused(RFC_CLIENT_FINAL_NOPROOF ",p=", "proof");
	/* Non-zero padding bits: a second spelling of the same proof. */
	assert_final_refused(RFC_CLIENT_FINAL_NOPROOF ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVR=",
			     "proof");
}

Test(scram_server, final_refuses_truncated_and_reordered)
{
	assert_final_refused("c=biws", "malformed");
	assert_final_refused(RFC_CLIENT_FINAL_NOPROOF, "malformed");
	assert_final_refused("r=" RFC_CNONCE RFC_SNONCE ",c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
			     "malformed");
	assert_final_refused(RFC_CLIENT_FINAL ",x=1", "malformed");
	assert_final_refused("", NULL);
}

Test(scram_server, final_twice_is_refused)
{
	ScramServer ss = server_with_rfc_verifier();
	char *out = NULL, err[256];
	cr_assert(server_step(false, &ss, "n,,n=user,r=" RFC_CNONCE, &out, err));
	free(out);
	cr_assert(server_step(true, &ss, RFC_CLIENT_FINAL, &out, err));
	free(out);
	out = NULL;
	cr_assert_not(server_step(true, &ss, RFC_CLIENT_FINAL, &out, err));
	cr_assert_null(out);
	scram_server_free(&ss);
}

/* --- malformed server messages --- */

static void assert_client_final_refused(const char *server_first, const char *err_part)
{
	ScramClient sc = { 0 };
	char *out = NULL, err[256] = "";
	size_t n;
	scram_client_set_nonce_for_test(&sc, RFC_CNONCE);
	cr_assert(scram_client_first(&sc, &out, &n));
	free(out);
	out = NULL;
	cr_assert_not(scram_client_final(&sc, u8(server_first), strlen(server_first), "pencil", NULL,
					 &out, &n, err, sizeof(err)), "accepted %s", server_first);
	cr_assert_null(out);
	if (err_part)
		cr_assert(strstr(err, err_part) != NULL, "error '%s' lacks '%s'", err, err_part);
	scram_client_free(&sc);
}

Test(scram_client, refuses_bad_iteration_counts)
{
	assert_client_final_refused("r=" RFC_CNONCE "x,s=" RFC_SALT_B64 ",i=100001", "iteration");
	assert_client_final_refused("r=" RFC_CNONCE "x,s=" RFC_SALT_B64 ",i=99999999999999", "iteration");
	assert_client_final_refused("r=" RFC_CNONCE "x,s=" RFC_SALT_B64 ",i=0", "iteration");
	assert_client_final_refused("r=" RFC_CNONCE "x,s=" RFC_SALT_B64 ",i=-1", "iteration");
	assert_client_final_refused("r=" RFC_CNONCE "x,s=" RFC_SALT_B64 ",i=", "iteration");
	assert_client_final_refused("r=" RFC_CNONCE "x,s=" RFC_SALT_B64 ",i=4096x", "iteration");
}

Test(scram_client, refuses_missing_or_bad_salt)
{
	assert_client_final_refused("r=" RFC_CNONCE "x,i=4096", "s=");
	assert_client_final_refused("r=" RFC_CNONCE "x,s=,i=4096", "salt");
	assert_client_final_refused("r=" RFC_CNONCE "x,s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096", "salt");
	assert_client_final_refused("r=" RFC_CNONCE "x,s=W22Z*J0SNY7soEsUEjb6gQ==,i=4096", "salt");
}

Test(scram_client, refuses_nonce_not_extending_ours)
{
	assert_client_final_refused("r=" RFC_CNONCE ",s=" RFC_SALT_B64 ",i=4096", "nonce");
	assert_client_final_refused("r=XOprNGfwEbeRWgbNEkqOabc,s=" RFC_SALT_B64 ",i=4096", "nonce");
	assert_client_final_refused("r=rOpr,s=" RFC_SALT_B64 ",i=4096", "nonce");
	assert_client_final_refused("s=" RFC_SALT_B64 ",r=" RFC_CNONCE "x,i=4096", "r=");
}

Test(scram_client, refuses_extension_truncation_and_oversize)
{
	char big[SCRAM_MAX_MESSAGE + 64];
	assert_client_final_refused("m=x,r=" RFC_CNONCE "x,s=" RFC_SALT_B64 ",i=4096", "extension");
	assert_client_final_refused("r=" RFC_CNONCE "x,s=" RFC_SALT_B64, "i=");
	assert_client_final_refused("r=" RFC_CNONCE "x,s=" RFC_SALT_B64 ",i=4096,", "malformed");
	assert_client_final_refused("", NULL);
	snprintf(big, sizeof(big), "r=" RFC_CNONCE "%0*d,s=" RFC_SALT_B64 ",i=4096", SCRAM_MAX_MESSAGE, 0);
	assert_client_final_refused(big, "too long");
}

Test(scram_client, accepts_server_extensions_after_iterations)
{
	ScramClient sc = { 0 };
	char *out = NULL, err[256];
	size_t n;
	const char *sf = "r=" RFC_CNONCE "abc,s=" RFC_SALT_B64 ",i=4096,x=future";
	cr_assert(scram_client_first(&sc, &out, &n));
	free(out);
	scram_client_free(&sc);
	memset(&sc, 0, sizeof(sc));
	scram_client_set_nonce_for_test(&sc, RFC_CNONCE);
	cr_assert(scram_client_first(&sc, &out, &n));
	free(out);
	cr_assert(scram_client_final(&sc, u8(sf), strlen(sf), "pencil", NULL, &out, &n, err, sizeof(err)),
		  "%s", err);
	free(out);
	scram_client_free(&sc);
}

static ScramClient client_after_rfc_final(void)
{
	ScramClient sc = { 0 };
	char *out = NULL, err[256];
	size_t n;
	scram_client_set_nonce_for_test(&sc, RFC_CNONCE);
	cr_assert(scram_client_first(&sc, &out, &n));
	free(out);
	cr_assert(scram_client_final(&sc, u8(RFC_SERVER_FIRST), strlen(RFC_SERVER_FIRST), "pencil",
				     NULL, &out, &n, err, sizeof(err)));
	free(out);
	return sc;
}

Test(scram_client, verify_reports_server_error)
{
	ScramClient sc = client_after_rfc_final();
	char err[256];
	const char *msg = "e=invalid-proof";
	cr_assert_not(scram_client_verify(&sc, u8(msg), strlen(msg), err, sizeof(err)));
	cr_assert(strstr(err, "invalid-proof") != NULL, "%s", err);
	scram_client_free(&sc);
}

Test(scram_client, verify_refuses_malformed_signatures)
{
	const char *bad[] = { "v=", "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg", "x=1",
			      "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOh=", "" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ScramClient sc = client_after_rfc_final();
		char err[256];
		cr_assert_not(scram_client_verify(&sc, u8(bad[i]), strlen(bad[i]), err, sizeof(err)),
			      "accepted %s", bad[i]);
		scram_client_free(&sc);
	}
}

Test(scram_client, verify_before_final_is_refused)
{
	ScramClient sc = { 0 };
	char err[256];
	cr_assert_not(scram_client_verify(&sc, u8(EMPTY_USER_SERVER_FINAL),
					  strlen(EMPTY_USER_SERVER_FINAL), err, sizeof(err)));
	scram_client_free(&sc);
}

Test(scram, verify_plain_accepts_only_the_right_password)
{
	const uint8_t salt[16] = "0123456789abcdef";
	char *v = scram_make_verifier("s3cret", salt, sizeof(salt), 4096);
	cr_assert_not_null(v);
	cr_assert(scram_verify_plain(v, "s3cret"));
	cr_assert_not(scram_verify_plain(v, "s3creT"));
	cr_assert_not(scram_verify_plain(v, ""));
	cr_assert_not(scram_verify_plain("md5aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "s3cret"));
	cr_assert_not(scram_verify_plain("SCRAM-SHA-256$4096:!!$x:y", "s3cret"));
	free(v);
}
