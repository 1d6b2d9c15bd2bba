"""Secrets at rest and bearer credentials.

Stored credentials (Shopify tokens, connector secrets) are Fernet-encrypted (AES-128-CBC +
HMAC-SHA256) with a key derived from ``DROPSHIP_SECRET_KEY``. API keys and tokens are random
256-bit values: only their SHA-256 is stored (a slow hash adds nothing for that much entropy and
would cost every request), and they are shown once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken


class SecretBox:
    def __init__(self, secret_key: str) -> None:
        derived = hashlib.sha256(b"dropship:fernet:" + secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))
        self._sign_key = hashlib.sha256(b"dropship:sign:" + secret_key.encode()).digest()

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, ciphertext: bytes) -> str:
        try:
            return self._fernet.decrypt(ciphertext).decode()
        except InvalidToken as exc:  # wrong key: say so instead of a bare crypto error
            raise ValueError(
                "cannot decrypt: DROPSHIP_SECRET_KEY differs from the one used"
            ) from exc

    def sign(self, message: str | bytes) -> str:
        """HMAC-SHA256 under a key derived from the secret key: a digest that can be stored
        without letting anyone who reads it test guesses of what was signed."""
        data = message.encode() if isinstance(message, str) else message
        return hmac.new(self._sign_key, data, hashlib.sha256).hexdigest()


def new_token(prefix: str) -> str:
    """A bearer credential like ``dsm_<43 chars>``; the prefix says what it is for."""
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_public_token() -> str:
    """Unguessable token for public links (tracking pages)."""
    return secrets.token_urlsafe(24)
