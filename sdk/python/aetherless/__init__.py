"""Aetherless Python SDK: write a handler, the runtime serves it over shared memory.

    import aetherless

    @aetherless.handler
    def handle(req):
        return {"hello": req.query.get("name", "world")}

The orchestrator runs the equivalent of ``python3 -m aetherless handler.py`` (see
``aetherless.runtime`` and docs/handler-protocol.md).  What a handler returns
becomes the response:

    dict / list        -> 200, JSON, Content-Type: application/json
    str                -> 200, UTF-8, Content-Type: text/plain; charset=utf-8
    bytes / bytearray  -> 200, Content-Type: application/octet-stream
    None               -> 204, no body
    Response(...)      -> as given
    raise HTTPError(status, message) -> that status, {"error": message}
    any other exception -> 500, {"error": "internal error"}, traceback on stderr

Standard library only.
"""

from __future__ import annotations

# Only modules the interpreter has loaded at start-up, or small C ones: every module imported
# here lands in every snapshot image and so in every restore (json, re, functools,
# collections and urllib.parse together were ~2 MB of a 6 MB image). `_collections_abc` is
# the module `collections.abc` re-exports; `_stdlib` has what this module would otherwise
# take from json, urllib.parse and inspect.
import _collections_abc
import _thread
import sys as _sys

_Mapping = _collections_abc.Mapping

from ._stdlib import (
    iscoroutinefunction as _is_async_def,
    json_bytes as _json_bytes,
    json_loads as _json_loads,
    unquote as _unquote,
)
from .protocol import CT_BYTES, CT_JSON, CT_TEXT, ProtocolError, encode_header_block as _encode_header_block

__all__ = [
    "handler",
    "Request",
    "Response",
    "Headers",
    "HTTPError",
    "HandlerRegistrationError",
    "ProtocolError",
    "to_response",
    "parse_query",
    "registered_handlers",
    "log",
]

# The major version is the handler protocol version the SDK speaks (protocol.VERSION,
# docs/handler-protocol.md); minor and patch count the SDK's own changes.
__version__ = "1.1.0"

# --------------------------------------------------------------------------- logging

# The request each serving thread is handling (set by the runtime around the handler call).
_serving = _thread._local()


def log(*parts) -> None:
    """Writes one line to the function's log (stderr: ``aether logs ID``), prefixed with
    ``request_id=ID`` of the request this thread is serving, so ``aether logs ID --request ID``
    finds every line a request wrote."""
    text = " ".join(str(part) for part in parts).replace("\n", " ")
    request = getattr(_serving, "request", None)
    prefix = f"request_id={request.request_id} " if request is not None else ""
    _sys.stderr.write(prefix + text + "\n")


# --------------------------------------------------------------------------- registration

# module name -> handler function.  One handler per module; the runtime
# requires exactly one in the whole process.
_handlers: dict[str, object] = {}


class HandlerRegistrationError(ValueError):
    """``@aetherless.handler`` used on two different functions of one module."""


def handler(fn=None):
    """Register ``fn`` as the module's request handler and return it unchanged.

    Usable as ``@aetherless.handler`` or ``@aetherless.handler()``.  A module
    registering a second, different function is an error
    (``HandlerRegistrationError``, a ValueError);
    re-registering the same qualified name (a module reload) replaces it."""
    if fn is None:
        return handler
    if not callable(fn):
        raise TypeError(
            f"@aetherless.handler decorates a function taking one Request, not {type(fn).__name__}"
        )
    if _is_async_def(fn):
        raise TypeError(
            f"@aetherless.handler: {getattr(fn, '__qualname__', fn)!s} is 'async def'; "
            "handlers are plain functions (the runtime calls them on worker threads)"
        )
    module = getattr(fn, "__module__", None) or "?"
    prev = _handlers.get(module)
    if prev is not None and prev is not fn and _qualname(prev) != _qualname(fn):
        raise HandlerRegistrationError(
            f"@aetherless.handler used twice in module {module!r}: {_qualname(prev)} is already "
            f"the handler, cannot also register {_qualname(fn)} (one handler per function)"
        )
    _handlers[module] = fn
    return fn


def _qualname(fn) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def registered_handlers() -> dict:
    """A copy of ``{module name: handler}``."""
    return dict(_handlers)


# --------------------------------------------------------------------------- errors


