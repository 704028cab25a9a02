"""Request and response messages on the rings, handler protocol version 1.

The byte layout is docs/handler-protocol.md ("Messages on the rings"); all
integers little-endian:

  request  (ring 0): kind=1 u8, version=1 u8, reserved u16, header_count u32,
                     request_id u64, method_len u32, target_len u32,
                     headers_len u32, body_len u32 | method target headers body
  response (ring 1): kind=2 u8, version=1 u8, status u16, header_count u32,
                     request_id u64, headers_len u32, body_len u32 | headers body
  header block:      header_count x [name_len u32][value_len u32][name][value]

Decoders check every length against the payload size and raise ProtocolError
(a ValueError) with a message naming the offending field and values.  Encoders
raise ProtocolError for a value that does not fit its field.

``response_encoders`` makes the runtime's response encoders: what a handler
returned, a Response, an error; dict, list, str, bytes and None take a fast path
with pre-built Content-Type header blocks.

Standard library only.
"""

from __future__ import annotations

import struct
from _collections_abc import Iterable  # what collections.abc re-exports, loaded at start-up

from ._stdlib import json_bytes as _json_bytes

__all__ = [
    "VERSION",
    "KIND_REQUEST",
    "KIND_RESPONSE",
    "REQUEST_HEADER_SIZE",
    "RESPONSE_HEADER_SIZE",
    "ProtocolError",
    "RequestMessage",
    "ResponseMessage",
    "encode_request",
    "decode_request",
    "decode_request_tuple",
    "encode_response",
    "decode_response",
    "encode_header_block",
    "decode_header_block",
    "peek_request_id",
    "CT_JSON",
    "CT_TEXT",
    "CT_BYTES",
    "response_encoders",
]

VERSION = 1
KIND_REQUEST = 1
KIND_RESPONSE = 2

# kind, version, reserved, header_count, request_id, method_len, target_len, headers_len, body_len
_REQ = struct.Struct("<BBHIQIIII")
# kind, version, status, header_count, request_id, headers_len, body_len
_RESP = struct.Struct("<BBHIQII")
# name_len, value_len
_ENTRY = struct.Struct("<II")
_U64 = struct.Struct("<Q")

REQUEST_HEADER_SIZE = _REQ.size  # 32
RESPONSE_HEADER_SIZE = _RESP.size  # 24
assert REQUEST_HEADER_SIZE == 32 and RESPONSE_HEADER_SIZE == 24

_U32_MAX = 0xFFFFFFFF
_U64_MAX = 0xFFFFFFFFFFFFFFFF


class ProtocolError(ValueError):
    """A message that does not follow handler protocol version 1."""


def _record(name: str, fields: str) -> type:
    """A namedtuple-like class: a tuple whose items are also read by name. Neither
    collections.namedtuple nor typing.NamedTuple: each module imported here lands in every
    snapshot image (collections with its dependencies is ~0.5 MB)."""
    names = tuple(fields.split())

    def __new__(cls, *args, **kwargs):
        values = args + tuple(kwargs.pop(n) for n in names[len(args) :] if n in kwargs)
        if kwargs or len(values) != len(names):
            raise TypeError(f"{name}() takes the fields {', '.join(names)}")
        return tuple.__new__(cls, values)

    def __repr__(self) -> str:
        return f"{name}({', '.join(f'{n}={v!r}' for n, v in zip(names, self))})"

    namespace = {"__slots__": (), "__new__": __new__, "__repr__": __repr__, "_fields": names}
    for index, field in enumerate(names):
        namespace[field] = property(lambda self, index=index: self[index])
    return type(name, (tuple,), namespace)


# Fields: request_id: int, method: bytes, target: bytes, status: int, body: bytes,
# headers: [(name: bytes, value: bytes)] in wire order.
RequestMessage = _record("RequestMessage", "request_id method target headers body")
ResponseMessage = _record("ResponseMessage", "request_id status headers body")


# --------------------------------------------------------------------------- header block


