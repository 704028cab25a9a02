"""The SDK handler runtime: ``python3 -m aetherless HANDLER.py [ignored args...]``.

Follows docs/handler-protocol.md:

1. Checks the environment (AETHER_SOCKET required; AETHER_PROTOCOL, if set,
   must be ``sdk``; AETHER_CONCURRENCY, default 1, must be an integer >= 1).
2. Imports HANDLER.py as module ``__aether_handler__`` (its folder first on
   sys.path, ``sys.argv`` = [HANDLER.py, ignored args...]); exactly one
   ``@aetherless.handler`` must be registered -- unless AETHER_APP is
   ``asgi:ATTRIBUTE`` or ``wsgi:ATTRIBUTE``: then the app that (dotted)
   attribute of the module names is served through ``aetherless.asgi`` or
   ``aetherless.wsgi`` (an ASGI app's lifespan startup runs here), and a
   registered handler is left unused.  Errors in steps 1-2: a message on
   stderr and exit status 2 (an exception raised by the handler's own init
   code, or a failed lifespan startup: its traceback and exit status 1).
3. Connects to AETHER_SOCKET, sends ``READY``, reads ``ATTACH <region>`` with
   its two descriptors (SCM_RIGHTS, in this order: the response bell, an
   eventfd, and the region's memfd), opens the region (2 rings, magic and
   layout_version checked) and answers ``ATTACHED bell`` (it rings the bell)
   -- or ``ERROR <text>`` (also when ATTACH does not carry exactly two
   descriptors) and exit status 1.
4. Serves: requests from ring 0, responses on ring 1.  The orchestrator reads
   responses on its event loop, which watches the bell: a response wakes it
   by writing the bell, not through ring 1's futex (ring.py, Ring's ``bell``);
   the bell stays open for the life of the instance.  With concurrency 1 the
   handler runs inline on the reading thread; with N > 1 on N worker
   threads, the ring producer guarded by a lock (the rings are SPSC).
   End-of-file on the control socket (the orchestrator is gone) ends the
   process at once (status 0); other lines received on it are ignored.
   SIGTERM and SIGINT have their default action (immediate exit).

Errors while serving: a handler exception answers 500 ``{"error": "internal
error"}`` (traceback on stderr); ``HTTPError`` its status; a response larger
than the ring's max_payload 500 naming both sizes; a malformed request 400 if
its request id is readable (else it is logged and dropped); a ring record with
a bad crc32 is logged and skipped; a poisoned ring ends the process (status 1).
"""

from __future__ import annotations

# Small or start-up modules only (`_signal`, not `signal`, which imports enum): every module
# imported here lands in every snapshot image and so in every restore.
import _signal
import _socket
import _struct
import _thread
import importlib.machinery
import os
import sys

import aetherless as _api

from . import protocol as _proto
from . import ring as _ring
from .ring import CorruptedData, Region, RingError

# Descriptors one control line may carry (ATTACH carries two: the response bell and its region;
# FORK three).
_MAX_PASSED_FDS = 4
# What ATTACH carries, by position.
_ATTACH_FDS = 2

__all__ = [
    "main",
    "load_handler",
    "load_app",
    "app_setting",
    "make_dispatcher",
    "serve",
    "StartupError",
    "HANDLER_MODULE",
    "APP_VARIABLE",
]

HANDLER_MODULE = "__aether_handler__"
APP_VARIABLE = "AETHER_APP"
MAX_LINE = 4096
EXIT_FAILURE = 1
EXIT_USAGE = 2

USAGE = "usage: python3 -m aetherless HANDLER.py   (started by the Aetherless orchestrator)"


class StartupError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def _format_exc() -> str:
    # traceback (with linecache, tokenize, textwrap) is imported on the first error only, so
    # it is not in every snapshot image.
    import traceback

    return traceback.format_exc()


def _log(message: str) -> None:
    try:
        sys.stderr.write(f"aetherless: {message}\n")
        sys.stderr.flush()
    except Exception:  # pragma: no cover - stderr gone
        pass


# --------------------------------------------------------------------------- handler loading


