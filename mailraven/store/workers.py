"""The server's side of the store worker processes (L{mailraven.store.worker}).

Each received message is stored by one of C{store.workers} child processes:
metadata, spam verdict, gzip, write, fdatasync, and the commit of its rows
(search index included) in that worker's group commit. The server process
keeps the SMTP sessions and, for everything else it writes (API, queue,
users), its own writer thread; all writers share one lock (store/sqlite.py).

Nothing waits on a worker that is not there: until a worker has said it is
ready, and after all of them are gone, L{StoreWorkers.available} is false and
the store prepares on its file threads as before. A worker that dies fails
only the messages it held (451, the client retries: nothing acknowledged is
lost) and is started again; one that cannot even start is given up on after
a few tries, loudly.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import pickle
import sys
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

import mailraven
from mailraven.policy.scoring import SpamRejected
from mailraven.store.worker import HEADER, SERVER_PID, WorkerSettings, encodeFrame

RESTART_DELAY = 1.0
MAX_START_FAILURES = 3  # deaths in a row before ever saying ready
STOP_TIMEOUT = 10.0
FILL_MESSAGES = 10  # a worker's batch, for choosing (docs/performance.md)
FILL_BYTES = 128 * 1024
PIPE_SIZE = 1 << 20  # a worker's input pipe (_widenPipe)


class WorkerError(Exception):
    """Preparing the message failed in the worker (its traceback is the text)."""


class WorkerLost(Exception):
    """The worker ended while it held this message; the client may retry."""


class _Worker(ProcessProtocol):
    log = Logger()

    def __init__(self, pool: StoreWorkers) -> None:
        self._pool = pool
        self._buffer = bytearray()
        self._stderr = bytearray()
        self.pending: dict[int, Deferred] = {}
        self.sizes: dict[int, int] = {}  # bytes of each pending message
        self.ready = False  # takes work
        self.started = False  # said ready once
        self.closing = False
        self.ended: Deferred = Deferred()

    def connectionMade(self) -> None:
        _widenPipe(self.transport.pipes.get(0))
        self.transport.write(encodeFrame(self._pool.settings))

    def send(self, rid: int, request: tuple, result: Deferred, size: int) -> None:
        self.pending[rid] = result
        self.sizes[rid] = size
        self.transport.write(encodeFrame(request))

    def close(self) -> None:
        """No more work: the worker exits once it has answered what it holds."""
        if not self.closing:
            self.closing = True
            self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 2:
            self._logStderr(data)
            return
        self._buffer += data
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if len(self._buffer) < HEADER.size + length:
                break
            frame = bytes(self._buffer[HEADER.size : HEADER.size + length])
            del self._buffer[: HEADER.size + length]
            self._answer(pickle.loads(frame))

    def _answer(self, message: tuple) -> None:
        if message[0] == "ready":
            self.ready = self.started = True
            self._pool._workerReady(self, message[1])
            return
        if message[0] == "commit":
            self._pool.onCommit(message[1], message[2])
            return
        result = self.pending.pop(message[1], None)
        self.sizes.pop(message[1], None)
        if result is None:
            self.log.error(
                "store worker answered an unknown request {rid}", rid=message[1]
            )
            return
        if message[0] == "ok":
            result.callback((message[2], message[3]))  # message id, spam score
        elif message[0] == "spam":
            result.errback(SpamRejected(message[2], message[3]))
        else:
            result.errback(WorkerError(message[2]))
        if self._pool.stopping and not self.pending:
            self.close()

    def _logStderr(self, data: bytes) -> None:
        self._stderr += data
        *lines, rest = self._stderr.split(b"\n")
        self._stderr = bytearray(rest)
        for line in lines:
            self.log.warn(
                "store worker: {line}",
                line=line.decode("utf-8", "replace"),
                event="store_worker_output",
            )

    def processEnded(self, reason: Failure) -> None:
        # Out of the pool first: an errback below may deliver the next message.
        self.ready = False
        self._pool._workerEnded(self, reason)
        pending, self.pending, self.sizes = self.pending, {}, {}
        for result in pending.values():
            result.errback(WorkerLost("store worker ended with the message in flight"))
        self.ended.callback(None)


def _widenPipe(writer: Any) -> None:
    """
    Linux: room for whole large messages in the worker's input pipe (64 KiB
    by default), so one write takes a message instead of several rounds of
    both processes. At 64 KB x 20 that was 28-42 % more mail per second, the
    server's and the workers' CPU per message both a fifth lower
    (docs/performance.md). Where that is refused the default stays.
    """
    try:
        fcntl.fcntl(writer.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (AttributeError, OSError):
        pass


class StoreWorkers(Service):
    """
    C{count} worker processes; L{prepare} hands a message to the first whose
    batch has room, else to the least busy (L{_choose}).
    """

    log = Logger()

    def __init__(
        self,
        count: int,
        settings: WorkerSettings,
        reactor: Any,
        executable: str = sys.executable,
        onCommit: Callable[[float, int], None] = lambda seconds, items: None,
        readyGauge: Any = None,
    ) -> None:
        self.count = count
        self.onCommit = onCommit
        self._readyGauge = readyGauge
        self.deaths = 0
        self.settings = settings
        self.stopping = False
        self._reactor = reactor
        self._executable = executable
        self._workers: list[_Worker] = []
        self._ids = itertools.count()
        self._startFailures = 0
        self._restarts: list[Any] = []
        self.restartDelay = RESTART_DELAY
        self.gaveUp = False  # the workers never started: threads do the work

    def startService(self) -> None:
        super().startService()
        self.stopping = False
        for _ in range(self.count):
            self._spawn()

    def available(self) -> bool:
        return not self.stopping and any(
            w.ready and not w.closing for w in self._workers
        )

    def prepare(self, request: tuple, size: int = 0) -> Deferred:
        """
        Send C{request} (see L{mailraven.store.worker.Preparer.handle}, without
        its id and whether it is alone; C{size}: the message's bytes) to a
        ready worker; fires with what it answered. Only call when
        L{available}. A message is alone when no worker holds another: a
        worker may then let it wait for its file and its rows side by side.
        """
        alone = not any(w.pending for w in self._workers)
        worker = self._choose(size)
        rid = next(self._ids)
        result: Deferred = Deferred()
        worker.send(rid, (request[0], rid, *request[1:], alone), result, size)
        return result

    def _choose(self, size: int) -> _Worker:
        """
        The first worker whose batch still has room, else the least busy.
        Filling one worker's batch before the next one's makes group commits
        larger (fewer fsyncs and WAL pages per message): at 1 KB x 20 that
        was 6-17 % more mail per second than spreading evenly. Large
        messages spread at once, their preparation being the longer part.
        """
        ready = [w for w in self._workers if w.ready and not w.closing]
        for worker in ready:
            if (
                len(worker.pending) < FILL_MESSAGES
                and sum(worker.sizes.values()) + size <= FILL_BYTES
            ):
                return worker
        return min(ready, key=lambda w: len(w.pending))

    def _spawn(self) -> None:
        worker = _Worker(self)
        env = dict(os.environ)
        # The worker imports the very mailraven this server runs, wherever from.
        root = os.path.dirname(os.path.dirname(os.path.abspath(mailraven.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, env.get("PYTHONPATH")) if p
        )
        env[SERVER_PID] = str(os.getpid())
        try:
            self._reactor.spawnProcess(
                worker,
                self._executable,
                [self._executable, "-m", "mailraven.store.worker"],
                env=env,
                childFDs={0: "w", 1: "r", 2: "r"},
            )
        except Exception:
            self.log.failure("cannot start a store worker", event="store_worker_failed")
            return
        self._workers.append(worker)

    def health(self) -> dict:
        """For /health: degraded once the workers were given up on."""
        return {
            "status": "degraded" if self.gaveUp else "ok",
            "configured": self.count,
            "ready": self._ready(),
            "ended_unexpectedly": self.deaths,
        }

    def _ready(self) -> int:
        return sum(w.ready for w in self._workers)

    def _countReady(self) -> None:
        if self._readyGauge is not None:
            self._readyGauge.set(self._ready())

    def _workerReady(self, worker: _Worker, pid: int) -> None:
        self._countReady()
        self._startFailures = 0
        self.log.info("store worker {pid} ready", pid=pid, event="store_worker_ready")

    def _workerEnded(self, worker: _Worker, reason: Failure) -> None:
        self._workers.remove(worker)
        self._countReady()
        if self.stopping or not self.running:
            return
        self.deaths += 1
        if not worker.started:
            self._startFailures += 1
        self.log.error(
            "store worker ended: {reason}",
            reason=reason.getErrorMessage(),
            event="store_worker_ended",
        )
        if self._startFailures >= MAX_START_FAILURES * self.count:
            self.gaveUp = True
            self.log.critical(
                "store workers do not start; messages are prepared on threads",
                event="store_workers_unavailable",
            )
            return
        call = self._reactor.callLater(self.restartDelay, self._restart)
        self._restarts.append(call)

    def _restart(self) -> None:
        self._restarts = [c for c in self._restarts if c.active()]
        if self.running and not self.stopping:
            self._spawn()

    def stopService(self) -> Deferred:
        """Answer what is in flight, then let every worker exit (bounded)."""
        super().stopService()
        self.stopping = True
        for call in self._restarts:
            if call.active():
                call.cancel()
        self._restarts = []
        if not self._workers:
            return succeed(None)
        for worker in self._workers:
            if not worker.pending:
                worker.close()
        ended = DeferredList([w.ended for w in self._workers])
        timer = self._reactor.callLater(STOP_TIMEOUT, self._kill)
        ended.addBoth(lambda r: timer.cancel() if timer.active() else None)
        return ended

    def _kill(self) -> None:
        for worker in self._workers:
            self.log.warn("store worker did not exit in time; killing it")
            try:
                worker.transport.signalProcess("KILL")
            except Exception:
                pass