def _as_bytes(x, what: str) -> bytes:
    t = type(x)
    if t is bytes:
        return x
    if t is str:
        return x.encode("utf-8")
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    if isinstance(x, str):
        return str(x).encode("utf-8")
    raise ProtocolError(f"{what} must be str or bytes, not {type(x).__name__}")


def encode_header_block(headers: Iterable) -> tuple[int, bytes]:
    """Encode ``(name, value)`` pairs (str, encoded as UTF-8, or bytes).

    Returns ``(header_count, block)``.  No HTTP-level validation here: this
    layer moves bytes (see ``aetherless.Response`` for the checks on names and
    values a handler returns)."""
    parts = []
    append = parts.append
    pack = _ENTRY.pack
    count = 0
    for name, value in headers:
        nb = name if type(name) is bytes else _as_bytes(name, "header name")
        vb = value if type(value) is bytes else _as_bytes(value, "header value")
        if len(nb) > _U32_MAX or len(vb) > _U32_MAX:  # pragma: no cover - 4 GiB header
            raise ProtocolError("header name or value longer than 2^32 - 1 bytes")
        append(pack(len(nb), len(vb)))
        append(nb)
        append(vb)
        count += 1
    if count > _U32_MAX:  # pragma: no cover
        raise ProtocolError(f"{count} headers do not fit header_count (u32)")
    return count, b"".join(parts)


def decode_header_block(buf: bytes, start: int, end: int, count: int) -> list:
    """Decode exactly ``count`` entries filling ``buf[start:end]`` exactly.

    Returns ``[(name: bytes, value: bytes)]``; raises ProtocolError."""
    size = end - start
    if count * 8 > size:
        raise ProtocolError(
            f"header_count {count} needs at least {count * 8} bytes but headers_len is {size}"
        )
    headers = []
    append = headers.append
    unpack = _ENTRY.unpack_from
    p = start
    for i in range(count):
        if p + 8 > end:
            raise ProtocolError(
                f"header {i} of {count}: its 8-byte length prefix overruns the header block "
                f"({end - p} bytes left)"
            )
        nl, vl = unpack(buf, p)
        q = p + 8 + nl
        r = q + vl
        if r > end:
            raise ProtocolError(
                f"header {i} of {count}: name_len {nl} + value_len {vl} overrun the header "
                f"block ({end - p - 8} bytes left)"
            )
        append((buf[p + 8 : q], buf[q:r]))
        p = r
    if p != end:
        raise ProtocolError(
            f"header block has {end - p} bytes left over after its header_count {count} entries "
            f"(headers_len {size})"
        )
    return headers


# --------------------------------------------------------------------------- request


def encode_request(request_id: int, method, target, headers: Iterable = (), body=b"") -> bytes:
    """Encode a request message (what the orchestrator writes on ring 0)."""
    m = _as_bytes(method, "method")
    t = _as_bytes(target, "target")
    b = _as_bytes(body, "body")
    count, block = encode_header_block(headers)
    if not 0 <= request_id <= _U64_MAX:
        raise ProtocolError(f"request_id {request_id} does not fit a u64")
    for what, n in (("method", len(m)), ("target", len(t)), ("header block", len(block)), ("body", len(b))):
        if n > _U32_MAX:
            raise ProtocolError(f"{what} of {n} bytes does not fit its u32 length field")
    return b"".join(
        (_REQ.pack(KIND_REQUEST, VERSION, 0, count, request_id, len(m), len(t), len(block), len(b)), m, t, block, b)
    )


def decode_request(payload) -> RequestMessage:
    """Decode one ring-0 payload.  Raises ProtocolError on any failed check.

    The reserved field is not checked (writers set it to 0)."""
    return RequestMessage(*decode_request_tuple(payload))


