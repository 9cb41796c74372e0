"""Frames in and out of the socket service (PROTOCOL.md §2): decode_request and the encoders."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatcluster.domain import errors
from chatcluster.domain.errors import BadRequest, ChatError, Forbidden, RateLimited
from chatcluster.domain.model import ForwardedFrom, Message
from chatcluster.protocol.errors import HTTP_STATUS
from chatcluster.protocol.frames import (
    DEFAULT_MAX_FRAME_BYTES,
    FrameError,
    decode_request,
    encode_error,
    encode_event,
    encode_ok,
)
from chatcluster.protocol.ops import OPS

# One valid payload per op, with only the fields the contract requires.
MINIMAL: dict[str, dict[str, Any]] = {
    "conversation.create": {"type": "group", "members": ["bob"]},
    "conversation.list": {},
    "conversation.get": {"conversation_id": "c1"},
    "conversation.update": {"conversation_id": "c1", "title": "Team"},
    "conversation.add_members": {"conversation_id": "c1", "members": ["bob"]},
    "conversation.remove_members": {"conversation_id": "c1", "members": ["bob"]},
    "conversation.leave": {"conversation_id": "c1"},
    "conversation.set_role": {"conversation_id": "c1", "user_id": "bob", "role": "admin"},
    "conversation.sync": {"conversation_id": "c1", "after_event_seq": 0},
    "message.send": {"conversation_id": "c1", "client_msg_id": "k1", "text": "hi"},
    "message.edit": {"message_id": "m1", "text": "hi"},
    "message.delete": {"message_id": "m1"},
    "message.forward": {"message_id": "m1", "conversation_id": "c2", "client_msg_id": "k2"},
    "reaction.add": {"message_id": "m1", "emoji": "👍"},
    "reaction.remove": {"message_id": "m1", "emoji": "👍"},
    "message.flag": {"message_id": "m1"},
    "message.history": {"conversation_id": "c1"},
    "receipt.delivered": {"conversation_id": "c1", "seq": 3},
    "receipt.read": {"conversation_id": "c1", "seq": 3},
    "typing.start": {"conversation_id": "c1"},
    "typing.stop": {"conversation_id": "c1"},
    "presence.get": {"users": ["bob"]},
    "user.get": {"users": ["bob"]},
    "ping": {},
}

CONTRACT_OPS = {
    "conversation.create", "conversation.list", "conversation.get", "conversation.update",
    "conversation.add_members", "conversation.remove_members", "conversation.leave",
    "conversation.set_role", "conversation.sync", "message.send", "message.edit",
    "message.delete", "message.forward", "reaction.add", "reaction.remove", "message.history",
    "receipt.delivered", "receipt.read", "typing.start", "typing.stop", "presence.get",
    "user.get", "ping",
}
# Ops beyond PROTOCOL.md's (it may be extended, never broken), each documented in
# docs/protocol.md.
EXTENSION_OPS = {"message.flag"}

CONTRACT_ERROR_CODES = {
    "bad_request", "unauthorized", "forbidden", "not_found", "conflict", "too_large",
    "rate_limited", "unavailable", "internal",
}


def frame(op: str, data: Any = None, request_id: Any = "r1", **extra: Any) -> bytes:
    body: dict[str, Any] = {"id": request_id, "op": op, **extra}
    if data is not None:
        body["data"] = data
    return json.dumps(body).encode()


def refused(raw: bytes | str, **kwargs: Any) -> FrameError:
    with pytest.raises(FrameError) as err:
        decode_request(raw, **kwargs)
    return err.value


# -- valid requests ----------------------------------------------------------------------------


def test_every_op_of_the_contract_is_known() -> None:
    assert set(OPS) == CONTRACT_OPS | EXTENSION_OPS
    assert set(MINIMAL) == set(OPS)


@pytest.mark.parametrize("op", sorted(MINIMAL))
def test_every_op_decodes_a_minimal_payload(op: str) -> None:
    request = decode_request(frame(op, MINIMAL[op]))

    assert request.id == "r1"
    assert request.op == op
    assert isinstance(request.data, OPS[op])
    for field, value in MINIMAL[op].items():
        assert getattr(request.data, field) == value


def test_a_text_frame_decodes_like_bytes() -> None:
    raw = frame("message.send", MINIMAL["message.send"])
    assert decode_request(raw.decode()) == decode_request(raw)


def test_data_may_be_left_out_for_ops_without_required_fields() -> None:
    request = decode_request(b'{"id": "r1", "op": "ping"}')
    assert request.op == "ping"


def test_a_request_without_id_decodes_with_id_none() -> None:
    assert decode_request(b'{"op": "ping", "data": {}}').id is None


def test_defaults_of_the_contract() -> None:
    sync = decode_request(frame("conversation.sync", MINIMAL["conversation.sync"])).data
    history = decode_request(frame("message.history", MINIMAL["message.history"])).data
    send = decode_request(frame("message.send", MINIMAL["message.send"])).data

    assert sync.limit == 100  # type: ignore[attr-defined]
    assert history.limit == 50  # type: ignore[attr-defined]
    assert history.before_seq is None  # type: ignore[attr-defined]
    assert history.after_seq is None  # type: ignore[attr-defined]
    assert send.reply_to is None  # type: ignore[attr-defined]
    assert send.attachments == []  # type: ignore[attr-defined]


def test_unknown_fields_are_ignored() -> None:
    data = {**MINIMAL["message.send"], "silent": True, "future": {"nested": [1, 2]}}
    request = decode_request(frame("message.send", data, v=2, trace="abc"))
    assert request.data.text == "hi"  # type: ignore[attr-defined]


# -- malformed frames --------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"id": "r1", "op": "ping"', b"\xff\xfe"])
def test_malformed_json_is_bad_request_with_id_null(raw: bytes) -> None:
    err = refused(raw)
    assert err.request_id is None
    assert err.error.code == "bad_request"
    assert isinstance(err.error, BadRequest)


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"ping"', b"42", b"null", b"true"])
def test_a_frame_that_is_not_an_object_is_bad_request(raw: bytes) -> None:
    err = refused(raw)
    assert err.request_id is None
    assert err.error.code == "bad_request"
    assert "object" in err.error.message


@pytest.mark.parametrize("request_id", [5, 1.5, True, ["r1"], {"x": 1}])
def test_an_id_that_is_not_a_string_is_refused_and_not_echoed(request_id: Any) -> None:
    err = refused(frame("ping", {}, request_id=request_id))
    assert err.request_id is None
    assert err.error.code == "bad_request"
    assert err.error.message.startswith("id:")


def test_an_unknown_op_is_bad_request_naming_the_op() -> None:
    err = refused(frame("message.explode", {}, request_id="r7"))
    assert err.request_id == "r7"
    assert err.error.code == "bad_request"
    assert "message.explode" in err.error.message


def test_a_missing_op_is_bad_request_with_the_id_echoed() -> None:
    err = refused(b'{"id": "r2", "data": {}}')
    assert err.request_id == "r2"
    assert err.error.message.startswith("op:")


def test_an_op_that_is_not_a_string_is_bad_request_with_the_id_echoed() -> None:
    err = refused(b'{"id": "r2", "op": 5}')
    assert err.request_id == "r2"
    assert err.error.message.startswith("op:")


@pytest.mark.parametrize("data", ["text", 5, [], None])
def test_data_that_is_not_an_object_is_bad_request(data: Any) -> None:
    raw = json.dumps({"id": "r3", "op": "message.delete", "data": data}).encode()
    err = refused(raw)
    assert err.request_id == "r3"
    assert err.error.code == "bad_request"
    assert err.error.message.startswith("data")


@pytest.mark.parametrize(
    ("op", "field"),
    [
        ("message.send", "conversation_id"),
        ("message.send", "client_msg_id"),
        ("message.send", "text"),
        ("conversation.create", "type"),
        ("conversation.set_role", "role"),
        ("conversation.sync", "after_event_seq"),
        ("receipt.read", "seq"),
        ("presence.get", "users"),
    ],
)
def test_a_missing_field_is_named_in_the_message(op: str, field: str) -> None:
    data = {k: v for k, v in MINIMAL[op].items() if k != field}
    err = refused(frame(op, data, request_id="r4"))
    assert err.request_id == "r4"
    assert err.error.code == "bad_request"
    assert err.error.message.startswith(f"data.{field}:")
    assert "missing" in err.error.message


@pytest.mark.parametrize(
    ("op", "change", "path"),
    [
        ("conversation.create", {"members": ["bob", 7]}, "data.members[1]"),
        ("conversation.create", {"type": "channel"}, "data.type"),
        ("conversation.create", {"title": 5}, "data.title"),
        ("message.send", {"text": 12}, "data.text"),
        ("message.send", {"conversation_id": ""}, "data.conversation_id"),
        ("message.send", {"attachments": [{}, "x"]}, "data.attachments[1]"),
        ("conversation.set_role", {"role": "owner"}, "data.role"),
        ("conversation.sync", {"after_event_seq": "3"}, "data.after_event_seq"),
        ("presence.get", {"users": "bob"}, "data.users"),
    ],
)
def test_a_wrong_type_names_the_field_path(op: str, change: dict[str, Any], path: str) -> None:
    err = refused(frame(op, {**MINIMAL[op], **change}, request_id="r5"))
    assert err.request_id == "r5"
    assert err.error.code == "bad_request"
    assert err.error.message.startswith(f"{path}:")


# -- limits ------------------------------------------------------------------------------------


def test_conversation_sync_limit_is_at_most_500() -> None:
    data = {**MINIMAL["conversation.sync"], "limit": 500}
    assert decode_request(frame("conversation.sync", data)).data.limit == 500  # type: ignore[attr-defined]

    err = refused(frame("conversation.sync", {**data, "limit": 501}))
    assert err.error.code == "bad_request"
    assert err.error.message.startswith("data.limit:")


def test_message_history_limit_is_at_most_100() -> None:
    data = {**MINIMAL["message.history"], "limit": 100}
    assert decode_request(frame("message.history", data)).data.limit == 100  # type: ignore[attr-defined]

    err = refused(frame("message.history", {**data, "limit": 101}))
    assert err.error.message.startswith("data.limit:")


@pytest.mark.parametrize("op", ["conversation.sync", "message.history", "conversation.list"])
def test_a_limit_below_1_is_refused(op: str) -> None:
    err = refused(frame(op, {**MINIMAL[op], "limit": 0}))
    assert err.error.message.startswith("data.limit:")


@pytest.mark.parametrize("op", ["presence.get", "user.get"])
def test_user_lookups_take_at_most_100_users(op: str) -> None:
    users = [f"u{i}" for i in range(100)]
    assert decode_request(frame(op, {"users": users})).data.users == users  # type: ignore[attr-defined]

    err = refused(frame(op, {"users": [*users, "u100"]}))
    assert err.error.code == "bad_request"
    assert err.error.message.startswith("data.users:")


@pytest.mark.parametrize(
    ("op", "field"),
    [
        ("receipt.read", "seq"),
        ("receipt.delivered", "seq"),
        ("conversation.sync", "after_event_seq"),
        ("message.history", "before_seq"),
        ("message.history", "after_seq"),
    ],
)
def test_a_negative_seq_is_refused(op: str, field: str) -> None:
    err = refused(frame(op, {**MINIMAL[op], field: -1}))
    assert err.error.code == "bad_request"
    assert err.error.message.startswith(f"data.{field}:")


def sized_send(size: int, request_id: str = "big") -> bytes:
    """A valid message.send frame of exactly ``size`` bytes."""
    empty = frame("message.send", {**MINIMAL["message.send"], "text": ""}, request_id=request_id)
    raw = frame("message.send", {**MINIMAL["message.send"], "text": "x" * (size - len(empty))},
                request_id=request_id)
    assert len(raw) == size
    return raw


def test_a_frame_of_exactly_64_kib_is_accepted() -> None:
    assert DEFAULT_MAX_FRAME_BYTES == 64 * 1024
    assert decode_request(sized_send(64 * 1024)).id == "big"


def test_a_frame_over_64_kib_is_too_large_with_the_id_recovered() -> None:
    err = refused(sized_send(64 * 1024 + 1))
    assert err.request_id == "big"
    assert err.error.code == "too_large"


def test_a_too_large_frame_that_is_not_json_has_id_null() -> None:
    err = refused(b"{" + b"x" * (64 * 1024))
    assert err.request_id is None
    assert err.error.code == "too_large"


def test_the_frame_limit_counts_utf8_bytes_of_text_frames() -> None:
    # 40,000 characters, 80,000 bytes.
    raw = frame("message.send", {**MINIMAL["message.send"], "text": "é" * 40_000},
                request_id="r8").decode()
    raw = raw.replace("\\u00e9", "é")
    assert len(raw) < 64 * 1024 < len(raw.encode())

    err = refused(raw)
    assert err.error.code == "too_large"
    assert err.request_id == "r8"


def test_the_frame_limit_is_configurable() -> None:
    raw = sized_send(1000, request_id="r9")
    assert decode_request(raw, max_frame_bytes=1000).id == "r9"
    err = refused(raw, max_frame_bytes=999)
    assert err.error.code == "too_large"
    assert err.request_id == "r9"


# -- frames out --------------------------------------------------------------------------------


def test_encode_ok_is_id_ok_true_and_data() -> None:
    out = json.loads(encode_ok("r1", {"server_time": "2026-01-01T00:00:00.000Z"}))
    assert out == {"id": "r1", "ok": True, "data": {"server_time": "2026-01-01T00:00:00.000Z"}}


def test_encode_ok_with_empty_data_and_no_id() -> None:
    assert json.loads(encode_ok(None, {})) == {"id": None, "ok": True, "data": {}}


def test_encode_error_is_id_ok_false_and_code_and_message() -> None:
    out = json.loads(encode_error("r1", Forbidden("only the sender may edit a message")))
    assert out == {
        "id": "r1",
        "ok": False,
        "error": {"code": "forbidden", "message": "only the sender may edit a message"},
    }


def test_encode_error_for_an_unreadable_frame_has_id_null() -> None:
    out = json.loads(encode_error(None, BadRequest("malformed JSON")))
    assert out == {"id": None, "ok": False,
                   "error": {"code": "bad_request", "message": "malformed JSON"}}


def test_rate_limited_carries_retry_after_ms() -> None:
    out = json.loads(encode_error("r1", RateLimited("slow down", retry_after_ms=250)))
    assert out == {
        "id": "r1",
        "ok": False,
        "error": {"code": "rate_limited", "message": "slow down", "retry_after_ms": 250},
    }


def all_error_types() -> list[type[ChatError]]:
    found: list[type[ChatError]] = [ChatError]
    for t in found:
        found.extend(t.__subclasses__())
    return found


@pytest.mark.parametrize("error_type", [t for t in all_error_types() if t is not RateLimited],
                         ids=lambda t: t.__name__)
def test_other_errors_have_no_retry_after_ms(error_type: type[ChatError]) -> None:
    out = json.loads(encode_error("r1", error_type("no")))
    assert set(out["error"]) == {"code", "message"}
    assert out["error"]["code"] in CONTRACT_ERROR_CODES


def test_every_error_code_is_in_the_contract_and_has_an_http_status() -> None:
    codes = {t.code for t in all_error_types()}
    assert codes <= CONTRACT_ERROR_CODES
    assert set(HTTP_STATUS) == CONTRACT_ERROR_CODES
    assert errors.RateLimited.code == "rate_limited"


def test_encode_event_is_event_and_data() -> None:
    out = json.loads(encode_event("typing", {"conversation_id": "c1", "user_id": "bob",
                                             "typing": True}))
    assert out == {"event": "typing",
                   "data": {"conversation_id": "c1", "user_id": "bob", "typing": True}}


def test_encode_event_carries_event_seq_when_given() -> None:
    out = json.loads(encode_event("message.new", {"message": {"id": "m1"}}, event_seq=42))
    assert out == {"event": "message.new", "data": {"message": {"id": "m1"}}, "event_seq": 42}


def test_a_message_encodes_as_the_contracts_message_object() -> None:
    msg = Message(id="m1", conversation_id="c1", seq=3, sender_id="bob", text="hi",
                  client_msg_id="k1", created_at="2026-01-01T00:00:00.000Z",
                  forwarded_from=ForwardedFrom(message_id="m0", conversation_id="c0",
                                               sender_id="carol"))
    out = json.loads(encode_ok("r1", {"message": msg}))["data"]["message"]

    assert set(out) == {
        "id", "conversation_id", "seq", "sender_id", "text", "client_msg_id", "created_at",
        "edited_at", "deleted", "reactions", "reply_to", "forwarded_from", "attachments",
    }
    assert out["edited_at"] is None
    assert out["reply_to"] is None
    assert out["deleted"] is False
    assert out["reactions"] == {}
    assert out["attachments"] == []
    assert out["forwarded_from"] == {"message_id": "m0", "conversation_id": "c0",
                                     "sender_id": "carol"}
