"""ASGI 3 apps (FastAPI, Starlette, ...) served by the SDK runtime, fed straight from the ring.

    AETHER_APP=asgi:app python3 -m aetherless main.py      # what the orchestrator runs

``ASGIHandler(app)`` runs the app's lifespan startup, then is a handler like any other:
``handler(Request) -> Response``, served by the runtime's one serving loop. No HTTP server runs
in the process; each request becomes one ``http`` scope (docs/handler-protocol.md, "ASGI and
WSGI apps", says how every field maps):

- ``receive()`` gives the whole body as one ``http.request`` (more_body False), then waits
  until the response is complete and gives ``http.disconnect``.
- ``send()`` collects ``http.response.start`` and the ``http.response.body`` parts; the
  response is answered when the app returns (streaming bodies are buffered, so a background
  task the app runs after its last body part delays the answer).
- An exception before the response is complete: 500 ``{"error": "internal error"}``, the
  traceback on stderr. After it is complete (Starlette sends its own 500, then re-raises):
  logged, and the complete response is answered.
- A status outside 200...599, a header that is not bytes or not valid HTTP: 500, logged.

One asyncio event loop, made here and used for the lifespan and every request. With
concurrency 1 each request runs on it with ``run_until_complete`` on the serving thread, so the
loop runs only while a request is served (a task the app leaves running advances during later
requests); with concurrency N > 1 it runs in a thread of its own, started with the first
request, and the N worker threads hand requests to it (up to N in flight on the loop).

Nothing here starts a thread before the first request, so a snapshot template (lifespan
startup done, READY sent, FROZEN) is single-threaded; a copy forked from it gets a selector of
its own for the loop. Imported only when an ASGI app is
served: a plain handler's image does not carry asyncio.
"""

from __future__ import annotations

import _thread
import asyncio
import os
import selectors
import weakref

import aetherless as _api

from ._app import check_app, fail, format_exc as _format_exc, log as _log
from ._stdlib import unquote as _unquote

__all__ = ["ASGIHandler", "LifespanStartupFailed", "LifespanShutdownFailed"]

# Spec version 2.4: send() on a closed connection raises; ours is never closed before the
# response is complete, and apps (Starlette) then skip watching receive() for a disconnect.
_HTTP_ASGI = {"version": "3.0", "spec_version": "2.4"}
_LIFESPAN_ASGI = {"version": "3.0", "spec_version": "2.0"}


class LifespanStartupFailed(Exception):
    """The app answered ``lifespan.startup.failed``; the exception's text is the app's message."""


class LifespanShutdownFailed(Exception):
    """The app answered ``lifespan.shutdown.failed`` or raised during shutdown."""


def _after_fork(ref) -> None:
    handler = ref()
    if handler is not None:
        handler._own_selector()