def decode_request_tuple(payload, _unpack=_REQ.unpack_from, _entry=_ENTRY.unpack_from):
    """``decode_request`` returning a plain tuple (the runtime's hot path)."""
    if type(payload) is not bytes:
        payload = bytes(payload)
    n = len(payload)
    if n < 32:
        raise ProtocolError(f"request message of {n} bytes is shorter than its 32-byte header")
    kind, version, _reserved, count, rid, ml, tl, hl, bl = _unpack(payload)
    if kind != 1 or version != 1:
        if kind != KIND_REQUEST:
            raise ProtocolError(f"request message has kind {kind}, expected {KIND_REQUEST}")
        raise ProtocolError(f"request message has version {version}, expected {VERSION}")
    t0 = 32 + ml
    h0 = t0 + tl
    b0 = h0 + hl
    if b0 + bl != n:
        raise ProtocolError(
            f"request lengths 32 + method_len {ml} + target_len {tl} + headers_len {hl} + "
            f"body_len {bl} = {b0 + bl} do not match the payload size {n}"
        )
    headers = []
    if count:
        # Inlined decode_header_block (same checks, same messages).
        if count * 8 > hl:
            raise ProtocolError(
                f"header_count {count} needs at least {count * 8} bytes but headers_len is {hl}"
            )
        append = headers.append
        p = h0
        for i in range(count):
            if p + 8 > b0:
                raise ProtocolError(
                    f"header {i} of {count}: its 8-byte length prefix overruns the header block "
                    f"({b0 - p} bytes left)"
                )
            nl, vl = _entry(payload, p)
            p += 8
            q = p + nl
            r = q + vl
            if r > b0:
                raise ProtocolError(
                    f"header {i} of {count}: name_len {nl} + value_len {vl} overrun the header "
                    f"block ({b0 - p} bytes left)"
                )
            append((payload[p:q], payload[q:r]))
            p = r
        if p != b0:
            raise ProtocolError(
                f"header block has {b0 - p} bytes left over after its header_count {count} entries "
                f"(headers_len {hl})"
            )
    elif hl:
        raise ProtocolError(f"header_count 0 but headers_len {hl}")
    return rid, payload[32:t0], payload[t0:h0], headers, (payload[b0:] if bl else b"")


def peek_request_id(payload) -> int | None:
    """The request_id of a (possibly malformed) request payload, or None if it is under 16 bytes."""
    if len(payload) < 16:
        return None
    return _U64.unpack_from(payload, 8)[0]


# --------------------------------------------------------------------------- response


def _response_prefix(request_id: int, status: int, count: int, headers_len: int, body_len: int) -> bytes:
    try:
        return _RESP.pack(KIND_RESPONSE, VERSION, status, count, request_id, headers_len, body_len)
    except struct.error as e:
        raise ProtocolError(
            f"response fields out of range (request_id {request_id}, status {status}, "
            f"header_count {count}, headers_len {headers_len}, body_len {body_len}): {e}"
        ) from None


def encode_response(request_id: int, status: int, headers: Iterable = (), body=b"") -> bytes:
    """Encode a response message (what a runtime writes on ring 1)."""
    if type(status) is not int or not 100 <= status <= 599:
        raise ProtocolError(f"status {status!r} is not an integer in 100...599")
    b = _as_bytes(body, "body")
    count, block = encode_header_block(headers)
    return b"".join((_response_prefix(request_id, status, count, len(block), len(b)), block, b))


def decode_response(payload) -> ResponseMessage:
    """Decode one ring-1 payload.  Raises ProtocolError on any failed check."""
    if type(payload) is not bytes:
        payload = bytes(payload)
    n = len(payload)
    if n < 24:
        raise ProtocolError(f"response message of {n} bytes is shorter than its 24-byte header")
    kind, version, status, count, rid, hl, bl = _RESP.unpack_from(payload)
    if kind != KIND_RESPONSE:
        raise ProtocolError(f"response message has kind {kind}, expected {KIND_RESPONSE}")
    if version != VERSION:
        raise ProtocolError(f"response message has version {version}, expected {VERSION}")
    if not 100 <= status <= 599:
        raise ProtocolError(f"response status {status} is not in 100...599")
    if 24 + hl + bl != n:
        raise ProtocolError(
            f"response lengths 24 + headers_len {hl} + body_len {bl} = {24 + hl + bl} "
            f"do not match the payload size {n}"
        )
    b0 = 24 + hl
    if count:
        headers = decode_header_block(payload, 24, b0, count)
    elif hl:
        raise ProtocolError(f"header_count 0 but headers_len {hl}")
    else:
        headers = []
    return ResponseMessage(rid, status, headers, payload[b0:] if bl else b"")


