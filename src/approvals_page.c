/*
 * The reviewer web page. Its parts are plain strings so that the exact
 * bytes of the inline style and script can be hashed for the CSP; edit
 * them here (keep "</" out of the script).
 *
 * The script renders everything with textContent (statements and reasons
 * come from database clients), keeps the token in sessionStorage only and
 * sends it only as an Authorization header.
 */
#include "approvals_page.h"

#include <stdio.h>
#include <string.h>
#include <openssl/evp.h>

/* Up to the opening <style>. */
static const char page_head[] =
	"<!DOCTYPE html>\n"
	"<html lang=\"en\">\n"
	"<head>\n"
	"<meta charset=\"utf-8\">\n"
	"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
	"<meta name=\"referrer\" content=\"no-referrer\">\n"
	"<title>pgmoat approvals</title>\n"
	"<style>";

/* The inline style: its hash is in the CSP. */
static const char page_style[] =
	":root { color-scheme: light dark; font-family: system-ui, sans-serif; }\n"
	"body { margin: 1.5rem; }\n"
	"header { display: flex; gap: 1rem; align-items: baseline; }\n"
	"h1 { font-size: 1.3rem; margin: 0 0 1rem; }\n"
	"table { border-collapse: collapse; width: 100%; }\n"
	"th, td { border-bottom: 1px solid #8886; padding: .35rem .5rem; text-align: left; vertical-align: top; }\n"
	"td.sql { font-family: ui-monospace, monospace; white-space: pre-wrap; word-break: break-word; max-width: 40rem; }\n"
	"td.act { white-space: nowrap; }\n"
	"button { margin: 0 .25rem; cursor: pointer; }\n"
	"button.approve { color: #070; }\n"
	"button.deny { color: #a00; }\n"
	"input[type=text] { width: 12rem; }\n"
	"#status.bad { color: #c00; }\n"
	".hint, #updated { color: #888; font-size: .85rem; }\n"
	"[hidden] { display: none !important; }\n";

/* From </style> to the opening <script>. */
static const char page_body[] =
	"</style>\n"
	"</head>\n"
	"<body>\n"
	"<header>\n"
	"<h1>pgmoat: statements held for a reviewer</h1>\n"
	"<span id=\"updated\"></span>\n"
	"<button type=\"button\" id=\"logout\" hidden>Forget token</button>\n"
	"</header>\n"
	"<form id=\"login\" hidden>\n"
	"<label>Admin token <input id=\"token\" type=\"password\" autocomplete=\"off\" required></label>\n"
	"<button type=\"submit\">Use token</button>\n"
	"<p class=\"hint\">The token stays in this browser tab (sessionStorage) and is sent only as an Authorization header.</p>\n"
	"</form>\n"
	"<p id=\"status\" role=\"status\"></p>\n"
	"<main id=\"queue\" hidden>\n"
	"<table>\n"
	"<thead><tr><th>id</th><th>client</th><th>user@database</th><th>statement</th><th>held because</th><th>policy</th><th>waiting</th><th>times out</th><th>replica</th><th>decision</th></tr></thead>\n"
	"<tbody id=\"rows\"></tbody>\n"
	"</table>\n"
	"<p id=\"empty\" hidden>Nothing is waiting for a reviewer.</p>\n"
	"</main>\n"
	"<script>";

