"""The pure rules of conversations and messages (chatcluster.domain.rules).

Every rule takes a state, an actor and an input and returns a new state or raises a ChatError;
PROTOCOL.md §2 ("Operations", "Objects", "Guarantees") is the reference for what they must do.
"""

from __future__ import annotations

import itertools
import random

import pytest

from chatcluster.domain import rules
from chatcluster.domain.errors import BadRequest, Conflict, Forbidden, NotFound
from chatcluster.domain.model import ConversationState, ForwardedFrom, Message, MessageState
from chatcluster.domain.rules import MessageChange

NOW = "2026-01-01T00:00:00.000Z"


# -- builders ----------------------------------------------------------------------------------


def group(
    creator: str = "alice",
    members: tuple[str, ...] = ("bob", "carol", "dave"),
    title: str | None = "Team",
    event_seq: int = 1,
) -> ConversationState:
    return rules.new_conversation(
        conversation_id="c1", app_id="app", creator=creator, type="group",
        members=list(members), title=title, now=NOW, event_seq=event_seq,
    )


def group_with_admin() -> ConversationState:
    """alice owns; bob is an admin; carol and dave are plain members."""
    return rules.set_role(group(), "alice", "bob", "admin", 2)


def direct(a: str = "alice", b: str = "bob", event_seq: int = 1) -> ConversationState:
    return rules.new_conversation(
        conversation_id="d1", app_id="app", creator=a, type="direct",
        members=[b], title=None, now=NOW, event_seq=event_seq,
    )


def message(
    *, sender: str = "alice", conversation_id: str = "c1", message_id: str = "m1",
    text: str = "hello",
) -> Message:
    return Message(
        id=message_id, conversation_id=conversation_id, seq=1, sender_id=sender, text=text,
        client_msg_id="cm1", created_at=NOW, attachments=[{"kind": "image"}],
    )


def stored(msg: Message | None = None, event_seq: int = 1) -> MessageState:
    return MessageState(app_id="app", message=msg or message(), text_event_seq=event_seq,
                        last_event_seq=event_seq)


def edit(seq: int, text: str, actor: str = "alice") -> MessageChange:
    return MessageChange("edit", actor, seq, f"t{seq}", text=text)


def delete(seq: int, actor: str = "alice") -> MessageChange:
    return MessageChange("delete", actor, seq, f"t{seq}")


def react(seq: int, emoji: str, user: str) -> MessageChange:
    return MessageChange("reaction.add", user, seq, f"t{seq}", emoji=emoji)


def unreact(seq: int, emoji: str, user: str) -> MessageChange:
    return MessageChange("reaction.remove", user, seq, f"t{seq}", emoji=emoji)


def apply_all(state: MessageState, changes: list[MessageChange]) -> MessageState:
    for change in changes:
        state = rules.apply_change(state, change)
    return state


# -- direct conversations ----------------------------------------------------------------------


def test_direct_conversation_holds_the_creator_and_the_one_other_member() -> None:
    conv = direct("alice", "bob", event_seq=7)

    assert conv.type == "direct"
    assert conv.members == ["alice", "bob"]
    assert conv.title is None
    assert conv.owner is None
    assert conv.admins == []
    assert conv.created_at == NOW
    assert conv.version == 7
    assert conv.direct_key == rules.direct_key("alice", "bob")


@pytest.mark.parametrize("members", [["bob", "alice"], ["bob", "bob"], ["alice", "bob", "bob"]])
def test_direct_conversation_ignores_the_creator_and_repeats_in_members(
    members: list[str],
) -> None:
    conv = rules.new_conversation(conversation_id="d1", app_id="app", creator="alice",
                                  type="direct", members=members, title=None, now=NOW,
                                  event_seq=1)
    assert conv.members == ["alice", "bob"]


@pytest.mark.parametrize("members", [[], ["alice"], ["bob", "carol"]])
def test_direct_conversation_needs_exactly_one_other_member(members: list[str]) -> None:
    with pytest.raises(BadRequest) as err:
        rules.new_conversation(conversation_id="d1", app_id="app", creator="alice",
                               type="direct", members=members, title=None, now=NOW, event_seq=1)
    assert err.value.code == "bad_request"
    assert err.value.message.startswith("members:")


