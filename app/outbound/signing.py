"""Standard Webhooks signatures (v1: HMAC-SHA256), in the few lines the specification takes.

The secret is ``whsec_`` + base64 of 32 random bytes; the HMAC key is those bytes. The signed
content is ``{webhook-id}.{webhook-timestamp}.{body}``, exactly the bytes sent; the header is
``v1,<base64 digest>`` (a space-separated list when several secrets are valid).
The ``standardwebhooks`` package verifies what we sign in the tests, an independent check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` entry of ``body`` sent as ``message_id`` at ``timestamp``."""
    key = base64.b64decode(secret.removeprefix(PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets: list[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers; one signature per secret (two while a rotation overlaps)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, message_id, timestamp, body) for s in secrets),
        "content-type": "application/json",
    }
