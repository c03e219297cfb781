"""Process-pool handlers: ``@q.handler(T, processes=N)``.

The handler function runs in N worker processes, so CPU-bound Python
handlers use more than one core. Everything else stays in the process that
runs the handlers: checkout, leases, retries, dead letters and the atomic
ack with the staged follow-ups. Each of the pool's N worker threads drives
one child process:

- The child is a fresh interpreter (``python -m ringq.dispatch.child``,
  started with ``subprocess``: never a ``fork()`` of a process that has the
  queue open). It imports the handler's module (a handler defined in the
  main script is found by running the script as ``__mp_main__``, as
  ``multiprocessing`` does), so handlers must be module-level functions.
  While it imports, a ``ringq.Queue`` opened at module level is *inert*
  (``ringq.backends.pool_worker``): it opens nothing, and its methods say
  to use ``ctx`` instead.
- For each message the worker thread sends the decoded message (pickled)
  and the delivery's fields; the child runs the function with a ``Context``
  whose ``publish`` stages messages that travel back with the outcome, and
  whose ``heartbeat`` asks the worker thread to renew the lease.
- A child that dies is replaced; the attempt fails (retried per the
  handler's policy). A child still running when the lease has run out (plus
  ``GRACE``) is killed and replaced; the attempt fails the same way.
- The exception a handler raised comes back as itself when it can be
  pickled (so ``dead_letter_on`` sees its class), with the child's
  traceback as a note; otherwise as ``HandlerProcessError`` naming its type.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import pickle
import runpy
import signal
import subprocess
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any

from ringq.backend import Delivery, OutgoingMessage
from ringq.context import Context
from ringq.errors import RingqError
from ringq.handlers import MAIN_MODULE_PREFIX

__all__ = ["GRACE", "HandlerProcessError", "ProcessWorker", "UnsendableMessage", "child_main"]

log = logging.getLogger("ringq.dispatch")

#: A child still running this long after its lease ran out is killed.
GRACE = 0.5
#: How long a child may take to start (import the handler's module).
START_TIMEOUT = 60.0


class HandlerProcessError(RingqError):
    """A handler in a worker process failed with an exception that could
    not be sent back as itself, or its process died or ran out of time."""


class UnsendableMessage(HandlerProcessError):
    """The decoded message cannot be pickled for a worker process. It never
    will be (its payload decodes the same way every time), so the attempt
    dead-letters it at once (reason ``non_retryable``) instead of spending
    every attempt on it."""


# -- the worker thread's side -------------------------------------------------------


class ProcessWorker:
    """One child process, driven by one worker thread."""

    def __init__(self, handler: str, ref: tuple[str, str, str | None]) -> None:
        self.handler = handler
        self.ref = ref
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None

    def _start(self) -> Connection:
        import socket

        parent, child = socket.socketpair()
        module, qualname, path = self.ref
        # The child looks for modules where this process does (as
        # multiprocessing's spawn does): a script's own directory first.
        env = {
            **os.environ,
            "RINGQ_POOL_WORKER": str(os.getpid()),
            "RINGQ_POOL_SYS_PATH": json.dumps(sys.path),
        }
        cmd = [
            sys.executable,
            "-m",
            "ringq.dispatch.child",
            str(child.fileno()),
            module,
            qualname,
        ]
        if path is not None:
            cmd.append(path)
        try:
            self.proc = subprocess.Popen(cmd, pass_fds=(child.fileno(),), env=env)
        finally:
            child.close()
        conn = Connection(parent.detach())
        self.conn = conn
        if not conn.poll(START_TIMEOUT):
            self.kill()
            raise HandlerProcessError(
                f"handler {self.handler}: its worker process did not start "
                f"within {START_TIMEOUT:g}s"
            )
        try:
            hello = conn.recv()
        except (EOFError, OSError):
            code = self.kill()
            raise HandlerProcessError(
                f"handler {self.handler}: its worker process exited while starting (code {code})"
            ) from None
        if hello[0] != "ready":
            self.kill()
            raise HandlerProcessError(
                f"handler {self.handler}: its worker process could not load "
                f"{module}.{qualname}:\n{hello[1]}"
            )
        return conn

    def kill(self) -> int | None:
        """Kills the child (if any); returns its exit code."""
        proc, conn = self.proc, self.conn
        self.proc = self.conn = None
        if conn is not None:
            conn.close()
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        return proc.wait()

    def close(self) -> None:
        """Asks the child to exit (killing it if it does not)."""
        proc, conn = self.proc, self.conn
        if proc is None or conn is None:
            return
        try:
            conn.send(("exit",))
            proc.wait(5.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def run(self, msg: object, ctx: Context, pass_context: bool) -> list[OutgoingMessage]:
        """Runs the handler on ``msg`` in the child; returns what it staged.
        Raises what the handler raised (or ``HandlerProcessError``)."""
        conn = self.conn or self._start()
        d = ctx.delivery
        fields = {
            "id": d.id,
            "topic": d.topic,
            "payload": d.payload,
            "attempt": d.attempt,
            "version": d.version,
            "dedup_key": d.dedup_key,
            "headers": d.headers,
            "correlation_id": d.correlation_id,
            "causation_id": d.causation_id,
            "enqueued_at": d.enqueued_at,
            "lease_deadline": d.lease_deadline,
            "queue_id": d.queue_id,
            "priority": d.priority,
            "ordering_key": d.ordering_key,
        }
        try:
            job = pickle.dumps(
                ("job", msg, fields, ctx._lease, ctx.deadline, pass_context, ctx.handler)
            )
        except MemoryError as e:  # not the message's fault: retried
            raise HandlerProcessError(
                f"handler {self.handler}: no memory to send the message to a worker process"
            ) from e
        except Exception as e:
            raise UnsendableMessage(
                f"handler {self.handler}: the message ({type(msg).__name__}) cannot be sent "
                f"to a worker process: {e}"
            ) from e
        try:
            conn.send_bytes(job)
        except OSError:
            code = self.kill()
            raise HandlerProcessError(
                f"handler {self.handler}: its worker process is gone (code {code}); replaced"
            ) from None
        while True:
            left = ctx.deadline + GRACE - time.time()
            if left <= 0 or not conn.poll(left):
                if ctx.deadline + GRACE > time.time():
                    continue  # a heartbeat moved the deadline
                pid = self.proc.pid if self.proc else "?"
                self.kill()
                raise HandlerProcessError(
                    f"handler {self.handler} ran past its lease in worker process {pid}: "
                    "the process was killed and will be replaced"
                )
            try:
                reply = conn.recv()
            except (EOFError, OSError):
                pid = self.proc.pid if self.proc else "?"
                code = self.kill()
                raise HandlerProcessError(
                    f"handler {self.handler}: worker process {pid} died while handling the "
                    f"message (exit code {code}); it will be replaced"
                ) from None
            kind = reply[0]
            if kind == "done":
                # What the handler asked to publish, encoded here with the
                # queue's codec and its before_publish middleware (the
                # child knows neither: an encrypted queue got plaintext).
                for blob, topic, options in reply[1]:
                    try:
                        payload = pickle.loads(blob)
                    except Exception as e:
                        raise HandlerProcessError(
                            f"handler {self.handler}: a message it published in its worker "
                            f"process cannot be read here: {e}"
                        ) from e
                    ctx.publish(payload, topic, **options)
                return ctx.staged
            if kind == "failed":
                raise _exception(reply)
            if kind == "heartbeat":
                try:
                    conn.send(("ok", ctx.heartbeat(reply[1])))
                except Exception as e:
                    conn.send(("error", _picklable(e)))
            elif kind == "superseded":
                try:
                    conn.send(("ok", ctx.superseded))
                except Exception as e:
                    conn.send(("error", _picklable(e)))


def _picklable(e: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(e))
    except Exception:
        return HandlerProcessError(f"{type(e).__name__}: {e}")
    return e


def _exception(reply: tuple[Any, ...]) -> BaseException:
    """The handler's exception from a ``failed`` reply."""
    _, blob, type_name, message, tb = reply
    exc: BaseException | None = None
    if blob is not None:
        try:
            exc = pickle.loads(blob)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        exc = HandlerProcessError(f"{type_name}: {message}")
    exc.add_note(f"raised in a worker process:\n{tb.rstrip()}")
    return exc


