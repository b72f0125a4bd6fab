// Drives the demo chat page (web/chat.html, served at GET /) in headless Chromium: two pages join one room
// and each must see the other's message, which exercises the browser build of the client end to end.
//
// Usage:
//   node chat-page.mjs --url URL [--transports polling] [--screenshot DIR]
//
//   URL            server base, e.g. http://127.0.0.1:3000; the pages open URL/.
//   --transports   polling: open the page with ?transports=polling and expect polling throughout; without it
//                  the page uses the client's default and must upgrade to websocket.
//   --screenshot   also save both pages as PNG files in DIR (for looking at the page).
//   NONSTICK_CHROMIUM (env) overrides the browser binary, /usr/bin/chromium by default.
//
// Output (stdout): one line per check, `ok - <name>` or `not ok - <name>: <why>`, then the summary line
// `N passed, M failed`. Diagnostics go to stderr.
// Exit code: 0 when every check passed, 1 when any failed, 2 on bad arguments.
// Every wait has a deadline and a watchdog ends the process after 60 s; the browser runs with a fresh
// temporary profile that is removed at the end.

import { parseArgs } from "node:util";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { chromium } from "playwright-core";

const HARD_LIMIT_MS = 60_000;
const STEP_MS = 10_000;

function usage(message) {
  process.stderr.write(`chat-page: ${message}\n`);
  process.stderr.write("usage: node chat-page.mjs --url URL [--transports polling] [--screenshot DIR]\n");
  process.exit(2);
}

let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      url: { type: "string" },
      transports: { type: "string" },
      screenshot: { type: "string" },
    },
  }));
} catch (err) {
  usage(err.message);
}
if (!opts.url) usage("--url is required");
if (opts.transports !== undefined && opts.transports !== "polling") usage("--transports accepts only polling");
const polling = opts.transports === "polling";
const baseUrl = opts.url.replace(/\/+$/, "");
const executablePath = process.env.NONSTICK_CHROMIUM || "/usr/bin/chromium";

const profileDir = mkdtempSync(join(tmpdir(), "nonstick-chat-page-"));
let context = null;

async function teardown() {
  if (context) {
    const ctx = context;
    context = null;
    await Promise.race([ctx.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
  }
  rmSync(profileDir, { recursive: true, force: true });
}

setTimeout(() => {
  process.stdout.write(`not ok - check finished within ${HARD_LIMIT_MS} ms: hard time limit reached\n`);
  process.stdout.write(`${passed} passed, ${failed + 1} failed\n`);
  rmSync(profileDir, { recursive: true, force: true });
  process.exit(1);
}, HARD_LIMIT_MS).unref();

let passed = 0;
let failed = 0;
// Checks depend on each other (a page that never connected cannot chat); after a failure the rest are
// reported as failed with the reason, so the output always has the same lines.
let blocker = null;
async function check(name, fn) {
  if (blocker) {
    failed += 1;
    process.stdout.write(`not ok - ${name}: skipped after "${blocker}" failed\n`);
    return;
  }
  let timer;
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${STEP_MS} ms`)), STEP_MS);
      }),
    ]);
    passed += 1;
    process.stdout.write(`ok - ${name}\n`);
  } catch (err) {
    failed += 1;
    blocker = name;
    const why = String(err?.message ?? err).split("\n")[0];
    process.stdout.write(`not ok - ${name}: ${why}\n`);
  } finally {
    clearTimeout(timer);
  }
}

const room = `room-${randomBytes(3).toString("hex")}`;
const people = ["alice", "bob"];
const pages = {};
const pageErrors = [];

function pageUrl(name) {
  const q = new URLSearchParams({ name, room });
  if (polling) q.set("transports", "polling");
  return `${baseUrl}/?${q}`;
}

const text = (page, sel) => page.locator(sel).textContent({ timeout: STEP_MS });

await check("browser starts", async () => {
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath,
    headless: true,
    timeout: STEP_MS,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

await check("both pages load and connect", async () => {
  for (const name of people) {
    const page = await context.newPage();
    page.on("pageerror", (err) => pageErrors.push(`${name}: ${err.message}`));
    page.on("console", (msg) => {
      if (msg.type() === "error") pageErrors.push(`${name}: console: ${msg.text()}`);
    });
    pages[name] = page;
    const response = await page.goto(pageUrl(name), { timeout: STEP_MS });
    if (!response || response.status() !== 200) throw new Error(`GET / answered ${response?.status()}`);
  }
  for (const name of people) {
    await pages[name].locator("#state[data-state=connected]").waitFor({ timeout: STEP_MS });
  }
});

await check("pages show the node id from welcome", async () => {
  for (const name of people) {
    await pages[name].waitForFunction(() => {
      const node = document.getElementById("node").textContent;
      return node && node !== "-";
    }, null, { timeout: STEP_MS });
  }
});

await check(`pages show transport ${polling ? "polling" : "websocket (upgraded)"}`, async () => {
  const want = polling ? "polling" : "websocket";
  for (const name of people) {
    await pages[name].waitForFunction(
      (w) => document.getElementById("transport").textContent === w,
      want,
      { timeout: STEP_MS }
    );
  }
  if (polling) {
    // Give a wrongly allowed upgrade the time to happen before declaring the page stayed on polling.
    await new Promise((r) => setTimeout(r, 500));
    for (const name of people) {
      const shown = await text(pages[name], "#transport");
      if (shown !== "polling") throw new Error(`${name} shows transport ${shown}`);
    }
  }
});

await check("both pages join the room", async () => {
  for (const name of people) {
    await pages[name].locator("#join").click({ timeout: STEP_MS });
    await pages[name].waitForFunction(
      (r) => document.getElementById("joined").textContent === r,
      room,
      { timeout: STEP_MS }
    );
  }
});

const said = Object.fromEntries(people.map((n) => [n, `hello from ${n} ${randomBytes(3).toString("hex")} ✓`]));

await check("each page sends a message", async () => {
  for (const name of people) {
    await pages[name].locator("#text").fill(said[name], { timeout: STEP_MS });
    await pages[name].locator("#send").click({ timeout: STEP_MS });
  }
});

async function sees(viewer, author) {
  await pages[viewer]
    .locator("#log li", { hasText: said[author] })
    .filter({ has: pages[viewer].locator(".from", { hasText: author }) })
    .first()
    .waitFor({ timeout: STEP_MS });
}

await check("alice sees bob's message", () => sees("alice", "bob"));
await check("bob sees alice's message", () => sees("bob", "alice"));
await check("each page sees its own message", async () => {
  await sees("alice", "alice");
  await sees("bob", "bob");
});

await check("no errors in the pages", async () => {
  if (pageErrors.length > 0) throw new Error(pageErrors.join("; "));
});

if (opts.screenshot && context) {
  try {
    mkdirSync(opts.screenshot, { recursive: true });
    for (const name of people) {
      if (pages[name]) await pages[name].screenshot({ path: join(opts.screenshot, `chat-${name}.png`), timeout: STEP_MS });
    }
  } catch (err) {
    process.stderr.write(`chat-page: screenshot failed: ${err.message}\n`);
  }
}

await teardown();
process.stdout.write(`${passed} passed, ${failed} failed\n`);
process.exit(failed === 0 ? 0 : 1);
