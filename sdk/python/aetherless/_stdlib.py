"""Stand-ins for the few parts of the standard library the SDK needs at serve time.

Every module the runtime imports lands in every snapshot image and so in every restore (json,
re, functools, collections and urllib.parse together were ~2 MB of a 6 MB image; see the
"Handler SDKs" section of ARCHITECTURE.md and ``TestSnapshotFootprint`` in
tests/test_runtime.py).  So instead of

    json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    json.loads(body)
    urllib.parse.unquote(s), urllib.parse.unquote_to_bytes(b)
    inspect.iscoroutinefunction(fn)

the SDK calls ``json_bytes``, ``json_loads``, ``unquote``, ``unquote_to_bytes`` and
``iscoroutinefunction`` from
here, which give the same results with modules the interpreter has loaded at start-up and
json's C accelerator ``_json``.  Where that is not enough (no accelerator, input the fast
path does not handle) they import the real module, so results and errors are its own;
tests/test_protocol.py compares them with the standard library.

Private: not part of the SDK's API.
"""

from __future__ import annotations

# Only modules the interpreter has loaded at start-up, or small C ones: `_json` is json's C
# accelerator (CPython).
import _json as _cjson
import sys as _sys
import types as _types

__all__ = ["json_bytes", "json_loads", "unquote", "unquote_to_bytes", "iscoroutinefunction"]

# --------------------------------------------------------------------------- json


def _json_default(o):
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def _make_json_encoder(ascii: bool):
    """``json.dumps(obj, ensure_ascii=ascii, separators=(",", ":"), allow_nan=False)`` with
    json's C encoder, made once (json.dumps makes one per call: ~3x slower for small objects)
    and without importing json. No circular-reference check (a cycle ends in RecursionError).
    Where the C encoder is missing or misbehaves, json's own."""
    try:
        encode_str = _cjson.encode_basestring_ascii if ascii else _cjson.encode_basestring
        enc = _cjson.make_encoder(None, _json_default, encode_str, None, ":", ",", False, False, False)
        join = "".join

        def encode(obj) -> str:
            return join(enc(obj, 0))

        expected = '{"a":[1,2.5,true,null,"\\u00e9\\n"],"3":{}}' if ascii else '{"a":[1,2.5,true,null,"\u00e9\\n"],"3":{}}'
        if encode({"a": [1, 2.5, True, None, "\u00e9\n"], 3: {}}) == expected:
            return encode
    except Exception:  # pragma: no cover - no C accelerator
        pass
    import json  # pragma: no cover

    return json.JSONEncoder(ensure_ascii=ascii, separators=(",", ":"), allow_nan=False).encode  # pragma: no cover


_JSON = _make_json_encoder(ascii=False)
_JSON_ASCII = _make_json_encoder(ascii=True)


def json_bytes(obj) -> bytes:
    """``json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)`` as UTF-8;
    a str with lone surrogates (not encodable as UTF-8) is \\u-escaped instead."""
    s = _JSON(obj)
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: \u-escape them instead
        return _JSON_ASCII(obj).encode("ascii")


class _ScanContext:
    """The settings json's C scanner reads from a JSONDecoder: json.loads' defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


try:
    _scan = _cjson.make_scanner(_ScanContext())
except Exception:  # pragma: no cover - no C accelerator
    _scan = None

_JSON_WHITESPACE = " \t\n\r"


def json_loads(body: bytes):
    """``json.loads(body)`` with json's C scanner, without importing json for valid UTF-8
    bodies. Anything else (UTF-16/32, a byte-order mark, invalid JSON) takes json.loads itself,
    so values and errors are json's own: the C scanner reports syntax errors through the
    json.decoder module only when that is loaded."""
    head = body[:4]
    if _scan is not None and 0 not in head and head[:1] not in (b"\xef", b"\xfe", b"\xff"):
        try:
            s = body.decode("utf-8", "surrogatepass")
            idx = len(s) - len(s.lstrip(_JSON_WHITESPACE))
            obj, end = _scan(s, idx)
            if not s[end:].strip(_JSON_WHITESPACE):
                return obj
        except Exception:
            pass
    import json

    return json.loads(body)


# --------------------------------------------------------------------------- urllib.parse

_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def unquote(s: str) -> str:
    """``urllib.parse.unquote(s)`` (%-escapes decoded as UTF-8, errors replaced), without
    importing urllib.parse: each run of ASCII characters is decoded on its own, other
    characters are kept."""
    if "%" not in s:
        return s
    if s.isascii():
        return _percent_decode(s)
    pieces = []
    start, n = 0, len(s)
    while start < n:
        end = start
        ascii_run = s[start].isascii()
        while end < n and s[end].isascii() == ascii_run:
            end += 1
        pieces.append(_percent_decode(s[start:end]) if ascii_run else s[start:end])
        start = end
    return "".join(pieces)


def _percent_decode(ascii_text: str) -> str:
    return unquote_to_bytes(ascii_text.encode("ascii")).decode("utf-8", "replace")


def unquote_to_bytes(data: bytes) -> bytes:
    """``urllib.parse.unquote_to_bytes(data)``: %-escapes decoded, other bytes kept."""
    if b"%" not in data:
        return data
    bits = data.split(b"%")
    out = [bits[0]]
    for bit in bits[1:]:
        if len(bit) >= 2 and bit[0] in _HEX_DIGITS and bit[1] in _HEX_DIGITS:
            out.append(bytes((int(bit[:2], 16),)))
            out.append(bit[2:])
        else:
            out.append(b"%")
            out.append(bit)
    return b"".join(out)


# --------------------------------------------------------------------------- inspect


def iscoroutinefunction(fn) -> bool:
    """``inspect.iscoroutinefunction(fn)`` without importing ``inspect`` (about 0.5 MB of
    modules that every snapshot image, and so every restore, would carry): bound methods and
    ``functools.partial`` are unwrapped and the code object's CO_COROUTINE flag read. If the
    program has imported ``inspect`` itself, it answers (it also knows its own markers)."""
    inspect = _sys.modules.get("inspect")
    if inspect is not None:
        return inspect.iscoroutinefunction(fn)
    while True:
        functools = _sys.modules.get("functools")  # no partial exists before functools is loaded
        if isinstance(fn, _types.MethodType):
            fn = fn.__func__
        elif functools is not None and isinstance(fn, functools.partial):
            fn = fn.func
        else:
            break
    return isinstance(fn, _types.FunctionType) and bool(fn.__code__.co_flags & 0x80)  # CO_COROUTINE
