"""What the ASGI and WSGI adapters share (``aetherless.asgi``, ``aetherless.wsgi``).

Private: not part of the SDK's API.
"""

from __future__ import annotations

import types as _types

import aetherless as _api

__all__ = ["check_app", "fail", "log", "format_exc"]

_CO_ASYNC = 0x80 | 0x100 | 0x200  # CO_COROUTINE, CO_ITERABLE_COROUTINE, CO_ASYNC_GENERATOR
_CO_VARARGS = 0x04

_INTERNAL_ERROR = b'{"error":"internal error"}'


def log(message: str) -> None:
    from .runtime import _log

    _log(message)


def format_exc() -> str:
    from .runtime import _format_exc

    return _format_exc()


def fail(log, req, what: str):
    """Log ``what`` went wrong with ``req`` and return the runtime's own 500."""
    log(f"request {req.request_id} {req.method} {req.target}: {what}; answering 500")
    return _api.Response._exact(500, [(b"Content-Type", b"application/json")], _INTERNAL_ERROR)


def _call_signature(app):
    """``(code, bound)``: the code object ``app(...)`` runs and how many of its leading
    positional parameters are bound already (self), or ``(None, 0)`` where that is not plain
    to see (a class, a C function, a wrapper)."""
    fn, bound = app, 0
    if type(fn) is _types.MethodType:
        fn, bound = fn.__func__, 1
    elif type(fn) is not _types.FunctionType and not isinstance(fn, type):
        call = getattr(type(fn), "__call__", None)
        if type(call) is _types.FunctionType:
            fn, bound = call, 1
    return (fn.__code__, bound) if type(fn) is _types.FunctionType else (None, 0)


def check_app(app, kind: str) -> None:
    """TypeError, naming what ``app`` looks like, unless it can be a ``kind`` ("asgi" or "wsgi")
    app: callable, and not plainly the other kind (a WSGI app takes two positional arguments,
    environ and start_response, and is not async; an ASGI 3 app takes scope, receive, send)."""
    if not callable(app):
        article = "an ASGI" if kind == "asgi" else "a WSGI"
        raise TypeError(f"it is {type(app).__name__}, not {article} app (not callable)")
    code, bound = _call_signature(app)
    if code is None:
        return
    is_async = bool(code.co_flags & _CO_ASYNC)
    fixed = code.co_argcount - bound if not code.co_flags & _CO_VARARGS else None
    if kind == "asgi" and not is_async and fixed == 2:
        raise TypeError(
            "it looks like a WSGI app (it takes 2 arguments, environ and start_response), "
            "not an ASGI 3 app (scope, receive, send)"
        )
    if kind == "asgi" and not is_async and fixed == 1:
        raise TypeError(
            "it looks like an ASGI 2 app (it takes 1 argument, scope); ASGI 3 apps take scope, receive, send"
        )
    if kind == "wsgi" and is_async:
        raise TypeError("it is an async function: an ASGI app, not a WSGI app (environ, start_response)")
