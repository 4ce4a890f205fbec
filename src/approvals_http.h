/*
 * Reviewers over HTTP (DESIGN.md "Contract: admin console and HTTP"):
 *
 *   GET  /api/approvals              the held statements (SHOW APPROVALS), JSON
 *   POST /api/approvals/ID/approve   run it
 *   POST /api/approvals/ID/deny      answer it with 42501; body {"reason": "..."} optional
 *   GET  /approvals                  the reviewer web page
 *
 * /api/ needs "Authorization: Bearer <token>" from admin.token_file; without
 * a token file the API answers 503 and is never open. Same semantics as
 * APPROVE/DENY on the admin console (approvals.h), including forwarding to
 * the replica holding the statement (store: postgres).
 */
#ifndef PGMOAT_APPROVALS_HTTP_H
#define PGMOAT_APPROVALS_HTTP_H

void approvals_http_register_routes(void);

#endif