def test_direct_conversation_has_no_title() -> None:
    with pytest.raises(BadRequest) as err:
        rules.new_conversation(conversation_id="d1", app_id="app", creator="alice",
                               type="direct", members=["bob"], title="Us", now=NOW, event_seq=1)
    assert err.value.message.startswith("title:")


def test_direct_key_does_not_depend_on_who_creates_the_conversation() -> None:
    assert rules.direct_key("alice", "bob") == rules.direct_key("bob", "alice")
    assert direct("alice", "bob").direct_key == direct("bob", "alice").direct_key


def test_direct_key_tells_different_pairs_apart() -> None:
    assert rules.direct_key("alice", "bob") != rules.direct_key("alice", "carol")
    # A separator inside an id must not make two pairs collide.
    assert rules.direct_key("a|b", "c") != rules.direct_key("a", "b|c")


# -- groups ------------------------------------------------------------------------------------


def test_group_creator_is_owner_and_first_member_and_duplicates_are_removed() -> None:
    conv = group("alice", ("bob", "alice", "carol", "bob"), title="Team", event_seq=3)

    assert conv.type == "group"
    assert conv.members == ["alice", "bob", "carol"]
    assert conv.owner == "alice"
    assert conv.admins == []
    assert conv.title == "Team"
    assert conv.version == 3
    assert conv.direct_key is None


def test_group_may_start_with_the_creator_alone_and_without_title() -> None:
    conv = group("alice", (), title=None)
    assert conv.members == ["alice"]
    assert conv.title is None


def test_group_member_limit_counts_the_creator() -> None:
    limit = rules.MAX_GROUP_MEMBERS
    full = group("alice", tuple(f"u{i}" for i in range(limit - 1)))
    assert len(full.members) == limit

    with pytest.raises(BadRequest) as err:
        group("alice", tuple(f"u{i}" for i in range(limit)))
    assert err.value.message.startswith("members:")


def test_group_title_has_a_length_limit() -> None:
    assert group(title="t" * rules.MAX_TITLE_CHARS).title == "t" * rules.MAX_TITLE_CHARS
    with pytest.raises(BadRequest) as err:
        group(title="t" * (rules.MAX_TITLE_CHARS + 1))
    assert err.value.message.startswith("title:")


# -- membership --------------------------------------------------------------------------------


def test_require_member_returns_the_conversation_for_a_member() -> None:
    conv = group()
    assert rules.require_member(conv, "carol") is conv


def test_require_member_answers_not_found_for_a_non_member() -> None:
    with pytest.raises(NotFound) as err:
        rules.require_member(group(), "mallory")
    assert err.value.code == "not_found"


def test_require_member_answers_not_found_for_a_missing_conversation() -> None:
    with pytest.raises(NotFound):
        rules.require_member(None, "alice")


def test_a_non_member_cannot_tell_a_conversation_exists() -> None:
    """Same error type and message for a conversation that exists and one that does not."""
    with pytest.raises(NotFound) as exists:
        rules.require_member(group(), "mallory")
    with pytest.raises(NotFound) as missing:
        rules.require_member(None, "mallory")
    assert exists.value.message == missing.value.message


# -- set_title ---------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", ["alice", "bob"])
def test_owner_or_admin_sets_the_title(actor: str) -> None:
    before = group_with_admin()
    after = rules.set_title(before, actor, "New", 9)

    assert after.title == "New"
    assert after.version == 9
    assert before.title == "Team"  # rules are pure: the input is not changed


def test_plain_member_cannot_set_the_title() -> None:
    with pytest.raises(Forbidden) as err:
        rules.set_title(group_with_admin(), "carol", "New", 9)
    assert err.value.code == "forbidden"


def test_non_member_setting_the_title_gets_not_found() -> None:
    with pytest.raises(NotFound):
        rules.set_title(group_with_admin(), "mallory", "New", 9)


def test_direct_conversation_title_cannot_be_set() -> None:
    with pytest.raises(BadRequest):
        rules.set_title(direct(), "alice", "New", 9)


def test_set_title_checks_the_length() -> None:
    with pytest.raises(BadRequest):
        rules.set_title(group(), "alice", "t" * (rules.MAX_TITLE_CHARS + 1), 9)


