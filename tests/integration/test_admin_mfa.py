"""Admin login on a running cluster: TOTP enrolment, wrong and replayed codes, single-use
recovery codes, lockout with Retry-After, logout, password change, MFA reset by an owner."""

from __future__ import annotations

import time

from chatcluster.auth.admin import LOCKOUT_THRESHOLD, totp_code
from tests.chatclient import Cluster
from tests.integration.adminclient import (
    PASSWORD,
    USER_AGENT,
    audit,
    call,
    create_admin,
    enable_mfa,
    login,
)


def next_code(secret: str) -> str:
    """The next step's code: accepted now (one step of drift) and above the step enrolment
    used, so a test need not wait 30 s for a fresh code."""
    return totp_code(secret, time.time() + 30)


async def test_enrolment_needs_a_valid_code_then_login_needs_one(cluster: Cluster) -> None:
    admin = await create_admin(cluster, "admin", name="mfa")
    r = await call(cluster, "POST", "/mfa/enroll", admin.token)
    assert r.status_code == 200
    secret = r.json()["secret"]
    assert r.json()["otpauth_uri"].startswith("otpauth://totp/chatcluster:")
    wrong = "000000" if totp_code(secret, time.time()) != "000000" else "111111"
    r = await call(cluster, "POST", "/mfa/verify", admin.token, json={"code": wrong})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_mfa_code"
    assert (await call(cluster, "GET", "/me", admin.token)).json()["mfa_enabled"] is False
    assert (await login(cluster, admin.email)).status_code == 200, "MFA is not on yet"

    r = await call(cluster, "POST", "/mfa/verify", admin.token,
                   json={"code": totp_code(secret, time.time())})
    assert r.status_code == 200
    codes = r.json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    assert (await call(cluster, "GET", "/me", admin.token)).json()["mfa_enabled"] is True
    r = await call(cluster, "POST", "/mfa/enroll", admin.token)
    assert r.status_code == 409, "enrolling again would replace a working secret"

    r = await login(cluster, admin.email)
    assert r.status_code == 401 and r.json()["error"]["code"] == "mfa_required"
    r = await login(cluster, admin.email, totp_code=wrong)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_mfa_code"
    r = await login(cluster, admin.email, "wrong password", totp_code=next_code(secret))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"
    code = next_code(secret)
    r = await login(cluster, admin.email, totp_code=code)
    assert r.status_code == 200, r.text
    assert (await call(cluster, "GET", "/me", r.json()["token"])).status_code == 200
    replay = await login(cluster, admin.email, totp_code=code)
    assert replay.status_code == 401, "a code works once within its window"
    assert replay.json()["error"]["code"] == "invalid_mfa_code"


async def test_each_recovery_code_works_once(cluster: Cluster) -> None:
    admin = await create_admin(cluster, "viewer", name="recovery")
    codes = await enable_mfa(cluster, admin)
    r = await login(cluster, admin.email, recovery_code=codes[3].upper())
    assert r.status_code == 200, r.text
    again = await login(cluster, admin.email, recovery_code=codes[3])
    assert again.status_code == 401 and again.json()["error"]["code"] == "invalid_mfa_code"
    assert (await login(cluster, admin.email, recovery_code=codes[4])).status_code == 200
    assert (await login(cluster, admin.email, recovery_code="aaaaa-bbbbb")).status_code == 401
    used = await audit(cluster, actor=admin.id, action="admin.mfa.recovery_code_used")
    assert len(used) == 2


async def test_repeated_failures_lock_the_account_with_retry_after(cluster: Cluster) -> None:
    admin = await create_admin(cluster, "admin", name="locked")
    other = await create_admin(cluster, "admin", name="unlocked")
    for _ in range(LOCKOUT_THRESHOLD):
        r = await login(cluster, admin.email, "not the password")
        assert r.status_code == 401
    r = await login(cluster, admin.email)  # the right password: still locked
    assert r.status_code == 423, r.text
    assert r.json()["error"]["code"] == "locked"
    assert 0 < int(r.headers["Retry-After"]) <= 15 * 60 + 1
    r = await login(cluster, admin.email.upper())  # the same account, however it is spelled
    assert r.status_code == 423
    assert (await login(cluster, other.email)).status_code == 200, "only that account"
    assert (await call(cluster, "GET", "/me", admin.token)).status_code == 200, (
        "a lockout stops new logins, not the sessions already open")
    failed = await audit(cluster, action="admin.login", actor=admin.id)
    assert [e["outcome"] for e in failed[:LOCKOUT_THRESHOLD]] == ["failed"] * LOCKOUT_THRESHOLD
    assert failed[0]["ip"] == "127.0.0.1" and failed[0]["user_agent"] == USER_AGENT


async def test_unknown_emails_fail_like_wrong_passwords(cluster: Cluster) -> None:
    r = await login(cluster, "nobody-at-all@example.com")
    assert r.status_code == 401
    assert r.json() == {"error": {"code": "invalid_credentials",
                                  "message": "unknown email or wrong password"}}
    for body in ({"email": "x@example.com"}, {"password": "p"},
                 {"email": "no-at", "password": "p"}):
        r = await call(cluster, "POST", "/login", json=body)
        assert r.status_code == 422 and r.json()["error"]["code"] == "bad_request"


async def test_logout_and_password_change_end_tokens(cluster: Cluster) -> None:
    admin = await create_admin(cluster, "viewer", name="logout")
    second = (await login(cluster, admin.email)).json()["token"]
    assert (await call(cluster, "POST", "/logout", admin.token)).status_code == 204
    assert (await call(cluster, "GET", "/me", admin.token)).status_code == 401
    assert (await call(cluster, "GET", "/me", second)).status_code == 200, "only that token"

    r = await call(cluster, "POST", "/me/password", second,
                   json={"current_password": "wrong", "new_password": "a brand new password"})
    assert r.status_code == 401
    r = await call(cluster, "POST", "/me/password", second,
                   json={"current_password": PASSWORD, "new_password": "short"})
    assert r.status_code == 422
    r = await call(cluster, "POST", "/me/password", second,
                   json={"current_password": PASSWORD, "new_password": "a brand new password"})
    assert r.status_code == 204
    assert (await call(cluster, "GET", "/me", second)).status_code == 401
    assert (await login(cluster, admin.email)).status_code == 401
    assert (await login(cluster, admin.email, "a brand new password")).status_code == 200


async def test_an_owner_resets_a_lost_authenticator(cluster: Cluster) -> None:
    admin = await create_admin(cluster, "moderator", name="lost-phone")
    await enable_mfa(cluster, admin)
    assert (await login(cluster, admin.email)).json()["error"]["code"] == "mfa_required"
    r = await call(cluster, "POST", f"/admins/{admin.id}/mfa/reset", cluster.admin_token)
    assert r.status_code == 200 and r.json()["mfa_enabled"] is False
    assert (await call(cluster, "GET", "/me", admin.token)).status_code == 401, (
        "a reset ends the admin's sessions")
    assert (await login(cluster, admin.email)).status_code == 200
    reset = await audit(cluster, action="admin.mfa.reset", actor="root")
    assert reset[0]["target"] == admin.id


async def test_the_root_token_has_no_mfa_of_its_own(cluster: Cluster) -> None:
    r = await call(cluster, "POST", "/mfa/enroll", cluster.admin_token)
    assert r.status_code == 403
    r = await call(cluster, "POST", "/logout", cluster.admin_token)
    assert r.status_code == 400
