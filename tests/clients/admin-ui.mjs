// Drives the official Socket.IO Admin UI (`@socket.io/admin-ui`, served by the demo at /admin-ui/) in
// headless Chromium against a cluster behind a round-robin balancer: the UI must list every node as a
// server and show the sockets of all of them, with the room they joined.
//
// Usage:
//   node admin-ui.mjs --url URL --nodes N [--namespace /admin-ui]
//
//   URL          the balancer, e.g. http://127.0.0.1:8080; the UI is opened at URL/admin-ui/.
//   --nodes      how many nodes the cluster has (one server row each).
//   --namespace  the admin namespace the nodes serve (default /admin-ui).
//   NONSTICK_CHROMIUM (env) overrides the browser binary, /usr/bin/chromium by default.
//
// The script connects three socket.io-client sockets of its own (polling, so round robin gives them
// different owners), joined to one room, then checks the UI. Requests the page makes off loopback
// (web fonts) are refused: everything stays on this machine.
// Output (stdout): one line per check, `ok - <name>` or `not ok - <name>: <why>`, then the summary line
// `N passed, M failed`. Exit code: 0 when every check passed, 1 when any failed, 2 on bad arguments.

import { parseArgs } from "node:util";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { chromium } from "playwright-core";
import { io } from "socket.io-client";

const HARD_LIMIT_MS = 60_000;
const STEP_MS = 15_000;

function usage(message) {
  process.stderr.write(`admin-ui: ${message}\n`);
  process.stderr.write("usage: node admin-ui.mjs --url URL --nodes N [--namespace /admin-ui]\n");
  process.exit(2);
}

let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      url: { type: "string" },
      nodes: { type: "string" },
      namespace: { type: "string", default: "/admin-ui" },
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
const profileDir = mkdtempSync(join(tmpdir(), "nonstick-admin-ui-"));
const room = `room-${randomBytes(3).toString("hex")}`;
let context = null;
const clients = [];

function finish(code) {
  for (const c of clients) c.disconnect();
  rmSync(profileDir, { recursive: true, force: true });
  process.stdout.write(`${passed} passed, ${failed} failed\n`);
  process.exit(code);
}

setTimeout(() => {
  process.stdout.write(`not ok - check finished within ${HARD_LIMIT_MS} ms: hard time limit reached\n`);
  failed += 1;
  finish(1);
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

await check("three sockets connect and join a room", async () => {
  for (let i = 0; i < 3; i += 1) {
    const socket = io(baseUrl, { transports: ["polling"], forceNew: true, reconnection: false });
    clients.push(socket);
    await new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", reject);
    });
    await socket.timeout(5000).emitWithAck("join", room);
  }
});

let page;
await check("the UI loads and connects to the admin namespace", async () => {
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath,
    headless: true,
    timeout: STEP_MS,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"],
  });
  await context.route("**/*", (route) => {
    const host = new URL(route.request().url()).hostname;
    return host === "127.0.0.1" || host === "localhost" ? route.continue() : route.abort();
  });
  page = await context.newPage();
  const response = await page.goto(`${baseUrl}/admin-ui/`, { timeout: STEP_MS });
  if (!response || response.status() !== 200) throw new Error(`GET /admin-ui/ answered ${response?.status()}`);
  // What the UI's connection form saves; with it, the UI connects by itself on load.
  await page.evaluate(
    ([url, namespace]) => {
      localStorage.setItem("server_url", url);
      localStorage.setItem("namespace", namespace);
      localStorage.setItem("path", "/socket.io");
      localStorage.setItem("ws_only", "false");
    },
    [baseUrl, opts.namespace]
  );
  await page.reload({ timeout: STEP_MS });
  // The status chip reads "connected" (upper-cased by its style).
  await page.waitForFunction(() => /\bconnected\b/i.test(document.body.innerText), null, { timeout: STEP_MS });
});

await check(`the servers page lists the ${nodes} nodes`, async () => {
  await page.goto(`${baseUrl}/admin-ui/#/servers/`, { timeout: STEP_MS });
  await page.waitForFunction(
    (n) => document.querySelectorAll("table tbody tr").length === n && !document.body.innerText.includes("No data"),
    nodes,
    { timeout: STEP_MS }
  );
});

await check("the sockets page shows the sockets of every node", async () => {
  await page.goto(`${baseUrl}/admin-ui/#/sockets/`, { timeout: STEP_MS });
  const ids = clients.map((c) => c.id);
  await page.waitForFunction((want) => want.every((id) => document.body.innerText.includes(id)), ids, {
    timeout: STEP_MS,
  });
});

await check("the rooms page shows the room they joined", async () => {
  await page.goto(`${baseUrl}/admin-ui/#/rooms/`, { timeout: STEP_MS });
  await page.waitForFunction((r) => document.body.innerText.includes(r), room, { timeout: STEP_MS });
});

await check("a socket that connects later shows up live", async () => {
  await page.goto(`${baseUrl}/admin-ui/#/sockets/`, { timeout: STEP_MS });
  const late = io(baseUrl, { transports: ["polling"], forceNew: true, reconnection: false });
  clients.push(late);
  await new Promise((resolve) => late.once("connect", resolve));
  await page.waitForFunction((id) => document.body.innerText.includes(id), late.id, { timeout: STEP_MS });
});

if (context) await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
finish(failed > 0 ? 1 : 0);