# -- add_members -------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", ["alice", "bob"])
def test_owner_or_admin_adds_members_at_the_end_without_duplicates(actor: str) -> None:
    after = rules.add_members(group_with_admin(), actor, ["erin", "carol", "frank", "erin"], 5)

    assert after.members == ["alice", "bob", "carol", "dave", "erin", "frank"]
    assert after.version == 5
    assert after.owner == "alice"
    assert after.admins == ["bob"]


def test_plain_member_cannot_add_members() -> None:
    with pytest.raises(Forbidden):
        rules.add_members(group_with_admin(), "carol", ["erin"], 5)


def test_members_cannot_be_added_to_a_direct_conversation() -> None:
    with pytest.raises(BadRequest):
        rules.add_members(direct(), "alice", ["carol"], 5)


def test_add_members_respects_the_member_limit() -> None:
    limit = rules.MAX_GROUP_MEMBERS
    conv = group("alice", tuple(f"u{i}" for i in range(limit - 2)))  # limit - 1 members

    assert len(rules.add_members(conv, "alice", ["x", "u1"], 5).members) == limit
    with pytest.raises(BadRequest) as err:
        rules.add_members(conv, "alice", ["x", "y"], 5)
    assert err.value.message.startswith("members:")


# -- remove_members ----------------------------------------------------------------------------


def test_admin_removes_a_plain_member() -> None:
    after = rules.remove_members(group_with_admin(), "bob", ["carol"], 6)
    assert after.members == ["alice", "bob", "dave"]
    assert after.version == 6


def test_owner_removes_an_admin_and_the_admin_list_follows() -> None:
    after = rules.remove_members(group_with_admin(), "alice", ["bob"], 6)
    assert after.members == ["alice", "carol", "dave"]
    assert after.admins == []


def test_removing_people_who_are_not_members_changes_nothing_else() -> None:
    after = rules.remove_members(group_with_admin(), "alice", ["mallory", "dave"], 6)
    assert after.members == ["alice", "bob", "carol"]


def test_plain_member_cannot_remove_members() -> None:
    with pytest.raises(Forbidden):
        rules.remove_members(group_with_admin(), "carol", ["dave"], 6)


@pytest.mark.parametrize("actor", ["alice", "bob"])
def test_the_owner_cannot_be_removed(actor: str) -> None:
    with pytest.raises(Forbidden) as err:
        rules.remove_members(group_with_admin(), actor, ["alice"], 6)
    assert err.value.message.startswith("members:")


def test_only_the_owner_may_remove_an_admin() -> None:
    conv = rules.set_role(group_with_admin(), "alice", "carol", "admin", 3)
    with pytest.raises(Forbidden):
        rules.remove_members(conv, "bob", ["carol"], 6)


def test_removing_oneself_is_refused() -> None:
    with pytest.raises(BadRequest) as err:
        rules.remove_members(group_with_admin(), "bob", ["bob"], 6)
    assert "leave" in err.value.message


def test_members_cannot_be_removed_from_a_direct_conversation() -> None:
    with pytest.raises(BadRequest):
        rules.remove_members(direct(), "alice", ["bob"], 6)


# -- leave -------------------------------------------------------------------------------------


def test_plain_member_leaves() -> None:
    after = rules.leave(group_with_admin(), "carol", 8)
    assert after.members == ["alice", "bob", "dave"]
    assert after.owner == "alice"
    assert after.admins == ["bob"]
    assert after.version == 8


def test_admin_who_leaves_is_no_longer_an_admin() -> None:
    after = rules.leave(group_with_admin(), "bob", 8)
    assert after.members == ["alice", "carol", "dave"]
    assert after.admins == []


def test_owner_role_passes_to_the_oldest_remaining_member() -> None:
    conv = rules.add_members(group("alice", ("bob",)), "alice", ["carol"], 2)
    after = rules.leave(conv, "alice", 3)
    assert after.owner == "bob"
    assert after.members == ["bob", "carol"]


def test_an_admin_who_inherits_the_group_is_owner_not_admin() -> None:
    conv = rules.set_role(group("alice", ("bob", "carol")), "alice", "bob", "admin", 2)
    conv = rules.set_role(conv, "alice", "carol", "admin", 3)

    after = rules.leave(conv, "alice", 4)
    assert after.owner == "bob"
    assert after.admins == ["carol"]


