"""WSGI apps (Flask, Django, ...) served by the SDK runtime, fed straight from the ring (PEP 3333).

    AETHER_APP=wsgi:app python3 -m aetherless main.py      # what the orchestrator runs

``WSGIHandler(app)`` is a handler like any other: ``handler(Request) -> Response``, served by
the runtime's one serving loop (with concurrency N > 1 on its N worker threads, so
``wsgi.multithread`` is true). No HTTP server runs in the process; each request becomes one
environ (docs/handler-protocol.md, "ASGI and WSGI apps", says how every key maps). The body
the app returns or writes is buffered and answered once its iterable is exhausted and closed.

Errors: an exception from the app (or from iterating its result) is a 500
``{"error": "internal error"}`` with the traceback on stderr; one from the result's
``close()`` after a complete body is logged and the body answered. A status outside
200...599, a header that is not a latin-1 str or not valid HTTP, a body chunk that is not
bytes: 500, logged.
"""

from __future__ import annotations

import io
import sys

import aetherless as _api

from ._app import check_app, fail, format_exc as _format_exc, log as _log
from ._stdlib import unquote_to_bytes as _unquote_to_bytes

__all__ = ["WSGIHandler"]


def _host_and_port(host: str, default_port: str) -> tuple[str, str]:
    """SERVER_NAME and SERVER_PORT from a Host header ("name", "name:port", "[v6]:port")."""
    if host.startswith("["):
        end = host.find("]")
        if end > 0:
            port = host[end + 2 :] if host[end + 1 : end + 2] == ":" else ""
            return host[: end + 1], port if port.isdigit() else default_port
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name, port
    return host, default_port


