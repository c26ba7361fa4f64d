"""Secret formats, the appsecret_proof, token characters, and the provider: one bounded fetch per invocation."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time

import pytest

from capi_relay.aws.secrets import (
    SECRET_MAX_BYTES,
    Credentials,
    FetchBounds,
    SecretError,
    SecretsManagerTokenProvider,
    parse_secret,
)


def test_bare_token() -> None:
    creds = parse_secret("  EAAB-token \n", "1")
    assert creds.access_token == "EAAB-token"
    assert creds.appsecret_proof is None


def test_json_with_app_secret_gives_appsecret_proof() -> None:
    creds = parse_secret(json.dumps({"access_token": "tok", "app_secret": "shh"}), "1")
    expected = hmac.new(b"shh", b"tok", hashlib.sha256).hexdigest()
    assert creds.appsecret_proof == expected


def test_per_pixel_tokens_with_fallback() -> None:
    secret = json.dumps({"pixels": {"1": {"access_token": "one"}}, "access_token": "default"})
    assert parse_secret(secret, "1").access_token == "one"
    assert parse_secret(secret, "2").access_token == "default"


def test_per_pixel_without_fallback_fails_clearly() -> None:
    secret = json.dumps({"pixels": {"1": {"access_token": "one"}}})
    with pytest.raises(SecretError) as info:
        parse_secret(secret, "2")
    assert info.value.reason == "secret_no_token_for_pixel"


@pytest.mark.parametrize("raw", ["", "{", "[]", '{"access_token": ""}', '{"pixels": {"1": "x"}}', b"  "])
def test_malformed_secrets(raw: str | bytes) -> None:
    with pytest.raises(SecretError) as info:
        parse_secret(raw, "1")
    assert info.value.reason == "secret_malformed"


def test_token_never_in_repr() -> None:
    creds = Credentials("SECRET-TOKEN-VALUE", "APP-SECRET")
    assert "SECRET-TOKEN-VALUE" not in repr(creds)
    assert "APP-SECRET" not in repr(creds)
    assert "SECRET-TOKEN-VALUE" not in creds.fingerprint


# ------------------------------------------------------------------------------------- token characters
@pytest.mark.parametrize("token", ["tok\r\nX-Injected: 1", "tok\x00", "tok\x7f", "to\x85k", "tok€", "токен", "t\tok"])
def test_a_token_unusable_in_a_header_is_malformed_at_parse_time(token: str) -> None:
    for raw in (token, json.dumps({"access_token": token})):
        with pytest.raises(SecretError) as info:
            parse_secret(raw, "1")
        assert info.value.reason == "secret_malformed"
        assert token not in str(info.value)


def test_latin1_token_and_binary_non_utf8_secret() -> None:
    assert parse_secret("tok-é", "1").access_token == "tok-é"
    with pytest.raises(SecretError) as info:
        parse_secret(b"\xff\xfe", "1")
    assert info.value.reason == "secret_malformed"


def test_an_oversized_secret_is_malformed() -> None:
    with pytest.raises(SecretError) as info:
        parse_secret("x" * (SECRET_MAX_BYTES + 1), "1")
    assert info.value.reason == "secret_malformed"


# ------------------------------------------------------------------------------------- provider
class FakeSecretsManager:
    """In-process stand-in for the one secret read: answers, fails, or hangs until released."""

    def __init__(self, value: str = "tok") -> None:
        self.value = value
        self.calls = 0
        self.fail = False
        self.hang = threading.Event()
        self.hanging = False

    def fetch(self) -> str:
        self.calls += 1
        if self.hanging:
            self.hang.wait(5)
            raise SecretError("secret_unavailable", "connect timeout")
        if self.fail:
            raise SecretError("secret_unavailable", "cannot read the secret: EndpointConnectionError")
        return self.value


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def provider(
    sm: FakeSecretsManager, clock: Clock | None = None, *, max_age_s: int = 300, bounds: FetchBounds | None = None
) -> SecretsManagerTokenProvider:
    return SecretsManagerTokenProvider("s", max_age_s, fetch=sm.fetch, clock=clock or time.monotonic, bounds=bounds)


def test_one_fetch_per_invocation_shared_by_every_pixel_and_one_forced_refresh() -> None:
    sm = FakeSecretsManager(json.dumps({"access_token": "default", "pixels": {"2": {"access_token": "two"}}}))
    clock = Clock()
    tokens = provider(sm, clock, max_age_s=0)
    tokens.begin_invocation(clock() + 30)
    assert [tokens.get(p).access_token for p in ("1", "2", "3", "4", "5", "6")] == ["default", "two"] + ["default"] * 4
    assert sm.calls == 1  # even with max_age 0: once per invocation
    tokens.get("1", force_refresh=True)
    tokens.get("2", force_refresh=True)
    assert sm.calls == 2  # one forced refresh for the secret, not one per pixel
    # The next invocation reads again (max_age 0), once
    tokens.begin_invocation(clock() + 30)
    tokens.get("1")
    tokens.get("2")
    assert sm.calls == 3


def test_the_cache_serves_across_invocations_within_max_age() -> None:
    sm = FakeSecretsManager()
    clock = Clock()
    tokens = provider(sm, clock)
    for _ in range(3):
        tokens.begin_invocation(clock() + 30)
        tokens.get("1")
        clock.now += 100
    assert sm.calls == 1
    tokens.begin_invocation(clock() + 30)
    tokens.get("1")  # 300 s after the fetch: expired
    assert sm.calls == 2


def test_a_failure_is_remembered_for_the_rest_of_the_invocation() -> None:
    sm = FakeSecretsManager()
    sm.fail = True
    clock = Clock()
    tokens = provider(sm, clock)
    tokens.begin_invocation(clock() + 30)
    for pixel in "123456":
        with pytest.raises(SecretError) as info:
            tokens.get(pixel)
        assert info.value.reason == "secret_unavailable"
    assert sm.calls == 1
    # The next invocation tries again
    sm.fail = False
    tokens.begin_invocation(clock() + 30)
    assert tokens.get("1").access_token == "tok"
    assert sm.calls == 2


def test_a_secrets_manager_that_never_answers_costs_one_bounded_wait_for_six_pixels() -> None:
    sm = FakeSecretsManager()
    sm.hanging = True
    tokens = provider(sm, bounds=FetchBounds(connect_timeout_s=0.1, read_timeout_s=0.1, retries=0))
    try:
        tokens.begin_invocation(time.monotonic() + 30)
        started = time.monotonic()
        for pixel in "123456":
            with pytest.raises(SecretError):
                tokens.get(pixel)
        waited = time.monotonic() - started
        # Then the six pixels shared one wait of at most the fetch's worst case (0.2 s), not six
        assert sm.calls == 1
        assert waited < 6 * 0.2
    finally:
        sm.hang.set()


def test_a_fetch_is_never_waited_for_past_the_deadline() -> None:
    sm = FakeSecretsManager()
    sm.hanging = True
    tokens = provider(sm)  # default bounds: worst case 7 s
    try:
        tokens.begin_invocation(time.monotonic() + 0.2)
        started = time.monotonic()
        with pytest.raises(SecretError):
            tokens.get("1")
        assert time.monotonic() - started < 1.0
        # And with no time left at all, no fetch is started (a fresh provider: nothing left in flight)
        sm.hang.set()
        sm.hanging = False
        fresh = provider(sm)
        calls = sm.calls
        fresh.begin_invocation(time.monotonic() - 1)
        with pytest.raises(SecretError):
            fresh.get("1")
        assert sm.calls == calls
    finally:
        sm.hang.set()


def test_fetch_bounds_worst_case_counts_attempts_and_backoff() -> None:
    assert FetchBounds(connect_timeout_s=1, read_timeout_s=2, retries=1).worst_case_s == 2 * 3 + 1
    assert FetchBounds(connect_timeout_s=1, read_timeout_s=2, retries=0).worst_case_s == 3
