"""Secret formats and the appsecret_proof."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from capi_relay.secrets import Credentials, SecretError, parse_secret


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
