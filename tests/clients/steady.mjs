// Keeps official socket.io-client clients busy with echo round trips on a demo-app cluster while
// the test moves their sessions between nodes, then reports what each client went through.
//
// Usage:
//   node steady.mjs --url URL [--clients N] [--transport polling|websocket]
//
//   URL          a balancer in front of the cluster, e.g. http://127.0.0.1:8080.
//   --clients    how many clients (default 6).
//   --transport  the one transport every client uses (default polling).
//
// Protocol: once every client is connected and welcomed, prints `ready <JSON>` (the Engine.IO
// session ids, one per client) and starts: each client emits `echo` with an ack, one at a time,
// again and again. On a line `stop` on stdin it lets the round trips in flight finish and prints
// `report <JSON>`: per client, the round trips acknowledged with the right value, those that
// failed (timeout or wrong value), its disconnects, the node of each `welcome`, and how many of
// its reconnections recovered its socket (connection state recovery). Exit code 0, 1 on the
// time limit (with the report so far), 2 on bad arguments.

import { parseArgs } from "node:util";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const LIMIT_MS = 120_000;
const ACK_TIMEOUT_MS = 5_000;

let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      url: { type: "string" },
      clients: { type: "string", default: "6" },
      transport: { type: "string", default: "polling" },
    },
  }));
} catch (err) {
  process.stderr.write(`steady: ${err.message}\n`);
  process.exit(2);
}
if (!opts.url) {
  process.stderr.write("steady: --url is required\n");
  process.exit(2);
}

const clients = [];
const report = () =>
  clients.map((c) => ({
    acked: c.acked,
    failed: c.failed,
    disconnects: c.disconnects,
    welcomes: c.welcomes,
    recovered: c.recovered,
  }));

setTimeout(() => {
  process.stdout.write(`report ${JSON.stringify(report())}\n`);
  process.stderr.write("steady: time limit reached\n");
  process.exit(1);
}, LIMIT_MS).unref();

for (let i = 0; i < Number(opts.clients); i++) {
  const socket = io(opts.url, {
    transports: [opts.transport],
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
  });
  const client = { socket, acked: 0, failed: 0, disconnects: 0, welcomes: [], recovered: 0 };
  socket.on("connect", () => {
    if (socket.recovered) client.recovered += 1;
  });
  client.welcomed = new Promise((resolve) => {
    socket.on("welcome", ({ node }) => {
      client.welcomes.push(node);
      resolve();
    });
  });
  socket.on("disconnect", (reason) => {
    client.disconnects += 1;
    process.stderr.write(`steady: client ${i} disconnected: ${reason}\n`);
  });
  clients.push(client);
}
await Promise.all(clients.map((c) => c.welcomed));
process.stdout.write(`ready ${JSON.stringify(clients.map((c) => c.socket.io.engine.id))}\n`);

let running = true;
const loops = clients.map(async (client, i) => {
  for (let k = 0; running; k++) {
    const sent = `c${i}-${k}`;
    const reply = await client.socket.timeout(ACK_TIMEOUT_MS).emitWithAck("echo", sent).catch(() => null);
    if (reply === sent) client.acked += 1;
    else client.failed += 1;
  }
});

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line.trim() === "stop") break;
}
running = false;
await Promise.all(loops);
process.stdout.write(`report ${JSON.stringify(report())}\n`);
for (const client of clients) {
  client.socket.off("disconnect");
  client.socket.close();
}
process.exit(0);