def test_the_oldest_member_inherits_even_when_a_newer_one_is_admin() -> None:
    conv = rules.set_role(group("alice", ("bob", "carol")), "alice", "carol", "admin", 2)
    after = rules.leave(conv, "alice", 3)
    assert after.owner == "bob"
    assert after.admins == ["carol"]


def test_leaving_a_direct_conversation_is_refused() -> None:
    with pytest.raises(BadRequest):
        rules.leave(direct(), "alice", 3)


def test_a_non_member_cannot_leave() -> None:
    with pytest.raises(NotFound):
        rules.leave(group(), "mallory", 3)


# -- set_role ----------------------------------------------------------------------------------


def test_owner_makes_a_member_admin_and_back() -> None:
    conv = group()
    promoted = rules.set_role(conv, "alice", "carol", "admin", 4)
    assert promoted.admins == ["carol"]
    assert promoted.version == 4

    demoted = rules.set_role(promoted, "alice", "carol", "member", 5)
    assert demoted.admins == []
    assert demoted.version == 5


def test_making_an_admin_admin_again_keeps_one_entry() -> None:
    conv = rules.set_role(group_with_admin(), "alice", "bob", "admin", 4)
    assert conv.admins == ["bob"]


def test_demoting_a_plain_member_changes_nothing_but_the_version() -> None:
    conv = rules.set_role(group_with_admin(), "alice", "carol", "member", 4)
    assert conv.admins == ["bob"]
    assert conv.version == 4


@pytest.mark.parametrize("actor", ["bob", "carol"])
def test_only_the_owner_changes_roles(actor: str) -> None:
    with pytest.raises(Forbidden):
        rules.set_role(group_with_admin(), actor, "dave", "admin", 4)


def test_role_target_must_be_a_member() -> None:
    with pytest.raises(NotFound) as err:
        rules.set_role(group(), "alice", "mallory", "admin", 4)
    assert err.value.message.startswith("user_id:")


def test_the_owners_own_role_cannot_be_changed() -> None:
    with pytest.raises(BadRequest) as err:
        rules.set_role(group(), "alice", "alice", "member", 4)
    assert err.value.message.startswith("user_id:")


def test_a_direct_conversation_has_no_roles() -> None:
    with pytest.raises(BadRequest):
        rules.set_role(direct(), "alice", "bob", "admin", 4)


# -- text, emoji, attachments ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " ", "\n\t  "])
def test_empty_or_blank_text_is_refused(text: str) -> None:
    with pytest.raises(BadRequest) as err:
        rules.check_text(text)
    assert err.value.message.startswith("text:")


def test_text_of_4000_characters_is_accepted() -> None:
    rules.check_text("a" * 4000)
    rules.check_text("é" * 4000)  # characters, not bytes


def test_text_of_4001_characters_is_refused() -> None:
    with pytest.raises(BadRequest) as err:
        rules.check_text("a" * 4001)
    assert err.value.message.startswith("text:")
    assert "4000" in err.value.message


def test_text_errors_name_the_field_given() -> None:
    with pytest.raises(BadRequest) as err:
        rules.check_text("", field="data.text")
    assert err.value.message.startswith("data.text:")


@pytest.mark.parametrize("emoji", ["👍", "x", "x" * 32, ":party_parrot:"])
def test_an_emoji_is_any_string_of_1_to_32_characters(emoji: str) -> None:
    rules.check_emoji(emoji)


@pytest.mark.parametrize("emoji", ["", "x" * 33])
def test_emoji_outside_1_to_32_characters_is_refused(emoji: str) -> None:
    with pytest.raises(BadRequest) as err:
        rules.check_emoji(emoji)
    assert err.value.message.startswith("emoji:")


def test_at_most_10_attachments() -> None:
    rules.check_attachments([])
    rules.check_attachments([{"n": i} for i in range(10)])
    with pytest.raises(BadRequest) as err:
        rules.check_attachments([{"n": i} for i in range(11)])
    assert err.value.message.startswith("attachments:")


# -- new_message -------------------------------------------------------------------------------


def draft(**overrides: object) -> Message:
    args: dict[str, object] = {
        "message_id": "m9", "conversation": group(), "sender": "bob", "client_msg_id": "k1",
        "text": "hi", "now": NOW, "reply_to": None, "reply_to_id": None, "attachments": [],
    }
    args.update(overrides)
    return rules.new_message(**args)  # type: ignore[arg-type]


