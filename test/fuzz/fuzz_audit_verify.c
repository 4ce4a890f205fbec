/*
 * libFuzzer target for `pgmoat audit verify`: the audit file may have been
 * tampered with, so its lines are untrusted bytes.
 *
 * The input is split on '\n' and fed line by line to the verifier, as the
 * CLI does. Invariants checked (abort() on violation): once a line fails,
 * every later line fails too and the first bad line stays named; a failure
 * names a line seen so far with a non-empty reason; without a failure every
 * line was a record; an accepted record's hash is the SHA-256 of its line.
 */
#include "audit_record.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	AuditVerifier v;
	audit_verifier_init(&v);
	const char *p = (const char *)data, *end = p + size;
	uint64_t first_bad = 0;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		bool was_failed = v.failed;
		bool ok = audit_verify_line(&v, p, len);
		if (was_failed && (ok || v.bad_line != first_bad))
			abort();
		if (!ok && !was_failed) {
			first_bad = v.bad_line;
			if (v.bad_line != v.line || v.error[0] == '\0')
				abort();
		}
		if (ok) {
			char h[AUDIT_HASH_HEX + 1];
			audit_line_hash(p, len, h);
			if (strcmp(h, v.prev) != 0)
				abort();
		}
		p += len + (nl ? 1 : 0);
	}
	if (!v.failed && v.records != v.line)
		abort();
	return 0;
}
