/*
 * auth_hba_file: PostgreSQL pg_hba.conf rules, used when auth_type = hba.
 *
 * Supported: connection types local, host, hostssl, hostnossl; database
 * lists (all, sameuser, replication, names, "quoted names"); user lists
 * (all, names); addresses all, CIDR (a.b.c.d/n, ::1/128) or address plus a
 * separate mask; methods trust, reject, md5, scram-sha-256, password, cert.
 * Everything else (@file, +group, samerole, samehost, samenet, host names,
 * hostgssenc, other methods, method options) is refused at load time with
 * file:line, so a rule never silently means less than it says.
 *
 * The first rule whose type, database, user and address match decides; no
 * matching rule means the connection is refused (PostgreSQL's behaviour).
 */
#ifndef PGMOAT_HBA_H
#define PGMOAT_HBA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "util.h"

typedef enum { HBA_LOCAL, HBA_HOST, HBA_HOSTSSL, HBA_HOSTNOSSL } HbaConnType;

typedef enum {
	HBA_TRUST,
	HBA_REJECT,
	HBA_MD5,	/* md5, or SCRAM when the stored secret is SCRAM (as PostgreSQL) */
	HBA_SCRAM,
	HBA_PASSWORD,	/* cleartext */
	HBA_CERT,	/* TLS client certificate; refused while the client is not on TLS */
} HbaMethod;

typedef struct HbaRule {
	HbaConnType type;
	bool db_all;
	bool db_sameuser;
	bool db_replication;	/* matches replication connections only: pgmoat has none */
	StrList dbs;		/* literal names */
	bool user_all;
	StrList users;
	bool addr_all;		/* "all", or a local line */
	int family;		/* AF_INET or AF_INET6 */
	uint8_t addr[16];	/* network address, already masked */
	uint8_t mask[16];
	HbaMethod method;
	int line;		/* in the file, for logs */
	struct HbaRule *next;
} HbaRule;

typedef struct Hba {
	HbaRule *rules;		/* in file order */
	int count;
} Hba;

/* What hba_match looks at for one connection. */
typedef struct HbaConn {
	bool is_unix;
	bool tls;
	const char *addr;	/* numeric client address (inet_ntop form); ignored for unix */
	const char *database;
	const char *user;
} HbaConn;

/* NULL with "file:line: message" in err on a malformed or unsupported rule. */
Hba *hba_load(const char *path, char *err, size_t errlen);
Hba *hba_parse(const char *text, const char *name_for_errors, char *err, size_t errlen);
void hba_free(Hba *hba);

/* The first matching rule, or NULL (refuse). */
const HbaRule *hba_match(const Hba *hba, const HbaConn *conn);

const char *hba_method_name(HbaMethod m);

#endif
