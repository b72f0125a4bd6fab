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

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { checks, options } from "./checks.mjs";

const STEP_MS = 15_000;

const opts = options(
  "cluster-page",
  "node cluster-page.mjs --url URL --nodes N [--transports polling]",
  {
    url: { type: "string" },
    nodes: { type: "string" },
    transports: { type: "string" },
  },
  { required: ["url"], integers: ["nodes"] }
);
const nodes = opts.nodes;
const baseUrl = opts.url.replace(/\/+$/, "");
const executablePath = process.env.NONSTICK_CHROMIUM || "/usr/bin/chromium";
const profileDir = mkdtempSync(join(tmpdir(), "nonstick-cluster-page-"));
let context = null;
// Each check needs the ones before it (a page that never connected shows nothing).
const { check, finish } = checks({
  hardLimitMs: 60_000,
  chained: true,
  cleanup: () => rmSync(profileDir, { recursive: true, force: true }),
});

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
finish();
