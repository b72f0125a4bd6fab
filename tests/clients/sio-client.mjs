// Battery of checks that drives a demo-app server (shared app contract) with the official socket.io-client,
// so that the server is judged by what a real JS client observes.
//
// Usage:
//   node sio-client.mjs --url URL --transports polling|websocket|default [--max-payload N] [--admin-token T]
//
//   URL           server base, e.g. http://127.0.0.1:3000 (the client adds /socket.io/ and namespaces).
//   --transports  polling: ["polling"] only; websocket: ["websocket"] only; default: the client's default
//                 (starts on polling, must upgrade to websocket).
//   --max-payload the server's maxHttpBufferSize in bytes (default 1000000), used by the payload checks.
//   --admin-token the token /admin accepts (default "secret").
//   --cluster     the URL is a balancer in front of several nodes: a reconnection may reach another
//                 node (and must still be recovered there).
//   --parser      default, or msgpack: every client uses socket.io-msgpack-parser (the server must too).
//
// Output (stdout): one line per check, `ok - <name>` or `not ok - <name>: <why>`, in a fixed order, then
// the summary line `N passed, M failed`. Diagnostics go to stderr.
// Exit code: 0 when every check passed, 1 when any failed, 2 on bad arguments.
// Every check has its own deadline and all share a 55 s budget (a hard stop at 65 s still prints a summary),
// so a broken server makes checks fail instead of hanging; against a healthy server the battery takes ~6 s.

import { parseArgs, isDeepStrictEqual, inspect } from "node:util";
import { randomBytes } from "node:crypto";
import { io } from "socket.io-client";
import msgpackParser from "socket.io-msgpack-parser";

// Checks share one time budget so the battery ends within about a minute even if every check times out.
const BUDGET_MS = 55_000;
const HARD_LIMIT_MS = 65_000;
const CHECK_TIMEOUT_MS = 10_000;
const SILENCE_MS = 400;

function usage(message) {
  process.stderr.write(`sio-client: ${message}\n`);
  process.stderr.write(
    "usage: node sio-client.mjs --url URL --transports polling|websocket|default [--max-payload N] [--admin-token T] [--cluster] [--parser default|msgpack]\n"
  );
  process.exit(2);
}

let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      url: { type: "string" },
      transports: { type: "string" },
      "max-payload": { type: "string", default: "1000000" },
      "admin-token": { type: "string", default: "secret" },
      cluster: { type: "boolean", default: false },
      "upgrade-closes": { type: "string", default: "0" },
      parser: { type: "string", default: "default" },
    },
  }));
} catch (err) {
  usage(err.message);
}
if (!opts.url) usage("--url is required");
const profile = opts.transports;
if (!["polling", "websocket", "default"].includes(profile)) usage("--transports must be polling, websocket or default");
const maxPayload = Number(opts["max-payload"]);
if (!Number.isInteger(maxPayload) || maxPayload < 1024) usage("--max-payload must be an integer >= 1024");
const baseUrl = opts.url.replace(/\/+$/, "");
const adminToken = opts["admin-token"];
// Behind a balancer in front of several nodes a reconnection may land on another node.
const cluster = opts.cluster;
// How many server-side closes must come while the client is still upgrading (0: that check is
// left out; see it below).
const upgradeCloses = Number(opts["upgrade-closes"]);
if (!["default", "msgpack"].includes(opts.parser)) usage("--parser must be default or msgpack");
const transportOpts = {
  ...(profile === "default" ? {} : { transports: [profile] }),
  ...(opts.parser === "msgpack" ? { parser: msgpackParser } : {}),
};
const expectedTransport = profile === "polling" ? "polling" : "websocket";

// Safety net: a bug in this file must not hang the caller.
setTimeout(() => {
  process.stdout.write(`not ok - battery finished within ${HARD_LIMIT_MS} ms: hard time limit reached\n`);
  process.stdout.write(`${passed} passed, ${failed + 1} failed\n`);
  process.exit(1);
}, HARD_LIMIT_MS).unref();

