// Liaison console in real headless Chromium (Debian's), driven by playwright-core.
//
// Starts `liaison demo --no-story` on free ports in a fresh directory, then plays the
// duty officers' parts: ROK sends a FLASH to PRC, PRC sees it arrive without a reload
// and acknowledges it, ROK sees the acknowledgement come back; a CONFIDENTIAL-cleared
// officer cannot open a SECRET report (page and API); a Korean officer reads Korean;
// compose refuses a label above the channel's ceiling with the reason. Screenshots of
// each main page go to target/screenshots/.
//
// Usage: node tests/browser/console.mjs [path/to/liaison]

import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const bin = process.argv[2] || path.join(root, "target/debug/liaison");
const shots = path.join(root, "target/screenshots");
mkdirSync(shots, { recursive: true });
const TIMEOUT = 30_000;

let failures = 0;
function check(cond, what) {
  if (cond) {
    console.log(`  ✔ ${what}`);
  } else {
    failures += 1;
    console.log(`  ✘ ${what}`);
  }
}

// ---- the four nodes -------------------------------------------------------
const dir = mkdtempSync(path.join(tmpdir(), "liaison-browser-"));
const demo = spawn(
  bin,
  ["demo", "--dir", dir, "--base-port", "0", "--no-story", "--clock", "2019-11-22T23:00:00+09:00", "--speed", "1"],
  { stdio: ["ignore", "pipe", "inherit"] },
);
const urls = {};
await new Promise((resolve, reject) => {
  let out = "";
  const timer = setTimeout(() => reject(new Error(`demo did not print its consoles:\n${out}`)), 120_000);
  demo.stdout.on("data", (chunk) => {
    out += chunk;
    for (const m of out.matchAll(/^\s+(ROK|PRC|USA|JPN)\s+(http:\/\/\S+\/)/gm)) {
      urls[m[1]] = m[2];
    }
    if (Object.keys(urls).length === 4) {
      clearTimeout(timer);
      resolve();
    }
  });
  demo.on("exit", (code) => reject(new Error(`demo exited (${code}):\n${out}`)));
});
console.log("consoles:", urls);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

