// Reference implementation of the nonstick demo app (shared app contract) on the official `socket.io`
// Node server. The client batteries are validated against it before they are pointed at the Rust server,
// and benchmarks use it as the "Node" baseline: one process alone, or several processes sharing a Redis
// server through `@socket.io/redis-adapter` (the usual way to scale socket.io, behind a sticky balancer).
//
// Usage:
//   node reference-server.mjs [--port N] [--host H] [--node-id ID] [--max-http-buffer-size BYTES]
//                             [--admin-token TOKEN] [--cookie] [--no-recovery] [--redis URL]
//                             [--parser default|msgpack]
//
//   --port 0 (the default) binds a free port. Once listening, the server prints exactly one line
//   `LISTENING <port>` on stdout; everything else goes to stderr.
//   --host defaults to 127.0.0.1, --node-id to "ref", --max-http-buffer-size to 1000000,
//   --admin-token to "secret". Connection state recovery is on (socket.io defaults) unless --no-recovery
//   or --redis.
//   --redis URL (e.g. redis://127.0.0.1:6379) installs `@socket.io/redis-adapter` (Redis pub/sub) with one
//   publishing and one subscribing connection, so that rooms, broadcasts and the adapter's cross-process
//   requests span every process started with the same URL. `LISTENING` is printed only once both
//   connections are up and subscribed; if Redis cannot be reached within 5 s the process exits 1 with a
//   message on stderr. A connection lost after startup is retried (errors logged) rather than fatal.
//   The pub/sub adapter keeps no packet history, so it cannot restore a session: socket.io would accept
//   the recovery option but every reconnection would get a fresh session. --redis therefore turns
//   connection state recovery off instead of advertising a feature that never takes effect.
//   A balancer in front of several such processes must be sticky for HTTP long-polling to work, e.g. nginx
//   `hash $remote_addr consistent;`; note that such a balancer sends every client of one source address to
//   the same process.
//
// Routes: `/socket.io/` (Engine.IO/Socket.IO), `GET /` (web/chat.html), `GET /socket.io/socket.io.min.js`
// (the client bundle pinned in web/package.json), `GET /healthz`.
//
// Lifetime: exits 0 on SIGTERM/SIGINT, and when its stdin is a pipe or socket that reaches end of file (so a
// parent test that dies cannot leak it). A stdin of /dev/null or a terminal is not watched.

import { createServer } from "node:http";
import { readFileSync, existsSync, fstatSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { Server } from "socket.io";
import msgpackParser from "socket.io-msgpack-parser";

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, "..", "..");

const { values: opts } = parseArgs({
  options: {
    port: { type: "string", default: "0" },
    host: { type: "string", default: "127.0.0.1" },
    "node-id": { type: "string", default: "ref" },
    "max-http-buffer-size": { type: "string", default: "1000000" },
    "admin-token": { type: "string", default: "secret" },
    cookie: { type: "boolean", default: false },
    "no-recovery": { type: "boolean", default: false },
    redis: { type: "string" },
    parser: { type: "string", default: "default" },
  },
});
if (!["default", "msgpack"].includes(opts.parser)) fail(`bad --parser: ${opts.parser}`);

