// Steady load of official socket.io-client clients on a demo-app cluster, for fault runs: the
// clients sit in one room, a few senders broadcast sequence-numbered messages to it, every
// client keeps an echo round trip going; optionally, websocket clients sever their own TCP
// connection now and then. At the end it reports what the clients went through.
//
// Usage:
//   node chaos.mjs --url URL [--polling N] [--websocket N] [--senders N] [--interval MS]
//                  [--sever MIN-MAX] [--room NAME] [--sender-url URL]
//
//   URL          a balancer in front of the cluster, e.g. http://127.0.0.1:8080.
//   --polling    clients on HTTP long-polling only (default 6).
//   --websocket  clients on websocket only (default 2).
//   --senders    websocket clients that broadcast to the room (default 1); they are in it too.
//   --interval   each sender broadcasts every MS milliseconds (default 50).
//   --sever      each websocket client (not the senders) destroys its TCP connection after a
//                random MIN..MAX milliseconds, again and again (default: never).
//   --room       the room (default "chaos").
//   --sender-url where the senders connect (default: URL), e.g. one node, to keep them off
//                the node a fault hits.
//
// Protocol: once every client is connected and in the room, prints `ready <JSON>` (each
// client's Engine.IO session id) and starts. On a line `stop` on stdin the senders stop; after
// the last broadcasts have had time to arrive it prints `report <JSON>`:
//   sent         broadcasts acknowledged by the server (they count as sent) and those whose
//                acknowledgement never came (they may or may not have gone out)
//   lost         per client, acknowledged broadcasts it never received, summed
//   duplicated   broadcasts a client received more than once, summed
//   disconnects  client-visible disconnects by reason; connectErrors: failed (re)connections
//   recovered / notRecovered  reconnections that got their socket back, and those that did not
//   sessionsLost polling clients whose Engine.IO session id changed
//   echo         echo round trips acknowledged with the right value, and those that failed
//   polling / websocket   per transport (senders count as websocket clients): client-visible
//                disconnects and failed echo round trips
//   unservedMs   the longest time any client spent between a disconnect and its next connect
//   stalledMs    the longest time any client went without an echo round trip completing
// Exit code 0, 1 on the time limit (with the report so far), 2 on bad arguments.

import { parseArgs } from "node:util";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const LIMIT_MS = 600_000;
// Longer than a take-over of a lost node's sessions (detection plus, for the registry's
// leader, an election), so that a round trip waiting for one is not counted as failed.
const ACK_TIMEOUT_MS = 15_000;
const SETTLE_MS = 2_000;

let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      url: { type: "string" },
      polling: { type: "string", default: "6" },
      websocket: { type: "string", default: "2" },
      senders: { type: "string", default: "1" },
      interval: { type: "string", default: "50" },
      sever: { type: "string" },
      room: { type: "string", default: "chaos" },
      "sender-url": { type: "string" },
    },
  }));
} catch (err) {
  process.stderr.write(`chaos: ${err.message}\n`);
  process.exit(2);
}
const sever = opts.sever?.split("-").map(Number);
if (!opts.url || (sever && (sever.length !== 2 || !(sever[0] > 0) || !(sever[1] >= sever[0])))) {
  process.stderr.write("chaos: --url is required; --sever takes MIN-MAX milliseconds\n");
  process.exit(2);
}
const room = opts.room;

const clients = [];
const sent = new Map(); // sender -> acknowledged seqs
let unacked = 0;

function report() {
  const out = {
    clients: clients.length,
    sent: { acked: 0, unacked },
    lost: 0,
    duplicated: 0,
    disconnects: {},
    connectErrors: 0,
    recovered: 0,
    notRecovered: 0,
    sessionsLost: 0,
    echo: { acked: 0, failed: 0 },
    polling: { disconnects: 0, echoFailed: 0 },
    websocket: { disconnects: 0, echoFailed: 0 },
    unservedMs: 0,
    stalledMs: 0,
  };
  for (const seqs of sent.values()) out.sent.acked += seqs.size;
  for (const c of clients) {
    for (const [sender, seqs] of sent) {
      const got = c.got.get(sender);
      const missing = [...seqs].filter((seq) => !got?.has(seq)).sort((a, b) => a - b);
      out.lost += missing.length;
      if (missing.length > 0) {
        process.stderr.write(
          `chaos: client ${c.i} (${c.transport}) lost ${missing.length} of sender ${sender}: ` +
          `${missing.slice(0, 20).join(",")}\n`,
        );
      }
    }
    out.duplicated += c.duplicated;
    for (const [reason, n] of Object.entries(c.disconnects)) {
      out.disconnects[reason] = (out.disconnects[reason] ?? 0) + n;
      out[c.transport].disconnects += n;
    }
    out[c.transport].echoFailed += c.echoFailed;
    out.connectErrors += c.connectErrors;
    out.recovered += c.recovered;
    out.notRecovered += c.notRecovered;
    out.sessionsLost += c.sessionsLost;
    out.echo.acked += c.echoAcked;
    out.echo.failed += c.echoFailed;
    out.unservedMs = Math.max(out.unservedMs, c.unservedMs);
    out.stalledMs = Math.max(out.stalledMs, c.stalledMs);
  }
  return out;
}