def test_new_message_is_a_draft_with_seq_0() -> None:
    msg = draft(attachments=[{"kind": "file"}])

    assert msg.id == "m9"
    assert msg.conversation_id == "c1"
    assert msg.seq == 0
    assert msg.sender_id == "bob"
    assert msg.text == "hi"
    assert msg.client_msg_id == "k1"
    assert msg.created_at == NOW
    assert msg.edited_at is None
    assert msg.deleted is False
    assert msg.reactions == {}
    assert msg.reply_to is None
    assert msg.forwarded_from is None
    assert msg.attachments == [{"kind": "file"}]


def test_a_non_member_cannot_send() -> None:
    with pytest.raises(NotFound):
        draft(sender="mallory")


def test_a_reply_names_a_message_of_the_same_conversation() -> None:
    original = message(message_id="m1", conversation_id="c1")
    msg = draft(reply_to=original, reply_to_id="m1")
    assert msg.reply_to == "m1"


def test_a_reply_to_a_message_of_another_conversation_is_refused() -> None:
    elsewhere = message(message_id="m1", conversation_id="other")
    with pytest.raises(BadRequest) as err:
        draft(reply_to=elsewhere, reply_to_id="m1")
    assert err.value.message.startswith("reply_to:")


def test_a_reply_to_an_unknown_message_is_refused() -> None:
    with pytest.raises(BadRequest) as err:
        draft(reply_to=None, reply_to_id="m404")
    assert err.value.message.startswith("reply_to:")


def test_new_message_checks_text_and_attachments() -> None:
    with pytest.raises(BadRequest):
        draft(text="   ")
    with pytest.raises(BadRequest):
        draft(text="a" * 4001)
    with pytest.raises(BadRequest):
        draft(attachments=[{}] * 11)


def test_new_message_keeps_forwarded_from() -> None:
    origin = ForwardedFrom(message_id="m1", conversation_id="c0", sender_id="alice")
    assert draft(forwarded_from=origin).forwarded_from == origin


# -- forward_source ----------------------------------------------------------------------------


def test_forward_source_names_the_original_message() -> None:
    source = stored(message(sender="carol", conversation_id="c1", message_id="m1"))
    origin = rules.forward_source(source, group(), "bob")
    assert origin == ForwardedFrom(message_id="m1", conversation_id="c1", sender_id="carol")


def test_forwarding_needs_membership_of_the_source_conversation() -> None:
    with pytest.raises(NotFound):
        rules.forward_source(stored(), group(), "mallory")
    with pytest.raises(NotFound):
        rules.forward_source(stored(), None, "bob")


def test_forwarding_a_missing_message_is_not_found() -> None:
    with pytest.raises(NotFound):
        rules.forward_source(None, group(), "bob")


def test_a_tombstone_cannot_be_forwarded() -> None:
    tomb = rules.apply_change(stored(), delete(2))
    with pytest.raises(Conflict) as err:
        rules.forward_source(tomb, group(), "bob")
    assert err.value.code == "conflict"


# -- authorize_change --------------------------------------------------------------------------


def test_the_sender_may_edit_and_delete() -> None:
    assert rules.authorize_change(stored(), "edit", "alice") is True
    assert rules.authorize_change(stored(), "delete", "alice") is True


def test_only_the_sender_may_edit() -> None:
    with pytest.raises(Forbidden):
        rules.authorize_change(stored(), "edit", "bob")


def test_only_the_sender_may_delete() -> None:
    with pytest.raises(Forbidden):
        rules.authorize_change(stored(), "delete", "bob")


@pytest.mark.parametrize("kind", ["reaction.add", "reaction.remove"])
@pytest.mark.parametrize("actor", ["alice", "bob"])
def test_anyone_may_react(kind: rules.ChangeKind, actor: str) -> None:
    assert rules.authorize_change(stored(), kind, actor) is True


@pytest.mark.parametrize("kind", ["edit", "reaction.add", "reaction.remove"])
def test_changing_a_tombstone_is_a_conflict(kind: rules.ChangeKind) -> None:
    tomb = rules.apply_change(stored(), delete(2))
    with pytest.raises(Conflict):
        rules.authorize_change(tomb, kind, "alice")


def test_deleting_a_tombstone_again_changes_nothing() -> None:
    tomb = rules.apply_change(stored(), delete(2))
    assert rules.authorize_change(tomb, "delete", "alice") is False


