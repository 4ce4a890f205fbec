/*
 * The admin console's extended-protocol front end (Parse, Bind, Describe,
 * Execute, Close, Flush, Sync); see admin_ext.c.
 */
#ifndef PGMOAT_ADMIN_EXT_H
#define PGMOAT_ADMIN_EXT_H

#include "pgmoat.h"

typedef struct AdminExt AdminExt;

/* One of the message types admin_ext_handle() takes. */
bool admin_ext_is_message(uint8_t type);
/* Handle one message (body without type and length) from an admin client. */
void admin_ext_handle(Client *c, uint8_t type, const uint8_t *body, size_t len);
/* Free the client's prepared statements and portals. */
void admin_ext_free(Client *c);

#endif