const port = Number(opts.port);
const maxHttpBufferSize = Number(opts["max-http-buffer-size"]);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad --port: ${opts.port}`);
if (!Number.isInteger(maxHttpBufferSize) || maxHttpBufferSize <= 0) {
  fail(`bad --max-http-buffer-size: ${opts["max-http-buffer-size"]}`);
}
const nodeId = opts["node-id"];
const adminToken = opts["admin-token"];

function fail(message, code = 2) {
  process.stderr.write(`reference-server: ${message}\n`);
  process.exit(code);
}

// The page and its client bundle are read once; a missing bundle (web/ not installed) is reported per request
// rather than at startup, so the batteries can run without the web package.
const chatPage = readFileSync(join(repoRoot, "web", "chat.html"));
const bundleCandidates = [
  join(repoRoot, "web", "node_modules", "socket.io-client", "dist", "socket.io.min.js"),
  join(here, "node_modules", "socket.io-client", "dist", "socket.io.min.js"),
];
const bundlePath = bundleCandidates.find((p) => existsSync(p));
const bundle = bundlePath ? readFileSync(bundlePath) : null;

function plainRoutes(req, res) {
  const path = (req.url ?? "/").split("?")[0];
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { "content-type": "text/plain" }).end("method not allowed\n");
  } else if (path === "/") {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-cache" });
    res.end(req.method === "HEAD" ? undefined : chatPage);
  } else if (path === "/healthz") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ ok: true, node: nodeId }));
  } else {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
  }
}

const http = createServer(plainRoutes);

const redis = opts.redis === undefined ? null : await connectRedis(opts.redis);
const recovery = !opts["no-recovery"] && !redis;

const io = new Server(http, {
  path: "/socket.io/",
  serveClient: false,
  pingInterval: 25000,
  pingTimeout: 20000,
  maxHttpBufferSize,
  cors: { origin: true, credentials: true },
  cookie: opts.cookie ? { name: "io", path: "/", httpOnly: true, sameSite: "lax" } : false,
  ...(recovery ? { connectionStateRecovery: {} } : {}),
  ...(redis ? { adapter: redis.adapter } : {}),
  ...(opts.parser === "msgpack" ? { parser: msgpackParser } : {}),
});

/**
 * Connects the publishing and subscribing Redis clients and returns them with the adapter factory, or exits
 * the process with status 1 when Redis cannot be reached within REDIS_STARTUP_MS.
 *
 * The packages are imported here so that a single-node server does not need them installed.
 */
async function connectRedis(url) {
  const REDIS_STARTUP_MS = 5000;
  const [{ createClient }, { createAdapter }] = await Promise.all([
    import("redis"),
    import("@socket.io/redis-adapter"),
  ]);
  // Before the first successful connection a failure is final (the caller is waiting for LISTENING and
  // must learn quickly that the URL is wrong); afterwards the client keeps retrying with a capped backoff.
  let up = false;
  const socket = {
    connectTimeout: 3000,
    reconnectStrategy: (retries, cause) =>
      up
        ? Math.min(100 * 2 ** retries, 2000)
        : new Error(`cannot connect to redis at ${url}: ${cause?.message ?? cause}`),
  };
  let pub;
  let sub;
  try {
    pub = createClient({ url, socket });
    sub = pub.duplicate();
  } catch (err) {
    fail(`bad --redis URL ${url}: ${err.message}`);
  }
  let lastLogged = 0;
  for (const [name, client] of [["pub", pub], ["sub", sub]]) {
    // Without a listener an 'error' event would crash the process; while reconnecting the client emits one
    // per attempt, so the log is thinned to one line per second.
    client.on("error", (err) => {
      if (!up) return;
      const now = Date.now();
      if (now - lastLogged < 1000) return;
      lastLogged = now;
      process.stderr.write(`reference-server: redis ${name}: ${err.message}\n`);
    });
  }
  // connectTimeout only bounds the TCP connect; this also covers a peer that accepts but never answers.
  let timer;
  const deadline = new Promise((_, reject) => {
    const why = new Error(`no answer from redis at ${url} within ${REDIS_STARTUP_MS} ms`);
    timer = setTimeout(() => reject(why), REDIS_STARTUP_MS);
  });
  try {
    await Promise.race([Promise.all([pub.connect(), sub.connect()]), deadline]);
  } catch (err) {
    fail(err.message, 1);
  } finally {
    clearTimeout(timer);
  }
  up = true;
  return { pub, sub, adapter: createAdapter(pub, sub) };
}

/**
 * Resolves once Redis has confirmed every subscription the adapters have sent so far. The adapter does not
 * expose its subscribe calls, but one connection's commands are answered in order, so a confirmed probe
 * subscription implies the earlier ones are active; otherwise a broadcast published by another process
 * right after `LISTENING` could be missed.
 */
async function redisSubscribed() {
  if (!redis) return;
  const probe = `nonstick-ref-probe#${process.pid}`;
  const noop = () => {};
  await redis.sub.subscribe(probe, noop);
  await redis.sub.unsubscribe(probe, noop);
}

// Engine.IO claims every request under /socket.io/, so the bundle route has to run in front of it.
{
  const engineListeners = http.listeners("request").slice(0);
  http.removeAllListeners("request");
  http.on("request", (req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/socket.io/socket.io.min.js" && (req.method === "GET" || req.method === "HEAD")) {
      if (!bundle) {
        res.writeHead(404, { "content-type": "text/plain" }).end("client bundle not installed (npm ci in web/)\n");
        return;
      }
      res.writeHead(200, { "content-type": "application/javascript; charset=utf-8", "cache-control": "no-cache" });
      res.end(req.method === "HEAD" ? undefined : bundle);
      return;
    }
    for (const listener of engineListeners) listener.call(http, req, res);
  });
}