/* The inline script: its hash is in the CSP. */
static const char page_script[] =
	"\"use strict\";\n"
	"(function () {\n"
	"\t/* Everything shown comes from clients of the database: text only (textContent), never markup. */\n"
	"\tvar KEY = \"pgmoat.approvals.token\";\n"
	"\tvar REFRESH_MS = 3000;\n"
	"\tvar el = function (id) { return document.getElementById(id); };\n"
	"\n"
	"\tfunction token() { return sessionStorage.getItem(KEY) || \"\"; }\n"
	"\n"
	"\tfunction say(text, bad) {\n"
	"\t\tel(\"status\").textContent = text;\n"
	"\t\tel(\"status\").className = bad ? \"bad\" : \"\";\n"
	"\t}\n"
	"\n"
	"\tfunction showLogin(on) {\n"
	"\t\tel(\"login\").hidden = !on;\n"
	"\t\tel(\"queue\").hidden = on;\n"
	"\t\tel(\"logout\").hidden = on;\n"
	"\t}\n"
	"\n"
	"\t/* The bearer header is the only credential the API takes; the browser adds none. */\n"
	"\tfunction api(method, path, body) {\n"
	"\t\tvar init = { method: method, cache: \"no-store\", credentials: \"omit\", redirect: \"error\",\n"
	"\t\t\theaders: { \"Authorization\": \"Bearer \" + token() } };\n"
	"\t\tif (body !== undefined) {\n"
	"\t\t\tinit.headers[\"Content-Type\"] = \"application/json\";\n"
	"\t\t\tinit.body = JSON.stringify(body);\n"
	"\t\t}\n"
	"\t\treturn fetch(path, init).then(function (r) {\n"
	"\t\t\treturn r.text().then(function (t) {\n"
	"\t\t\t\tvar j = null;\n"
	"\t\t\t\ttry { j = JSON.parse(t); } catch (e) { j = null; }\n"
	"\t\t\t\treturn { status: r.status, json: j };\n"
	"\t\t\t});\n"
	"\t\t});\n"
	"\t}\n"
	"\n"
	"\tfunction cell(tr, text, cls) {\n"
	"\t\tvar td = document.createElement(\"td\");\n"
	"\t\ttd.textContent = text === null || text === undefined ? \"\" : String(text);\n"
	"\t\tif (cls) td.className = cls;\n"
	"\t\ttr.appendChild(td);\n"
	"\t\treturn td;\n"
	"\t}\n"
	"\n"
	"\tfunction button(label, cls, onClick) {\n"
	"\t\tvar b = document.createElement(\"button\");\n"
	"\t\tb.type = \"button\";\n"
	"\t\tb.textContent = label;\n"
	"\t\tb.className = cls;\n"
	"\t\tb.addEventListener(\"click\", onClick);\n"
	"\t\treturn b;\n"
	"\t}\n"
	"\n"
	"\t/* Reasons being typed survive the periodic re-render, and so does the focus. */\n"
	"\tfunction keepDrafts() {\n"
	"\t\tvar kept = { drafts: {}, focused: null };\n"
	"\t\tvar inputs = el(\"rows\").querySelectorAll(\"input\");\n"
	"\t\tfor (var i = 0; i < inputs.length; i++) {\n"
	"\t\t\tkept.drafts[inputs[i].dataset.id] = inputs[i].value;\n"
	"\t\t\tif (inputs[i] === document.activeElement) kept.focused = inputs[i];\n"
	"\t\t}\n"
	"\t\treturn kept;\n"
	"\t}\n"
	"\n"
	"\tfunction row(a, kept) {\n"
	"\t\tvar tr = document.createElement(\"tr\");\n"
	"\t\tvar id = String(a.id);\n"
	"\t\tcell(tr, id);\n"
	"\t\tcell(tr, a.client);\n"
	"\t\tcell(tr, a.user + \"@\" + a.database);\n"
	"\t\tcell(tr, a.statement, \"sql\");\n"
	"\t\tcell(tr, a.reason);\n"
	"\t\tcell(tr, a.policy);\n"
	"\t\tcell(tr, Math.floor(a.wait_ms / 1000) + \" s\");\n"
	"\t\tcell(tr, a.timeout_at);\n"
	"\t\tcell(tr, a.replica === null ? \"here\" : a.replica);\n"
	"\t\tvar td = cell(tr, \"\", \"act\");\n"
	"\t\tvar reason = document.createElement(\"input\");\n"
	"\t\treason.type = \"text\";\n"
	"\t\treason.placeholder = \"reason (for deny)\";\n"
	"\t\treason.maxLength = 1000;\n"
	"\t\treason.dataset.id = id;\n"
	"\t\tif (Object.prototype.hasOwnProperty.call(kept.drafts, id)) reason.value = kept.drafts[id];\n"
	"\t\tif (kept.focused && kept.focused.dataset.id === id) kept.focus = reason;\n"
	"\t\ttd.appendChild(button(\"Approve\", \"approve\", function () { decide(id, \"approve\", \"\"); }));\n"
	"\t\ttd.appendChild(reason);\n"
	"\t\ttd.appendChild(button(\"Deny\", \"deny\", function () { decide(id, \"deny\", reason.value); }));\n"
	"\t\treturn tr;\n"
	"\t}\n"
	"\n"
	"\tfunction render(list) {\n"
	"\t\tvar kept = keepDrafts();\n"
	"\t\tvar rows = el(\"rows\");\n"
	"\t\trows.replaceChildren();\n"
	"\t\tlist.forEach(function (a) { rows.appendChild(row(a, kept)); });\n"
	"\t\tel(\"empty\").hidden = list.length > 0;\n"
	"\t\tif (kept.focus) kept.focus.focus();\n"
	"\t}\n"
	"\n"
	"\tfunction refused(r) {\n"
	"\t\tif (r.status === 401) {\n"
	"\t\t\tforget();\n"
	"\t\t\tsay(\"The token was refused.\", true);\n"
	"\t\t\treturn true;\n"
	"\t\t}\n"
	"\t\tif (r.status === 503) {\n"
	"\t\t\tsay(r.json && r.json.error ? r.json.error : \"The approvals API is not available.\", true);\n"
	"\t\t\treturn true;\n"
	"\t\t}\n"
	"\t\treturn false;\n"
	"\t}\n"
	"\n"
	"\tfunction unreachable(e) { say(\"Cannot reach pgmoat: \" + e.message, true); }\n"
	"\n"
	"\tfunction refresh() {\n"
	"\t\tif (!token()) return;\n"
	"\t\tapi(\"GET\", \"/api/approvals\").then(function (r) {\n"
	"\t\t\tif (refused(r)) return;\n"
	"\t\t\tif (r.status !== 200 || !r.json || !Array.isArray(r.json.approvals)) {\n"
	"\t\t\t\tsay(\"Unexpected answer: HTTP \" + r.status, true);\n"
	"\t\t\t\treturn;\n"
	"\t\t\t}\n"
	"\t\t\trender(r.json.approvals);\n"
	"\t\t\tel(\"updated\").textContent = \"updated \" + new Date().toLocaleTimeString();\n"
	"\t\t}, unreachable);\n"
	"\t}\n"
	"\n"
	"\tfunction decide(id, action, reason) {\n"
	"\t\tvar body = action === \"deny\" && reason.trim() ? { reason: reason.trim() } : undefined;\n"
	"\t\tapi(\"POST\", \"/api/approvals/\" + encodeURIComponent(id) + \"/\" + action, body).then(function (r) {\n"
	"\t\t\tif (refused(r)) return;\n"
	"\t\t\tif (r.status === 200 && r.json) {\n"
	"\t\t\t\tsay(\"Approval \" + r.json.id + \" \" + r.json.decision + \" by \" + r.json.reviewer +\n"
	"\t\t\t\t\t(r.json.forwarded ? \" (sent to the replica holding it).\" : \".\"), false);\n"
	"\t\t\t} else {\n"
	"\t\t\t\tsay(\"Approval \" + id + \": \" + (r.json && r.json.error ? r.json.error : \"HTTP \" + r.status), true);\n"
	"\t\t\t}\n"
	"\t\t\trefresh();\n"
	"\t\t}, unreachable);\n"
	"\t}\n"
	"\n"
	"\tfunction forget() {\n"
	"\t\tsessionStorage.removeItem(KEY);\n"
	"\t\tel(\"rows\").replaceChildren();\n"
	"\t\tshowLogin(true);\n"
	"\t}\n"
	"\n"
	"\tfunction start() {\n"
	"\t\tshowLogin(false);\n"
	"\t\tsay(\"\", false);\n"
	"\t\trefresh();\n"
	"\t}\n"
	"\n"
	"\tel(\"login\").addEventListener(\"submit\", function (ev) {\n"
	"\t\tev.preventDefault();\n"
	"\t\tvar t = el(\"token\").value.trim();\n"
	"\t\tel(\"token\").value = \"\";\n"
	"\t\tif (!t) return;\n"
	"\t\tsessionStorage.setItem(KEY, t);\n"
	"\t\tstart();\n"
	"\t});\n"
	"\tel(\"logout\").addEventListener(\"click\", function () {\n"
	"\t\tforget();\n"
	"\t\tsay(\"Token forgotten.\", false);\n"
	"\t});\n"
	"\tsetInterval(refresh, REFRESH_MS);\n"
	"\tif (token()) start(); else showLogin(true);\n"
	"})();\n";