class WSGIHandler:
    """A WSGI app as a handler: ``WSGIHandler(app)(request) -> Response``.

    ``concurrency`` is the function's (``wsgi.multithread`` is ``concurrency > 1``);
    ``errors`` the ``wsgi.errors`` stream (default: stderr, the instance's log);
    ``port`` the SERVER_PORT when the request has no Host header (default: the function's
    public port, AETHER_PUBLIC_PORT, else "80")."""

    def __init__(self, app, *, concurrency: int = 1, log=_log, errors=None, port: str | None = None):
        check_app(app, "wsgi")
        self.app = app
        self.log = log
        if port is None:
            from os import environ

            port = environ.get("AETHER_PUBLIC_PORT") or "80"
        self.port = port
        # What every environ starts with; PEP 3333's SERVER_NAME/SERVER_PORT come from the
        # Host header (this process listens on no socket of its own, as gunicorn does for a
        # Unix socket).
        self._base = {
            "SCRIPT_NAME": "",
            "SERVER_PROTOCOL": "HTTP/1.1",  # the request message does not carry the version
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr if errors is None else errors,
            "wsgi.multithread": concurrency > 1,
            "wsgi.multiprocess": True,  # a function may run several instances
            "wsgi.run_once": False,
            # The body is all there: wsgi.input may be read to its end (a de-facto extension
            # Werkzeug reads, for requests that came chunked and have no Content-Length).
            "wsgi.input_terminated": True,
        }

    def environ(self, req) -> dict:
        """The PEP 3333 environ for ``req``."""
        target = req.target
        i = target.find("?")
        raw_path, query = (target, "") if i < 0 else (target[:i], target[i + 1 :])
        env = self._base.copy()
        env["REQUEST_METHOD"] = req.method
        # Native strings are the request's bytes decoded as latin-1 (PEP 3333).
        env["PATH_INFO"] = _unquote_to_bytes(raw_path.encode("utf-8")).decode("latin-1")
        env["QUERY_STRING"] = query if query.isascii() else query.encode("utf-8").decode("latin-1")
        for name, value in req.raw_headers:
            if b"_" in name:
                # X_Forwarded_For would become the same key as X-Forwarded-For: dropped, as
                # gunicorn and nginx do, so a client cannot pass one off as the other.
                continue
            key = name.decode("latin-1").upper().replace("-", "_")
            if key != "CONTENT_TYPE" and key != "CONTENT_LENGTH":
                key = "HTTP_" + key
            text = value.decode("latin-1")
            previous = env.get(key)
            if previous is None:
                env[key] = text
            else:
                # Repeated headers joined as RFC 9110 allows; Cookie's crumbs with "; " (RFC 6265).
                env[key] = previous + ("; " if key == "HTTP_COOKIE" else ", ") + text
        body = req.body
        if body or "CONTENT_LENGTH" in env:
            # The body as it arrived (the gateway has read a chunked one whole).
            env["CONTENT_LENGTH"] = str(len(body))
        env["wsgi.input"] = io.BytesIO(body)
        host = env.get("HTTP_HOST")
        if host:
            env["SERVER_NAME"], env["SERVER_PORT"] = _host_and_port(host, "80")
        else:
            env["SERVER_NAME"], env["SERVER_PORT"] = "localhost", self.port
        return env

    def __call__(self, req) -> _api.Response:
        status_line = None
        headers = None
        headers_sent = False  # PEP 3333: once the first non-empty body chunk exists
        parts = []

        def start_response(status, response_headers, exc_info=None):
            nonlocal status_line, headers
            if exc_info is not None:
                try:
                    if headers_sent:
                        raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None
            elif status_line is not None:
                raise RuntimeError("start_response() called a second time without exc_info (PEP 3333)")
            status_line = status
            headers = response_headers
            return write

        def write(data):
            nonlocal headers_sent
            if status_line is None:
                raise RuntimeError("write() called before start_response() (PEP 3333)")
            if data:
                parts.append(data)
                headers_sent = True

        try:
            result = self.app(self.environ(req), start_response)
        except Exception:
            return self._fail(req, f"WSGI app failed\n{_format_exc().rstrip()}")
        failure = None
        try:
            for chunk in result:
                if chunk:
                    if status_line is None:
                        raise RuntimeError("WSGI app produced its body before calling start_response()")
                    parts.append(chunk)
                    headers_sent = True
        except Exception:
            failure = f"WSGI app failed\n{_format_exc().rstrip()}"
        close = getattr(result, "close", None)
        if close is not None:  # always, even after a failure (PEP 3333)
            try:
                close()
            except Exception:
                if failure is not None:
                    failure += f"\nand then its close() failed\n{_format_exc().rstrip()}"
                else:
                    self.log(
                        f"request {req.request_id} {req.method} {req.target}: the WSGI app's close() "
                        f"failed after a complete body; answering it\n{_format_exc().rstrip()}"
                    )
        if failure is not None:
            return self._fail(req, failure)
        if status_line is None:
            return self._fail(req, "WSGI app returned without calling start_response()")
        return self._response(req, status_line, headers, parts)

    def _response(self, req, status_line, headers, parts) -> _api.Response:
        # "200 OK": three digits, then a space and the reason phrase (which the gateway
        # replaces with its own).
        if (
            type(status_line) is not str
            or len(status_line) < 3
            or not status_line[:3].isdigit()
            or not status_line[:3].isascii()
            or (len(status_line) > 3 and status_line[3] != " ")
        ):
            return self._fail(
                req, f"WSGI app gave start_response() the status {status_line!r}; expected a str such as '200 OK'"
            )
        status = int(status_line[:3])
        if not 200 <= status <= 599:
            return self._fail(
                req, f"WSGI app answered status {status}: the gateway sends final statuses only (200...599)"
            )
        pairs = []
        try:
            for name, value in headers:
                if type(name) is not str or type(value) is not str:
                    return self._fail(
                        req,
                        f"WSGI app sent the response header {name!r}: {value!r}; PEP 3333 header "
                        "names and values are str",
                    )
                try:
                    pair = (name.encode("latin-1"), value.encode("latin-1"))
                except UnicodeEncodeError:
                    return self._fail(
                        req,
                        f"WSGI app sent the response header {name!r}: {value!r}, which is not latin-1 "
                        "(PEP 3333: encode other text first, e.g. RFC 8187 for parameters)",
                    )
                _api._check_header(*pair, _api._CONTROL_BUT_TAB)
                pairs.append(pair)
        except (TypeError, ValueError) as e:  # not a list of pairs, or not valid HTTP
            return self._fail(req, f"WSGI app sent an invalid response header: {e}")
        for chunk in parts:
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                return self._fail(
                    req, f"WSGI app produced a body chunk of type {type(chunk).__name__}; bodies are bytes"
                )
        return _api.Response._exact(status, pairs, b"".join(parts))

    def _fail(self, req, what: str) -> _api.Response:
        return fail(self.log, req, what)
