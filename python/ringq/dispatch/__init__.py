"""The dispatcher: worker threads that run handlers.

Each handler gets a pool of worker threads (``max_parallelism`` of them, or
what ``scale`` set). A worker checks out a batch of the handler's topic in
one engine call, waiting inside the engine with the GIL released until a
message arrives: nothing polls. For each message it decodes the payload into
the handler's type, runs the handler, and then:

- success: acks (staged ``ctx.publish`` messages are committed in the same
  journal record as the ack; plain acks of one batch are sent together);
- exception listed in ``dead_letter_on``: dead letter, reason
  ``non_retryable``;
- other exception: retried after the handler's backoff (the engine's timer
  makes it visible again; no worker sleeps), or dead-lettered with reason
  ``max_attempts`` when its attempts are used up;
- undecodable payload: dead letter, reason ``undecodable``, at once.

**Batches (prefetch) never cost a message its attempts or its turn**: a
worker takes at most a fair share of what is ready and about 5 ms of its
handler's work, and gives back (releases, delivery undone) the unstarted
messages of a batch it holds too long. A handler that runs past its lease
is cancelled and its thread replaced.

The modules, each importing only those below it:

- ``lifecycle``: ``Dispatcher``: start, add a handler, scale, stop (drain), stats;
- ``runner``: a worker thread's life: checkout, decode, run the handler, ack;
- ``monitor``: the lease monitor: handlers past their lease, batches held too long;
- ``failures``: a failed attempt: what the worker tells the engine, and what
  the engine decides itself (retry or dead letter);
- ``outage``: a checkout that fails (a server that is down, an owner that
  left): retried with backoff, logged once when it starts and once when it ends;
- ``acks``: a batch handed back: acks sent together, unstarted messages released;
- ``pool``: the workers of one handler: membership, scaling, batch size;
- ``processes``: a ``processes=N`` handler's worker processes (``child``:
  the entry point such a process runs);
- ``tallies``: per-worker counters and histograms for ``handler_stats()``.
"""

from ringq.dispatch.lifecycle import Dispatcher

__all__ = ["Dispatcher"]
