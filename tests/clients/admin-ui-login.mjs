// Checks the Admin UI's login on a cluster behind a round-robin balancer, as the official UI does
// it with socket.io-client: a wrong or missing password is refused, the right one lets the socket in
// and brings a session token (`session`), and that token alone lets a socket back in on every node
// (the UI reconnects with it after a reload), while a token changed by one character does not.
//
// Usage:
//   node admin-ui-login.mjs --url URL --nodes N --username NAME --password PASSWORD [--namespace /admin-ui]
//
// The node a socket is served by is read from its Engine.IO session id, which starts with the id
// of the node that opened it.
// Output (stdout): one line per check, `ok - <name>` or `not ok - <name>: <why>`, then the summary line
// `N passed, M failed`. Exit code: 0 when every check passed, 1 when any failed, 2 on bad arguments.

import { io } from "socket.io-client";
import { checks, options } from "./checks.mjs";

const STEP_MS = 10_000;

const opts = options(
  "admin-ui-login",
  "node admin-ui-login.mjs --url URL --nodes N --username NAME --password PASSWORD [--namespace /admin-ui]",
  {
    url: { type: "string" },
    nodes: { type: "string" },
    username: { type: "string" },
    password: { type: "string" },
    namespace: { type: "string", default: "/admin-ui" },
  },
  { required: ["url", "username", "password"], integers: ["nodes"] }
);
const nodes = opts.nodes;
const adminUrl = `${opts.url.replace(/\/+$/, "")}${opts.namespace}`;
const sockets = [];
const { check, finish } = checks({
  hardLimitMs: 60_000,
  cleanup: () => sockets.forEach((s) => s.disconnect()),
});

// Connects with `auth`; resolves with the socket and the session token it was sent (if any), or
// rejects with the connect error's message.
function login(auth) {
  const socket = io(adminUrl, { auth, transports: ["polling"], forceNew: true, reconnection: false });
  sockets.push(socket);
  let token = null;
  socket.on("session", (t) => {
    token = t;
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no answer")), STEP_MS);
    socket.once("connect", () => {
      // The token comes right after the connection, before the UI's `config`.
      socket.once("config", () => {
        clearTimeout(timer);
        resolve({ socket, token, node: socket.io.engine.id.split(".")[0] });
      });
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      reject(new Error(err.message));
    });
  });
}

async function refused(auth) {
  try {
    await login(auth);
  } catch (err) {
    if (err.message === "invalid credentials") return;
    throw new Error(`refused with ${JSON.stringify(err.message)}, not "invalid credentials"`);
  }
  throw new Error("let in");
}

await check("no credentials are refused", () => refused({}));
await check("a wrong password is refused", () => refused({ username: opts.username, password: `${opts.password}x` }));
await check("another username is refused", () => refused({ username: `${opts.username}x`, password: opts.password }));

let token = null;
await check("the right password lets in and brings a session token", async () => {
  ({ token } = await login({ username: opts.username, password: opts.password }));
  if (typeof token !== "string" || token.length < 32) throw new Error(`session token ${JSON.stringify(token)}`);
});

await check(`the token alone lets in on each of the ${nodes} nodes`, async () => {
  if (!token) throw new Error("no token");
  const served = new Set();
  for (let tries = 0; served.size < nodes && tries < 4 * nodes; tries += 1) {
    const { node } = await login({ sessionId: token });
    served.add(node);
  }
  if (served.size < nodes) throw new Error(`let in on ${served.size} nodes only, of ${nodes}`);
});

await check("a token changed by one character is refused", async () => {
  if (!token) throw new Error("no token");
  const last = token.at(-1) === "0" ? "1" : "0";
  await refused({ sessionId: `${token.slice(0, -1)}${last}` });
});

finish();