# --------------------------------------------------------------------------- the runtime's responses

# The Content-Type a response gets for a dict or list (JSON), str (UTF-8) or bytes body when it
# has none (aetherless.Response, which re-exports these names).
CT_JSON = "application/json"
CT_TEXT = "text/plain; charset=utf-8"
CT_BYTES = "application/octet-stream"

# The header blocks of a response whose only header is one of those Content-Types.
_JSON_BLOCK = encode_header_block([("Content-Type", CT_JSON)])[1]
_TEXT_BLOCK = encode_header_block([("Content-Type", CT_TEXT)])[1]
_BYTES_BLOCK = encode_header_block([("Content-Type", CT_BYTES)])[1]


def response_encoders(Response, to_response):
    """The runtime's response encoders: ``(encode_result, encode_response, encode_error)``.

    ``Response`` and ``to_response`` are ``aetherless.Response`` and ``aetherless.to_response``
    (passed in: the API module imports this one).

    ``encode_result(request_id, result) -> bytes``: the response message for what a handler
    returned (the rules of the aetherless module docstring).  A dict, list, str, bytes or None
    (exactly those types) is packed at once with a pre-built Content-Type header block, as
    ``to_response(result)`` would have it; anything else goes through ``to_response`` and
    ``encode_response`` (TypeError for a result that is not a response).

    ``encode_response(request_id, resp) -> bytes``: a Response (its status checked and its
    headers validated: ValueError; a body assigned after construction converted as the
    constructor would).

    ``encode_error(request_id, status, message) -> bytes``: ``status`` with the JSON body
    ``{"error": message}``.

    The runtime's hot path: everything the encoders use is a closure variable."""
    pack = _RESP.pack
    json_bytes = _json_bytes
    join = b"".join
    json_block, text_block, bytes_block = _JSON_BLOCK, _TEXT_BLOCK, _BYTES_BLOCK
    jl, tl, bl = len(json_block), len(text_block), len(bytes_block)

    def encode_response(rid: int, resp) -> bytes:
        status = resp.status
        if type(status) is not int or not 100 <= status <= 599:
            raise ValueError(f"Response.status must be an int in 100...599, not {status!r}")
        count, hblock = resp.header_block()
        body = resp.body
        if type(body) is not bytes:
            body = Response(200, None, body).body
        return join((pack(2, 1, status, count, rid, len(hblock), len(body)), hblock, body))

    def encode_result(rid: int, result) -> bytes:
        t = type(result)
        if t is dict or t is list:
            body = json_bytes(result)
            return join((pack(2, 1, 200, 1, rid, jl, len(body)), json_block, body))
        if t is str:
            if result:
                body = result.encode("utf-8")
                return join((pack(2, 1, 200, 1, rid, tl, len(body)), text_block, body))
            return pack(2, 1, 200, 0, rid, 0, 0)
        if t is bytes:
            if result:
                return join((pack(2, 1, 200, 1, rid, bl, len(result)), bytes_block, result))
            return pack(2, 1, 200, 0, rid, 0, 0)
        if result is None:
            return pack(2, 1, 204, 0, rid, 0, 0)
        return encode_response(rid, to_response(result))

    def encode_error(rid: int, status: int, message: str) -> bytes:
        body = json_bytes({"error": message})
        return join((pack(2, 1, status, 1, rid, jl, len(body)), json_block, body))

    return encode_result, encode_response, encode_error
