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
// The script connects a socket.io-client socket of its own to each node (polling: round robin gives
// sessions different owners; the demo's `whoami` tells which), joined to one room, then checks the UI, then what the admin namespace says
// (traffic counts, events, upgrades) to a socket.io-client of its own. Requests the page makes off loopback
// (web fonts) are refused: everything stays on this machine.
// Output (stdout): one line per check, `ok - <name>` or `not ok - <name>: <why>`, then the summary line
// `N passed, M failed`. Exit code: 0 when every check passed, 1 when any failed, 2 on bad arguments.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { chromium } from "playwright-core";
import { io } from "socket.io-client";
import { checks, options } from "./checks.mjs";

const STEP_MS = 15_000;

const opts = options(
  "admin-ui",
  "node admin-ui.mjs --url URL --nodes N [--namespace /admin-ui]",
  {
    url: { type: "string" },
    nodes: { type: "string" },
    namespace: { type: "string", default: "/admin-ui" },
  },
  { required: ["url"], integers: ["nodes"] }
);
const nodes = opts.nodes;
const baseUrl = opts.url.replace(/\/+$/, "");
const executablePath = process.env.NONSTICK_CHROMIUM || "/usr/bin/chromium";
const profileDir = mkdtempSync(join(tmpdir(), "nonstick-admin-ui-"));
const room = `room-${randomBytes(3).toString("hex")}`;
let context = null;
const clients = [];
// Each check needs the ones before it (a UI that never connected shows nothing).
const { check, finish } = checks({
  hardLimitMs: 90_000,
  chained: true,
  cleanup: () => {
    for (const c of clients) c.disconnect();
    rmSync(profileDir, { recursive: true, force: true });
  },
});

await check(`a socket on each of the ${nodes} nodes connects and joins a room`, async () => {
  const owners = new Set();
  for (let tries = 0; owners.size < nodes && tries < 4 * nodes; tries += 1) {
    const socket = io(baseUrl, { transports: ["polling"], forceNew: true, reconnection: false });
    await new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", reject);
    });
    const { node } = await socket.timeout(5000).emitWithAck("whoami");
    if (owners.has(node)) {
      socket.disconnect();
      continue;
    }
    owners.add(node);
    clients.push(socket);
    await socket.timeout(5000).emitWithAck("join", room);
  }
  if (owners.size < nodes) throw new Error(`sockets landed on ${owners.size} nodes only`);
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

// From here on, the first clients (one per node) keep emitting an event of their own (no handler: the Admin
// UI is told of every event a socket receives, handled or not).
const probe = `probe-${randomBytes(3).toString("hex")}`;
const probing = setInterval(() => {
  for (const c of clients.slice(0, nodes)) c.emit(probe, 1);
}, 250);

await check("the events page shows the events of sockets on every node", async () => {
  await page.goto(`${baseUrl}/admin-ui/#/events/`, { timeout: STEP_MS });
  await page.waitForFunction((name) => document.body.innerText.includes(name), probe, { timeout: STEP_MS });
});

await check("the admin namespace hears every node's traffic, events sent and received, and upgrades", async () => {
  const admin = io(`${baseUrl}${opts.namespace}`, { transports: ["polling"], forceNew: true, reconnection: false });
  clients.push(admin);
  const kinds = new Map(); // server id -> the aggregated event types it reported
  const received = new Set();
  const sent = new Set();
  const onWebsocket = new Set();
  admin.on("server_stats", (stats) => {
    const had = kinds.get(stats.serverId) ?? new Set();
    for (const e of stats.aggregatedEvents) if (e.count > 0) had.add(e.type);
    kinds.set(stats.serverId, had);
  });
  admin.on("event_received", (_nsp, id, args) => args[0] === probe && received.add(id));
  admin.on("event_sent", (_nsp, id, args) => args[0] === "broadcast-all" && args[1] === probe && sent.add(id));
  admin.on("socket_updated", (socket) => socket.transport === "websocket" && onWebsocket.add(socket.id));
  await new Promise((resolve, reject) => {
    admin.once("connect", resolve);
    admin.once("connect_error", reject);
  });
  // Polling first, then the upgrade: the UI hears of the transport change, from the node that
  // took the session over when the upgrade moved it.
  const upgrading = io(baseUrl, { forceNew: true, reconnection: false });
  clients.push(upgrading);
  await new Promise((resolve) => upgrading.once("connect", resolve));
  await clients[0].timeout(5000).emitWithAck("broadcast-all", probe);
  const ids = clients.slice(0, nodes).map((c) => c.id);
  const missing = () => {
    const lacking = [];
    if (!ids.every((id) => received.has(id))) lacking.push(`event_received (${received.size}/${nodes})`);
    if (!ids.every((id) => sent.has(id))) lacking.push(`event_sent (${sent.size}/${nodes})`);
    if (!onWebsocket.has(upgrading.id)) lacking.push("the upgraded socket on websocket");
    if (kinds.size !== nodes) lacking.push(`server_stats of ${nodes} nodes (${kinds.size})`);
    for (const [server, had] of kinds) {
      for (const kind of ["packetsIn", "packetsOut", "bytesIn", "bytesOut"]) {
        if (!had.has(kind)) lacking.push(`${kind} of ${server}`);
      }
    }
    return lacking;
  };
  const until = Date.now() + STEP_MS;
  while (missing().length > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
  if (missing().length > 0) throw new Error(`not heard: ${missing().join(", ")}`);
});
clearInterval(probing);

if (context) await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
finish();