# -- the child's side ---------------------------------------------------------------


class _ParentLink:
    """What a child's ``Context`` asks of the worker thread, over the socket."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def _ask(self, request: tuple[Any, ...]) -> Any:
        self.conn.send(request)
        kind, value = self.conn.recv()
        if kind == "error":
            raise value
        return value

    def extend(self, delivery: Delivery, seconds: float) -> float:
        deadline: float = self._ask(("heartbeat", seconds))
        return deadline

    def is_superseded(self, delivery: Delivery) -> bool:
        return bool(self._ask(("superseded",)))


class _ChildContext(Context):
    """A handler's context in a worker process: what it publishes is sent
    to the queue's process as it was given (``calls``: pickled at the call,
    so a later change to the object is not seen, as a thread handler's
    ``publish`` encodes at once), to be encoded there with the queue's
    codec and middleware (an error of those fails the attempt there)."""

    __slots__ = ("calls",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[bytes, str | None, dict[str, Any]]] = []

    def publish(
        self,
        payload: object,
        topic: str | None = None,
        *,
        dedup_key: str | None = None,
        delay: float | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int | None = None,
        ordering_key: str | None = None,
        dedup_window: float | None = None,
    ) -> None:
        options = {
            "dedup_key": dedup_key,
            "delay": delay,
            "headers": None if headers is None else dict(headers),
            "priority": priority,
            "ordering_key": ordering_key,
            "dedup_window": dedup_window,
        }
        try:
            blob = pickle.dumps(payload)
        except Exception as e:
            raise HandlerProcessError(
                f"handler {self.handler}: a message it published cannot be sent to the "
                f"queue's process: {e}"
            ) from e
        self.calls.append((blob, topic, {k: v for k, v in options.items() if v is not None}))


class _Expiry:
    """Sets ``ctx`` cancelled when its deadline passes (one thread per child)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.ctx: Context | None = None
        threading.Thread(target=self._run, name="ringq-expiry", daemon=True).start()

    def watch(self, ctx: Context | None) -> None:
        with self.cond:
            self.ctx = ctx
            self.cond.notify()

    def _run(self) -> None:
        with self.cond:
            while True:
                ctx = self.ctx
                if ctx is None:
                    self.cond.wait()
                    continue
                left = ctx.deadline - time.time()
                if left <= 0:
                    ctx._expire()
                    self.ctx = None
                    continue
                self.cond.wait(left)


