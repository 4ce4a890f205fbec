/*
 * Drives the reviewer page (/approvals) in headless Chromium with
 * playwright-core: log in with a token, find the held statements, approve
 * one, deny the other with a reason. Prints one JSON line with what it saw;
 * test_http_approvals.py checks that and what the database did.
 *
 *   node approvals_page.cjs URL TOKEN APPROVE_ID DENY_ID REASON
 *
 * Needs playwright-core (require() resolves it through NODE_PATH) and
 * /usr/bin/chromium (CHROMIUM overrides). Bounded: every wait has a timeout.
 */
"use strict";
const { chromium } = require("playwright-core");

const [url, token, approveId, denyId, reason] = process.argv.slice(2);
const WAIT = { timeout: 15000 };

async function run(browser) {
	const context = await browser.newContext();
	const page = await context.newPage();
	const problems = [];
	page.on("pageerror", (e) => problems.push("pageerror: " + e.message));
	page.on("console", (m) => { if (m.type() === "error") problems.push("console: " + m.text()); });
	page.on("request", (r) => { if (!r.url().startsWith(new URL(url).origin)) problems.push("external request: " + r.url()); });
	await page.addInitScript(() => {
		window.__csp = [];
		document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(e.violatedDirective));
	});
	await page.goto(url, WAIT);
	const loginShown = await page.isVisible("#login");
	await page.fill("#token", "wrong-token");
	await page.click("#login button[type=submit]");
	await page.waitForSelector("#status.bad", WAIT);
	const refusedText = await page.textContent("#status");
	const loginAgain = await page.isVisible("#login");
	await page.fill("#token", token);
	await page.click("#login button[type=submit]");
	await page.waitForSelector(`#rows tr >> text="${approveId}"`, WAIT);
	await page.waitForSelector(`#rows tr >> text="${denyId}"`, WAIT);
	const rows = await page.$$eval("#rows tr", (trs) => trs.map((tr) =>
		Array.from(tr.querySelectorAll("td")).map((td) => td.textContent)));
	const markupInRows = await page.$$eval("#rows b, #rows img, #rows script", (els) => els.length);
	const storage = await page.evaluate(() => ({
		session: sessionStorage.length, local: localStorage.length, cookie: document.cookie }));

	const row = (id) => page.locator("#rows tr", { has: page.locator(`td:first-child:text-is("${id}")`) });
	await row(approveId).locator("button.approve").click();
	await page.waitForFunction((id) => document.getElementById("status").textContent.includes("Approval " + id + " approved"), approveId, WAIT);
	const approvedText = await page.textContent("#status");
	await row(denyId).locator("input").fill(reason);
	await row(denyId).locator("button.deny").click();
	await page.waitForFunction((id) => document.getElementById("status").textContent.includes("Approval " + id + " rejected"), denyId, WAIT);
	const deniedText = await page.textContent("#status");
	await page.waitForFunction(() => document.querySelectorAll("#rows tr").length === 0, null, WAIT);
	const emptyShown = await page.isVisible("#empty");
	await page.click("#logout");
	const forgotten = await page.evaluate(() => sessionStorage.length);
	const csp = await page.evaluate(() => window.__csp);
	return { loginShown, refusedText, loginAgain, rows, markupInRows, storage, approvedText,
		 deniedText, emptyShown, forgotten, csp, problems };
}

(async () => {
	const browser = await chromium.launch({
		executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
		timeout: 30000,
		args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		       "--disable-background-networking", "--disable-component-update", "--disable-sync"],
	});
	try {
		console.log(JSON.stringify(await run(browser)));
	} finally {
		await browser.close();
	}
})().catch((e) => {
	console.error(e && e.stack ? e.stack : String(e));
	process.exit(1);
});