class HTTPError(Exception):
    """Raise from a handler to answer ``status`` with ``{"error": message}`` as JSON."""

    def __init__(self, status: int, message: str | None = None, headers=None):
        _check_status(status)
        if message is None:
            message = _reason(status)
        self.status = status
        self.message = str(message)
        self.headers = headers
        super().__init__(status, self.message)

    def __str__(self) -> str:
        return f"{self.status} {self.message}"

    def to_response(self) -> Response:
        return Response(self.status, self.headers, {"error": self.message})


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _check_status(status) -> None:
    if type(status) is not int or not 100 <= status <= 599:
        raise ValueError(f"HTTP status must be an int in 100...599, not {status!r}")


# --------------------------------------------------------------------------- headers


class Headers(_Mapping):
    """Read-only, case-insensitive view of HTTP headers.

    ``h["content-type"]``, ``h.get("Content-Type")``, ``"HOST" in h`` ignore case.
    Iteration yields each distinct name once, spelled as first sent, in order.
    A name sent several times maps to its values joined by ``", "`` (``"; "``
    for Cookie); ``get_all(name)`` gives the separate values and ``raw()``
    every ``(name, value)`` pair as sent."""

    __slots__ = ("_pairs", "_index")

    def __init__(self, headers=()):
        if isinstance(headers, _Mapping):
            headers = headers.items()
        pairs = []
        index: dict[str, list] = {}
        for name, value in headers:
            if type(name) is not str:
                name = _to_str(name)
            if type(value) is not str:
                value = _to_str(value)
            pairs.append((name, value))
            key = name.lower()
            entry = index.get(key)
            if entry is None:
                index[key] = [name, value]
            else:
                entry.append(value)
        self._pairs = pairs
        self._index = index

    def __getitem__(self, name: str) -> str:
        entry = self._index.get(name.lower()) if type(name) is str else None
        if entry is None:
            raise KeyError(name)
        if len(entry) == 2:
            return entry[1]
        sep = "; " if name.lower() == "cookie" else ", "
        return sep.join(entry[1:])

    def __contains__(self, name) -> bool:
        return type(name) is str and name.lower() in self._index

    def __iter__(self):
        return (entry[0] for entry in self._index.values())

    def __len__(self) -> int:
        return len(self._index)

    def get_all(self, name: str) -> list:
        entry = self._index.get(name.lower())
        return [] if entry is None else entry[1:]

    def raw(self) -> list:
        return list(self._pairs)

    def __repr__(self) -> str:
        return f"Headers({self._pairs!r})"


def _to_str(x) -> str:
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x).decode("utf-8", "replace")
    return str(x)


def _to_bytes(x) -> bytes:
    if type(x) is bytes:
        return x
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, (bytearray, memoryview)):
        return bytes(x)
    return str(x).encode("utf-8")


# --------------------------------------------------------------------------- request


def parse_query(qs: str) -> tuple[dict, dict]:
    """Parse a query string exactly like ``urllib.parse.parse_qs(qs, keep_blank_values=True)``
    (``&``-separated, ``+`` is a space, %-escapes decoded as UTF-8 with replacement).

    Returns ``({name: [values]}, {name: first value})``; about 3x faster than
    parse_qs for the short queries of typical requests."""
    all_: dict = {}
    first: dict = {}
    for field in qs.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "+" in name:
            name = name.replace("+", " ")
        if "%" in name:
            name = _unquote(name)
        if value:
            if "+" in value:
                value = value.replace("+", " ")
            if "%" in value:
                value = _unquote(value)
        values = all_.get(name)
        if values is None:
            all_[name] = [value]
            first[name] = value
        else:
            values.append(value)
    return all_, first


