/*
 * pgbouncer's auth_file (userlist.txt): lines of "user" "secret", where the
 * secret is a plain password, "md5" + 32 hex, or a SCRAM-SHA-256$ verifier.
 * Double quotes inside a field are written twice; ';' or '#' start comments.
 */
#ifndef PGMOAT_USERLIST_H
#define PGMOAT_USERLIST_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { SECRET_PLAIN, SECRET_MD5, SECRET_SCRAM } SecretKind;

typedef struct UserlistEntry {
	char *name;
	char *secret;		/* as written in the file */
	SecretKind kind;
	struct UserlistEntry *next;
} UserlistEntry;

typedef struct Userlist {
	UserlistEntry *entries;
	int count;
} Userlist;

/* NULL with "file:line: message" in err on a malformed file. */
Userlist *userlist_load(const char *path, char *err, size_t errlen);
Userlist *userlist_parse(const char *text, const char *name_for_errors, char *err, size_t errlen);
const UserlistEntry *userlist_find(const Userlist *ul, const char *user);
void userlist_free(Userlist *ul);
SecretKind userlist_secret_kind(const char *secret);

#endif
