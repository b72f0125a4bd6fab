// Drives the presence app of examples/cluster.rs with official socket.io-client clients through a
// balancer in front of a cluster, and reports what each client saw, so the test can check that
// rooms, acks and broadcasts span the nodes.
//
// Usage:
//   node presence.mjs --url URL [--nodes N] [--max-clients M]
//
//   URL            a balancer in front of the cluster, e.g. http://127.0.0.1:8080.
//   --nodes        how many nodes must own at least one client (default 3).
//   --max-clients  give up after this many clients (default 24).
//
// Protocol: first an unnamed client, which must be refused. Then clients named c0, c1, … connect
// one after another, alternately polling-only and with the default transports (polling, then the
// websocket upgrade), each entering the room `lobby` and waiting for its ack, until the clients'
// owners (the `node` of their acks) cover --nodes nodes and there are at least two of each kind.
// Prints `ready <clients>` and waits for a line `go` on stdin (the test asks every node's REST route who is
// in the room meanwhile). Then every client says one line in `lobby`, waits for everyone's, and
// the script prints `report <JSON>`: the unnamed client's refusal and, per client, its name,
// transports, the node and members of its enter ack, the `said` lines it heard, and its
// disconnects and connect errors. Exit code 0, 1 on a timeout (with the report so far), 2 on bad
// arguments.

import { parseArgs } from "node:util";
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const LIMIT_MS = 60_000;
const WAIT_MS = 10_000;

let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      url: { type: "string" },
      nodes: { type: "string", default: "3" },
      "max-clients": { type: "string", default: "24" },
    },
  }));
} catch (err) {
  process.stderr.write(`presence: ${err.message}\n`);
  process.exit(2);
}
if (!opts.url) {
  process.stderr.write("presence: --url is required\n");
  process.exit(2);
}
const nodes = Number(opts.nodes);
const maxClients = Number(opts["max-clients"]);

const clients = [];
let unnamed = null;
const report = () => ({
  unnamed,
  clients: clients.map((c) => ({
    name: c.name,
    mode: c.mode,
    transport: c.socket.io.engine?.transport?.name ?? null,
    upgraded: c.upgraded,
    node: c.node,
    members: c.members,
    heard: c.heard,
    disconnects: c.disconnects,
    connectErrors: c.connectErrors,
  })),
});

setTimeout(() => {
  process.stdout.write(`report ${JSON.stringify(report())}\n`);
  process.stderr.write("presence: time limit reached\n");
  process.exit(1);
}, LIMIT_MS).unref();

const within = (promise, what) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`no ${what} within ${WAIT_MS} ms`)), WAIT_MS)),
  ]);

// A client without a name is refused by the app's middleware.
unnamed = await within(
  new Promise((resolve) => {
    const socket = io(opts.url, { forceNew: true, reconnection: false });
    socket.on("connect", () => {
      socket.close();
      resolve({ refused: false });
    });
    socket.on("connect_error", (err) => {
      socket.close();
      resolve({ refused: true, message: err.message });
    });
  }),
  "answer to the unnamed client"
);

const owners = () => new Set(clients.map((c) => c.node));
const count = (mode) => clients.filter((c) => c.mode === mode).length;
while (
  clients.length < maxClients &&
  (owners().size < nodes || count("polling") < 2 || count("default") < 2)
) {
  const i = clients.length;
  const mode = i % 2 === 0 ? "polling" : "default";
  const socket = io(opts.url, {
    forceNew: true,
    auth: { name: `c${i}` },
    ...(mode === "polling" ? { transports: ["polling"] } : {}),
  });
  const client = {
    name: `c${i}`,
    mode,
    socket,
    upgraded: false,
    node: null,
    members: null,
    heard: [],
    disconnects: 0,
    connectErrors: 0,
  };
  clients.push(client);
  socket.on("said", (said) => client.heard.push(said));
  socket.on("disconnect", (reason) => {
    client.disconnects += 1;
    process.stderr.write(`presence: ${client.name} disconnected: ${reason}\n`);
  });
  socket.on("connect_error", (err) => {
    client.connectErrors += 1;
    process.stderr.write(`presence: ${client.name} connect_error: ${err.message}\n`);
  });
  const upgraded = new Promise((resolve) => socket.io.on("open", () => socket.io.engine.on("upgrade", resolve)));
  await within(new Promise((resolve) => socket.once("connect", resolve)), `connect of ${client.name}`);
  if (mode === "default") {
    await within(upgraded, `websocket upgrade of ${client.name}`);
    client.upgraded = true;
  }
  const ack = await socket.timeout(WAIT_MS).emitWithAck("enter", "lobby");
  client.node = ack.node;
  client.members = ack.members;
}
process.stdout.write(`ready ${clients.length}\n`);

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line.trim() === "go") break;
}

const everyone = clients.length;
await Promise.all(
  clients.map((c) => c.socket.timeout(WAIT_MS).emitWithAck("say", "lobby", `hello from ${c.name}`))
);
await within(
  new Promise((resolve) => {
    const check = setInterval(() => {
      if (clients.every((c) => c.heard.length >= everyone)) {
        clearInterval(check);
        resolve();
      }
    }, 20);
  }),
  "said line from every client"
);
// Anything extra (a duplicate) would arrive right after.
await new Promise((resolve) => setTimeout(resolve, 200));
process.stdout.write(`report ${JSON.stringify(report())}\n`);
for (const client of clients) {
  client.socket.off("disconnect");
  client.socket.close();
}
process.exit(0);
