"""Bad arguments: every backend refuses the same calls with the same kind
of error, before anything is written (the Redis backend took several the
engine refuses: a header that was not a str broke every checkout that met
the message, and the dead-letter list once it was dead-lettered)."""

from __future__ import annotations

from typing import Any

import pytest
import ringq

#: (what, keywords, the error it raises)
BAD: list[tuple[str, dict[str, Any], type[Exception]]] = [
    ("a header value that is not a str", {"headers": {"retries": 3}}, TypeError),
    ("a header name that is not a str", {"headers": {1: "x"}}, TypeError),
    ("an empty topic", {"topic": ""}, ValueError),
    ("a topic over 255 bytes", {"topic": "t" * 256}, ringq.LimitExceeded),
    ("a correlation id over max_key", {"correlation_id": "c" * 1025}, ringq.LimitExceeded),
    ("a causation id that is not a str", {"causation_id": 5}, TypeError),
    ("an empty dedup key", {"dedup_key": ""}, ValueError),
    ("a dedup key that is not a str", {"dedup_key": 5}, TypeError),
    ("expected_version without a dedup key", {"expected_version": 0}, ValueError),
]


@pytest.mark.parametrize(("what", "kw", "error"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_publish_is_refused_alike_and_writes_nothing(
    q: ringq.Queue, what: str, kw: dict[str, Any], error: type[Exception]
) -> None:
    kw = {"topic": "t", **kw}
    with pytest.raises(error):
        q.publish(b"x", **kw)
    if "expected_version" not in kw:  # a publish option, not a Message's
        with pytest.raises(error):
            q.publish_many([ringq.Message(b"x", **kw)])
    assert q.stats()["total"] == 0
    q.publish(b"fine", "t", headers={"retries": "3"})
    [d] = q.checkout("t", timeout=0)
    assert (d.payload, d.headers) == (b"fine", {"retries": "3"})


def test_publish_many_to_an_empty_topic_is_refused_and_writes_nothing(q: ringq.Queue) -> None:
    with pytest.raises(ValueError, match="topic"):
        q.publish_many([b"a", b"b"], topic="")
    assert q.stats()["total"] == 0
