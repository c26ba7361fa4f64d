"""Access-token provider: Secrets Manager through Powertools parameters, cached with a TTL, force-refreshable.

Secret formats (architecture contract):

* the bare token;
* ``{"access_token": "...", "app_secret": "..."}`` (``app_secret`` optional; enables ``appsecret_proof``);
* ``{"pixels": {"<pixel id>": {"access_token": "...", "app_secret"?: "..."}}}`` (one token per pixel),
  optionally with a top-level ``access_token`` used for pixels not listed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any, Protocol


class SecretError(Exception):
    """The token cannot be had (Secrets Manager unreachable, secret missing or malformed).

    ``reason`` is a stable code; the message never contains the secret value.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Credentials:
    access_token: str = field(repr=False)
    app_secret: str | None = field(default=None, repr=False)

    @property
    def appsecret_proof(self) -> str | None:
        if not self.app_secret:
            return None
        return hmac.new(self.app_secret.encode(), self.access_token.encode(), hashlib.sha256).hexdigest()

    @property
    def fingerprint(self) -> str:
        """A short non-reversible id of the token, to group requests; safe to log."""
        return hashlib.sha256(self.access_token.encode()).hexdigest()[:12]


class TokenProvider(Protocol):
    def get(self, pixel_id: str, *, force_refresh: bool = False) -> Credentials: ...


def _clean(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SecretError("secret_malformed", f"{where} must be a non-empty string")
    return value.strip()


def parse_secret(raw: str | bytes, pixel_id: str) -> Credentials:
    """Pick the credentials for ``pixel_id`` out of a secret value in any supported format."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    text = text.strip()
    if not text:
        raise SecretError("secret_malformed", "the secret is empty")
    if not text.startswith(("{", "[")):
        return Credentials(access_token=text)
    try:
        doc = json.loads(text)
    except ValueError:
        raise SecretError("secret_malformed", "the secret looks like JSON but does not parse") from None
    if not isinstance(doc, dict):
        raise SecretError("secret_malformed", "the secret JSON must be an object")
    pixels = doc.get("pixels")
    entry: Any = doc
    if isinstance(pixels, dict) and pixel_id in pixels:
        entry = pixels[pixel_id]
        if not isinstance(entry, dict):
            raise SecretError("secret_malformed", "pixels.<id> must be an object")
    elif "access_token" not in doc:
        raise SecretError("secret_no_token_for_pixel", "the secret has no access_token for this pixel")
    token = _clean(entry.get("access_token"), "access_token")
    app_secret = entry.get("app_secret")
    return Credentials(access_token=token, app_secret=_clean(app_secret, "app_secret") if app_secret else None)


class SecretsManagerTokenProvider:
    """Reads one secret through Powertools ``SecretsProvider`` (cached ``max_age`` seconds)."""

    def __init__(self, secret_id: str, max_age_s: int = 300) -> None:
        self._secret_id = secret_id
        self._max_age_s = max_age_s
        self._provider: Any = None

    def _fetch(self, force: bool) -> str | bytes:
        if self._provider is None:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider  # noqa: PLC0415
            from botocore.config import Config  # noqa: PLC0415 -- boto3 is imported on first use only

            # Short timeouts and few retries: a stuck Secrets Manager must not eat the invocation.
            config = Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 2, "mode": "standard"})
            self._provider = SecretsProvider(boto_config=config)
        try:
            value = self._provider.get(self._secret_id, max_age=self._max_age_s, force_fetch=force)
        except Exception as exc:  # GetParameterError wraps every botocore failure
            raise SecretError("secret_unavailable", f"cannot read the secret: {type(exc).__name__}") from None
        if not isinstance(value, str | bytes):
            raise SecretError("secret_malformed", "the secret has no value")
        return value

    def get(self, pixel_id: str, *, force_refresh: bool = False) -> Credentials:
        return parse_secret(self._fetch(force_refresh), pixel_id)
