"""Test a handler, or an ASGI or WSGI app, without an orchestrator.

    from aetherless import testing
    from handler import handle            # the module with your @aetherless.handler

    resp = testing.call(handle, "GET", "/hello?name=x")
    assert resp.status == 200 and resp.json() == {"hello": "x"}

    from main import app                  # a FastAPI / Starlette app
    with testing.asgi(app) as fn:         # lifespan startup now, shutdown at the end
        resp = testing.call(fn, "POST", "/items", json={"name": "a"})

``call`` goes the runtime's own way: the request is encoded as the message the orchestrator
writes on the ring, decoded, handed to the handler, and its answer encoded and decoded again,
so status mapping, error answers (500 with the traceback on stderr, HTTPError) and header
validation are the runtime's. ``asgi`` and ``wsgi`` give the adapters the runtime serves an
app through (``aetherless.asgi``, ``aetherless.wsgi``).
"""

from __future__ import annotations

import aetherless as _api

from . import protocol as _proto
from ._stdlib import json_bytes as _json_bytes

__all__ = ["call", "asgi", "wsgi"]

_UNSET = object()
_next_id = [0]


def call(handler, method: str = "GET", target: str = "/", headers=None, body=b"", *, json=_UNSET,
         max_payload: int | None = None, log=None) -> _api.Response:
    """Call ``handler`` (a function taking a Request, or ``asgi(app)`` / ``wsgi(app)``) with one
    request and return the Response the runtime would write.

    ``target`` is the path with its query, as sent (``/a%20b?x=1``); ``headers`` a mapping or
    ``(name, value)`` pairs (str or bytes; none are added, not even Host); ``body`` bytes or
    str (UTF-8); ``json`` a value to send as the JSON body (with ``Content-Type:
    application/json`` unless ``headers`` has one). ``max_payload``: the ring's, for a response
    too large for it (default: no limit). ``log``: where the runtime's error lines go (default:
    stderr, as in an instance).

    The Response's headers are ``(str, str)`` pairs in the order sent; ``resp.json()`` and
    ``resp.text()`` read its body."""
    from .runtime import _log, make_dispatcher

    if headers is None:
        pairs = []
    elif hasattr(headers, "items"):
        pairs = list(headers.items())
    else:
        pairs = list(headers)
    if json is not _UNSET:
        if body:
            raise ValueError("testing.call: give body or json, not both")
        body = _json_bytes(json)
        if not any(_str(name).lower() == "content-type" for name, _ in pairs):
            pairs.append(("Content-Type", "application/json"))
    _next_id[0] += 1
    rid = _next_id[0]
    limit = (1 << 62) if max_payload is None else max_payload
    dispatch = make_dispatcher(handler, limit, _log if log is None else log)
    out = dispatch(_proto.encode_request(rid, method, target, pairs, body))
    m = _proto.decode_response(out)
    # The gateway reads header names and values as UTF-8 text.
    headers = [(n.decode("utf-8", "replace"), v.decode("utf-8", "replace")) for n, v in m.headers]
    return _api.Response._exact(m.status, headers, m.body)


def _str(x) -> str:
    return x.decode("latin-1") if isinstance(x, (bytes, bytearray)) else str(x)


def asgi(app, *, concurrency: int = 1, log=None):
    """``aetherless.asgi.ASGIHandler(app)``: the app's lifespan startup runs now
    (``LifespanStartupFailed`` if it fails); use it in a ``with`` block, or call ``close()``,
    to run the shutdown."""
    from .asgi import ASGIHandler

    return ASGIHandler(app, concurrency=concurrency, **({} if log is None else {"log": log}))


def wsgi(app, *, concurrency: int = 1, log=None):
    """``aetherless.wsgi.WSGIHandler(app)``: the handler serving a WSGI app."""
    from .wsgi import WSGIHandler

    return WSGIHandler(app, concurrency=concurrency, **({} if log is None else {"log": log}))
