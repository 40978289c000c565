"""Backups inside the server: a daily schedule, retention, one job at a time.

Jobs run L{mailraven.backup.createBackup} on a thread; the admin API starts
them and reports on them, /health and /metrics show how recent the last good
one is.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from mailraven.backup import backupName, createBackup, pruneBackups

CHECK_SECONDS = 60


def parseSchedule(text: str) -> tuple[int, int] | None:
    """ "" (off) or "HH:MM" (daily, UTC); ValueError otherwise."""
    if not text:
        return None
    hours, _, minutes = text.partition(":")
    hour, minute = int(hours), int(minutes)
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ValueError("expected HH:MM")
    return hour, minute


class BackupJobs(TimerService):
    log = Logger()

    def __init__(
        self,
        dataDir: str,
        backupDir: str,
        schedule: str,
        keep: int,
        metrics: Any,
        clock: Any,
        configFile: str | None = None,
        runBackup: Any = None,
    ) -> None:
        super().__init__(CHECK_SECONDS, self.tick)
        # (dataDir, target, configFile) -> Deferred[manifest]; a thread by default
        self._runBackup = runBackup or (
            lambda *args: deferToThread(createBackup, *args)
        )
        self.clock = clock
        self._dataDir = dataDir
        self.backupDir = backupDir
        self._schedule = parseSchedule(schedule)
        self._keep = keep
        self._metrics = metrics
        self._configFile = configFile
        self.jobs: dict[str, dict[str, Any]] = {}
        self.current: dict[str, Any] | None = None
        self.lastScheduled: dict[str, Any] | None = None
        self.lastSuccessAt: float | None = None
        self._lastScheduledDay: str | None = None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), UTC)

    def tick(self) -> Deferred | None:
        """Start the day's scheduled backup once its time has come."""
        if self._schedule is None:
            return None
        now = self._now()
        day = now.date().isoformat()
        due = now.replace(
            hour=self._schedule[0], minute=self._schedule[1], second=0, microsecond=0
        )
        if now < due or self._lastScheduledDay == day or self.current is not None:
            return None
        self._lastScheduledDay = day
        return self.start(scheduled=True)[1]

    def start(self, scheduled: bool = False) -> tuple[dict[str, Any], Deferred | None]:
        """(job, Deferred of its end); the running job if one is running."""
        if self.current is not None:
            return self.current, None
        job = {
            "job_id": str(uuid.uuid4()),
            "status": "running",
            "scheduled": scheduled,
            "started_at": self._now().isoformat(timespec="seconds"),
            "finished_at": None,
        }
        self.jobs[job["job_id"]] = job
        self.current = job
        return job, self._run(job)

    @inlineCallbacks
    def _run(self, job: dict[str, Any]):
        started = time.monotonic()
        target = os.path.join(self.backupDir, backupName())
        self.log.info(
            "backup {id} started into {target}",
            id=job["job_id"],
            target=target,
            event="backup_started",
        )
        try:
            manifest = yield self._runBackup(self._dataDir, target, self._configFile)
            pruned = yield deferToThread(pruneBackups, self.backupDir, self._keep)
        except Exception as e:
            job.update(status="failed", error=str(e))
            self.log.failure(
                "backup {id} failed", id=job["job_id"], event="backup_failed"
            )
        else:
            job.update(
                status="succeeded",
                path=target,
                manifest={
                    "counts": manifest["counts"],
                    "files": len(manifest["files"]),
                    "created_at": manifest["created_at"],
                },
            )
            self.lastSuccessAt = self.clock.seconds()
            self._metrics.backupLastSuccess.set(self.lastSuccessAt)
            self._metrics.backupDuration.set(time.monotonic() - started)
            self._metrics.backupBytes.set(manifest["counts"]["bytes"])
            self.log.info(
                "backup {id} done: {n} messages, pruned {pruned}",
                id=job["job_id"],
                n=manifest["counts"]["messages"],
                pruned=len(pruned),
                event="backup_succeeded",
            )
        job["finished_at"] = self._now().isoformat(timespec="seconds")
        if job["scheduled"]:
            self.lastScheduled = job
        self.current = None
        return job

    def health(self) -> dict[str, Any]:
        """Degraded when the last scheduled backup failed or is overdue."""
        check: dict[str, Any] = {
            "status": "ok",
            "schedule": self._schedule
            and f"{self._schedule[0]:02d}:{self._schedule[1]:02d} UTC",
        }
        if self._schedule is None:
            return check
        if self.lastScheduled is not None and self.lastScheduled["status"] == "failed":
            check.update(status="degraded", error=self.lastScheduled.get("error"))
        overdue = timedelta(days=2).total_seconds()
        reference = self.lastSuccessAt
        if reference is None:
            reference = self._startedAt
        if self.clock.seconds() - reference > overdue:
            check["status"] = "degraded"
            check["overdue"] = True
        return check

    def startService(self) -> None:
        self._startedAt = self.clock.seconds()
        super().startService()
