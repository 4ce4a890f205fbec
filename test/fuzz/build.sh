#!/bin/sh
# Build the libFuzzer targets with ASan+UBSan into test/fuzz/out/, straight
# from the sources they need (no autotools). Works from any directory.
#   test/fuzz/build.sh            build every target
#   test/fuzz/build.sh fuzz_scram build one
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../../src" && pwd)
out="$here/out"
CC=${CC:-clang}

command -v "$CC" >/dev/null 2>&1 || { echo "build.sh: $CC not found (libFuzzer needs clang)" >&2; exit 2; }
dep_cflags="$(pkg-config --cflags openssl) $(pkg-config --cflags luajit)"
ssl_libs=$(pkg-config --libs openssl)

CFLAGS="-g -O1 -std=gnu11 -D_GNU_SOURCE -pthread -Wall -Wextra -Werror -Wno-unused-parameter
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I$src $dep_cflags"

# target: the src/*.c files it links, nothing more.
sources() {
	case "$1" in
	fuzz_startup) echo "proto.c util.c" ;;
	fuzz_framer) echo "proto.c util.c" ;;
	fuzz_scram) echo "auth_scram.c auth_md5.c util.c" ;;
	fuzz_mask) echo "mask.c pktbuf.c proto.c util.c" ;;
	fuzz_sqlinfo) echo "sqlinfo.c sqlshape.c colflow.c util.c" ;;
	fuzz_hba) echo "hba.c util.c" ;;
	fuzz_proto_ext) echo "proto_ext.c proto.c util.c" ;;
	fuzz_approvals_msg) echo "approvals_msg.c util.c" ;;
	fuzz_proxyproto) echo "proxyproto.c util.c" ;;
	fuzz_audit_verify) echo "audit_record.c util.c" ;;
	fuzz_maskguard) echo "maskguard.c sqlinfo.c sqlshape.c colflow.c util.c" ;;
	fuzz_errscrub) echo "errscrub.c pktbuf.c proto.c util.c" ;;
	fuzz_prepared) echo "prepared.c sqlinfo.c sqlshape.c colflow.c pktbuf.c proto.c log.c util.c" ;;
	fuzz_approvals_api) echo "approvals_api.c http_token.c audit_record.c util.c" ;;
	fuzz_jwt) echo "auth_jwt.c util.c" ;;
	fuzz_luastr) echo "luastr.c" ;;
	fuzz_admin_parse) echo "admin_parse.c" ;;
	*) echo "build.sh: unknown target $1" >&2; return 1 ;;
	esac
}

# target: libraries beyond OpenSSL.
extra_libs() {
	case "$1" in
	fuzz_sqlinfo) echo "-lpg_query -ljansson" ;;
	fuzz_approvals_msg) echo "-ljansson" ;;
	fuzz_audit_verify) echo "-ljansson" ;;
	fuzz_sqlinfo|fuzz_maskguard) echo "-lpg_query -ljansson" ;;
	fuzz_prepared) echo "-lpg_query -ljansson $(pkg-config --libs libevent)" ;;
	fuzz_approvals_api) echo "-ljansson" ;;
	fuzz_jwt) echo "-ljwt -ljansson" ;;
	fuzz_luastr) echo "$(pkg-config --libs luajit)" ;;
	*) echo "" ;;
	esac
}

targets=${*:-"fuzz_startup fuzz_framer fuzz_scram fuzz_mask fuzz_sqlinfo fuzz_hba fuzz_proto_ext fuzz_approvals_msg fuzz_proxyproto fuzz_audit_verify fuzz_maskguard fuzz_errscrub fuzz_prepared fuzz_approvals_api fuzz_jwt fuzz_luastr fuzz_admin_parse"}
mkdir -p "$out"
for t in $targets; do
	files=""
	for f in $(sources "$t"); do
		files="$files $src/$f"
	done
	# shellcheck disable=SC2086
	$CC $CFLAGS -o "$out/$t" "$here/$t.c" $files $ssl_libs $(extra_libs "$t")
	echo "built $out/$t"
done
