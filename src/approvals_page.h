/*
 * The reviewer web page (GET /approvals): one self-contained HTML document,
 * its style and script inline and allowed by hash in a strict
 * Content-Security-Policy, so nothing else can run on or be loaded by it.
 * It talks to the approvals API (approvals_http.c) with the bearer token
 * the reviewer types in.
 */
#ifndef PGMOAT_APPROVALS_PAGE_H
#define PGMOAT_APPROVALS_PAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <event2/buffer.h>

#define APPROVALS_PAGE_CSP_MAX 512

/* The page into body and the Content-Security-Policy header value that goes with it into csp. */
bool approvals_page_render(struct evbuffer *body, char *csp, size_t csplen);

#endif