def _import_handler_file(path: str, argv: list | None):
    """Import ``path`` as ``__aether_handler__`` (its folder first on sys.path) and return it."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise StartupError(f"handler file {path} does not exist or is not a file")
    folder = os.path.dirname(path)
    if folder not in sys.path[:1]:
        sys.path.insert(0, folder)
    sys.argv = list(argv) if argv else [path]
    loader = importlib.machinery.SourceFileLoader(HANDLER_MODULE, path)
    # What importlib.util.module_from_spec(spec_from_file_location(...)) makes, without
    # importing importlib.util (contextlib, collections, functools: ~1 MB in every image).
    spec = importlib.machinery.ModuleSpec(HANDLER_MODULE, loader, origin=path)
    spec.has_location = True
    module = type(sys)(HANDLER_MODULE)
    module.__spec__, module.__loader__, module.__file__ = spec, loader, path
    module.__package__ = ""
    module.__cached__ = spec.cached
    sys.modules[HANDLER_MODULE] = module
    try:
        loader.exec_module(module)
    except (SystemExit, KeyboardInterrupt):
        raise
    except _api.HandlerRegistrationError as e:
        raise StartupError(f"the handler file {path}: {e}") from None
    except BaseException:
        raise StartupError(
            f"importing the handler file {path} failed:\n{_format_exc().rstrip()}",
            EXIT_FAILURE,
        ) from None
    return module


def load_handler(path: str, argv: list | None = None):
    """Import ``path`` as ``__aether_handler__`` and return its one registered handler."""
    _import_handler_file(path, argv)
    path = os.path.abspath(path)
    found = _api.registered_handlers()
    if not found:
        raise StartupError(
            f"the handler file {path} registers no handler: decorate the function that "
            "answers requests with @aetherless.handler (after 'import aetherless')"
        )
    if len(found) > 1:
        names = ", ".join(f"{m}.{_api._qualname(f)}" for m, f in found.items())
        raise StartupError(
            f"the handler file {path} registers {len(found)} handlers ({names}); "
            "exactly one function may be decorated with @aetherless.handler"
        )
    return next(iter(found.values()))


def app_setting(environ) -> tuple[str, str] | None:
    """``AETHER_APP`` as ``(kind, attribute)``: ``asgi:app`` -> ``("asgi", "app")``; None if unset."""
    raw = environ.get(APP_VARIABLE)
    if not raw:
        return None
    kind, sep, attribute = raw.partition(":")
    if kind not in ("asgi", "wsgi") or not sep or not all(p.isidentifier() for p in attribute.split(".")):
        raise StartupError(
            f"{APP_VARIABLE} must be 'asgi:ATTRIBUTE' or 'wsgi:ATTRIBUTE', ATTRIBUTE the app's "
            f"name in the handler file (e.g. app or api.app), not {raw!r}"
        )
    return kind, attribute


def load_app(path: str, kind: str, attribute: str, concurrency: int = 1, argv: list | None = None, log=_log):
    """Import ``path`` as ``__aether_handler__``, find the ASGI or WSGI app ``attribute`` (dotted)
    in it and return the handler serving it (``aetherless.asgi.ASGIHandler``, whose lifespan
    startup has run, or ``aetherless.wsgi.WSGIHandler``)."""
    module = _import_handler_file(path, argv)
    path = os.path.abspath(path)
    setting = f"{APP_VARIABLE}={kind}:{attribute} (the function's {kind}: setting)"
    app = module
    for i, part in enumerate(attribute.split(".")):
        try:
            app = getattr(app, part)
        except AttributeError:
            where = "the handler file" if i == 0 else ".".join(attribute.split(".")[:i])
            raise StartupError(
                f"{setting}: the handler file {path} has no attribute {attribute!r} "
                f"({where} has no {part!r})"
            ) from None
    # The setting names what is served: a handler the module also registers is left unused
    # (one file may serve both an sdk function and an app function).
    for module_name, fn in _api.registered_handlers().items():
        log(f"{setting} is served; the @aetherless.handler {_api._qualname(fn)} of {module_name} is not used")
    try:
        if kind == "wsgi":
            from .wsgi import WSGIHandler

            return WSGIHandler(app, concurrency=concurrency, log=log)
        from .asgi import ASGIHandler, LifespanStartupFailed

        try:
            return ASGIHandler(app, concurrency=concurrency, log=log)
        except LifespanStartupFailed as e:
            raise StartupError(
                f"{setting}: the ASGI app's lifespan startup failed (lifespan.startup.failed):\n{e}",
                EXIT_FAILURE,
            ) from None
    except TypeError as e:  # check_app: not an app of that kind
        raise StartupError(
            f"{setting}: {attribute} in the handler file {path} cannot be served as "
            f"{'an ASGI' if kind == 'asgi' else 'a WSGI'} app: {e}"
        ) from None


# --------------------------------------------------------------------------- dispatch


def make_dispatcher(fn, max_payload: int, log=_log):
    """Return ``dispatch(payload: bytes) -> bytes | None``: decode one request
    message, call ``fn``, encode its response message (None: nothing to answer)."""
    decode_request = _proto.decode_request_tuple
    from_wire = _api.Request._from_wire
    encode_result, encode_response, error = _proto.response_encoders(_api.Response, _api.to_response)
    HTTPError = _api.HTTPError
    format_exc = _format_exc
    serving = _api._serving

    def dispatch(payload):
        try:
            rid, method, target, raw_headers, body = decode_request(payload)
        except _proto.ProtocolError as e:
            rid = _proto.peek_request_id(payload)
            if rid is None:
                log(f"dropped a malformed request message of {len(payload)} bytes (no request id): {e}")
                return None
            log(f"request {rid}: malformed request message of {len(payload)} bytes, answering 400: {e}")
            return error(rid, 400, f"malformed request message: {e}")
        req = from_wire(rid, method, target, raw_headers, body)
        serving.request = req
        try:
            msg = encode_result(rid, fn(req))
        except HTTPError as e:
            try:
                msg = encode_response(rid, e.to_response())
            except Exception:
                log(f"request {rid} {req.method} {req.target}: invalid HTTPError\n{format_exc().rstrip()}")
                msg = error(rid, 500, "internal error")
        except Exception:
            log(f"request {rid} {req.method} {req.target}: handler failed\n{format_exc().rstrip()}")
            msg = error(rid, 500, "internal error")
        if len(msg) > max_payload:
            text = (
                f"response of {len(msg)} bytes does not fit the ring's max_payload of "
                f"{max_payload} bytes"
            )
            log(f"request {rid} {req.method} {req.target}: {text}; answering 500")
            msg = error(rid, 500, text)
        serving.request = None
        return msg

    return dispatch


def _warm_dispatch() -> None:
    """Dispatch two made-up requests through the SDK's own decoding and encoding, never the
    handler. A copy of a snapshot does this after ATTACHED, before its first request: a copy
    in the warm pool, off the request path. The pages this touches (a forked copy shares them
    with its template until it writes them) are copied now, and the interpreter's adaptive code
    for the request path is warm: the first request of a forked copy took half the time and
    half the page faults in a measurement (hello-python: 224 -> 76 us, 54 -> 21 faults)."""
    payload = _proto.encode_request(0, "GET", "/?a=b", [(b"x-request-id", b"0" * 32)])
    dispatch = make_dispatcher(lambda req: {"query": req.query}, 1 << 16, log=lambda text: None)
    for _ in range(2):
        dispatch(payload)


# --------------------------------------------------------------------------- serving


def serve(fn, region: Region, concurrency: int = 1, log=_log, bell: int | None = None) -> None:
    """Serve requests from ring 0 of ``region`` until a fatal ring error (raised).

    ``bell``: the response bell ATTACH passed (an eventfd, not closed here): ring 1 wakes the
    orchestrator's reader by writing it. None: by ring 1's futex."""
    req_ring = region.ring(0)
    resp_ring = region.ring(1, bell=bell)
    dispatch = make_dispatcher(fn, resp_ring.max_payload, log)
    read = req_ring.read
    write = resp_ring.write

    if concurrency <= 1:
        while True:
            try:
                payload = read()
            except CorruptedData as e:
                log(f"ring 0: {e}")
                continue
            msg = dispatch(payload)
            if msg is not None:
                write(msg)

    # Imported here: the image of a concurrency-1 snapshot template does not carry them.
    import queue
    import threading

    work = queue.SimpleQueue()
    lock = threading.Lock()

    def worker() -> None:
        get = work.get
        try:
            while True:
                msg = dispatch(get())
                if msg is not None:
                    with lock:
                        write(msg)
        except SystemExit as e:  # the handler called sys.exit(): end the instance
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            os._exit(code)
        except BaseException as e:
            if isinstance(e, RingError):
                log(f"ring 1: {e}; exiting")
            else:
                log(f"worker thread failed; exiting\n{_format_exc().rstrip()}")
            os._exit(EXIT_FAILURE)

    for i in range(concurrency):
        threading.Thread(target=worker, name=f"aetherless-worker-{i}", daemon=True).start()
    put = work.put
    while True:
        try:
            put(read())
        except CorruptedData as e:
            log(f"ring 0: {e}")


def _read_line(sock: _socket.socket, buf: bytearray, fds: list | None = None) -> bytes | None:
    """One line without its newline; None on end-of-file.  ValueError if over MAX_LINE.

    With ``fds``, descriptors passed along (SCM_RIGHTS: ATTACH's region and bell, FORK's
    three) are appended to it.
    """
    while True:
        i = buf.find(b"\n")
        if i >= 0:
            line = bytes(buf[:i])
            del buf[: i + 1]
            if len(line) + 1 > MAX_LINE:
                raise ValueError(f"control line of {len(line) + 1} bytes exceeds {MAX_LINE}")
            return line
        if len(buf) >= MAX_LINE:
            raise ValueError(f"control line exceeds {MAX_LINE} bytes without a newline")
        if fds is None:
            chunk = sock.recv(MAX_LINE)
        else:
            chunk, ancillary, _, _ = sock.recvmsg(MAX_LINE, _socket.CMSG_SPACE(4 * _MAX_PASSED_FDS))
            for level, kind, data in ancillary:
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                    usable = len(data) - len(data) % 4
                    fds.extend(_struct.unpack(f"{usable // 4}i", data[:usable]))
        if not chunk:
            return None
        buf += chunk


def _send_error(sock: _socket.socket, text: str) -> None:
    text = " ".join(text.split())  # one line
    line = ("ERROR " + text).encode("ascii", "backslashreplace")[: MAX_LINE - 1] + b"\n"
    try:
        sock.sendall(line)
    except OSError:
        pass


def _thread_count() -> int:
    """Threads of this process, as the kernel counts them (threading only knows its own)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for entry in f:
                if entry.startswith(b"Threads:"):
                    return int(entry.split()[1])
    except (OSError, ValueError):
        pass
    return 1