class Request:
    """One HTTP request as the handler sees it.

    Attributes:
      method       "GET", "POST", ...
      target       the request target as sent ("/a%20b?x=1"), not decoded
      raw_path     target before "?", not decoded
      path         raw_path percent-decoded (UTF-8)
      query_string target after "?" ("" if none)
      query        {name: first value}, parsed like a form (``+`` is a space)
      query_all    {name: [values]}
      headers      ``Headers``: case-insensitive, read-only
      raw_headers  [(name: bytes, value: bytes)] as received
      body         bytes
      request_id   the request's id: its W3C trace id (the ``x-request-id`` header the
                   orchestrator sets, also on the response); the ring message's id when
                   there is no such header (a Request made in a test)
      traceparent  the W3C ``traceparent`` the request came with, or the one the
                   orchestrator started for it (None outside the orchestrator)
      message_id   the ring message's id
    Methods: ``json()`` (invalid JSON -> HTTPError 400), ``text()``.
    Path, query and headers are parsed on first use."""

    __slots__ = (
        "method",
        "target",
        "body",
        "raw_headers",
        "message_id",
        "_headers",
        "_query_all",
        "_query",
    )

    def __init__(self, method: str = "GET", target: str = "/", headers=None, body=b"", *, request_id: int = 0):
        self.method = method if type(method) is str else _to_str(method)
        self.target = target if type(target) is str else _to_str(target)
        if headers is None:
            raw = []
        else:
            if isinstance(headers, _Mapping):
                headers = headers.items()
            raw = [(_to_bytes(n), _to_bytes(v)) for n, v in headers]
        self.raw_headers = raw
        self.body = _to_bytes(body) if body else b""
        self.message_id = request_id
        self._headers = None
        self._query_all = None
        self._query = None

    @classmethod
    def _from_wire(cls, request_id: int, method: bytes, target: bytes, raw_headers: list, body: bytes):
        self = cls.__new__(cls)
        self.message_id = request_id
        self.method = method.decode("latin-1")
        self.target = target.decode("utf-8", "replace")
        self.raw_headers = raw_headers
        self.body = body
        self._headers = None
        self._query_all = None
        self._query = None
        return self

    # -- identity

    @property
    def request_id(self):
        return self.headers.get("x-request-id") or self.message_id

    @property
    def traceparent(self):
        return self.headers.get("traceparent")

    # -- target

    @property
    def raw_path(self) -> str:
        t = self.target
        i = t.find("?")
        return t if i < 0 else t[:i]

    @property
    def path(self) -> str:
        return _unquote(self.raw_path)

    @property
    def query_string(self) -> str:
        t = self.target
        i = t.find("?")
        return "" if i < 0 else t[i + 1 :]

    @property
    def query_all(self) -> dict:
        q = self._query_all
        if q is None:
            self._parse_query()
            q = self._query_all
        return q

    @property
    def query(self) -> dict:
        q = self._query
        if q is None:
            self._parse_query()
            q = self._query
        return q

    def _parse_query(self) -> None:
        t = self.target
        i = t.find("?")
        if i < 0 or i == len(t) - 1:
            self._query_all, self._query = {}, {}
        else:
            self._query_all, self._query = parse_query(t[i + 1 :])

    # -- headers and body

    @property
    def headers(self) -> Headers:
        h = self._headers
        if h is None:
            h = self._headers = Headers(self.raw_headers)
        return h

    def json(self):
        """The body parsed as JSON; raises HTTPError(400, "invalid JSON body: ...")."""
        if not self.body:
            raise HTTPError(400, "invalid JSON body: the body is empty")
        try:
            return _json_loads(self.body)
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            raise HTTPError(400, f"invalid JSON body: {e}") from None

    def text(self, encoding: str = "utf-8") -> str:
        """The body decoded; raises HTTPError(400, ...) if it is not valid ``encoding``."""
        try:
            return self.body.decode(encoding)
        except UnicodeDecodeError as e:
            raise HTTPError(400, f"request body is not valid {encoding}: {e}") from None

    def __repr__(self) -> str:
        return f"<Request {self.request_id} {self.method} {self.target!r} body={len(self.body)} bytes>"


# --------------------------------------------------------------------------- response

# RFC 9110 token characters for names.
_TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_TOKEN_CHARS = frozenset(_TOKEN)
_TOKEN_BYTES = frozenset(_TOKEN.encode("ascii"))
# What a value may not hold: CR, LF and NUL (header injection) for a Response; the ASGI and WSGI
# adapters refuse every control character but tab, as the gateway does (HeaderSyntax.swift),
# so an app's bad header is their 500, not the gateway's 502 and a killed instance.
_CR_LF_NUL = b"\r\n\x00"
_CONTROL_BUT_TAB = bytes(b for b in range(32) if b != 9) + b"\x7f"


