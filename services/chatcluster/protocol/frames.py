"""Frames in and out: the one place where bytes become typed requests.

``decode_request`` never raises anything but ``FrameError``, which carries the request id
when one could be read (PROTOCOL.md: "id null if none could be read").
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from chatcluster.domain.errors import BadRequest, ChatError, RateLimited, TooLarge
from chatcluster.protocol.ops import OPS, Op

DEFAULT_MAX_FRAME_BYTES = 64 * 1024  # soft limit: answered too_large, connection kept
HARD_MAX_FRAME_BYTES = 1024 * 1024  # hard limit: websockets closes with 1009 above it


class Envelope(msgspec.Struct):
    op: str
    id: str | None = None
    data: msgspec.Raw = msgspec.Raw(b"{}")


class _IdOnly(msgspec.Struct):
    id: Any = None


class Request(msgspec.Struct, frozen=True):
    id: str | None
    op: str
    data: Op


class FrameError(Exception):
    def __init__(self, request_id: str | None, error: ChatError) -> None:
        super().__init__(error.message)
        self.request_id = request_id
        self.error = error


_envelope_decoder = msgspec.json.Decoder(Envelope)
_id_decoder = msgspec.json.Decoder(_IdOnly)
_op_decoders = {name: msgspec.json.Decoder(t) for name, t in OPS.items()}
_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")


def _describe(exc: msgspec.ValidationError, prefix: str) -> str:
    """'Expected `int`, got `str` - at `$.limit`' -> 'data.limit: expected `int`, got `str`'."""
    m = _PATH.match(str(exc))
    assert m is not None
    msg, path = m["msg"], m["path"] or ""
    missing = _MISSING.match(msg)
    if missing:
        path = f"{path}.{missing['field']}"
        msg = "missing required field"
    where = f"{prefix}{path}" if prefix else path.lstrip(".")
    return f"{where}: {msg[:1].lower()}{msg[1:]}" if where else msg


def peek_request_id(frame: bytes | str) -> str | None:
    """The request's id if one can be read from a frame that is otherwise refused."""
    try:
        value = _id_decoder.decode(frame).id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return value if isinstance(value, str) else None


def decode_request(frame: bytes | str, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Request:
    size = len(frame) if isinstance(frame, bytes) else len(frame.encode())
    if size > max_frame_bytes:
        error = TooLarge(f"frame of {size} bytes; the limit is {max_frame_bytes}")
        raise FrameError(peek_request_id(frame), error)
    try:
        env = _envelope_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        raise FrameError(peek_request_id(frame), BadRequest(_describe(exc, ""))) from None
    except msgspec.DecodeError as exc:
        raise FrameError(None, BadRequest(f"malformed JSON: {exc}")) from None
    decoder = _op_decoders.get(env.op)
    if decoder is None:
        raise FrameError(env.id, BadRequest(f"op: unknown op {env.op!r}"))
    try:
        data = decoder.decode(env.data)
    except msgspec.ValidationError as exc:
        raise FrameError(env.id, BadRequest(_describe(exc, "data"))) from None
    except msgspec.DecodeError as exc:  # data is not an object, e.g. a string
        raise FrameError(env.id, BadRequest(f"data: {exc}")) from None
    return Request(id=env.id, op=env.op, data=data)


# -- out ---------------------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()


class _Ok(msgspec.Struct):
    id: str | None
    data: Any
    ok: bool = True


class _ErrorBody(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    retry_after_ms: int | None = None


class _Err(msgspec.Struct):
    id: str | None
    error: _ErrorBody
    ok: bool = False


class Event(msgspec.Struct, omit_defaults=True):
    event: str
    data: Any
    event_seq: int | None = None


def encode_ok(request_id: str | None, data: Any) -> bytes:
    return _encoder.encode(_Ok(request_id, data))


def encode_error(request_id: str | None, error: ChatError) -> bytes:
    retry = error.retry_after_ms if isinstance(error, RateLimited) else None
    return _encoder.encode(_Err(request_id, _ErrorBody(error.code, error.message, retry)))


def encode_event(name: str, data: Any, event_seq: int | None = None) -> bytes:
    return _encoder.encode(Event(name, data, event_seq))


def encode(value: Any) -> bytes:
    return _encoder.encode(value)