# -- apply_change: edits -----------------------------------------------------------------------


def test_an_edit_sets_text_and_edited_at() -> None:
    after = rules.apply_change(stored(), edit(4, "changed"))
    assert after.message.text == "changed"
    assert after.message.edited_at == "t4"
    assert after.text_event_seq == 4
    assert after.last_event_seq == 4


def test_the_latest_edit_wins_whatever_order_edits_are_applied_in() -> None:
    changes = [edit(3, "three"), edit(5, "five"), edit(4, "four")]
    results = [apply_all(stored(), list(order)) for order in itertools.permutations(changes)]

    for result in results:
        assert result.message.text == "five"
        assert result.message.edited_at == "t5"
        assert result == results[0]


def test_an_edit_not_newer_than_the_text_is_ignored() -> None:
    state = stored(event_seq=5)
    after = rules.apply_change(state, edit(5, "stale"))
    assert after.message.text == "hello"
    assert after.message.edited_at is None


@pytest.mark.parametrize(
    "change",
    [edit(3, "x"), react(3, "👍", "bob"), unreact(3, "👍", "bob"), delete(3)],
    ids=["edit", "reaction.add", "reaction.remove", "delete"],
)
def test_applying_the_same_change_twice_is_a_no_op(change: MessageChange) -> None:
    base = rules.apply_change(stored(), react(2, "👍", "bob"))
    once = rules.apply_change(base, change)
    assert rules.apply_change(once, change) == once


# -- apply_change: reactions -------------------------------------------------------------------


def test_a_reaction_shows_the_user_under_the_emoji() -> None:
    after = rules.apply_change(stored(), react(2, "👍", "bob"))
    assert after.message.reactions == {"👍": ["bob"]}
    assert rules.reaction_present(after, "👍", "bob")
    assert not rules.reaction_present(after, "👍", "carol")


def test_removing_a_reaction_hides_it_and_drops_an_emptied_emoji() -> None:
    after = apply_all(stored(), [react(2, "👍", "bob"), unreact(3, "👍", "bob")])
    assert after.message.reactions == {}
    assert not rules.reaction_present(after, "👍", "bob")


def test_reactions_converge_whatever_order_they_are_applied_in() -> None:
    changes = [
        react(2, "👍", "bob"),
        unreact(4, "👍", "bob"),
        react(3, "👍", "carol"),
        react(5, "🎉", "bob"),
        unreact(6, "🎉", "dave"),  # removing what was never added
    ]
    results = [apply_all(stored(), list(order)) for order in itertools.permutations(changes)]

    for result in results:
        assert result.message.reactions == {"👍": ["carol"], "🎉": ["bob"]}
        assert result == results[0]


def test_an_add_older_than_a_remove_does_not_bring_the_reaction_back() -> None:
    after = apply_all(stored(), [unreact(5, "👍", "bob"), react(4, "👍", "bob")])
    assert after.message.reactions == {}


def test_users_are_listed_in_the_order_they_reacted() -> None:
    changes = [react(5, "👍", "carol"), react(3, "👍", "zed"), react(7, "👍", "bob")]
    for order in itertools.permutations(changes):
        after = apply_all(stored(), list(order))
        assert after.message.reactions == {"👍": ["zed", "carol", "bob"]}


def test_visible_reactions_keeps_positive_marks_in_reaction_order() -> None:
    marks = {"👍": {"x": 5, "y": -6, "z": 2}, "🎉": {"y": -3}}
    assert rules.visible_reactions(marks) == {"👍": ["z", "x"]}


def test_reacting_again_after_removing_moves_the_user_to_the_end() -> None:
    changes = [react(2, "👍", "bob"), react(3, "👍", "carol"), unreact(4, "👍", "bob"),
               react(5, "👍", "bob")]
    assert apply_all(stored(), changes).message.reactions == {"👍": ["carol", "bob"]}


def test_reactions_leave_the_text_alone_and_edits_leave_reactions_alone() -> None:
    changes = [react(2, "👍", "bob"), edit(3, "changed"), react(4, "🎉", "carol")]
    after = apply_all(stored(), changes)
    assert after.message.text == "changed"
    assert after.message.reactions == {"👍": ["bob"], "🎉": ["carol"]}


# -- apply_change: deletion --------------------------------------------------------------------


