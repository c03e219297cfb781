"""Which targets name a queue on Redis (no import of redis-py, nor of the
backend: ``open_backend`` asks before it imports anything)."""

from __future__ import annotations

__all__ = ["REDIS_SCHEMES", "is_redis_url"]

#: The URL schemes of a queue on Redis (``ringq.backends.redis``).
REDIS_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")


def is_redis_url(target: object) -> bool:
    """Whether ``target`` names a queue on Redis."""
    return isinstance(target, str) and target.split("://", 1)[0] in REDIS_SCHEMES