def _resolve(module: str, qualname: str, path: str | None) -> Callable[..., object]:
    if module == "__main__":
        assert path is not None
        if path.startswith(MAIN_MODULE_PREFIX):
            # ``python -m NAME``: the package context (relative imports) too.
            name = path[len(MAIN_MODULE_PREFIX) :]
            namespace: dict[str, Any] = runpy.run_module(
                name, run_name="__mp_main__", alter_sys=True
            )
        else:
            namespace = runpy.run_path(path, run_name="__mp_main__")
        # As multiprocessing does: the script's names are this process's
        # ``__main__`` too, so a message class defined in the script (pickled
        # as ``__main__.Name``) unpickles here.
        main = types.ModuleType("__mp_main__")
        main.__dict__.update(namespace)
        sys.modules["__main__"] = sys.modules["__mp_main__"] = main
        owner: Any = namespace[qualname.split(".")[0]]
        rest = qualname.split(".")[1:]
    else:
        owner = importlib.import_module(module)
        rest = qualname.split(".")
    for part in rest:
        owner = getattr(owner, part)
    func: Callable[..., object] = owner
    return func


def child_main(argv: list[str]) -> int:
    """A worker process: runs jobs from the socket in ``argv[0]``."""
    from ringq.backends import pool_worker

    pool_worker.become(int(os.environ.pop("RINGQ_POOL_WORKER", "0") or 0))
    parent_path = os.environ.pop("RINGQ_POOL_SYS_PATH", None)
    if parent_path is not None:
        sys.path[:] = json.loads(parent_path)
    # The worker thread decides when this process ends; ^C is for the parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(int(argv[0]))
    module, qualname = argv[1], argv[2]
    path = argv[3] if len(argv) > 3 else None
    try:
        func = _resolve(module, qualname, path)
    except BaseException:
        conn.send(("failed_to_load", traceback.format_exc()))
        return 1
    conn.send(("ready", os.getpid()))
    link = _ParentLink(conn)
    expiry = _Expiry()
    while True:
        try:
            job = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return 0
        if job[0] == "exit":
            return 0
        _, msg, fields, lease, deadline, pass_context, handler = job
        delivery = Delivery(
            fields.pop("id"), fields.pop("topic"), fields.pop("payload"), lease_token=0, **fields
        )
        ctx = _ChildContext(link, delivery, handler, lease)
        ctx.deadline = deadline
        # A heartbeat may shorten the lease: the expiry thread waits anew.
        ctx._on_deadline = lambda _at, ctx=ctx: expiry.watch(ctx)
        expiry.watch(ctx)
        try:
            func(msg, ctx) if pass_context else func(msg)
        except BaseException as e:
            expiry.watch(None)
            try:
                blob: bytes | None = pickle.dumps(e)
            except Exception:
                blob = None
            tb = "".join(traceback.format_exception(e))
            conn.send(("failed", blob, f"{type(e).__module__}.{type(e).__qualname__}", str(e), tb))
            continue
        expiry.watch(None)
        conn.send(("done", ctx.calls))