_template_prepared = False


def _fork_copy(sock: _socket.socket, passed: list):
    """``FORK`` with its descriptors (the copy's control connection, stdout and stderr): fork.

    In the template returns None; in the child returns its control connection, after it has
    announced itself with ``FORKED`` (the orchestrator learns its PID from the message's
    credentials and moves it into its own cgroups before it sends ATTACH)."""
    global _template_prepared
    if len(passed) != 3:
        for fd in passed:
            os.close(fd)
        raise ValueError(f"FORK carries 3 descriptors (control, stdout, stderr), got {len(passed)}")
    if not _template_prepared:
        # Copies are non-dumpable (their /proc/PID/mem is closed to each other, same uid as
        # they are), and the kernel reaps them: the template never waits for a copy.
        import ctypes

        PR_SET_DUMPABLE = 4
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        _signal.signal(_signal.SIGCHLD, _signal.SIG_IGN)
        # The template's objects move to the permanent generation: a copy's garbage collections
        # never walk them, so they do not write to (and copy) the pages they share.
        import gc

        gc.freeze()
        _template_prepared = True
    control, out, err = passed
    pid = os.fork()
    if pid != 0:
        for fd in passed:
            os.close(fd)
        return None
    if os.environ.get("AETHER_COPY_PID_NAMESPACE") == "1":
        _enter_pid_namespace(control)
    # The child: a session and process group of its own, its own output and connection.
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    os.setsid()
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(out)
    os.close(err)
    sock.close()
    child = _socket.socket(fileno=control)
    child.sendall(b"FORKED\n")
    return child