def _check_header(name, value, forbidden: bytes = _CR_LF_NUL) -> None:
    """ValueError unless ``name`` (str or bytes) is an HTTP token and ``value`` (str or bytes)
    has none of the ``forbidden`` bytes."""
    if not name or not (_TOKEN_CHARS if type(name) is str else _TOKEN_BYTES).issuperset(name):
        raise ValueError(f"invalid response header name {name!r}")
    raw = value.encode("utf-8", "surrogatepass") if type(value) is str else value
    if len(raw.translate(None, forbidden)) != len(raw):
        what = "a CR, LF or NUL" if forbidden is _CR_LF_NUL else "a control character (CR, LF, NUL, ...)"
        raise ValueError(f"response header {name!r} has {what} in its value {value!r}")


class Response:
    """An HTTP response.  ``body`` may be bytes, str (UTF-8), dict or list (JSON).

    A Content-Type is added when none is given and the body is not empty:
    application/json for dict/list, text/plain; charset=utf-8 for str,
    application/octet-stream for bytes.  ``headers`` is a mapping or an
    iterable of ``(name, value)`` pairs (use pairs to repeat a name, e.g.
    Set-Cookie); it is stored as a list of ``(str, str)`` pairs.  The
    orchestrator sets Content-Length and Connection itself (a handler's own
    Content-Length, Transfer-Encoding and Connection are dropped)."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int = 200, headers=None, body=b""):
        _check_status(status)
        if headers is None:
            hdrs = []
        else:
            if isinstance(headers, _Mapping):
                headers = headers.items()
            hdrs = [
                (n if type(n) is str else _to_str(n), v if type(v) is str else _to_str(v))
                for n, v in headers
            ]
        t = type(body)
        if t is bytes:
            ctype = CT_BYTES
        elif t is str:
            body = body.encode("utf-8")
            ctype = CT_TEXT
        elif t is dict or t is list or isinstance(body, (dict, list)):
            body = _json_bytes(body)
            ctype = CT_JSON
        elif body is None:
            body = b""
            ctype = None
        elif isinstance(body, (bytes, bytearray, memoryview)):
            body = bytes(body)
            ctype = CT_BYTES
        elif isinstance(body, str):
            body = str(body).encode("utf-8")
            ctype = CT_TEXT
        else:
            raise TypeError(
                f"Response body must be bytes, str, dict, list or None, not {type(body).__name__}"
            )
        if body and ctype is not None:
            for n, _ in hdrs:
                if n.lower() == "content-type":
                    break
            else:
                hdrs.append(("Content-Type", ctype))
        self.status = status
        self.headers = hdrs
        self.body = body

    @classmethod
    def _exact(cls, status: int, headers: list, body: bytes) -> Response:
        """A Response of exactly these parts, no Content-Type added and nothing converted: what
        the ASGI and WSGI adapters build (``headers`` may hold ``(bytes, bytes)`` pairs, which
        ``header_block`` takes as they are) and what ``aetherless.testing`` decodes."""
        self = cls.__new__(cls)
        self.status = status
        self.headers = headers
        self.body = body
        return self

    def header_block(self) -> tuple[int, bytes]:
        """Validate the headers and encode them: ``(header_count, block)``.

        Raises ValueError for a name that is not an HTTP token or a value containing CR, LF
        or NUL (header injection)."""
        pairs = []
        for name, value in self.headers:
            if type(name) is not str and type(name) is not bytes:
                name = _to_str(name)
            if type(value) is not str and type(value) is not bytes:
                value = _to_str(value)
            _check_header(name, value)
            pairs.append((name, value))
        return _encode_header_block(pairs)

    def json(self):
        """The body parsed as JSON (for tests of a handler: see ``aetherless.testing``)."""
        return _json_loads(self.body)

    def text(self, encoding: str = "utf-8") -> str:
        """The body decoded (for tests of a handler: see ``aetherless.testing``)."""
        return self.body.decode(encoding)

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.headers!r}, <{len(self.body)} bytes>)"


def to_response(result) -> Response:
    """Turn what a handler returned into a Response (rules in the module docstring)."""
    if isinstance(result, Response):
        return result
    if result is None:
        return Response(204)
    if isinstance(result, (dict, list, str, bytes, bytearray, memoryview)):
        return Response(200, None, result)
    raise TypeError(
        f"handler returned {type(result).__name__}; return dict, list, str, bytes, None "
        "or aetherless.Response"
    )