async function signIn(party, name, locale = "en-US") {
  const context = await browser.newContext({ locale, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  await page.goto(urls[party] + "login");
  await page.fill("#name", name);
  await page.fill("#password", `${name}-demo`);
  await Promise.all([page.waitForURL(/\/inbox/), page.click("button[type=submit]")]);
  return page;
}

const shot = (page, name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });

try {
  // ---- sign-in page, in the browser's language before anyone signs in ----
  {
    const context = await browser.newContext({ locale: "ko-KR" });
    const page = await context.newPage();
    await page.goto(urls.ROK + "login");
    check((await page.textContent("h1")).includes("Liaison") && (await page.textContent("label[for=name]")) === "이름", "the sign-in page speaks the browser's language (Korean)");
    await shot(page, "login");
    await page.fill("#name", "rok.navy");
    await page.fill("#password", "not-the-password");
    await page.click("button[type=submit]");
    check((await page.textContent("#login-error")).includes("틀렸습니다"), "a wrong password is refused, in Korean");
    await context.close();
  }

  // ---- FLASH ROK.navy → PRC.navy, live arrival, acknowledgement back ----
  const rok = await signIn("ROK", "rok.navy", "en-US");
  check((await rok.getAttribute("html", "lang")) === "ko" && (await rok.textContent("nav a[aria-current=page]")) === "수신함", "a Korean user sees Korean (chosen per user, not by the browser)");
  const prc = await signIn("PRC", "prc.navy", "en-US");
  check((await prc.getAttribute("html", "lang")) === "zh-CN", "the PRC duty officer's console is in Chinese");
  await prc.waitForSelector("body[data-listening='1']");
  await prc.evaluate(() => { window.__noReload = true; });
  await shot(prc, "inbox-empty");

  await rok.goto(urls.ROK + "compose");
  await rok.selectOption("#from", "ROK.navy");
  await rok.selectOption("#to", "PRC.navy");
  await rok.selectOption("#label", "ROK:평문");
  await rok.selectOption("#precedence", "FLASH");
  await rok.waitForSelector("#decision.allowed");
  const allowed = await rok.textContent("#decision-text");
  check(allowed.includes("PRC:非密"), `compose shows the release decision before sending: ${allowed.trim()}`);
  const text = `Unidentified vessel crossing the boundary ${Date.now()}`;
  await rok.fill("#body", text);
  await shot(rok, "compose");
  await Promise.all([rok.waitForURL(/\/messages\//), rok.click("#send")]);
  const id = rok.url().split("/messages/")[1];
  check(/^[0-9a-f-]{8,}/.test(id), `sent as ${id}`);

  const row = prc.locator(`tr[data-id='${id}']`);
  await row.waitFor();
  check(await prc.evaluate(() => window.__noReload === true), "the FLASH appears on the PRC console without a reload");
  check((await row.getAttribute("class")).includes("loud") && (await row.getAttribute("class")).includes("prec-FLASH"), "an unacknowledged FLASH is shown loud, on top");
  check((await prc.locator("tbody tr").first().getAttribute("data-id")) === id, "FLASH is the first row");
  await shot(prc, "inbox-flash");

  await prc.click(`tr[data-id='${id}'] a`);
  await prc.waitForSelector("#ack");
  check((await prc.textContent("#body")) === text, "the message reads as sent");
  await shot(prc, "message");
  await Promise.all([prc.waitForURL(new RegExp(`/messages/${id}$`)), prc.click("#ack")]);
  check((await prc.textContent("#state")) === "已确认", "PRC records the acknowledgement");

  // ROK's message page updates itself when the acknowledgement receipt arrives.
  await rok.waitForSelector("body[data-listening='1']");
  await rok.waitForFunction(() => document.getElementById("state")?.textContent === "확인됨");
  const receipts = await rok.textContent("#receipts");
  check(receipts.includes("prc.navy") || receipts.includes("王伟"), `ROK sees PRC's acknowledgement come back: ${receipts.trim().replace(/\s+/g, " ")}`);
  await shot(rok, "message-acknowledged");

  // ---- a SECRET report to ROK.intel; a CONFIDENTIAL-cleared officer cannot open it ----
  const usa = await signIn("USA", "usa.intel", "en-US");
  await usa.goto(urls.USA + "compose");
  await usa.selectOption("#from", "USA.intel");
  await usa.selectOption("#to", "ROK.intel");
  await usa.selectOption("#label", "USA:SECRET");
  await usa.fill("#body", "SECRET: assessment of the launch");
  await Promise.all([usa.waitForURL(/\/messages\//), usa.click("#send")]);
  const secretId = usa.url().split("/messages/")[1];
  await usa.waitForFunction(() => document.getElementById("state")?.textContent === "Delivered");
  check(true, "USA.intel's SECRET report is delivered to ROK.intel");

  const senior = await signIn("ROK", "rok.intel", "en-US");
  await senior.goto(urls.ROK + `messages/${secretId}`);
  check((await senior.textContent(".label")) === "ROK:II급 비밀", "it arrives in ROK's own markings (II급 비밀)");

  const junior = await signIn("ROK", "rok.junior", "en-US");
  const resp = await junior.goto(urls.ROK + `messages/${secretId}`);
  check(resp.status() === 403 && (await junior.textContent("#error")).includes("above your clearance"), "the CONFIDENTIAL-cleared officer's page refuses it");
  check(!(await junior.content()).includes("assessment of the launch"), "and shows nothing of it");
  await shot(junior, "clearance-refused");
  const api = await junior.evaluate(async (id) => {
    const r = await fetch(`/api/v1/messages/${id}`);
    return { status: r.status, body: await r.text() };
  }, secretId);
  check(api.status === 403 && api.body.includes("above your clearance"), "the API refuses it too");
  await junior.goto(urls.ROK + "inbox");
  check(!(await junior.content()).includes(secretId), "and the inbox leaves it out");

  // ---- compose refuses a label above the channel's ceiling, with the reason ----
  const admin = await signIn("USA", "usa.admin", "en-US");
  await admin.goto(urls.USA + "compose");
  // The answer to the first choice is held back until after the later ones have been
  // answered: answers arriving out of order must not show an earlier one.
  let asked = 0;
  await admin.route("**/api/v1/decisions", async (route) => {
    if (asked++ === 0) await new Promise((r) => setTimeout(r, 1500));
    await route.continue();
  });
  await admin.selectOption("#from", "USA.intel");
  await admin.selectOption("#to", "ROK.intel");
  await admin.selectOption("#label", "USA:TOP SECRET");
  await admin.waitForSelector("#decision.refused");
  await admin.waitForTimeout(2500);
  check(asked >= 2 && (await admin.getAttribute("#decision", "class")) === "decision refused", "a late answer to an earlier choice does not replace the decision shown");
  await admin.unroute("**/api/v1/decisions");
  const reason = await admin.textContent("#decision-reasons");
  check(/ceiling/.test(reason), `the decision shows the reason before sending: ${reason.trim()}`);
  await admin.fill("#body", "too high");
  const refused = await Promise.all([admin.waitForResponse((r) => r.url().endsWith("/compose") && r.request().method() === "POST"), admin.click("#send")]);
  await admin.waitForLoadState();
  check(refused[0].status() === 403 && /ceiling/.test(await admin.textContent("#decision-reasons")), "pressing send anyway is refused with the reason");
  await shot(admin, "compose-refused");

  // ---- the other pages, for the record ----
  const rokAdmin = await signIn("ROK", "rok.admin", "en-US");
  for (const [p, name] of [["hotlines", "hotlines"], ["agreements", "agreements"], ["audit", "audit"], ["sent?desk=ROK.navy", "sent"], ["consents", "consents"]]) {
    const r = await rokAdmin.goto(urls.ROK + p);
    check(r.status() === 200, `${name} page renders`);
    await shot(rokAdmin, name);
  }
  await rokAdmin.goto(urls.ROK + "audit");
  check((await rokAdmin.textContent("#verified")).includes("verified"), "the audit page verifies the node's own log");
  await rokAdmin.goto(urls.ROK + "agreements");
  check((await rokAdmin.textContent("#agreement-rok-usa-jpn-information-sharing")).includes("notice"), "the agreements page shows ROK's notice on the sharing agreement");
  // 200 % zoom: the main navigation and compose stay usable (no horizontal scrolling needed).
  const zoomed = await browser.newContext({ viewport: { width: 640, height: 900 }, deviceScaleFactor: 2 });
  const zp = await zoomed.newPage();
  await zp.goto(urls.ROK + "login");
  await zp.fill("#name", "rok.navy");
  await zp.fill("#password", "rok.navy-demo");
  await Promise.all([zp.waitForURL(/\/inbox/), zp.click("button[type=submit]")]);
  await zp.goto(urls.ROK + "compose");
  const overflow = await zp.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  check(overflow <= 0, "compose fits a 640 px wide window (1280 px at 200 % zoom) without horizontal scrolling");
  await zp.keyboard.press("Tab");
  check((await zp.evaluate(() => document.activeElement?.className)) === "skip", "the first Tab reaches the skip link");
  await shot(zp, "compose-200-percent");
} catch (e) {
  failures += 1;
  console.log(`  ✘ ${e.stack || e}`);
} finally {
  await browser.close();
  demo.kill("SIGINT");
  await new Promise((r) => demo.on("exit", r));
  rmSync(dir, { recursive: true, force: true });
}

if (failures) {
  console.log(`browser tests: ${failures} failed`);
  process.exit(1);
}
console.log(`browser tests: all passed; screenshots in ${shots}`);
