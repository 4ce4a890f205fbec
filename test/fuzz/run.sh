#!/bin/sh
# Build and run every libFuzzer target for SECONDS each (default 20), starting
# from the committed seeds in test/fuzz/corpus/<target>/. New inputs go to
# test/fuzz/out/corpus-<target>/ (never into the committed seeds); a crash
# leaves its input in test/fuzz/out/ and makes the script exit non-zero.
#   test/fuzz/run.sh [SECONDS]
set -u

here=$(cd "$(dirname "$0")" && pwd)
secs=${1:-20}
out="$here/out"
targets="fuzz_startup fuzz_framer fuzz_scram fuzz_mask fuzz_sqlinfo fuzz_hba fuzz_proto_ext fuzz_approvals_msg fuzz_proxyproto fuzz_audit_verify fuzz_maskguard fuzz_errscrub fuzz_prepared fuzz_approvals_api fuzz_jwt fuzz_luastr fuzz_admin_parse"

case "$secs" in
''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

"$here/build.sh" $targets || exit 2

failed=""
for t in $targets; do
	work="$out/corpus-$t"
	mkdir -p "$work"
	echo "== $t for ${secs}s"
	if ! "$out/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$out/$t-" "$work" "$here/corpus/$t" >"$out/$t.log" 2>&1; then
		tail -n 40 "$out/$t.log"
		failed="$failed $t"
	else
		grep -E '^stat::number_of_executed_units|^Done' "$out/$t.log" || true
	fi
done

if [ -n "$failed" ]; then
	echo "FAILED:$failed (logs and crash inputs in $out)" >&2
	exit 1
fi
echo "all fuzz targets ran clean for ${secs}s each"