def _enter_pid_namespace(control: int) -> None:
    """In a fork template's child, confined: make the copy PID 1 of a PID namespace of its own.

    The template's user namespace lets it (``aether-sandbox --fork-template``): this child
    forks the copy into a new PID namespace and exits; the copy (the template's child again: the
    template is PID 1 of its namespace) drops every capability before anything else runs. A copy
    that cannot have its namespace says why on its connection and ends: never a copy sharing its
    siblings' namespace."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def refuse(what: str) -> None:
        text = f"ERROR {what}: {os.strerror(ctypes.get_errno())}\n".encode()
        try:
            os.write(control, text)
        finally:
            os._exit(EXIT_FAILURE)

    CLONE_NEWPID = 0x20000000
    if libc.unshare(CLONE_NEWPID) != 0:
        refuse("unshare(CLONE_NEWPID) for the copy")
    if os.fork() != 0:
        os._exit(0)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
    if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        refuse("clearing the copy's ambient capabilities")
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()) != 0:
        refuse("dropping the copy's capabilities")


def _watch_control(sock: _socket.socket) -> None:
    """Daemon thread: read and discard control lines; exit the process at EOF or error."""
    try:
        while sock.recv(MAX_LINE):
            pass
    except BaseException:
        pass
    # Buffered output is not flushed: stdout is line-buffered, and flushing
    # could block on a pipe nobody reads any more.
    os._exit(0)


def _shrink_for_checkpoint() -> None:
    """Makes the image criu writes (and every restore reads) smaller: collect garbage, then
    hand free heap pages back to the kernel so they are not dumped."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _setup_process() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except Exception:
            pass
    # Make sure SIGTERM / SIGINT end the process at once, whatever we inherited.
    for sig in (_signal.SIGTERM, _signal.SIGINT):
        try:
            _signal.signal(sig, _signal.SIG_DFL)
        except (OSError, ValueError):  # pragma: no cover
            pass
    try:
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, {_signal.SIGTERM, _signal.SIGINT})
    except (OSError, ValueError, AttributeError):  # pragma: no cover
        pass


