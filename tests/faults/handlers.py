"""Handler programs the fault suite writes into each scenario's folder at run time.

Every one of them is hostile or broken on purpose, in one way per request path or per "mode"
(a file the scenario rewrites between injections, read by each new instance when it starts):

- HOSTILE: an sdk handler (the real `aetherless` runtime) that crashes, hangs, eats memory,
  forks many children, answers with statuses, headers and bodies HTTP does not allow, or with
  huge ones, or writes into its own
  shared-memory region behind the runtime's back: garbage records on the response ring and
  impossible words (head, tail, poisoned, futex words) on both rings. It maps its region itself,
  from /dev/shm/<the name ATTACH gave the runtime> (the runtime's Region object has it), or
  falls back to the runtime's own mapping when the name is gone.
- CONTROL_ROGUE: an sdk handler program (no .py: executed directly) that does the handshake by
  hand, so it can say things on AETHER_SOCKET the protocol does not allow, before READY, between
  READY and ATTACHED, or while it serves; then it serves through aetherless.runtime.serve.
- PROCESS: a process handler (HTTP itself) that never listens, or never answers.
- CRASHLOOP: an sdk handler that exits, crashes, raises or hangs before READY (per its mode file).
- SNAPSHOT: a plain sdk handler for `snapshot: true` functions.
- HEALTHY: the function the background prober keeps asking.
"""

HEALTHY = r'''
import os
import aetherless


@aetherless.handler
def handle(req):
    return {"ok": True, "pid": os.getpid()}
'''

SNAPSHOT = r'''
import os
import random
import aetherless

TOKEN = random.getrandbits(32)


@aetherless.handler
def handle(req):
    return {"token": TOKEN, "pid": os.getpid(), "instance": os.environ.get("AETHER_INSTANCE")}
'''

