# Battery of checks that drives a demo-app server (shared app contract) with python-socketio's client, the
# most used non-JS Socket.IO client.
#
# Usage:
#   python sio_client.py --url URL --transport polling|websocket [--admin-token T]
#
#   URL          server base, e.g. http://127.0.0.1:3000 (the client adds /socket.io/ and namespaces).
#   --transport  the only transport the client may use; the battery checks it was the one used.
#   --admin-token the token /admin accepts (default "secret").
#
# Output (stdout): one line per check, `ok - <name>` or `not ok - <name>: <why>`, in a fixed order, then the
# summary line `N passed, M failed`. Diagnostics go to stderr.
# Exit code: 0 when every check passed, 1 when any failed, 2 on bad arguments.
# Every blocking call has a deadline, checks share a 50 s budget and a watchdog ends the process at 65 s
# (still printing a summary), so a broken server makes checks fail instead of hanging.

import argparse
import os
import queue
import secrets
import sys
import threading
import time
import traceback

import socketio

STEP_TIMEOUT = 5.0
SILENCE = 0.4
# Checks share one time budget so the battery ends within about a minute even if every check times out.
BUDGET = 50.0
HARD_LIMIT = 65.0


class CheckError(Exception):
    """A check's expectation did not hold; the message says how."""


def expect(cond, why):
    if not cond:
        raise CheckError(why)


def unique(prefix):
    return f"{prefix}-{secrets.token_hex(4)}"


class Client:
    """A python-socketio client whose events land in per-event queues, so checks can wait with a deadline."""

    def __init__(self, url, transport, namespaces=("/",), auth=None):
        self.sio = socketio.Client(reconnection=False)
        self.events = {}
        self.lock = threading.Lock()
        self.connect_errors = queue.Queue()
        self.url = url
        self.transport = transport
        self.namespaces = list(namespaces)
        self.auth = auth
        for ns in self.namespaces:
            self.sio.on("*", self._catch_all(ns), namespace=ns)
            self.sio.on("connect_error", self._on_connect_error(ns), namespace=ns)

    def _queue(self, ns, event):
        with self.lock:
            return self.events.setdefault((ns, event), queue.Queue())

    def _catch_all(self, ns):
        def handler(event, *args):
            self._queue(ns, event).put(list(args))

        return handler

    def _on_connect_error(self, ns):
        def handler(*args):
            self.connect_errors.put((ns, args[0] if args else None))

        return handler

    def connect(self):
        self.sio.connect(
            self.url,
            transports=[self.transport],
            namespaces=self.namespaces,
            auth=self.auth,
            wait_timeout=STEP_TIMEOUT,
        )

    def next(self, event, ns="/", timeout=STEP_TIMEOUT):
        try:
            return self._queue(ns, event).get(timeout=timeout)
        except queue.Empty:
            raise CheckError(f'no "{event}" on {ns} within {timeout} s') from None

    def silent(self, event, ns="/"):
        time.sleep(SILENCE)
        q = self._queue(ns, event)
        expect(q.empty(), f'unexpected "{event}" on {ns}: {q.queue[0] if q.queue else None!r}')

    def call(self, event, *args, ns="/"):
        """Emits with an ack and returns the ack's arguments as a list."""
        try:
            reply = self.sio.call(event, args if len(args) != 1 else args[0], namespace=ns, timeout=STEP_TIMEOUT)
        except socketio.exceptions.TimeoutError:
            raise CheckError(f'no ack for "{event}" within {STEP_TIMEOUT} s') from None
        if reply is None:
            return []
        return list(reply) if isinstance(reply, tuple) else [reply]

    def close(self):
        try:
            self.sio.disconnect()
        except Exception:  # noqa: BLE001 - a broken connection must not fail the cleanup
            pass


def event_args(actual, expected):
    """Received event arguments, without the trailing offset string that connection state recovery adds."""
    if len(actual) == len(expected) + 1 and isinstance(actual[-1], str):
        return actual[:-1]
    return actual


