/* TLS settings: sslmode names, protocol lists and cipher set names (pure parsing, no sockets). */
#include <criterion/criterion.h>
#include <openssl/ssl.h>
#include <string.h>

#include "../../src/tls.h"

static void expect_range(const char *s, int lo, int hi)
{
	int min = 0, max = 0;
	char err[128] = "";
	cr_assert(tls_parse_protocols(s, &min, &max, err, sizeof(err)), "%s: %s", s, err);
	cr_expect_eq(min, lo, "%s: min %x", s, min);
	cr_expect_eq(max, hi, "%s: max %x", s, max);
}

static void expect_refused(const char *s, const char *msg)
{
	int min = 0, max = 0;
	char err[128] = "";
	cr_assert(!tls_parse_protocols(s, &min, &max, err, sizeof(err)), "%s accepted", s);
	cr_expect_str_eq(err, msg);
}

Test(tls, protocols_default_and_secure_are_tls12_to_tls13)
{
	expect_range(NULL, TLS1_2_VERSION, TLS1_3_VERSION);
	expect_range("", TLS1_2_VERSION, TLS1_3_VERSION);
	expect_range("secure", TLS1_2_VERSION, TLS1_3_VERSION);
	expect_range("default", TLS1_2_VERSION, TLS1_3_VERSION);
}

Test(tls, protocols_all_and_legacy_start_at_tls10)
{
	expect_range("all", TLS1_VERSION, TLS1_3_VERSION);
	expect_range("legacy", TLS1_VERSION, TLS1_3_VERSION);
}

Test(tls, protocols_list_in_any_separator_and_case)
{
	expect_range("tlsv1.3", TLS1_3_VERSION, TLS1_3_VERSION);
	expect_range("TLSv1.2, tlsv1.3", TLS1_2_VERSION, TLS1_3_VERSION);
	expect_range("tlsv1.1:tlsv1.2", TLS1_1_VERSION, TLS1_2_VERSION);
	expect_range("tlsv1 tlsv1.1", TLS1_VERSION, TLS1_1_VERSION);
}

Test(tls, protocols_bang_removes_one)
{
	expect_range("all,!tlsv1.0,!tlsv1.1", TLS1_2_VERSION, TLS1_3_VERSION);
	expect_range("secure:!tlsv1.3", TLS1_2_VERSION, TLS1_2_VERSION);
}

Test(tls, protocols_unknown_or_empty_set_is_an_error)
{
	expect_refused("sslv3", "unknown TLS protocol 'sslv3' in 'sslv3'");
	expect_refused("tlsv1.3,!tlsv1.3", "no TLS protocol left in 'tlsv1.3,!tlsv1.3'");
	expect_refused("!", "invalid TLS protocol list: !");
	expect_refused("tlsv1.2,averyveryveryverylongprotocolname", "invalid TLS protocol list: "
		       "tlsv1.2,averyveryveryverylongprotocolname");
}

Test(tls, modes_parse_pgbouncer_names)
{
	TlsMode m = TLS_REQUIRE;
	cr_assert(tls_mode_parse(NULL, &m));
	cr_expect_eq(m, TLS_DISABLE);
	cr_assert(tls_mode_parse("verify-full", &m));
	cr_expect_eq(m, TLS_VERIFY_FULL);
	cr_assert(tls_mode_parse("Prefer", &m));
	cr_expect_eq(m, TLS_PREFER);
	cr_expect(!tls_mode_parse("sometimes", &m));
	cr_expect_str_eq(tls_mode_name(TLS_VERIFY_CA), "verify-ca");
	cr_expect(TLS_ALLOW < TLS_PREFER && TLS_PREFER < TLS_REQUIRE && TLS_REQUIRE < TLS_VERIFY_CA);
}

Test(tls, cipher_set_names_map_and_custom_lists_pass_through)
{
	cr_expect_str_eq(tls_cipher_list("ALL"), "ALL:!aNULL:!eNULL");
	cr_expect_str_eq(tls_cipher_list(NULL), tls_cipher_list("fast"));
	cr_expect_str_eq(tls_cipher_list("ECDHE-RSA-AES128-GCM-SHA256"), "ECDHE-RSA-AES128-GCM-SHA256");
	cr_expect(strstr(tls_cipher_list("secure"), "!aNULL") != NULL);
}