HOSTILE = r'''
"""A hostile sdk handler: one fault per path (tests/faults/run.py)."""
import ctypes
import gc
import json
import mmap
import os
import random
import signal
import struct
import threading
import time
import zlib

import aetherless
from aetherless import ring as _ring

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_FUTEX = 202
_FUTEX_WAKE = 1
_RESPONSE = struct.Struct("<BBHIQII")  # kind, version, status, header_count, request_id, headers_len, body_len
_RECORD = struct.Struct("<II")  # len, crc32
_WORDS = {  # offset in the ring header, size
    "head": (0, 8), "tail": (64, 8), "poisoned": (72, 4), "data_seq": (128, 4),
    "consumer_sleeping": (132, 4), "space_seq": (192, 4), "producer_sleeping": (196, 4),
}
WRAP = 0xFFFFFFFF


class Raw:
    """This instance's region, mapped a second time by hand (docs/shm-layout.md)."""

    def __init__(self):
        region = next(o for o in gc.get_objects() if type(o) is _ring.Region and o._mm is not None)
        self.name = region.name
        try:  # the name ATTACH gave: open it ourselves, as any program could
            fd = os.open("/dev/shm/" + self.name.lstrip("/"), os.O_RDWR)
            try:
                self.mm = mmap.mmap(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
            self.how = "opened /dev/shm" + self.name
        except OSError:  # unlinked already: the runtime's own mapping then
            self.mm = region._mm
            self.how = "the runtime's mapping"
        magic, version, count, cap, stride = struct.unpack_from("<8sIIQQ", self.mm, 0)
        assert magic == b"AETHSHM1" and count == 2, (magic, count)
        self.cap, self.stride = cap, stride
        self.max_payload = cap // 2 - 8
        self._words = {}
        # The response bell ATTACH handed the runtime (its ring 1 has it): the orchestrator waits
        # for that eventfd, not for ring 1's futex.
        self.bell = next((o.bell for o in gc.get_objects()
                          if type(o) is _ring.Ring and o.index == 1 and o.bell is not None), None)

    def _word(self, ring, field):
        key = (ring, field)
        if key not in self._words:
            off, size = _WORDS[field]
            kind = ctypes.c_uint64 if size == 8 else ctypes.c_uint32
            self._words[key] = kind.from_buffer(self.mm, 64 + ring * self.stride + off)
        return self._words[key]

    def get(self, ring, field):
        return self._word(ring, field).value

    def set(self, ring, field, value):
        size = _WORDS[field][1]
        self._word(ring, field).value = value & ((1 << (8 * size)) - 1)

    def futex_wake(self, ring, field):
        _libc.syscall(_SYS_FUTEX, ctypes.c_void_p(ctypes.addressof(self._word(ring, field))), _FUTEX_WAKE,
                      0x7FFFFFFF, None, None, 0)

    def wake(self, ring):
        """The producer's doorbell, rung unconditionally: ring 1's bell, else the futex."""
        if ring == 1 and self.bell is not None:
            os.write(self.bell, (1).to_bytes(8, "little"))
            return
        self.set(ring, "data_seq", self.get(ring, "data_seq") + 1)
        self.futex_wake(ring, "data_seq")

    def data(self, ring, position):
        return 64 + ring * self.stride + 256 + position % self.cap

    def publish(self, ring, payload, length=None, crc=None):
        """One record on `ring` as its producer does (length and crc32 fields overridable)."""
        cap = self.cap
        n = len(payload)
        rec = 8 + ((n + 7) & ~7)
        for _ in range(2000):  # the orchestrator drains ring 1 at once
            head, tail = self.get(ring, "head"), self.get(ring, "tail")
            off = head % cap
            need = rec if rec <= cap - off else cap - off + rec
            if cap - (head - tail) >= need:
                break
            time.sleep(0.001)
        if rec > cap - off:
            struct.pack_into("<I", self.mm, self.data(ring, head), WRAP)
            head += cap - off
        p = self.data(ring, head)
        self.mm[p + 8:p + 8 + n] = payload
        _RECORD.pack_into(self.mm, p, n if length is None else length,
                          zlib.crc32(payload) if crc is None else crc)
        self.set(ring, "head", head + rec)
        self.wake(ring)

    def consume(self, ring, position, deadline):
        """(payload, position after it) of the next record at `position` of `ring`, read by hand."""
        cap = self.cap
        while True:
            if time.monotonic() > deadline:
                return None, position
            if self.get(ring, "head") == position:
                time.sleep(0.0005)
                continue
            off = position % cap
            length, _ = _RECORD.unpack_from(self.mm, self.data(ring, position))
            if length == WRAP:
                position += cap - off
                continue
            p = self.data(ring, position)
            return bytes(self.mm[p + 8:p + 8 + length]), position + 8 + ((length + 7) & ~7)


_RAW = None


def raw():
    global _RAW
    if _RAW is None:
        _RAW = Raw()
    return _RAW


def header_block(headers):
    return b"".join(struct.pack("<II", len(n), len(v)) + n + v for n, v in headers)


def response(rid, status, headers=(), body=b""):
    block = header_block(headers)
    return _RESPONSE.pack(2, 1, status & 0xFFFF, len(headers), rid, len(block), len(body)) + block + body


def hang():
    """Wait to be killed (the orchestrator must; timeout_ms is the bound if it does not)."""
    time.sleep(120)
    os._exit(9)


def say(**fields):
    print("hostile:", json.dumps(fields), flush=True)


def hijack(req, mode):
    """Ring 0 faults: answer this request by hand, then go on serving ring 0 by hand (not through
    the runtime, which would notice), writing impossible words into ring 0 after each request."""
    r = raw()
    rid = req.message_id
    position = r.get(0, "tail")  # the runtime consumed this request already
    say(hijack=mode, how=r.how, head=r.get(0, "head"), tail=position, cap=r.cap)

    def answer(request_id, n):
        body = json.dumps({"hijacked": mode, "pid": os.getpid(), "n": n}).encode()
        r.publish(1, response(request_id, 200, [(b"content-type", b"application/json")], body))

    def spoil():
        if mode == "tail-ahead":  # tail past head: no consumer can have written it
            r.set(0, "tail", r.get(0, "head") + 64)
        elif mode == "tail-behind":  # head far past tail: more than the capacity apart
            head = r.get(0, "head")
            r.set(0, "tail", head - r.cap - 64 if head >= r.cap + 64 else position)
        elif mode == "misaligned":
            r.set(0, "tail", position + 3)
        elif mode == "poisoned":  # poisoned, and tail never moves again: the ring fills
            r.set(0, "poisoned", 1)
        elif mode == "futex":  # every futex word of ring 0, random; tail kept right
            r.set(0, "tail", position)
            for field in ("data_seq", "space_seq", "consumer_sleeping", "producer_sleeping"):
                r.set(0, field, random.getrandbits(32))
            r.futex_wake(0, "space_seq")
            r.futex_wake(0, "data_seq")

    answer(rid, 0)
    spoil()
    n = 1
    while True:
        payload, position = r.consume(0, position, time.monotonic() + 60)
        if payload is None:
            os._exit(8)
        (request_id,) = struct.unpack_from("<Q", payload, 8)
        answer(request_id, n)
        n += 1
        spoil()


def ring1(req, kind):
    """Garbage on the response ring for this request, then wait to be killed."""
    r = raw()
    rid = req.message_id
    ok = response(rid, 200, [(b"content-type", b"text/plain")], b"should never be seen")
    say(ring1=kind, how=r.how, head=r.get(1, "head"), tail=r.get(1, "tail"), cap=r.cap)
    if kind == "random-payload":  # a valid record of random bytes
        r.publish(1, os.urandom(random.randint(1, 3000)))
    elif kind == "random-bytes":  # random bytes where the next record goes, and head moved past them
        head = r.get(1, "head")
        p = r.data(1, head)
        room = min(4096, r.cap - head % r.cap)
        r.mm[p:p + room] = os.urandom(room)
        r.set(1, "head", head + (room & ~7))
        r.wake(1)
    elif kind == "bad-crc":
        r.publish(1, ok, crc=zlib.crc32(ok) ^ 0x5A5A5A5A)
    elif kind == "len-over-max":  # longer than max_payload
        r.publish(1, ok, length=r.max_payload + 8)
    elif kind == "len-past-head":  # the record would end past head
        r.publish(1, ok, length=len(ok) + 4096)
    elif kind == "len-huge":
        r.publish(1, ok, length=0x7FFFFFF8)
    elif kind == "wrap-past-head":  # a wrap marker with head short of the end of the data area
        head = r.get(1, "head")
        struct.pack_into("<I", r.mm, r.data(1, head), WRAP)
        r.set(1, "head", head + 8)
        r.wake(1)
    elif kind == "truncated":  # body_len says more than the message has
        r.publish(1, _RESPONSE.pack(2, 1, 200, 0, rid, 0, 5000) + b"short")
    elif kind == "count-mismatch":  # header_count says 3, the block holds 1
        block = header_block([(b"x-a", b"b")])
        r.publish(1, _RESPONSE.pack(2, 1, 200, 3, rid, len(block), 0) + block)
    elif kind == "wrong-kind":
        r.publish(1, bytes([1]) + ok[1:])
    elif kind == "wrong-version":
        r.publish(1, ok[:1] + bytes([9]) + ok[2:])
    elif kind == "short":
        r.publish(1, b"\x02\x01")
    else:
        raise aetherless.HTTPError(404, "no ring1 kind " + kind)
    hang()


def words1(req, kind):
    """Impossible words on the response ring (this handler is its producer).

    head is this side's word: the orchestrator must see it cannot be and fail the instance, so
    after writing it the handler waits to be killed. tail and poisoned are the orchestrator's own
    words (it keeps its tail to itself): after writing them the handler publishes a valid answer
    by hand and ends, so a hang cannot hide a wrong verdict either way."""
    r = raw()
    head, tail = r.get(1, "head"), r.get(1, "tail")
    say(words1=kind, how=r.how, head=head, tail=tail, cap=r.cap)
    if kind == "head-far":
        r.set(1, "head", tail + 40 * r.cap)
    elif kind == "head-near-2^64":
        r.set(1, "head", (1 << 64) - 8)
    elif kind == "misaligned":
        r.set(1, "head", tail + 12)
    elif kind == "head-behind":
        r.set(1, "head", max(0, tail - 64))
    elif kind in ("tail-ahead", "tail-far-behind", "poisoned"):
        if kind == "tail-ahead":
            r.set(1, "tail", head + 64)
        elif kind == "tail-far-behind":
            r.set(1, "tail", 0)
            r.set(1, "head", head + 40 * r.cap)  # keeps them over the capacity apart
            head = head + 40 * r.cap
        else:
            r.set(1, "poisoned", 1)
        body = json.dumps({"words1": kind, "pid": os.getpid()}).encode()
        r.publish(1, response(req.message_id, 200, [(b"content-type", b"application/json")], body))
        time.sleep(0.5)
        os._exit(0)
    elif kind == "futex":  # futex words only: harmless, the answer must still arrive
        for _ in range(50):
            for field in ("data_seq", "space_seq", "consumer_sleeping", "producer_sleeping"):
                r.set(1, field, random.getrandbits(32))
            r.futex_wake(1, "data_seq")
            r.futex_wake(1, "space_seq")
        r.set(1, "consumer_sleeping", 0)  # so the runtime's own doorbell stays quiet
        return {"futex": "scrambled", "pid": os.getpid()}
    else:
        raise aetherless.HTTPError(404, "no words kind " + kind)
    r.wake(1)
    hang()


def words0(req, kind):
    if kind == "head-far":  # the orchestrator's word: then back to the runtime, which reads it
        r = raw()
        r.set(0, "head", r.get(0, "tail") + 40 * r.cap)
        return {"hijacked": kind, "pid": os.getpid()}
    hijack(req, kind)


def crafted(req, status, headers, body=b""):
    """A response the SDK would refuse to encode, written on ring 1 by hand; then wait."""
    r = raw()
    r.publish(1, response(req.message_id, status, headers, body))
    hang()


def fork(req, q):
    """Fork bomb-ish: n children of one kind, each noting its PID (and its descendants') as a file
    in q["dir"]; then return, or exit with them still running."""
    n, how, folder = int(q.get("n", "50")), q.get("how", "plain"), q["dir"]

    def note():
        open(os.path.join(folder, str(os.getpid())), "w").close()

    children = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            try:
                if how == "zombie":  # exits at once, never waited for
                    os._exit(0)
                if how == "daemon":  # its own session, then a double fork: re-parented, not ours
                    os.setsid()
                    if os.fork() > 0:
                        os._exit(0)
                if how == "chain":  # never the same process for long: forks its successor, exits
                    end = time.monotonic() + 60
                    while time.monotonic() < end:
                        note()
                        time.sleep(0.05)
                        if os.fork() > 0:
                            os._exit(0)
                    os._exit(0)
                note()
                time.sleep(120)
            finally:
                os._exit(0)
        children.append(pid)
    if q.get("then") == "exit":
        os._exit(3)
    return {"pid": os.getpid(), "children": children}


@aetherless.handler
def handle(req):
    path = req.path
    q = req.query
    if path == "/ok":
        return {"pid": os.getpid(), "instance": os.environ.get("AETHER_INSTANCE")}
    if path == "/exit":
        os._exit(3)
    if path == "/sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.5)
        # Still here: PID 1 of its own PID namespace (confined), which the kernel does not let
        # kill itself.
        raise aetherless.HTTPError(409, "SIGKILL to itself was ignored: PID %d of its namespace" % os.getpid())
    if path == "/segv":
        ctypes.string_at(0)
    if path == "/abort":
        os.abort()
    if path == "/sleep":
        time.sleep(float(q.get("s", "1")))
        return {"slept": True, "pid": os.getpid()}
    if path == "/spin":
        end = time.monotonic() + float(q.get("s", "30"))
        while time.monotonic() < end:
            pass
        return {"spun": True}
    if path == "/deadlock":
        lock = threading.Lock()
        lock.acquire()
        lock.acquire()
    if path == "/oom":
        mb = int(q.get("mb", "512"))
        if q.get("how") == "gradual":
            chunks = []
            for _ in range(mb):
                chunks.append(b"\x01" * (1 << 20))
        else:
            block = b"\x01" * (mb << 20)
            return {"len": len(block)}
        return {"chunks": len(chunks)}
    if path == "/status":
        crafted(req, int(q["code"]), [(b"content-type", b"text/plain")], b"bad status")
    if path == "/header":
        crafted(req, 200, [(bytes.fromhex(q["name"]), bytes.fromhex(q["value"]))], b"bad header")
    if path == "/nobody":  # a status that carries no content, with content
        code = int(q["code"])
        return aetherless.Response(code, [("X-Kept", "yes")], b"B" * int(q.get("n", "100")))
    if path == "/big":
        return b"Z" * int(q["n"])
    if path == "/manyheaders":  # valid, but many or huge
        n, size = int(q.get("n", "1000")), int(q.get("size", "10"))
        return aetherless.Response(200, [("X-H%d" % i, "v" * size) for i in range(n)], b"many")
    if path == "/fork":
        return fork(req, q)
    if path == "/ring1":
        ring1(req, q["kind"])
    if path == "/words1":
        return words1(req, q["kind"])
    if path == "/words0":
        return words0(req, q["kind"])
    raise aetherless.HTTPError(404, "no fault " + path)
'''

