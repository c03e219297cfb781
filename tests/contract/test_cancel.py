"""Cancel: ``q.cancel(id)`` removes a message for good, durably, wherever
it is. A ready or delayed one is never delivered; one in flight is neither
retried nor dead-lettered, and its holder's ack, nack, extend and release
change nothing (``LeaseLost``). The answer says what it was. Its dedup key
is free again and its room in the queue is given back."""

from __future__ import annotations

import pytest
import ringq

from .conftest import Harness, drain


def test_cancel_says_what_the_message_was_and_removes_it(harness: Harness) -> None:
    q = harness.open(capacity=4)
    ready = q.publish(b"ready", "t")
    delayed = q.publish(b"delayed", "t", delay=60)
    held = q.publish(b"held", "t", dedup_key="k")
    kept = q.publish(b"kept", "t")
    [d] = q.checkout("t", timeout=0)
    assert d.id == ready
    # ``ready`` is in flight now; ``held`` and ``kept`` are ready.
    assert q.cancel(held) == "cancelled"
    assert q.cancel(delayed) == "cancelled"
    assert q.cancel(ready) == "cancelled_in_flight"
    assert q.cancel(ready) == "not_found", "a second cancel finds nothing"
    assert q.cancel("00000000ffffff01") == "not_found"
    s = q.stats()
    assert (s["total"], s["ready"], s["in_flight"], s["delayed"], s["dead"]) == (1, 1, 0, 0, 0)
    assert s["cancelled"] == 3
    with pytest.raises(ringq.LeaseLost):
        q.ack(d)
    with pytest.raises(ringq.LeaseLost):
        q.nack(d, error="too late")
    with pytest.raises(ringq.LeaseLost):
        q.extend(d, 10)
    assert len(q.dlq) == 0, "nothing was dead-lettered"
    # The delay falls due and the lease would have run out: nothing comes back.
    harness.advance(120)
    assert [m.id for m in drain(q, "t")] == [kept]
    # The dedup key is free, and the queue has room for four again.
    assert q.publish(b"again", "t", dedup_key="k") != held
    for i in range(2):
        q.publish(b"%d" % i, "t")
    assert q.stats()["total"] == 4


def test_a_cancel_outlives_a_reopen(harness: Harness) -> None:
    q = harness.open()
    gone = q.publish(b"gone", "t")
    stays = q.publish(b"stays", "t")
    q.publish(b"later", "t", delay=30)
    later = q.checkout("t", timeout=0)
    q.release(later)
    assert q.cancel(gone) == "cancelled"
    q.close()
    q = harness.open()
    harness.advance(60)
    assert [m.payload for m in drain(q, "t")] == [b"stays", b"later"]
    assert q.cancel(gone) == "not_found" and stays