/* After the script. */
static const char page_tail[] =
	"</script>\n"
	"</body>\n"
	"</html>\n";

/* 'sha256-<base64>' of text, as CSP wants it. */
static bool csp_hash(const char *text, char *out, size_t outlen)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	unsigned char b64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];

	if (!EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(), NULL))
		return false;
	EVP_EncodeBlock(b64, md, (int)mdlen);
	return snprintf(out, outlen, "'sha256-%s'", (const char *)b64) < (int)outlen;
}

bool approvals_page_render(struct evbuffer *body, char *csp, size_t csplen)
{
	char style_hash[80], script_hash[80];

	if (!csp_hash(page_style, style_hash, sizeof(style_hash)) ||
	    !csp_hash(page_script, script_hash, sizeof(script_hash)))
		return false;
	int n = snprintf(csp, csplen,
			 "default-src 'none'; script-src %s; style-src %s; connect-src 'self'; "
			 "img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
			 script_hash, style_hash);
	if (n < 0 || (size_t)n >= csplen)
		return false;
	return evbuffer_add(body, page_head, strlen(page_head)) == 0 &&
	       evbuffer_add(body, page_style, strlen(page_style)) == 0 &&
	       evbuffer_add(body, page_body, strlen(page_body)) == 0 &&
	       evbuffer_add(body, page_script, strlen(page_script)) == 0 &&
	       evbuffer_add(body, page_tail, strlen(page_tail)) == 0;
}