#: Executed directly (protocol: sdk): the handshake by hand, then aetherless.runtime.serve.
CONTROL_ROGUE = r'''#!PYTHON
"""An sdk handler that breaks the control conversation: before READY, between READY and ATTACHED
(per its mode file, read at start), or while it serves (per request path)."""
import os
import socket
import sys
import time

sys.path.insert(0, SDK_DIR)
import aetherless  # noqa: E402
from aetherless import ring, runtime  # noqa: E402

with open(os.environ["FAULT_MODE_FILE"]) as f:
    MODE = f.read().strip()
print("rogue instance", os.environ.get("AETHER_INSTANCE"), "mode", MODE, flush=True)

if os.environ.get("AETHER_CONTROL_FD"):  # confined: the connection is handed over as a descriptor
    sock = socket.socket(fileno=int(os.environ["AETHER_CONTROL_FD"]))
else:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ["AETHER_SOCKET"])
send = sock.sendall

if MODE == "line-before-ready":
    send(b"HELLO orchestrator\n")
    send(b"READY\n")
elif MODE == "long-before-ready":
    send(b"R" * 10240 + b"\n")
    send(b"READY\n")
elif MODE == "binary-before-ready":
    send(b"\x00\xff\xfe garbage \x1b[2J\n")
    send(b"READY\n")
elif MODE == "close-before-ready":
    sock.close()
    time.sleep(120)
    sys.exit(0)
elif MODE == "silent":
    time.sleep(120)
    sys.exit(0)
elif MODE == "ready-twice":
    send(b"READY\nREADY\n")
else:
    send(b"READY\n")

passed = []
line = runtime._read_line(sock, bytearray(), passed)  # ATTACH may carry the region (SCM_RIGHTS)
if line is None:
    sys.exit(2)
assert line.startswith(b"ATTACH "), line
if MODE == "line-before-attached":
    send(b"WHAT\n")
elif MODE == "error-instead-of-attached":
    send(b"ERROR deliberately refusing the region\n")
    time.sleep(120)
    sys.exit(1)
region = ring.Region(line[7:].decode(), ring_count=2, fd=passed.pop() if passed else None)
send(b"ATTACHED\n")
if MODE == "attached-twice":
    send(b"ATTACHED\n")
if MODE == "garbage-after-attached":
    send(b"STATUS fine thanks\n")


def handle(req):
    path = req.path
    if path == "/ok":
        return {"pid": os.getpid(), "mode": MODE}
    if path == "/line":
        send(b"HELLO again\n")
    elif path == "/attached":
        send(b"ATTACHED\n")
    elif path == "/ready":
        send(b"READY\n")
    elif path == "/long":
        send(b"L" * 10240 + b"\n")
    elif path == "/unterminated":
        send(b"U" * 10240)
    elif path == "/binary":
        send(b"\x00\x01\x02\xff\n")
    elif path == "/close":
        sock.close()
        return {"closed": True, "pid": os.getpid()}
    else:
        raise aetherless.HTTPError(404, "no fault " + path)
    time.sleep(5)  # the orchestrator must have killed us by now
    return {"survived": path, "pid": os.getpid()}


runtime.serve(handle, region, 1)
'''

