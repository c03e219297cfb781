"""``Encrypted``: payloads sealed with AES-GCM (``cryptography``) around
another codec, with key rotation.

Every payload a queue or handler with an ``Encrypted`` codec publishes is
sealed, objects (encoded by the inner codec first) and ``bytes``/``str``
alike, so nothing readable reaches the journal, a shared queue's socket or
a Redis server. A sealed payload is::

    version (1 byte, 1) | key id (8 bytes) | nonce (12 bytes) | ciphertext + tag (16 bytes)

The key id is the first 8 bytes of SHA-256 of the key (it names the key,
it does not reveal it); the nonce is random per payload (96 bits: fine for
2^32 payloads per key, NIST SP 800-38D); the associated data is the
version byte and the key id. ``keys`` is a list: the first seals, every key
opens what it sealed, so a new key goes first and an old one stays in the
list until nothing it sealed is left. A payload that is not sealed, sealed
with a key not in the list, or altered (authentication fails) is
undecodable: the dispatcher dead-letters it with reason ``undecodable`` and
never hands it to a handler.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

from ringq.codecs.formats import DEFAULT_CODEC, Codec
from ringq.errors import ConfigError

__all__ = ["Encrypted", "SealError"]

VERSION = 1
_KEY_ID = 8
_NONCE = 12
_TAG = 16
_HEAD = 1 + _KEY_ID + _NONCE


class SealError(ValueError):
    """A payload could not be opened: not sealed, sealed with a key this
    codec does not have, or altered."""


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:_KEY_ID]


class Encrypted:
    """``inner`` (a codec: JSON by default) with every payload sealed by
    AES-GCM under ``key`` (16, 24 or 32 bytes, e.g. ``os.urandom(32)``), or
    under the first of a list of keys (the others only open)."""

    def __init__(self, inner: Codec | None = None, key: bytes | Sequence[bytes] = b"") -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as e:  # pragma: no cover - the extra is installed in CI
            raise ConfigError(
                "ringq.codecs.Encrypted needs cryptography: pip install 'ringq[encryption]'"
            ) from e
        if isinstance(inner, Encrypted):
            raise ConfigError("Encrypted(inner=...) takes a codec that does not encrypt")
        if inner is not None and not isinstance(inner, Codec):
            raise ConfigError(f"Encrypted(inner=...) takes a codec, not {type(inner).__name__}")
        keys = [key] if isinstance(key, bytes | bytearray) else list(key)
        if not keys or keys == [b""]:
            raise ConfigError("Encrypted needs a key: 16, 24 or 32 random bytes")
        for k in keys:
            if not isinstance(k, bytes | bytearray) or len(k) not in (16, 24, 32):
                size = len(k) if isinstance(k, bytes | bytearray) else type(k).__name__
                raise ConfigError(f"an AES-GCM key is 16, 24 or 32 bytes, not {size}")
        self.inner: Codec = DEFAULT_CODEC if inner is None else inner
        self.name = f"encrypted+{self.inner.name}"
        self._sealer = (_key_id(bytes(keys[0])), AESGCM(bytes(keys[0])))
        self._openers: dict[bytes, Any] = {}
        for k in keys:
            self._openers.setdefault(_key_id(bytes(k)), AESGCM(bytes(k)))

    # -- the envelope -------------------------------------------------------------

    def seal(self, data: bytes) -> bytes:
        """``data`` sealed under the first key."""
        key_id, aead = self._sealer
        head = bytes([VERSION]) + key_id
        nonce = os.urandom(_NONCE)
        sealed: bytes = aead.encrypt(nonce, data, head)
        return head + nonce + sealed

    def open(self, data: bytes) -> bytes:
        """What ``seal`` sealed; ``SealError`` if it cannot be opened."""
        from cryptography.exceptions import InvalidTag

        if len(data) < _HEAD + _TAG or data[0] != VERSION:
            raise SealError("not a sealed payload (version 1 of ringq.codecs.Encrypted)")
        key_id = data[1 : 1 + _KEY_ID]
        aead = self._openers.get(key_id)
        if aead is None:
            raise SealError(f"sealed with a key this codec does not have (key id {key_id.hex()})")
        try:
            nonce, head = data[1 + _KEY_ID : _HEAD], data[: 1 + _KEY_ID]
            plain: bytes = aead.decrypt(nonce, data[_HEAD:], head)
        except InvalidTag:
            raise SealError("authentication failed: the payload was altered") from None
        return plain

    # -- the Codec protocol (objects) --------------------------------------------

    def encode(self, obj: object) -> bytes:
        return self.seal(self.inner.encode(obj))

    def decode(self, data: bytes, tp: Any) -> Any:
        return self.inner.decode(self.open(data), tp)

    def __repr__(self) -> str:
        return f"Encrypted({self.inner!r}, <{len(self._openers)} key(s)>)"
