"""What priorities and ordering keys cost: paired against the plain path.

Scenarios of ``python -m ringq.bench`` (``--only priorities,ordering_keys``).
Each repetition publishes the same ``N`` 100-byte payloads one call at a
time (``q.publish(p, topic)``) into a fresh queue and drains them with
``checkout(max_messages=256, timeout=0)`` + ``ack(list)``, once plainly and
once with the feature (the order alternates between repetitions). Between
the two phases, untimed, the queue syncs what was published (``settle``):
the batch flusher's deferred sync of the publishes is not a drain cost.

- ``priorities``: ``priority=i % 10``; the drain must come out highest
  priority first and in publish order within a priority.
- ``ordering_keys``: ``ordering_key=f"k{i % 10000}"`` (10,000 keys); the
  drain must give every key's messages in publish order.

Both sides run the same loop (the plain one passes no keyword). The figures
are the feature's rate over the plain rate, for the publishes, for the drain
and for both together; the target (issue 16) is >= 0.8 for publishing and
for the drain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ringq.bench_kit import (
    CHECKOUT_MAX,
    TOPIC,
    Config,
    VerifyError,
    alternate,
    fresh_dir,
    settle,
    spread,
    timed,
)

__all__ = ["ordering_keys", "priorities"]

TARGET = 0.8
KEYS = 10_000

#: (publish rate, drain rate, rate of both) in msg/s.
Rates = tuple[float, float, float]


def _run(
    cfg: Config, n: int, publish: Callable[[Any, list[bytes]], None]
) -> tuple[Rates, list[bytes]]:
    payloads = cfg.payloads(n)
    with fresh_dir(cfg) as path:
        q = cfg.open(path, capacity=n)
        try:
            t_pub = timed(lambda: publish(q, payloads))
            settle(q)
            received: list[bytes] = []
            co, ack, keep = q.checkout, q.ack, received.extend

            def drain() -> None:
                while ds := co(TOPIC, max_messages=CHECKOUT_MAX, timeout=0):
                    ack(ds)
                    keep(d.payload for d in ds)

            t_drain = timed(drain)
            if len(received) != n:
                raise VerifyError(f"received {len(received)} messages, expected {n}")
        finally:
            q.close()
    return (n / t_pub, n / t_drain, n / (t_pub + t_drain)), received


def _plain(cfg: Config, n: int) -> Rates:
    def publish(q: Any, payloads: list[bytes]) -> None:
        pub = q.publish
        for p, _ in zip(payloads, range(n), strict=True):
            pub(p, TOPIC)

    rates, received = _run(cfg, n, publish)
    if received != cfg.payloads(n):
        raise VerifyError("plain: out of publish order")
    return rates


def _pair(cfg: Config, name: str, featured: Callable[[], Rates]) -> dict[str, Any]:
    n = cfg.n // 2
    plain, feat, errors = alternate(
        cfg,
        name,
        lambda: _plain(cfg, n),
        featured,
        lambda a, b: (
            f"plain {a[0]:,.0f}/{a[1]:,.0f} msg/s, {name} {b[0]:,.0f}/{b[1]:,.0f} (publish/drain)"
        ),
    )
    out: dict[str, Any] = {
        "n": n,
        "unit": "msg/s",
        "target": f"publish and drain ratios >= {TARGET}",
    }
    if plain:
        for i, part in enumerate(("publish", "drain", "total")):
            out[f"plain_{part}"] = spread([r[i] for r in plain])
            out[f"{name}_{part}"] = spread([r[i] for r in feat])
            out[f"{part}_ratio"] = spread(
                [b[i] / a[i] for a, b in zip(plain, feat, strict=True)], 3
            )
        out["ratio"] = out["total_ratio"]
        out["met"] = min(out["publish_ratio"]["median"], out["drain_ratio"]["median"]) >= TARGET
    else:
        out["met"] = False
    if errors:
        out["errors"] = errors
    return out


def priorities(cfg: Config) -> dict[str, Any]:
    n = cfg.n // 2
    prios = [i % 10 for i in range(n)]

    def featured() -> Rates:
        def publish(q: Any, payloads: list[bytes]) -> None:
            pub = q.publish
            for p, pr in zip(payloads, prios, strict=True):
                pub(p, TOPIC, priority=pr)

        rates, received = _run(cfg, n, publish)
        payloads = cfg.payloads(n)
        expected = [payloads[i] for i in sorted(range(n), key=lambda i: (-prios[i], i))]
        if received != expected:
            raise VerifyError("priorities: not highest first, FIFO within a priority")
        return rates

    return _pair(cfg, "priorities", featured)


def ordering_keys(cfg: Config) -> dict[str, Any]:
    n = cfg.n // 2
    keys = [f"k{i % KEYS}" for i in range(n)]

    def featured() -> Rates:
        def publish(q: Any, payloads: list[bytes]) -> None:
            pub = q.publish
            for p, k in zip(payloads, keys, strict=True):
                pub(p, TOPIC, ordering_key=k)

        rates, received = _run(cfg, n, publish)
        index = {p: i for i, p in enumerate(cfg.payloads(n))}
        last: dict[str, int] = {}
        for p in received:
            i = index[p]
            if last.get(keys[i], -1) > i:
                raise VerifyError(f"ordering_keys: {keys[i]} out of publish order")
            last[keys[i]] = i
        return rates

    return _pair(cfg, "ordering_keys", featured)
