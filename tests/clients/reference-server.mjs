// Reference implementation of the nonstick demo app (shared app contract) on the official `socket.io`
// Node server, single node. The client batteries are validated against it before they are pointed at the
// Rust server, and benchmarks use it as the "Node" baseline.
//
// Usage:
//   node reference-server.mjs [--port N] [--host H] [--node-id ID] [--max-http-buffer-size BYTES]
//                             [--admin-token TOKEN] [--cookie] [--no-recovery]
//
//   --port 0 (the default) binds a free port. Once listening, the server prints exactly one line
//   `LISTENING <port>` on stdout; everything else goes to stderr.
//   --host defaults to 127.0.0.1, --node-id to "ref", --max-http-buffer-size to 1000000,
//   --admin-token to "secret". Connection state recovery is on (socket.io defaults) unless --no-recovery.
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
  },
});

const port = Number(opts.port);
const maxHttpBufferSize = Number(opts["max-http-buffer-size"]);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad --port: ${opts.port}`);
if (!Number.isInteger(maxHttpBufferSize) || maxHttpBufferSize <= 0) {
  fail(`bad --max-http-buffer-size: ${opts["max-http-buffer-size"]}`);
}
const nodeId = opts["node-id"];
const adminToken = opts["admin-token"];

function fail(message) {
  process.stderr.write(`reference-server: ${message}\n`);
  process.exit(2);
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

const io = new Server(http, {
  path: "/socket.io/",
  serveClient: false,
  pingInterval: 25000,
  pingTimeout: 20000,
  maxHttpBufferSize,
  cors: { origin: true, credentials: true },
  cookie: opts.cookie ? { name: "io", path: "/", httpOnly: true, sameSite: "lax" } : false,
  ...(opts["no-recovery"] ? {} : { connectionStateRecovery: {} }),
});

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
http.listen(port, opts.host, () => {
  process.stdout.write(`LISTENING ${http.address().port}\n`);
});