#: An sdk handler that fails before it is ready, per its mode file (read by each new instance).
CRASHLOOP = r'''
import ctypes
import os
import sys
import time

import aetherless

with open(os.environ["FAULT_MODE_FILE"]) as f:
    MODE = f.read().strip()
print("crashloop instance mode", MODE, flush=True)
if MODE == "exit":
    os._exit(3)
if MODE == "segv":
    ctypes.string_at(0)
if MODE == "raise":
    raise RuntimeError("fails at import on purpose")
if MODE == "exit0":
    sys.exit(0)
if MODE == "hang":  # never READY: startup_timeout_ms
    time.sleep(120)


@aetherless.handler
def handle(req):
    return {"pid": os.getpid(), "mode": MODE}
'''

#: A process handler: HTTP on AETHER_LISTEN_PORT; its mode file decides how it starts.
PROCESS = r'''
import http.server, json, os, socket, sys, threading, time

with open(os.environ["FAULT_MODE_FILE"]) as f:
    MODE = f.read().strip()
print("process instance mode", MODE, flush=True)
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(60)
        if self.path.startswith("/deadlock"):
            with LOCK:
                LOCK.acquire()
        body = json.dumps({"pid": os.getpid(), "instance": os.environ.get("AETHER_INSTANCE"), "mode": MODE}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
control.connect(os.environ["AETHER_SOCKET"])
if MODE == "never-listen":
    control.sendall(b"READY\n")
    time.sleep(120)
    sys.exit(0)
port = int(os.environ["AETHER_LISTEN_PORT"])
if MODE == "wrong-port":  # listens, but not where it was told to: any free port the kernel picks
    # (port + 1 was sometimes taken, and the bind failed instead: a CI run saw it once)
    port = 0
if MODE == "ready-then-exit":
    control.sendall(b"READY\n")
    sys.exit(0)
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
control.sendall(b"READY\n")
server.serve_forever()
'''


def control_rogue(python: str, sdk_dir: str) -> str:
    return CONTROL_ROGUE.replace("#!PYTHON", "#!" + python, 1).replace("SDK_DIR)", repr(sdk_dir) + ")", 1)
