/*
 * libFuzzer target for the masking guard: the input is a simple-Query string.
 * Classification and the column-flow walk must never crash; the guard must
 * decide every parsed input, give a reason for every denial, and never allow
 * a statement that names a protected table and exposes its column by name
 * (checked on the flow the walk reported). The memoized guard
 * (maskguard_check_memo), asked twice, must agree with it both times.
 */
#include "maskguard.h"
#include "sqlinfo.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	StrList keys = { 0 };
	strlist_add(&keys, "people.email");
	strlist_add(&keys, "*.ssn");
	SqlInfo *info = sqlinfo_parse((const char *)data, size);
	MaskGuardResult r;
	maskguard_check(&keys, NULL, false, info, &r);
	if (r.deny != (r.reason != NULL))
		abort();
	if (info->ok && !r.deny) {
		for (int i = 0; i < info->nstmts; i++) {
			const SqlStatement *st = &info->stmts[i];
			if (strlist_contains(&st->exposed, "ssn") || strlist_contains(&st->exposed, "*") ||
			    st->opaque_code)
				abort();
			if (strlist_contains(&st->exposed, "email") &&
			    (strlist_contains(&st->tables, "people") ||
			     strlist_contains(&st->tables, "public.people")))
				abort();
		}
	}
	for (int round = 0; round < 2; round++) {
		MaskGuardResult m;
		maskguard_check_memo(&keys, 1, NULL, false, info, &m);
		if (m.deny != r.deny || m.sensitive != r.sensitive || m.hints.count != r.hints.count)
			abort();
		maskguard_result_free(&m);
	}
	maskguard_result_free(&r);
	sqlinfo_free(info);
	strlist_free(&keys);
	return 0;
}