const unique = (prefix) => `${prefix}-${randomBytes(4).toString("hex")}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const show = (v) => inspect(v, { depth: 6, breakLength: Infinity, maxStringLength: 80, maxArrayLength: 12 });

class CheckError extends Error {}
function assert(cond, why) {
  if (!cond) throw new CheckError(why);
}

/** Binary of any flavour becomes a tagged hex string, so equality also proves it came back as binary. */
function normalize(v) {
  if (Buffer.isBuffer(v)) return { "\u0000binary": v.toString("hex") };
  if (v instanceof ArrayBuffer) return { "\u0000binary": Buffer.from(v).toString("hex") };
  if (ArrayBuffer.isView(v)) return { "\u0000binary": Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("hex") };
  if (Array.isArray(v)) return v.map(normalize);
  if (v !== null && typeof v === "object") {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normalize(x)]));
  }
  return v;
}
function assertSame(actual, expected, what) {
  const a = normalize(actual);
  const e = normalize(expected);
  assert(isDeepStrictEqual(a, e), `${what}: expected ${show(e)}, got ${show(a)}`);
}

/**
 * Compares the arguments of a received event. With connection state recovery the server appends its offset
 * (a string) to every event sent without an ack, and socket.io-client hands it to listeners as an extra
 * trailing argument, so one such argument is tolerated when the session announced a `pid`.
 */
function assertEvent(socket, actual, expected, what) {
  let args = actual;
  if (socket._pid && args.length === expected.length + 1 && typeof args[args.length - 1] === "string") {
    args = args.slice(0, -1);
  }
  assertSame(args, expected, what);
}

/** Resolves with the args of the next `event` on `emitter` (optionally the next one matching `filter`). */
function next(emitter, event, ms = 5000, filter = () => true) {
  return new Promise((resolve, reject) => {
    const onEvent = (...args) => {
      if (!filter(...args)) return;
      clearTimeout(timer);
      emitter.off(event, onEvent);
      resolve(args);
    };
    const timer = setTimeout(() => {
      emitter.off(event, onEvent);
      reject(new CheckError(`no "${event}" within ${ms} ms`));
    }, ms);
    emitter.on(event, onEvent);
  });
}

/** Collects every `event` on `emitter` from now on (for "must not receive" checks). */
function record(emitter, event, filter = () => true) {
  const seen = [];
  emitter.on(event, (...args) => {
    if (filter(...args)) seen.push(args);
  });
  return seen;
}

/** Emits with an ack and resolves with all the ack's arguments. */
function ack(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(5000).emit(event, ...args, (err, ...reply) => {
      if (err) reject(new CheckError(`no ack for "${event}" within 5000 ms`));
      else resolve(reply);
    });
  });
}

/**
 * A connected socket plus its `welcome` payload and the node of its latest `welcome` (in a
 * cluster the session may move to another node, whose connection handler welcomes it again);
 * the socket is closed when the check ends.
 */
async function connect(ctx, nsp = "/", extra = {}) {
  const socket = io(baseUrl + nsp, { forceNew: true, timeout: 5000, ...transportOpts, ...extra });
  ctx.defer(() => socket.disconnect());
  let latest;
  socket.on("welcome", (payload) => (latest = payload?.node));
  const welcome = next(socket, "welcome", 5000);
  const failed = next(socket, "connect_error", 5000).then(([err]) => {
    throw new CheckError(`connect_error: ${err?.message}`);
  });
  failed.catch(() => {});
  const [payload] = await Promise.race([welcome, failed]);
  return { socket, welcome: payload, node: () => latest };
}

/** Expects a namespace connection to be refused with `message`. */
async function expectRefused(ctx, nsp, extra, message) {
  const socket = io(baseUrl + nsp, { forceNew: true, timeout: 5000, ...transportOpts, ...extra });
  ctx.defer(() => socket.disconnect());
  const connected = record(socket, "connect");
  const [err] = await next(socket, "connect_error", 5000);
  assert(err?.message === message, `connect_error message: expected ${show(message)}, got ${show(err?.message)}`);
  await sleep(SILENCE_MS);
  assert(connected.length === 0 && !socket.connected, "socket connected after connect_error");
}

let passed = 0;
let failed = 0;
const startedAt = Date.now();
async function check(name, fn, timeoutMs = CHECK_TIMEOUT_MS) {
  const remaining = startedAt + BUDGET_MS - Date.now();
  if (remaining <= 0) {
    failed += 1;
    process.stdout.write(`not ok - ${name}: skipped, the battery's ${BUDGET_MS} ms budget is used up\n`);
    return;
  }
  timeoutMs = Math.min(timeoutMs, remaining);
  const cleanups = [];
  const ctx = { defer: (f) => cleanups.push(f) };
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new CheckError(`timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([fn(ctx), deadline]);
    passed += 1;
    process.stdout.write(`ok - ${name}\n`);
  } catch (err) {
    failed += 1;
    const why = err instanceof CheckError ? err.message : (err?.stack ?? String(err));
    process.stdout.write(`not ok - ${name}: ${String(why).replace(/\s*\n\s*/g, " | ")}\n`);
  } finally {
    clearTimeout(timer);
    for (const f of cleanups.reverse()) {
      try {
        f();
      } catch {
        // Cleanup of an already broken socket must not turn a pass into a crash.
      }
    }
  }
}

// One long-lived client for the echo checks, opened lazily by the first check that needs it.
const sharedCleanups = [];
const sharedCtx = { defer: (f) => sharedCleanups.push(f) };
let sharedClient = null;
function main() {
  sharedClient ??= connect(sharedCtx);
  return sharedClient;
}

const echoCases = [
  ["strings", ["hello", "", "with \"quotes\" and \\ and \n newline"]],
  ["unicode", ["héllo wörld", "😀 👩‍👩‍👧 🇫🇷", "漢字かなカナ한국어", "مرحبا بالعالم", "שלום"]],
  ["nested objects", [{ a: 1, b: { c: [1, 2, { d: "e" }], f: null, g: true }, h: [] }, [[[]]], {}]],
  // notepack.io (under socket.io-msgpack-parser) writes an integral number past 2^64 as a wrapped
  // uint64, so 1e21 cannot cross a msgpack connection, whatever the server.
  [
    "numbers",
    [0, -1, 42, 3.14159, -2.5e-7, ...(opts.parser === "msgpack" ? [] : [1e21]), 9007199254740991, -9007199254740991, true, false, null],
  ],
  ["binary", [Buffer.from([0, 1, 2, 3, 254, 255]), Buffer.alloc(0), Buffer.from("binary ünïcode")]],
  [
    "mixed binary inside objects",
    [{ name: "file", data: Buffer.from([9, 8, 7]), parts: [Buffer.from([1]), "text", { deep: Buffer.from([2, 3]) }] }, 5],
  ],
];


await check("connect and welcome {sid, node}", async () => {
  const { socket, welcome } = await main();
  assert(welcome && typeof welcome === "object", `welcome payload is not an object: ${show(welcome)}`);
  assert(typeof welcome.sid === "string" && welcome.sid.length > 0, `welcome.sid: ${show(welcome.sid)}`);
  assert(welcome.sid === socket.id, `welcome.sid ${show(welcome.sid)} != socket.id ${show(socket.id)}`);
  assert(typeof welcome.node === "string" && welcome.node.length > 0, `welcome.node: ${show(welcome.node)}`);
});

await check(`transport is ${profile === "default" ? "polling upgraded to websocket" : profile}`, async () => {
  const { socket } = await main();
  const engine = socket.io.engine;
  if (profile === "default") {
    if (engine.transport.name !== "websocket") await next(engine, "upgrade", 5000);
    assert(engine.transport.name === "websocket", `transport is ${engine.transport.name}`);
  } else {
    await sleep(SILENCE_MS);
    assert(engine.transport.name === expectedTransport, `transport is ${engine.transport.name}`);
  }
});

for (const [label, args] of echoCases) {
  await check(`echo with ack: ${label}`, async () => {
    const { socket } = await main();
    const reply = await ack(socket, "echo", ...args);
    assertSame(reply, args, "ack args");
  });
  await check(`echo without ack: ${label}`, async () => {
    const { socket } = await main();
    const got = next(socket, "echo", 5000);
    socket.emit("echo", ...args);
    assertEvent(socket, await got, args, "echo event args");
  });
}

await check("echo with ack: several arguments", async () => {
  const { socket } = await main();
  const args = [1, "two", { three: [3] }, Buffer.from([4])];
  assertSame(await ack(socket, "echo", ...args), args, "ack args");
});

await check("acks both ways (server-ack -> ping-client)", async () => {
  const { socket } = await main();
  const pinged = [];
  const onPing = (...args) => {
    const reply = args.pop();
    pinged.push(args);
    assert(typeof reply === "function", "ping-client arrived without an ack callback");
    reply("pong", ...args);
  };
  socket.on("ping-client", onPing);
  try {
    const args = ["a", 1, { b: [2] }];
    const reply = await ack(socket, "server-ack", ...args);
    assertSame(pinged, [args], "ping-client args");
    assertSame(reply, ["pong", ...args], "server-ack reply");
  } finally {
    socket.off("ping-client", onPing);
  }
});

await check("rooms: join, whoami, leave", async (ctx) => {
  const { socket, node } = await connect(ctx);
  // In a cluster the session may move to another node (to the node of its websocket, for one),
  // which answers from then on, with the same rooms: the node of the latest welcome.
  const state = async (event, room, rooms, what) => {
    const reply = await (room === undefined ? ack(socket, event) : ack(socket, event, room));
    assertSame(reply, [{ node: node(), rooms }], what);
  };
  const early = unique("aa");
  const late = unique("zz");
  await state("join", late, [late], "join ack");
  await state("join", early, [early, late], "second join ack");
  await state("whoami", undefined, [early, late], "whoami ack");
  await state("leave", late, [early], "leave ack");
  await state("leave", early, [], "second leave ack");
  await state("whoami", undefined, [], "whoami after leave");
});

await check("rooms: to-room reaches the room except the sender", async (ctx) => {
  const room = unique("room");
  const [a, b, c] = await Promise.all([connect(ctx), connect(ctx), connect(ctx)]);
  await ack(a.socket, "join", room);
  await ack(b.socket, "join", room);
  const atSender = record(a.socket, "note");
  const atOutsider = record(c.socket, "note");
  const atPeer = next(b.socket, "note", 5000);
  const data = { text: "hi 👋", n: 7, bin: Buffer.from([1, 2]) };
  assertSame(await ack(a.socket, "to-room", { room, event: "note", data }), [{ ok: true }], "to-room ack");
  assertEvent(b.socket, await atPeer, [data], "note at peer");
  await sleep(SILENCE_MS);
  assert(atSender.length === 0, "the sender received its own to-room message");
  assert(atOutsider.length === 0, "a socket outside the room received the to-room message");
});

await check("rooms: leave stops delivery", async (ctx) => {
  const room = unique("room");
  const [a, b] = await Promise.all([connect(ctx), connect(ctx)]);
  await ack(a.socket, "join", room);
  await ack(b.socket, "join", room);
  await ack(b.socket, "leave", room);
  const atB = record(b.socket, "note");
  assertSame(await ack(a.socket, "to-room", { room, event: "note", data: 1 }), [{ ok: true }], "to-room ack");
  await sleep(SILENCE_MS);
  assert(atB.length === 0, "a socket that left the room still received its messages");
});

await check("rooms: to-room with malformed input acks {ok:false}", async () => {
  const { socket } = await main();
  for (const bad of ["not an object", { room: 5, event: "x" }, { room: "r" }]) {
    const [reply] = await ack(socket, "to-room", bad);
    assert(reply?.ok === false, `to-room ${show(bad)} acked ${show(reply)}`);
    assert(typeof reply.error === "string" && reply.error.length > 0, `no error string in ${show(reply)}`);
  }
});

await check("rooms: broadcast reaches the room including the sender", async (ctx) => {
  const room = unique("room");
  const [a, b, c] = await Promise.all([connect(ctx), connect(ctx), connect(ctx)]);
  await ack(a.socket, "join", room);
  await ack(b.socket, "join", room);
  const atOutsider = record(c.socket, "broadcast");
  const msg = { room, text: "hello room ✓", from: "alice" };
  const atA = next(a.socket, "broadcast", 5000);
  const atB = next(b.socket, "broadcast", 5000);
  assertSame(await ack(a.socket, "broadcast", msg), [{ ok: true }], "broadcast ack");
  assertEvent(a.socket, await atA, [msg], "broadcast at sender");
  assertEvent(b.socket, await atB, [msg], "broadcast at peer");
  await sleep(SILENCE_MS);
  assert(atOutsider.length === 0, "a socket outside the room received the broadcast");
});

await check("rooms: broadcast-all reaches every socket of the namespace", async (ctx) => {
  const token = unique("all");
  const [a, b] = await Promise.all([connect(ctx), connect(ctx)]);
  const other = await connect(ctx, "/admin", { auth: { token: adminToken } });
  const mine = (data) => data?.token === token;
  const atOtherNamespace = record(other.socket, "broadcast-all", mine);
  const atA = next(a.socket, "broadcast-all", 5000, mine);
  const atB = next(b.socket, "broadcast-all", 5000, mine);
  assertSame(await ack(a.socket, "broadcast-all", { token }), [{ ok: true }], "broadcast-all ack");
  assertEvent(a.socket, await atA, [{ token }], "broadcast-all at sender");
  assertEvent(b.socket, await atB, [{ token }], "broadcast-all at peer");
  await sleep(SILENCE_MS);
  assert(atOtherNamespace.length === 0, "broadcast-all leaked into /admin");
});

await check("namespaces: /admin with the right token (multiplexed on one connection)", async (ctx) => {
  const root = await connect(ctx);
  // Manager#socket connects on its own (autoConnect), as a second io(url + "/admin") would.
  const admin = root.socket.io.socket("/admin", { auth: { token: adminToken } });
  ctx.defer(() => admin.disconnect());
  const welcome = next(admin, "welcome", 5000);
  const refused = next(admin, "connect_error", 5000).then(([err]) => {
    throw new CheckError(`connect_error: ${err?.message}`);
  });
  refused.catch(() => {});
  const [payload] = await Promise.race([welcome, refused]);
  assert(payload?.sid === admin.id, `welcome.sid ${show(payload?.sid)} != socket.id ${show(admin.id)}`);
  assert(admin.id !== root.socket.id, "/admin and / share a socket id");
  assert(admin.io.engine === root.socket.io.engine, "the namespaces do not share one Engine.IO connection");
  assertSame(await ack(admin, "echo", "admin", Buffer.from([1])), ["admin", Buffer.from([1])], "echo on /admin");
  assertSame(await ack(admin, "whoami"), [{ node: payload.node, rooms: [] }], "whoami on /admin");
});

await check("namespaces: /admin with a wrong token is refused (unauthorized)", (ctx) =>
  expectRefused(ctx, "/admin", { auth: { token: `${adminToken}-wrong` } }, "unauthorized")
);

await check("namespaces: /admin without a token is refused (unauthorized)", (ctx) =>
  expectRefused(ctx, "/admin", {}, "unauthorized")
);

await check("namespaces: /nope is refused (Invalid namespace)", (ctx) =>
  expectRefused(ctx, "/nope", {}, "Invalid namespace")
);

await check("disconnect-me: io server disconnect, no reconnection", async (ctx) => {
  const { socket } = await connect(ctx, "/", { reconnectionDelay: 100, reconnectionDelayMax: 200 });
  const reconnected = record(socket, "connect");
  const gone = next(socket, "disconnect", 5000);
  socket.emit("disconnect-me");
  const [reason] = await gone;
  assert(reason === "io server disconnect", `disconnect reason: expected "io server disconnect", got ${show(reason)}`);
  await sleep(1000);
  assert(reconnected.length === 0 && !socket.connected, "the client reconnected after a server disconnect");
  assert(!socket.active, "the socket still tries to reconnect");
});

// A server-side close while the client is still upgrading (through a cluster, the probe and the
// polling requests may reach different nodes) must reach the client on whichever transport it
// still listens to, at once. Tried many times at slightly different moments of the upgrade.
if (profile === "default" && upgradeCloses > 0) {
  const budget = Math.min(BUDGET_MS, 4_000 * upgradeCloses);
  await check("a server-side close during the upgrade reaches the client at once", async (ctx) => {
    // Until the close has come mid-upgrade `upgradeCloses` times (at most 12 times as many rounds,
    // and for 60 % of the check's time: on a loaded machine the rounds are slower, and a close
    // that lands mid-upgrade rarer).
    const until = Date.now() + 0.6 * Math.min(budget, startedAt + BUDGET_MS - Date.now());
    let midUpgrade = 0;
    let i = 0;
    for (; i < 12 * upgradeCloses && midUpgrade < upgradeCloses && Date.now() < until; i++) {
      const socket = io(baseUrl + "/", { forceNew: true, timeout: 5000, reconnection: false, ...transportOpts });
      ctx.defer(() => socket.disconnect());
      await next(socket, "connect", 5000);
      await sleep(i % 5);
      if (socket.io.engine.transport.name === "polling") midUpgrade += 1;
      const event = i % 2 === 0 ? "close-transport" : "disconnect-me";
      // A closed transport reads "transport close" when its close packet is read, "transport
      // error" when the request still on its way finds the session gone: either way at once.
      const expected = i % 2 === 0 ? ["transport close", "transport error"] : ["io server disconnect"];
      const gone = next(socket, "disconnect", 3000);
      socket.emit(event);
      const [reason] = await gone.catch(() => {
        throw new CheckError(`round ${i}: no disconnect within 3 s after ${event}`);
      });
      assert(expected.includes(reason), `round ${i}: disconnect reason ${show(reason)}, expected ${show(expected)}`);
    }
    process.stderr.write(`sio-client: ${midUpgrade} of ${i} closes came mid-upgrade\n`);
    assert(midUpgrade > 0, "the close never came while the client was still on polling");
  }, budget);
}

/** Asks the server to drop the Engine.IO connection and waits for the automatic reconnection. */
async function closeTransportAndReconnect(ctx) {
  const { socket, welcome } = await connect(ctx, "/", { reconnectionDelay: 100, reconnectionDelayMax: 500 });
  if (profile === "default" && socket.io.engine.transport.name !== "websocket") {
    await next(socket.io.engine, "upgrade", 5000);
  }
  const gone = next(socket, "disconnect", 5000);
  const again = next(socket, "welcome", 8000);
  again.catch(() => {});
  socket.emit("close-transport");
  const [reason] = await gone;
  assert(reason === "transport close", `disconnect reason: expected "transport close", got ${show(reason)}`);
  const [second] = await again;
  return { socket, first: welcome, second };
}

await check("close-transport: transport close, then automatic reconnection with a new welcome", async (ctx) => {
  const { socket, first, second } = await closeTransportAndReconnect(ctx);
  assert(socket.connected, "not connected after the new welcome");
  assert(second?.sid === socket.id, `new welcome.sid ${show(second?.sid)} != socket.id ${show(socket.id)}`);
  if (!cluster) {
    assert(second?.node === first.node, `node changed from ${first.node} to ${second?.node}`);
  }
  assertSame(await ack(socket, "echo", "after reconnect"), ["after reconnect"], "echo after reconnect");
});

await check("close-transport: connection state recovered (same sid, recovered flag)", async (ctx) => {
  const { socket, first } = await closeTransportAndReconnect(ctx);
  assert(socket.recovered === true, "socket.recovered is not true after the reconnection");
  assert(socket.id === first.sid, `the recovered session has a new sid (${first.sid} -> ${socket.id})`);
});

await check("500 ordered messages, none lost", async (ctx) => {
  const count = 500;
  const { socket } = await connect(ctx);
  const got = [];
  const done = new Promise((resolve) => {
    socket.on("echo", (i, tag) => {
      if (tag !== "seq") return;
      got.push(i);
      if (got.length === count) resolve();
    });
  });
  // Sent right after connect, so with the default transports the stream straddles the websocket upgrade.
  for (let i = 0; i < count; i += 1) socket.emit("echo", i, "seq");
  await Promise.race([done, sleep(15_000)]);
  assert(got.length === count, `received ${got.length} of ${count}`);
  const firstOut = got.findIndex((v, i) => v !== i);
  assert(firstOut === -1, `out of order at position ${firstOut}: got ${got[firstOut]}`);
  assert(socket.io.engine.transport.name === expectedTransport || profile === "default", "unexpected transport");
}, 20_000);

await check(`payload just under maxHttpBufferSize (${maxPayload} bytes) round-trips`, async (ctx) => {
  const { socket } = await connect(ctx);
  // Leave room for the packet framing: `42<ack id>["echo","..."]`. A msgpack packet is binary,
  // which polling carries as base64, a third longer.
  const room = opts.parser === "msgpack" ? Math.floor((maxPayload * 3) / 4) : maxPayload;
  const body = "x".repeat(room - 64);
  const [reply] = await ack(socket, "echo", body);
  assert(reply === body, `ack carried ${typeof reply === "string" ? reply.length : show(reply)} chars`);
  assert(socket.connected, "disconnected after the message");
});

await check(`payload over maxHttpBufferSize is refused, client disconnected`, async (ctx) => {
  const { socket } = await connect(ctx, "/", { reconnection: false });
  if (profile === "default" && socket.io.engine.transport.name !== "websocket") {
    await next(socket.io.engine, "upgrade", 5000);
  }
  const acked = [];
  const gone = next(socket, "disconnect", 8000);
  socket.emit("echo", "y".repeat(maxPayload + 1024), () => acked.push(true));
  const [reason] = await gone;
  process.stderr.write(`sio-client: over-limit payload on ${socket.io.engine?.transport?.name ?? profile}: "${reason}"\n`);
  assert(
    reason === "transport error" || reason === "transport close",
    `disconnect reason: expected "transport error" or "transport close", got ${show(reason)}`
  );
  assert(acked.length === 0, "the over-limit message was acked");
});

await check("server healthy after the over-limit payload (new client connects)", async (ctx) => {
  const { socket } = await connect(ctx);
  assertSame(await ack(socket, "echo", "still here"), ["still here"], "echo");
});

for (const f of sharedCleanups) f();
process.stderr.write(`sio-client: ${profile} battery took ${Date.now() - startedAt} ms\n`);
process.stdout.write(`${passed} passed, ${failed} failed\n`);
process.exit(failed === 0 ? 0 : 1);