class Battery:
    def __init__(self, url, transport, admin_token):
        self.url = url
        self.transport = transport
        self.admin_token = admin_token
        self.passed = 0
        self.failed = 0
        self.clients = []
        self.started = time.monotonic()

    def client(self, namespaces=("/",), auth=None, connect=True):
        c = Client(self.url, self.transport, namespaces, auth)
        self.clients.append(c)
        if connect:
            try:
                c.connect()
            except socketio.exceptions.ConnectionError as err:
                raise CheckError(f"connect failed: {err}") from None
        return c

    def check(self, name, fn):
        if time.monotonic() - self.started > BUDGET:
            self.failed += 1
            print(f"not ok - {name}: skipped, the battery's {BUDGET:.0f} s budget is used up", flush=True)
            return
        try:
            fn()
            self.passed += 1
            print(f"ok - {name}", flush=True)
        except CheckError as err:
            self.failed += 1
            print(f"not ok - {name}: {err}", flush=True)
        except Exception as err:  # noqa: BLE001 - any crash in a check is that check's failure
            self.failed += 1
            detail = " | ".join(traceback.format_exception_only(type(err), err)).strip().replace("\n", " | ")
            print(f"not ok - {name}: {detail}", flush=True)
        finally:
            for c in self.clients:
                c.close()
            self.clients = []

    # --- checks -----------------------------------------------------------------------------------------

    def connect_and_welcome(self):
        c = self.client()
        (welcome, *_rest) = c.next("welcome")
        expect(isinstance(welcome, dict), f"welcome payload is not an object: {welcome!r}")
        sid = c.sio.get_sid("/")
        expect(welcome.get("sid") == sid, f"welcome.sid {welcome.get('sid')!r} != sid {sid!r}")
        expect(isinstance(welcome.get("node"), str) and welcome["node"], f"welcome.node: {welcome.get('node')!r}")
        time.sleep(SILENCE)
        expect(c.sio.transport() == self.transport, f"transport is {c.sio.transport()}")

    def echo_with_ack(self):
        c = self.client()
        cases = [
            ["hello"],
            ["😀 漢字 مرحبا שלום"],
            [{"a": 1, "b": {"c": [1, 2, {"d": "e"}], "f": None, "g": True}}],
            [0, -1, 3.5, 9007199254740991, False],
            [b"\x00\x01\xfe\xff"],
            [{"name": "file", "data": b"\x09\x08", "parts": [b"\x01", "text"]}],
        ]
        for args in cases:
            reply = c.call("echo", *args)
            expect(reply == args, f"echo {args!r} acked {reply!r}")
        reply = c.call("echo", b"\x00\x01")
        expect(isinstance(reply[0], bytes), f"binary came back as {type(reply[0]).__name__}")

    def echo_without_ack(self):
        c = self.client()
        args = ["plain", {"n": 1, "bin": b"\x07"}]
        c.sio.emit("echo", tuple(args))
        got = event_args(c.next("echo"), args)
        expect(got == args, f"echo event carried {got!r}")

    def acks_both_ways(self):
        c = self.client()
        pinged = []

        def on_ping(*args):
            pinged.append(list(args))
            return ("pong", *args)

        c.sio.on("ping-client", on_ping)
        reply = c.call("server-ack", "a", 1)
        expect(pinged == [["a", 1]], f"ping-client args: {pinged!r}")
        expect(reply == ["pong", "a", 1], f"server-ack reply: {reply!r}")

    def rooms_join_leave(self):
        c = self.client()
        (welcome, *_rest) = c.next("welcome")
        node = welcome["node"]
        early, late = unique("aa"), unique("zz")
        expect(c.call("join", late) == [{"node": node, "rooms": [late]}], "join ack")
        got = c.call("join", early)
        expect(got == [{"node": node, "rooms": [early, late]}], f"second join ack: {got!r}")
        got = c.call("whoami")
        expect(got == [{"node": node, "rooms": [early, late]}], f"whoami ack: {got!r}")
        got = c.call("leave", late)
        expect(got == [{"node": node, "rooms": [early]}], f"leave ack: {got!r}")

    def rooms_to_room(self):
        room = unique("room")
        a, b = self.client(), self.client()
        a.call("join", room)
        b.call("join", room)
        data = {"text": "hi 👋", "n": 7}
        reply = a.call("to-room", {"room": room, "event": "note", "data": data})
        expect(reply == [{"ok": True}], f"to-room ack: {reply!r}")
        got = event_args(b.next("note"), [data])
        expect(got == [data], f"note at peer: {got!r}")
        a.silent("note")

    def rooms_broadcast(self):
        room = unique("room")
        a, b = self.client(), self.client()
        a.call("join", room)
        b.call("join", room)
        msg = {"room": room, "text": "hello ✓", "from": "py"}
        expect(a.call("broadcast", msg) == [{"ok": True}], "broadcast ack")
        for who, c in (("sender", a), ("peer", b)):
            got = event_args(c.next("broadcast"), [msg])
            expect(got == [msg], f"broadcast at {who}: {got!r}")

    def admin_ok(self):
        c = self.client(namespaces=("/", "/admin"), auth={"token": self.admin_token})
        (welcome, *_rest) = c.next("welcome", ns="/admin")
        sid = c.sio.get_sid("/admin")
        expect(welcome.get("sid") == sid, f"/admin welcome.sid {welcome.get('sid')!r} != sid {sid!r}")
        expect(sid != c.sio.get_sid("/"), "/admin and / share a socket id")
        reply = c.call("echo", "admin", b"\x01", ns="/admin")
        expect(reply == ["admin", b"\x01"], f"echo on /admin: {reply!r}")

    def refused(self, ns, auth, message):
        c = self.client(namespaces=(ns,), auth=auth, connect=False)
        try:
            c.connect()
        except socketio.exceptions.ConnectionError:
            pass
        else:
            raise CheckError(f"{ns} connected")
        try:
            where, data = c.connect_errors.get(timeout=STEP_TIMEOUT)
        except queue.Empty:
            raise CheckError("no connect_error") from None
        got = data.get("message") if isinstance(data, dict) else data
        expect(where == ns and got == message, f"connect_error on {where}: expected {message!r}, got {data!r}")

    def run(self):
        self.check("connect and welcome {sid, node}", self.connect_and_welcome)
        self.check("echo with ack (strings, unicode, objects, numbers, binary)", self.echo_with_ack)
        self.check("echo without ack", self.echo_without_ack)
        self.check("acks both ways (server-ack -> ping-client)", self.acks_both_ways)
        self.check("rooms: join, whoami, leave", self.rooms_join_leave)
        self.check("rooms: to-room reaches the room except the sender", self.rooms_to_room)
        self.check("rooms: broadcast reaches the room including the sender", self.rooms_broadcast)
        self.check("namespaces: /admin with the right token", self.admin_ok)
        self.check(
            "namespaces: /admin with a wrong token is refused (unauthorized)",
            lambda: self.refused("/admin", {"token": self.admin_token + "-wrong"}, "unauthorized"),
        )
        self.check(
            "namespaces: /admin without a token is refused (unauthorized)",
            lambda: self.refused("/admin", None, "unauthorized"),
        )
        self.check(
            "namespaces: /nope is refused (Invalid namespace)",
            lambda: self.refused("/nope", None, "Invalid namespace"),
        )


def main():
    parser = argparse.ArgumentParser(description="python-socketio battery for the nonstick demo app")
    parser.add_argument("--url", required=True)
    parser.add_argument("--transport", required=True, choices=["polling", "websocket"])
    parser.add_argument("--admin-token", default="secret")
    args = parser.parse_args()

    # Threads of a stuck client cannot be cancelled, so the watchdog ends the whole process.
    battery = Battery(args.url.rstrip("/"), args.transport, args.admin_token)

    def watchdog():
        print(f"not ok - battery finished within {HARD_LIMIT:.0f} s: hard time limit reached", flush=True)
        print(f"{battery.passed} passed, {battery.failed + 1} failed", flush=True)
        os._exit(1)

    timer = threading.Timer(HARD_LIMIT, watchdog)
    timer.daemon = True
    timer.start()

    battery.run()
    print(f"sio_client.py: {args.transport} battery took {time.monotonic() - battery.started:.1f} s", file=sys.stderr)
    print(f"{battery.passed} passed, {battery.failed} failed", flush=True)
    sys.stderr.flush()
    os._exit(0 if battery.failed == 0 else 1)


if __name__ == "__main__":
    main()