def test_a_tombstone_keeps_id_and_seq_and_loses_content() -> None:
    before = apply_all(stored(), [react(2, "👍", "bob"), edit(3, "changed")])
    tomb = rules.apply_change(before, delete(4))

    assert tomb.message.id == "m1"
    assert tomb.message.seq == 1
    assert tomb.message.sender_id == "alice"
    assert tomb.message.deleted is True
    assert tomb.message.text == ""
    assert tomb.message.reactions == {}
    assert tomb.message.attachments == []
    assert tomb.reaction_marks == {}
    assert tomb.last_event_seq == 4


def test_deletion_is_final() -> None:
    tomb = rules.apply_change(stored(), delete(4))
    later = apply_all(tomb, [edit(5, "back"), react(6, "👍", "bob"), delete(7)])

    assert later.message == tomb.message
    assert later.last_event_seq == 7  # only the bookkeeping moves, as for any ignored change
    assert later.message.text == ""
    assert later.message.deleted is True
    assert later.message.reactions == {}


def test_content_of_the_tombstone_does_not_depend_on_order() -> None:
    """What the contract says of a tombstone holds whichever order changes arrive in."""
    changes = [edit(3, "three"), react(4, "👍", "bob"), delete(5), edit(6, "six"),
               react(7, "🎉", "carol")]
    for order in itertools.permutations(changes):
        tomb = apply_all(stored(), list(order)).message
        assert (tomb.deleted, tomb.text, tomb.reactions, tomb.attachments) == (True, "", {}, [])
        assert (tomb.id, tomb.seq, tomb.sender_id) == ("m1", 1, "alice")


def test_a_tombstone_is_the_same_whether_an_older_edit_arrives_before_or_after_it() -> None:
    edit_first = apply_all(stored(), [edit(3, "three"), delete(5)])
    delete_first = apply_all(stored(), [delete(5), edit(3, "three")])
    assert edit_first.message == delete_first.message


def test_last_event_seq_of_a_tombstone_does_not_depend_on_order() -> None:
    edit_first = apply_all(stored(), [edit(7, "seven"), delete(5)])
    delete_first = apply_all(stored(), [delete(5), edit(7, "seven")])
    assert edit_first.last_event_seq == delete_first.last_event_seq


# -- apply_change: convergence under any order -------------------------------------------------


def random_changes(rng: random.Random, count: int, *, with_delete: bool) -> list[MessageChange]:
    """``count`` changes with distinct event_seqs (2..), as replicas would decide them."""
    seqs = list(range(2, count + 2))
    rng.shuffle(seqs)
    changes: list[MessageChange] = []
    for seq in seqs:
        roll = rng.random()
        user = rng.choice(["alice", "bob", "carol", "dave"])
        emoji = rng.choice(["👍", "🎉", "❤"])
        if roll < 0.3:
            changes.append(edit(seq, f"text {seq}"))
        elif roll < 0.7:
            changes.append(react(seq, emoji, user))
        else:
            changes.append(unreact(seq, emoji, user))
    if with_delete:
        at = rng.randrange(count)
        changes[at] = delete(changes[at].event_seq)
    return changes


def converged_states(changes: list[MessageChange], rng: random.Random,
                     orders: int) -> list[MessageState]:
    """The final state after applying ``changes`` in ``orders`` random orders, some replayed."""
    results = []
    for _ in range(orders):
        batch = list(changes)
        rng.shuffle(batch)
        replayed = batch + rng.sample(batch, k=len(batch) // 3)  # at-least-once delivery
        results.append(apply_all(stored(), replayed))
    return results


def test_edits_and_reactions_converge_in_any_order_and_with_replays() -> None:
    rng = random.Random(20260101)
    for _ in range(30):
        changes = random_changes(rng, 14, with_delete=False)
        in_order = apply_all(stored(), sorted(changes, key=lambda c: c.event_seq))
        for result in converged_states(changes, rng, orders=40):
            assert result == in_order


def test_changes_including_a_delete_converge_in_any_order() -> None:
    rng = random.Random(20260102)
    for _ in range(30):
        changes = random_changes(rng, 14, with_delete=True)
        in_order = apply_all(stored(), sorted(changes, key=lambda c: c.event_seq))
        for result in converged_states(changes, rng, orders=40):
            assert result == in_order