setTimeout(() => {
  process.stdout.write(`report ${JSON.stringify(report())}\n`);
  process.stderr.write("chaos: time limit reached\n");
  process.exit(1);
}, LIMIT_MS).unref();

function start(i, transport, role) {
  const url = role === "sender" ? opts["sender-url"] ?? opts.url : opts.url;
  const socket = io(url, {
    transports: [transport],
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
  });
  const c = {
    i, socket, transport, role,
    got: new Map(), duplicated: 0, disconnects: {}, connectErrors: 0,
    recovered: 0, notRecovered: 0, sessionsLost: 0, echoAcked: 0, echoFailed: 0,
    unservedMs: 0, stalledMs: 0, downSince: null, sid: null, connects: 0,
  };
  c.joined = new Promise((resolve) => {
    socket.on("connect", async () => {
      c.connects += 1;
      if (c.downSince !== null) {
        c.unservedMs = Math.max(c.unservedMs, Date.now() - c.downSince);
        c.downSince = null;
      }
      const sid = socket.io.engine.id;
      if (transport === "polling" && c.sid !== null && sid !== c.sid) c.sessionsLost += 1;
      c.sid = sid;
      if (c.connects > 1) {
        if (socket.recovered) {
          c.recovered += 1;
          return;
        }
        c.notRecovered += 1;
        process.stderr.write(`chaos: client ${i} reconnected without recovery\n`);
      }
      const ack = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck("join", room).catch(() => null);
      if (ack) resolve();
      else process.stderr.write(`chaos: client ${i} could not join ${room}\n`);
    });
  });
  socket.on("broadcast", (body) => {
    if (body?.room !== room) return;
    let got = c.got.get(body.sender);
    if (!got) c.got.set(body.sender, (got = new Set()));
    if (got.has(body.seq)) c.duplicated += 1;
    else got.add(body.seq);
  });
  socket.on("disconnect", (reason, details) => {
    c.disconnects[reason] = (c.disconnects[reason] ?? 0) + 1;
    c.downSince ??= Date.now();
    const why = details?.description ?? details?.message ?? "";
    const status = `${details?.context?.status ?? ""} ${details?.context?.responseText ?? ""}`;
    process.stderr.write(`chaos: client ${i} (${c.sid}) disconnected: ${reason} ${why} ${status}\n`);
  });
  socket.on("connect_error", () => {
    c.connectErrors += 1;
  });
  clients.push(c);
  return c;
}

const polling = Number(opts.polling);
const websocket = Number(opts.websocket);
for (let i = 0; i < polling; i++) start(i, "polling", "receiver");
for (let i = 0; i < websocket; i++) start(polling + i, "websocket", "receiver");
const senders = [];
for (let k = 0; k < Number(opts.senders); k++) {
  senders.push(start(polling + websocket + k, "websocket", "sender"));
}
await Promise.all(clients.map((c) => c.joined));
process.stdout.write(`ready ${JSON.stringify(clients.map((c) => c.sid))}\n`);

let running = true;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const loops = [];
for (const [k, c] of senders.entries()) {
  const acked = new Set();
  sent.set(k, acked);
  loops.push((async () => {
    for (let seq = 1; running; seq++) {
      const started = Date.now();
      c.socket
        .timeout(ACK_TIMEOUT_MS)
        .emitWithAck("broadcast", { room, sender: k, seq })
        .then(() => acked.add(seq), () => { unacked += 1; });
      await sleep(Math.max(0, Number(opts.interval) - (Date.now() - started)));
    }
  })());
}
for (const c of clients) {
  loops.push((async () => {
    let last = Date.now();
    for (let k = 0; running; k++) {
      const value = `c${c.i}-${k}`;
      const reply = await c.socket.timeout(ACK_TIMEOUT_MS).emitWithAck("echo", value).catch(() => null);
      const now = Date.now();
      c.stalledMs = Math.max(c.stalledMs, now - last);
      last = now;
      if (reply === value) c.echoAcked += 1;
      else c.echoFailed += 1;
    }
  })());
  if (sever && c.transport === "websocket" && c.role === "receiver") {
    loops.push((async () => {
      while (running) {
        await sleep(sever[0] + Math.random() * (sever[1] - sever[0]));
        if (running) c.socket.io.engine?.transport?.ws?._socket?.destroy();
      }
    })());
  }
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line.trim() === "stop") break;
}
running = false;
await Promise.all(loops);
await sleep(SETTLE_MS);
process.stdout.write(`report ${JSON.stringify(report())}\n`);
for (const c of clients) {
  c.socket.off("disconnect");
  c.socket.close();
}
process.exit(0);