class ASGIHandler:
    """An ASGI 3 app as a handler: ``ASGIHandler(app)(request) -> Response``.

    The constructor makes the event loop and runs the lifespan startup: it raises
    ``LifespanStartupFailed`` with the app's message when the app answers
    ``lifespan.startup.failed``. An app that raises on the lifespan scope, or returns without
    answering it, does not support lifespan (as uvicorn's ``lifespan: auto``): logged, served
    without. ``close()`` (or leaving a ``with`` block) runs the lifespan shutdown and closes the
    loop; the runtime never calls it (an instance ends with the process)."""

    def __init__(self, app, *, concurrency: int = 1, log=_log):
        check_app(app, "asgi")
        self.app = app
        self.concurrency = concurrency
        self.log = log
        # The lifespan's state namespace; each request's scope gets a shallow copy.
        self.state: dict = {}
        loop = self._loop = asyncio.new_event_loop()
        # The loop's root task, as asyncio.run's main task is under uvicorn: it lives as long as
        # the handler, and the loop is always run with run_until_complete(root). anyio ties its
        # worker threads (FastAPI's and Starlette's sync endpoints run on them) to the task that
        # was started with run_until_complete: to this one, not to each request's own task, whose
        # end would stop its worker and cost a new thread per request (~0.8 ms).
        self._root_done = loop.create_future()
        self._root = loop.create_task(self._root_main())
        self._thread_started = False
        self._thread_lock = _thread.allocate_lock()
        self._thread_running = _thread.allocate_lock()  # held while the loop thread runs
        self._lifespan_task = None
        self._shutdown_requested = None
        self._shutdown_outcome = None
        self._closed = False
        # A copy forked from a snapshot template (snapshot: fork) gets its own epoll instance and
        # wake-up socket pair: shared with the template and its siblings, one copy would read
        # another's wake-up (a thread handing back a result) and that copy would wait forever.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))
        try:
            self._startup()
        except BaseException:
            self._end_lifespan()
            self._finish_root()
            loop.close()
            raise

    async def _root_main(self) -> None:
        await self._root_done

    def _own_selector(self) -> None:
        """In a forked child: a selector and a wake-up pair of its own for the loop (private
        parts of asyncio's selector loop, the same from 3.8 to 3.13)."""
        loop = self._loop
        if loop.is_closed():
            return
        shared = loop._selector
        wake = loop._ssock.fileno()
        own = selectors.DefaultSelector()
        for key in shared.get_map().values():
            if key.fd != wake:  # the app's own descriptors are shared with every copy anyway
                own.register(key.fileobj, key.events, key.data)
        loop._selector = own
        shared.close()  # this process's descriptor only: the template keeps its own
        loop._ssock.close()
        loop._csock.close()
        loop._internal_fds -= 1
        loop._make_self_pipe()

    # -- serving

    def __call__(self, req) -> _api.Response:
        if self.concurrency > 1:
            if not self._thread_started:
                self._start_thread()
            return asyncio.run_coroutine_threadsafe(self._serve(req), self._loop).result()
        # Concurrency 1: the loop runs on this (the serving) thread until the request's task is
        # done, which stops it; run_until_complete(root) then says the loop stopped first.
        task = self._loop.create_task(self._serve(req))
        task.add_done_callback(self._stop_loop)
        try:
            self._loop.run_until_complete(self._root)
        except RuntimeError:
            if not task.done():
                raise
        return task.result()

    def _stop_loop(self, _task) -> None:
        self._loop.stop()

    def _start_thread(self) -> None:
        with self._thread_lock:
            if not self._thread_started:
                self._thread_running.acquire()
                _thread.start_new_thread(self._run_loop, ())
                self._thread_started = True

    def _run_loop(self) -> None:
        try:
            self._loop.run_until_complete(self._root)
            self._thread_running.release()
        except SystemExit as e:  # the app called sys.exit(): end the instance, as a handler would
            os._exit(e.code if isinstance(e.code, int) else (0 if e.code is None else 1))
        except BaseException:
            self.log(f"the ASGI event loop failed; exiting\n{_format_exc().rstrip()}")
            os._exit(1)

    def _run(self, coro):
        """Run ``coro`` on the loop from this (non-loop) thread and return its result."""
        if self._thread_started:
            return asyncio.run_coroutine_threadsafe(coro, self._loop).result()
        return self._loop.run_until_complete(coro)

    def _finish_root(self) -> None:
        """End the root task (and with it the loop thread's run)."""
        if self._thread_started:
            self._loop.call_soon_threadsafe(self._root_done.set_result, None)
            self._thread_running.acquire()  # the loop thread is done with the loop
        else:
            self._root_done.set_result(None)
            self._loop.run_until_complete(self._root)

    async def _serve(self, req) -> _api.Response:
        target = req.target
        i = target.find("?")
        raw_path, query = (target, "") if i < 0 else (target[:i], target[i + 1 :])
        scope = {
            "type": "http",
            "asgi": _HTTP_ASGI.copy(),
            "http_version": "1.1",  # the request message does not carry it; the gateway speaks 1.0 and 1.1
            "method": req.method,
            "scheme": "http",
            "path": _unquote(raw_path),
            "raw_path": raw_path.encode("utf-8"),
            "query_string": query.encode("utf-8"),
            "root_path": "",
            "headers": [(name.lower(), value) for name, value in req.raw_headers],
            "client": None,  # the gateway does not pass the client's address
            "server": None,  # nor its own: this process listens on no socket
            "state": self.state.copy(),
        }
        body = req.body
        loop = self._loop
        request_given = False
        started = complete = False
        status = 500
        headers = ()
        parts = []
        waiters = []

        async def receive():
            nonlocal request_given
            if not request_given:
                request_given = True
                return {"type": "http.request", "body": body, "more_body": False}
            # The client stays connected until it has its response.
            if not complete:
                waiter = loop.create_future()
                waiters.append(waiter)
                await waiter
            return {"type": "http.disconnect"}

        async def send(message):
            nonlocal started, complete, status, headers
            kind = message["type"]
            if kind == "http.response.body":
                if not started:
                    raise RuntimeError("ASGI app sent 'http.response.body' before 'http.response.start'")
                if complete:
                    return  # the spec: ignored once the response is complete
                chunk = message.get("body", b"")
                if chunk:
                    parts.append(chunk)
                if not message.get("more_body", False):
                    complete = True
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(None)
            elif kind == "http.response.start":
                if started:
                    raise RuntimeError("ASGI app sent 'http.response.start' twice")
                started = True
                status = message["status"]
                headers = message.get("headers", ())
            else:
                raise RuntimeError(
                    f"ASGI app sent a {kind!r} message on an http scope (expected "
                    "'http.response.start' or 'http.response.body')"
                )

        try:
            await self.app(scope, receive, send)
        except (Exception, asyncio.CancelledError):
            if not complete:
                return self._fail(req, f"ASGI app failed\n{_format_exc().rstrip()}")
            self.log(
                f"request {req.request_id} {req.method} {req.target}: ASGI app raised after its "
                f"response was complete; answering that response\n{_format_exc().rstrip()}"
            )
        if not started:
            return self._fail(req, "ASGI app returned without sending 'http.response.start'")
        if not complete:
            return self._fail(
                req, "ASGI app returned before its last 'http.response.body' (more_body False)"
            )
        return self._response(req, status, headers, parts)

    def _response(self, req, status, headers, parts) -> _api.Response:
        if type(status) is not int:
            if not isinstance(status, int) or isinstance(status, bool):
                return self._fail(req, f"ASGI app sent the status {status!r}, not an int")
            status = int(status)  # an IntEnum such as http.HTTPStatus
        if not 200 <= status <= 599:
            return self._fail(
                req,
                f"ASGI app answered status {status}: the gateway sends final statuses only (200...599)",
            )
        pairs = []
        try:
            for name, value in headers:
                if type(name) is not bytes or type(value) is not bytes:
                    if not isinstance(name, (bytes, bytearray)) or not isinstance(value, (bytes, bytearray)):
                        return self._fail(
                            req,
                            f"ASGI app sent the response header {name!r}: {value!r}; ASGI header "
                            "names and values are byte strings",
                        )
                    name, value = bytes(name), bytes(value)
                _api._check_header(name, value, _api._CONTROL_BUT_TAB)
                pairs.append((name, value))
        except (TypeError, ValueError) as e:  # not a list of pairs, or not valid HTTP
            return self._fail(req, f"ASGI app sent an invalid response header: {e}")
        for chunk in parts:
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                return self._fail(
                    req, f"ASGI app sent a body of type {type(chunk).__name__}; bodies are byte strings"
                )
        return _api.Response._exact(status, pairs, b"".join(parts))

    def _fail(self, req, what: str) -> _api.Response:
        return fail(self.log, req, what)

    # -- lifespan

    def _startup(self) -> None:
        loop = self._loop
        scope = {"type": "lifespan", "asgi": _LIFESPAN_ASGI.copy(), "state": self.state}
        started = loop.create_future()  # -> None (complete), ("failed", message) or ("unsupported", why)
        self._shutdown_requested = loop.create_future()
        self._shutdown_outcome = loop.create_future()  # -> None or the failure message
        startup_given = False

        async def receive():
            nonlocal startup_given
            if not startup_given:
                startup_given = True
                return {"type": "lifespan.startup"}
            await self._shutdown_requested
            return {"type": "lifespan.shutdown"}

        async def send(message):
            kind = message["type"]
            if kind == "lifespan.startup.complete" and not started.done():
                started.set_result(None)
            elif kind == "lifespan.startup.failed" and not started.done():
                started.set_result(("failed", message.get("message", "")))
            elif kind == "lifespan.shutdown.complete" and not self._shutdown_outcome.done():
                self._shutdown_outcome.set_result(None)
            elif kind == "lifespan.shutdown.failed" and not self._shutdown_outcome.done():
                self._shutdown_outcome.set_result(message.get("message", "") or "lifespan.shutdown.failed")
            else:
                raise RuntimeError(f"ASGI app sent {kind!r} out of turn on the lifespan scope")

        async def lifespan():
            try:
                await self.app(scope, receive, send)
            except (Exception, asyncio.CancelledError) as e:
                if not started.done():
                    started.set_result(("unsupported", f"it raised {type(e).__name__}: {e}"))
                elif not self._shutdown_outcome.done() and self._shutdown_requested.done():
                    self._shutdown_outcome.set_result(_format_exc().rstrip())
                elif started.result() is None:
                    self.log(f"the ASGI app's lifespan task failed\n{_format_exc().rstrip()}")
            finally:
                if not started.done():
                    started.set_result(("unsupported", "it returned without answering lifespan.startup"))
                if not self._shutdown_outcome.done() and self._shutdown_requested.done():
                    self._shutdown_outcome.set_result(None)

        # Threads the startup starts must end before READY (a snapshot template is
        # single-threaded when it is checkpointed): the default executor's, by using one made
        # for the startup and shut down after it; anyio's workers (to_thread), by running the
        # startup in a task of its own, to which anyio ties them and which ends with it.
        from concurrent.futures import ThreadPoolExecutor
        import threading

        before = set(threading.enumerate())
        executor = ThreadPoolExecutor(thread_name_prefix="asyncio-startup")
        loop.set_default_executor(executor)
        self._lifespan_task = loop.create_task(lifespan())
        try:
            outcome = loop.run_until_complete(self._wait(started))
        finally:
            loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="asyncio"))  # no thread until used
            executor.shutdown(wait=True)
            self._join_threads(set(threading.enumerate()) - before)
        if outcome is None:
            return
        kind, text = outcome
        if kind == "failed":
            raise LifespanStartupFailed(text or "lifespan.startup.failed (the app gave no message)")
        self._lifespan_task = None
        self.log(f"the ASGI app does not support the lifespan protocol ({text}): serving it without")

    @staticmethod
    async def _wait(future):
        return await future

    def _join_threads(self, threads, timeout: float = 1.0) -> None:
        from time import monotonic

        deadline = monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - monotonic()))
        left = sorted(t.name for t in threads if t.is_alive())
        if left:
            self.log(
                f"{len(left)} thread(s) started during the ASGI app's lifespan startup still run "
                f"({', '.join(left)}): a snapshot template must be single-threaded when it is "
                "checkpointed, and answers CHECKPOINT with ERROR while they do"
            )

    def close(self) -> None:
        """Run the lifespan shutdown (LifespanShutdownFailed if it fails) and close the loop."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._lifespan_task is not None and not self._lifespan_task.done():
                failure = self._run(self._shutdown())
                if failure is not None:
                    raise LifespanShutdownFailed(failure)
        finally:
            self._finish_root()
            self._loop.close()

    async def _shutdown(self):
        self._shutdown_requested.set_result(None)
        failure = await self._shutdown_outcome
        # The app's lifespan call returns after its answer; one that does not is cancelled, so
        # no task is left pending on the closed loop.
        task = self._lifespan_task
        await asyncio.wait((task,), timeout=1.0)
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))
        return failure

    def _end_lifespan(self) -> None:
        """After a failed startup: cancel the lifespan task if the app still waits in it."""
        task = self._lifespan_task
        if task is not None and not task.done():
            task.cancel()
            self._loop.run_until_complete(asyncio.wait((task,)))

    def __enter__(self) -> ASGIHandler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
