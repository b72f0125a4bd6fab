// Drives the cluster page (web/cluster.html, served at GET /cluster) in headless Chromium against a
// cluster behind a round-robin balancer: the page must list every node, mark exactly one Raft leader,
// show the sessions each node owns, and show a node forwarding requests (the page's own polling, sent
// round robin, is forwarded to its owner).
//
// Usage:
//   node cluster-page.mjs --url URL --nodes N [--transports polling]
//
//   URL            the balancer, e.g. http://127.0.0.1:8080; the page opens URL/cluster.
//   --nodes        how many nodes the cluster has.
//   --transports   polling: open the page with ?transports=polling (its requests then cross nodes).
//   NONSTICK_CHROMIUM (env) overrides the browser binary, /usr/bin/chromium by default.
//
// Output (stdout): one line per check, `ok - <name>` or `not ok - <name>: <why>`, then the summary line
// `N passed, M failed`. Exit code: 0 when every check passed, 1 when any failed, 2 on bad arguments.
// Every wait has a deadline and a watchdog ends the process after 60 s; the browser runs with a fresh
// temporary profile that is removed at the end.

import { parseArgs } from "node:util";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const HARD_LIMIT_MS = 60_000;
const STEP_MS = 15_000;

function usage(message) {
  process.stderr.write(`cluster-page: ${message}\n`);
  process.stderr.write("usage: node cluster-page.mjs --url URL --nodes N [--transports polling]\n");
  process.exit(2);
}

let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      url: { type: "string" },
      nodes: { type: "string" },
      transports: { type: "string" },
    },
  }));
} catch (err) {
  usage(err.message);
}
if (!opts.url) usage("--url is required");
const nodes = Number(opts.nodes);
if (!Number.isInteger(nodes) || nodes < 1) usage("--nodes must be a positive integer");
const baseUrl = opts.url.replace(/\/+$/, "");
const executablePath = process.env.NONSTICK_CHROMIUM || "/usr/bin/chromium";
const profileDir = mkdtempSync(join(tmpdir(), "nonstick-cluster-page-"));
let context = null;

setTimeout(() => {
  process.stdout.write(`not ok - check finished within ${HARD_LIMIT_MS} ms: hard time limit reached\n`);
  process.stdout.write(`${passed} passed, ${failed + 1} failed\n`);
  rmSync(profileDir, { recursive: true, force: true });
  process.exit(1);
}, HARD_LIMIT_MS).unref();

let passed = 0;
let failed = 0;
let blocker = null;
async function check(name, fn) {
  if (blocker) {
    failed += 1;
    process.stdout.write(`not ok - ${name}: skipped after "${blocker}" failed\n`);
    return;
  }
  try {
    await fn();
    passed += 1;
    process.stdout.write(`ok - ${name}\n`);
  } catch (err) {
    failed += 1;
    blocker = name;
    process.stdout.write(`not ok - ${name}: ${String(err?.message ?? err).split("\n")[0]}\n`);
  }
}

let page;
const pageErrors = [];

await check("browser starts and the page connects", async () => {
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath,
    headless: true,
    timeout: STEP_MS,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"],
  });
  page = await context.newPage();
  page.on("pageerror", (err) => pageErrors.push(err.message));
  const query = opts.transports ? `?transports=${opts.transports}` : "";
  const response = await page.goto(`${baseUrl}/cluster${query}`, { timeout: STEP_MS });
  if (!response || response.status() !== 200) throw new Error(`GET /cluster answered ${response?.status()}`);
  await page.locator("#state[data-state=connected]").waitFor({ timeout: STEP_MS });
});

await check(`every node has a fresh line (${nodes})`, async () => {
  await page.waitForFunction(
    (n) => document.querySelectorAll("#nodes tr[data-node]:not(.stale)").length === n,
    nodes,
    { timeout: STEP_MS }
  );
});

await check("exactly one node is the leader, and the header names it", async () => {
  await page.waitForFunction(() => document.querySelectorAll("[data-role=leader]").length === 1, null, {
    timeout: STEP_MS,
  });
  const leaderRow = await page.locator("tr:has([data-role=leader])").getAttribute("data-node");
  const header = await page.locator("#leader").textContent();
  if (header !== `node ${leaderRow}`) throw new Error(`header says ${header}, the table node ${leaderRow}`);
});

await check("the sessions each node owns add up to at least this page's", async () => {
  await page.waitForFunction(
    () => {
      const cells = [...document.querySelectorAll("#nodes tr[data-node]")].map((r) => Number(r.children[3].textContent));
      return cells.every((n) => Number.isInteger(n)) && cells.reduce((a, b) => a + b, 0) >= 1;
    },
    null,
    { timeout: STEP_MS }
  );
});

await check("a node forwards requests (the page's own, round robin)", async () => {
  await page.waitForFunction(
    () => [...document.querySelectorAll("[data-forwarded]")].some((c) => Number(c.textContent) > 0),
    null,
    { timeout: STEP_MS }
  );
});

await check("no script errors on the page", async () => {
  if (pageErrors.length) throw new Error(pageErrors.join("; "));
});

if (context) await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
rmSync(profileDir, { recursive: true, force: true });
process.stdout.write(`${passed} passed, ${failed} failed\n`);
process.exit(failed > 0 ? 1 : 0);
