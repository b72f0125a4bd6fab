// Holds a crowd of official socket.io-client clients on a demo-app cluster while the test kills a
// node, then reports what each client went through, so the test can tell the clients of the dead
// node (taken over by a living node, or reconnected and recovered there) from those of the living
// nodes (which must not notice).
//
// Usage:
//   node failover.mjs --url URL [--clients N] [--acks K]
//
//   URL        a balancer in front of the cluster, e.g. http://127.0.0.1:8080.
//   --clients  how many clients; half stay on long-polling, half open a websocket directly
//              (default 18).
//   --acks     echo round trips each client makes after the kill (default 10).
//
// Protocol: once every client is connected and welcomed, prints one line `ready` and waits, idle
// (each polling client has a GET parked), for a line `go` on stdin. Then every client makes its
// echo round trips, one at a time, and the script prints one line `report <JSON>`: an array with,
// per client, the transport, the node that owned it first (from `welcome`), its disconnects and
// how many of its reconnections recovered its socket, the node that owned it last, and how many
// echoes were acknowledged. Exit code 0, or 1 on a timeout
// (with the report so far), 2 on bad arguments.

import { parseArgs } from "node:util";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const LIMIT_MS = 60_000;
const ACK_TIMEOUT_MS = 10_000;

let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      url: { type: "string" },
      clients: { type: "string", default: "18" },
      acks: { type: "string", default: "10" },
    },
  }));
} catch (err) {
  process.stderr.write(`failover: ${err.message}\n`);
  process.exit(2);
}
if (!opts.url) {
  process.stderr.write("failover: --url is required\n");
  process.exit(2);
}
const count = Number(opts.clients);
const acks = Number(opts.acks);

const clients = [];
const report = () =>
  clients.map((c) => ({
    transport: c.transport,
    first: c.first,
    last: c.last,
    disconnects: c.disconnects,
    recovered: c.recovered,
    acked: c.acked,
  }));

setTimeout(() => {
  process.stdout.write(`report ${JSON.stringify(report())}\n`);
  process.stderr.write("failover: time limit reached\n");
  process.exit(1);
}, LIMIT_MS).unref();

for (let i = 0; i < count; i++) {
  const transport = i % 2 === 0 ? "polling" : "websocket";
  const socket = io(opts.url, {
    transports: [transport],
    forceNew: true,
    reconnectionDelay: 200,
    reconnectionDelayMax: 1000,
  });
  const client = { transport, socket, first: null, last: null, disconnects: 0, recovered: 0, acked: 0 };
  socket.on("connect", () => {
    if (socket.recovered) client.recovered += 1;
  });
  client.welcomed = new Promise((resolve) => {
    socket.on("welcome", ({ node }) => {
      if (client.first === null) client.first = node;
      client.last = node;
      resolve();
    });
  });
  socket.on("disconnect", (reason) => {
    client.disconnects += 1;
    process.stderr.write(`failover: client ${i} (${transport}, node ${client.first}) disconnected: ${reason}\n`);
  });
  clients.push(client);
}

await Promise.all(clients.map((c) => c.welcomed));
process.stdout.write("ready\n");

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line.trim() === "go") break;
}

await Promise.all(
  clients.map(async (client) => {
    for (let k = 0; k < acks; k++) {
      const sent = `echo-${k}`;
      const reply = await client.socket.timeout(ACK_TIMEOUT_MS).emitWithAck("echo", sent).catch(() => null);
      if (reply === sent) client.acked += 1;
    }
  })
);
process.stdout.write(`report ${JSON.stringify(report())}\n`);
for (const client of clients) client.socket.close();
process.exit(0);