def _config(environ) -> tuple[str, int]:
    sock_path = environ.get("AETHER_SOCKET")
    if environ.get("AETHER_CONTROL_FD"):
        # A snapshot template gets its control connection as an inherited descriptor, which
        # criu can replace with a fresh one in every restored copy (docs/handler-protocol.md).
        sock_path = "fd:" + environ["AETHER_CONTROL_FD"]
    if not sock_path:
        raise StartupError(
            "AETHER_SOCKET is not set: this runtime is started by the Aetherless orchestrator "
            "(protocol: sdk), which passes the path of its control socket"
        )
    proto = environ.get("AETHER_PROTOCOL")
    if proto is not None and proto != "sdk":
        raise StartupError(
            f"AETHER_PROTOCOL is {proto!r}: `python3 -m aetherless` serves protocol 'sdk' only"
        )
    raw = environ.get("AETHER_CONCURRENCY", "1")
    try:
        concurrency = int(raw)
    except ValueError:
        concurrency = 0
    if concurrency < 1:
        raise StartupError(f"AETHER_CONCURRENCY must be an integer >= 1, not {raw!r}")
    return sock_path, concurrency


def main(argv: list | None = None, environ=None) -> int:
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    _setup_process()
    if len(argv) < 2:
        _log(USAGE)
        return EXIT_USAGE
    try:
        sock_path, concurrency = _config(environ)
        app = app_setting(environ)
        if app is None:
            fn = load_handler(argv[1], argv[1:])
        else:
            # An ASGI app's lifespan startup runs here, before READY: in a snapshot template
            # its work lands in the image.
            fn = load_app(argv[1], *app, concurrency, argv[1:])
    except StartupError as e:
        _log(str(e))
        return e.code

    if _ring.IMPLEMENTATION == "python" and _ring.RING_SETTING != "python":
        # Not an error (a virtualenv's other Python version still serves), but never silent.
        _log(f"the ring runs in pure Python (about 7 us more per request): {_ring.C_RING_UNAVAILABLE}")

    try:
        if sock_path.startswith("fd:"):
            sock = _socket.socket(fileno=int(sock_path[3:]))
        else:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            sock.connect(sock_path)
        sock.sendall(b"READY\n")
    except (OSError, ValueError) as e:
        _log(f"cannot reach the orchestrator at {sock_path}: {e}")
        return EXIT_FAILURE

    buf = bytearray()
    passed: list = []
    try:
        line = _read_line(sock, buf, passed)
    except (OSError, ValueError) as e:
        _log(f"control socket: {e}")
        _send_error(sock, str(e))
        return EXIT_FAILURE
    copy = line == b"CHECKPOINT"
    if copy:
        # Coordinated checkpoint: no shared memory is mapped and no thread runs yet; the
        # orchestrator dumps us (snapshot: criu) or forks us (snapshot: fork) while we wait for
        # the next line. Each copy reads it from its own fresh connection, so everything below
        # runs once per copy.
        # Descriptors belong to the line they came with (ATTACH's are taken by position): none
        # comes with CHECKPOINT, and whatever did is not carried into the copies.
        for fd in passed:
            os.close(fd)
        passed.clear()
        threads = _thread_count()
        if threads != 1:
            text = (
                f"{threads} threads are running at CHECKPOINT: a snapshot template must be "
                "single-threaded (criu and fork copy only the calling thread's state safely); "
                "start threads in the handler, after the first request, or use snapshot: false"
            )
            _log(text)
            _send_error(sock, text)
            return EXIT_FAILURE
        _shrink_for_checkpoint()
        try:
            sock.sendall(b"FROZEN\n")
            line = _read_line(sock, buf, passed)
            while line == b"FORK":
                # snapshot: fork. The parent stays the template and waits for the next FORK;
                # the child goes on below as a new instance on the connection FORK passed.
                child = _fork_copy(sock, passed)
                passed.clear()
                if child is not None:
                    sock, buf = child, bytearray()
                line = _read_line(sock, buf, passed)
        except (OSError, ValueError) as e:
            _log(f"control socket: {e}")
            return EXIT_FAILURE
        # Copies of one image must not share random state. If the handler has not imported
        # random, there is nothing to reseed (imported later, it seeds itself).
        random = sys.modules.get("random")
        if random is not None:
            random.seed()
    if line is None:
        _log("the orchestrator closed the control socket before ATTACH")
        return EXIT_FAILURE
    if not line.startswith(b"ATTACH ") or len(line) <= 7:
        text = f"expected 'ATTACH <region-name>', got {line[:200]!r}"
        _log(f"control socket: {text}")
        _send_error(sock, text)
        return EXIT_FAILURE
    name = line[7:].decode("utf-8", "replace")
    # ATTACH carries, in this order, the response bell (an eventfd the orchestrator's event loop
    # watches) and the region (a memfd; last, where runtimes from before the bell took it). A
    # copy (criu restored or forked) gets both with its own ATTACH: nothing from before the
    # snapshot.
    if len(passed) != _ATTACH_FDS:
        for fd in passed:
            os.close(fd)
        text = (
            f"ATTACH carried {len(passed)} descriptor{'' if len(passed) == 1 else 's'}; expected "
            f"{_ATTACH_FDS} (the response bell and the region)"
        )
        _log(f"control socket: {text}")
        _send_error(sock, text)
        return EXIT_FAILURE
    bell, region_fd = passed
    passed.clear()
    # Kept for the life of the instance; not handed to programs the handler executes.
    os.set_inheritable(bell, False)
    try:
        region = Region(name, ring_count=2, fd=region_fd)
    except Exception as e:
        text = f"cannot attach shared-memory region {name}: {e}"
        _log(text)
        _send_error(sock, text)
        return EXIT_FAILURE
    try:
        # "bell": the orchestrator reads our responses when the bell rings, not the futex.
        sock.sendall(b"ATTACHED bell\n")
    except OSError as e:
        _log(f"control socket: {e}")
        return EXIT_FAILURE
    # _thread, not threading.Thread(...).start(): that waits until the new thread has run,
    # about 0.5 ms on the way to a restored copy's first response.
    _thread.start_new_thread(_watch_control, (sock,))
    if copy:
        _warm_dispatch()

    try:
        serve(fn, region, concurrency, bell=bell)
    except RingError as e:
        _log(f"{e}; exiting")
        # At once, as at end-of-file: a normal exit would wait for the handler's non-daemon
        # threads (anyio's workers under FastAPI are), which never end.
        os._exit(EXIT_FAILURE)
    return 0  # pragma: no cover - serve() only returns by raising