/** `{node, rooms}` where rooms are sorted and exclude the socket's own id room. */
function roomInfo(socket) {
  const rooms = [...socket.rooms].filter((r) => r !== socket.id).sort();
  return { node: nodeId, rooms };
}

/** Splits a trailing ack callback off an event's arguments. */
function splitAck(args) {
  if (args.length > 0 && typeof args[args.length - 1] === "function") {
    return [args.slice(0, -1), args[args.length - 1]];
  }
  return [args, null];
}

function isPlainObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !Buffer.isBuffer(v);
}

function registerDemo(nsp) {
  nsp.on("connection", (socket) => {
    socket.emit("welcome", { sid: socket.id, node: nodeId });

    socket.on("echo", (...raw) => {
      const [args, ack] = splitAck(raw);
      if (ack) ack(...args);
      else socket.emit("echo", ...args);
    });

    socket.on("join", (room, ack) => {
      if (typeof room !== "string") {
        if (typeof ack === "function") ack({ ok: false, error: "room must be a string" });
        return;
      }
      socket.join(room);
      if (typeof ack === "function") ack(roomInfo(socket));
    });

    socket.on("leave", (room, ack) => {
      if (typeof room !== "string") {
        if (typeof ack === "function") ack({ ok: false, error: "room must be a string" });
        return;
      }
      socket.leave(room);
      if (typeof ack === "function") ack(roomInfo(socket));
    });

    socket.on("to-room", (msg, ack) => {
      const reply = typeof ack === "function" ? ack : () => {};
      if (!isPlainObject(msg) || typeof msg.room !== "string" || typeof msg.event !== "string") {
        reply({ ok: false, error: "expected {room: string, event: string, data}" });
        return;
      }
      socket.to(msg.room).emit(msg.event, msg.data);
      reply({ ok: true });
    });

    socket.on("broadcast", (msg, ack) => {
      const reply = typeof ack === "function" ? ack : () => {};
      if (!isPlainObject(msg) || typeof msg.room !== "string") {
        reply({ ok: false, error: "expected {room: string, ...}" });
        return;
      }
      nsp.to(msg.room).emit("broadcast", msg);
      reply({ ok: true });
    });

    socket.on("broadcast-all", (data, ack) => {
      nsp.emit("broadcast-all", data);
      if (typeof ack === "function") ack({ ok: true });
    });

    socket.on("whoami", (ack) => {
      if (typeof ack === "function") ack(roomInfo(socket));
    });

    socket.on("server-ack", (...raw) => {
      const [args, ack] = splitAck(raw);
      socket.emit("ping-client", ...args, (...reply) => {
        if (ack) ack(...reply);
      });
    });

    socket.on("disconnect-me", () => socket.disconnect());

    socket.on("close-transport", () => socket.conn.close());
  });
}

registerDemo(io.of("/"));
const admin = io.of("/admin");
admin.use((socket, next) => {
  if (socket.handshake.auth?.token === adminToken) next();
  else next(new Error("unauthorized"));
});
registerDemo(admin);

let stopping = false;
function shutdown() {
  if (stopping) return;
  stopping = true;
  io.close();
  if (redis) {
    for (const client of [redis.pub, redis.sub]) client.close().catch(() => {});
  }
  // Parked long-polls and open websockets would otherwise keep the process alive past SIGTERM.
  setTimeout(() => process.exit(0), 500).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

try {
  const stdin = fstatSync(0);
  if (stdin.isFIFO() || stdin.isSocket()) {
    process.stdin.on("end", shutdown);
    process.stdin.on("error", shutdown);
    process.stdin.resume();
  }
} catch {
  // No stdin at all: nothing to watch.
}

http.on("error", (err) => fail(err.message));
try {
  await redisSubscribed();
} catch (err) {
  fail(`redis subscription failed: ${err.message}`, 1);
}
http.listen(port, opts.host, () => {
  process.stdout.write(`LISTENING ${http.address().port}\n`);
});
