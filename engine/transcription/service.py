"""The daemon's transcription: finished recordings queued, decoded in worker processes, stored.

How this works: ``TranscriptionService.recording_indexed(id)`` is called by the recording service
each time a recording's index row is completed (closed normally, or repaired after a lost writer
or a crash); it only puts the id on an in-memory queue, so a call never waits for it. ``run()``
(owned by the daemon's task group) first queues every finished recording that has no transcript
yet, oldest first: the queue is rebuilt from the store at each start, so a crash or a restart
loses nothing. Then ``workers`` consumers take ids off the queue; each reads the recording's row,
skips what is not to be transcribed (another queue, purged, no audio), and hands a
``pipeline.Job`` to a ``ProcessPoolExecutor`` of ``workers`` processes (PocketSphinx is CPU-bound
and holds the GIL: decoding on the event loop or in a thread would delay SIP and RTP). The
transcript is saved (sealed when the recording is encrypted, engine/transcription/store.py), the QA
outcomes are counted, and a failed rule publishes a ``qa`` event.

Failures: an unreadable file, a key the keyring lacks or a worker that died is retried after
``retry_backoff_s``, doubled each time, up to ``max_attempts`` tries; then it is counted ``failed``
(and tried again after the next start, from the store). A worker process that dies breaks the pool:
it is replaced at once (``acd_transcription_worker_restarts_total``) and its job retried. An
unexpected exception ends that one job (``acd_unexpected_errors_total{where="transcription"}``),
never the consumers. Readiness stays green whatever the backlog: calls do not depend on it; a dead
pool shows as ``acd_transcription_workers_up`` 0.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

import msgspec
import sqlalchemy as sa
import structlog
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

import recordings as rec
from engine.config import Config
from engine.runtime.events import Event, EventBus
from engine.storage import Store
from engine.storage.schema import recordings as recordings_table
from engine.storage.schema import transcripts
from engine.transcription.asr import ModelError
from engine.transcription.pipeline import Job, Transcript, run_job_timed, warm_up
from engine.transcription.store import save_transcript

log = structlog.stdlib.get_logger("acd.transcription")

# Transcription wall time per recording: a few seconds for a short call, minutes for a long one.
DURATION_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class TranscriptionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.transcriptions = Counter(
            "acd_transcriptions_total",
            "Recordings transcribed, by outcome (done; retry: a try failed and another follows;"
            " failed: the last try failed).",
            ["outcome"],
            registry=r,
        )
        self.qa_results = Counter(
            "acd_qa_results_total",
            "QA rule outcomes of transcribed calls, by queue, rule and outcome (pass, fail).",
            ["queue", "rule", "outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "acd_transcription_duration_seconds",
            "Wall time to transcribe one recording (both channels, in a worker process).",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.cpu = Counter(
            "acd_transcription_cpu_seconds",
            "CPU seconds the worker processes spent on transcribed recordings (divide by the"
            " audio's seconds for the real-time factor; size [transcription] workers with it).",
            registry=r,
        )
        self.audio = Counter(
            "acd_transcription_audio_seconds",
            "Seconds of recordings transcribed (a stereo recording's length, both channels decoded).",
            registry=r,
        )
        self.restarts = Counter(
            "acd_transcription_worker_restarts_total",
            "Times the transcription worker pool was replaced because a worker process died.",
            registry=r,
        )
        self.workers_up = Gauge(
            "acd_transcription_workers_up",
            "1 while the transcription worker pool can take recordings, 0 when it is dead"
            " (the model failed to load, or a worker died and the pool is being replaced).",
            registry=r,
        )


class TranscriptionService:
    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        keyring: rec.Keyring | None,
        bus: EventBus | None,
        metrics: TranscriptionMetrics,
        on_unexpected: Callable[[], None] = lambda: None,
    ) -> None:
        self._config = config.transcription
        # The pool's size, the engine and its model are read at start (a reload reports them as
        # needing a restart, see ``apply``).
        self._workers = config.transcription.workers
        self._engine = (config.transcription.engine, config.transcription.model)
        self._store = store
        self._keyring = keyring
        self._bus = bus
        self.metrics = metrics
        self._on_unexpected = on_unexpected
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._known: set[str] = set()  # queued, waiting for a retry, or being transcribed
        self._attempts: dict[str, int] = {}
        self._retries: dict[str, asyncio.TimerHandle] = {}
        self._busy = 0
        self._pool: ProcessPoolExecutor | None = None
        self.dead: str | None = None  # why the pool cannot take recordings, None when it can
        # Set once the start-up backlog is queued and everything is done; cleared by new work.
        self._idle = asyncio.Event()
        self._scanned = False

    def apply(self, config: Config) -> list[str]:
        """A reloaded config: rules, queues, masking and retries apply to the next recordings;
        returns the keys that need a restart."""
        old, self._config = self._config, config.transcription
        keys = ("enabled", "workers", "engine", "model")
        return [f"transcription.{k}" for k in keys if getattr(old, k) != getattr(self._config, k)]

    # -- the backlog ---------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Recordings queued, waiting for a retry, or being transcribed."""
        return len(self._known)

    def recording_indexed(self, recording_id: str) -> None:
        """A recording's index row is complete: queue it (never blocks, never raises)."""
        if recording_id in self._known:
            return
        self._known.add(recording_id)
        self._idle.clear()
        self._queue.put_nowait(recording_id)

    async def wait_idle(self) -> None:
        """Until the start-up backlog is queued and nothing is queued, retried or being
        transcribed (tests)."""
        await self._idle.wait()

    async def _pending_from_store(self) -> list[str]:
        """Finished recordings (with audio, not purged) that have no transcript, oldest first."""
        r = recordings_table
        query = (
            sa.select(r.c.id)
            .select_from(r.outerjoin(transcripts, transcripts.c.recording_id == r.c.id))
            .where(
                transcripts.c.recording_id.is_(None),
                r.c.purged_at.is_(None),
                r.c.duration_s > 0,
            )
            .order_by(r.c.started_at)
        )
        if self._config.queues:
            query = query.where(r.c.queue.in_(self._config.queues))
        async with self._store.engine.connect() as conn:
            return [row[0] for row in await conn.execute(query)]

    # -- running -------------------------------------------------------------------------------

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn: the daemon has threads (recording writers, the store's), which fork would copy
        # mid-state; a spawned worker imports only the pipeline.
        return ProcessPoolExecutor(
            self._workers, mp_context=get_context("spawn"), initializer=worker_init
        )

    async def _warm_up(self) -> bool:
        """Start every worker and load the engine's model in it, before the first recording: a
        model that cannot load is reported at start with the key to fix, and the pool marked dead
        (calls go on). One warm-up per worker at once makes the pool spawn them all now (it
        spawns a process for a job that finds none idle), not when a backlog arrives."""
        assert self._pool is not None
        loop = asyncio.get_running_loop()
        try:
            await asyncio.gather(
                *(
                    loop.run_in_executor(self._pool, warm_up, *self._engine)
                    for _ in range(self._workers)
                )
            )
        except (ModelError, KeyError) as exc:
            self.dead = f"transcription.model: {exc}"
            log.error("transcription_model_failed", key="transcription.model", reason=str(exc))
            self.metrics.workers_up.set(0)
            return False
        except Exception as exc:  # BrokenProcessPool, or the engine's own failure: contained
            self.dead = f"the worker could not load the engine: {exc!r}"
            log.error("transcription_pool_broken", reason=repr(exc))
            self.metrics.workers_up.set(0)
            return False
        self.dead = None
        self.metrics.workers_up.set(1)
        return True

    async def run(self) -> None:
        """Queue what the store holds untranscribed, then transcribe until cancelled. Never
        raises but ``CancelledError``: a bug here stops transcription, not the daemon."""
        try:
            await self._run()
        except Exception as exc:
            self._on_unexpected()
            self.dead = f"transcription stopped: {exc!r}"
            self.metrics.workers_up.set(0)
            log.exception("transcription_unexpected_error")
            await asyncio.Event().wait()  # the daemon cancels this at stop

    async def _run(self) -> None:
        self._pool = self._new_pool()
        try:
            began = time.monotonic()
            if not await self._warm_up():
                await asyncio.Event().wait()  # dead until a restart; the backlog stays in the store
            log.info(
                "transcription_ready",
                workers=self._workers,
                engine=self._engine[0],
                seconds=round(time.monotonic() - began, 3),
            )
            try:
                pending = await self._pending_from_store()
            except sa.exc.SQLAlchemyError as exc:
                log.error("transcription_backlog_unreadable", reason=str(exc))
                pending = []
            for recording_id in pending:
                self.recording_indexed(recording_id)
            if pending:
                log.info("transcription_backlog_queued", recordings=len(pending))
            self._scanned = True
            self._check_idle()
            async with asyncio.TaskGroup() as tasks:
                for _ in range(self._workers):
                    tasks.create_task(self._consume())
        finally:
            for handle in self._retries.values():
                handle.cancel()
            self._retries.clear()
            pool, self._pool = self._pool, None
            if pool is not None:
                stop_pool(pool)

    async def _consume(self) -> None:
        while True:
            recording_id = await self._queue.get()
            self._busy += 1
            try:
                await self._one(recording_id)
            except Exception:  # a bug: this recording's job ends, the consumer goes on
                self._on_unexpected()
                log.exception("transcription_unexpected_error", recording_id=recording_id)
                self._forget(recording_id)
                self.metrics.transcriptions.labels(outcome="failed").inc()
            finally:
                self._busy -= 1
                self._check_idle()

    def _forget(self, recording_id: str) -> None:
        self._known.discard(recording_id)
        self._attempts.pop(recording_id, None)

    def _check_idle(self) -> None:
        if self._scanned and not self._known and self._busy == 0:
            self._idle.set()

    async def _row(self, recording_id: str) -> dict[str, Any] | None:
        async with self._store.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        sa.select(recordings_table).where(recordings_table.c.id == recording_id)
                    )
                )
                .mappings()
                .first()
            )
        return None if row is None else dict(row)

    def _wanted(self, row: dict[str, Any] | None) -> bool:
        if row is None or row["purged_at"] is not None or not row["duration_s"]:
            return False
        return not self._config.queues or row["queue"] in self._config.queues

    async def _one(self, recording_id: str) -> None:
        try:
            row = await self._row(recording_id)
        except sa.exc.SQLAlchemyError as exc:
            self._failed(recording_id, f"index unreadable: {exc}")
            return
        if not self._wanted(row):
            self._forget(recording_id)
            return
        assert row is not None
        config = msgspec.structs.replace(
            self._config, engine=self._engine[0], model=self._engine[1]
        )
        spans = tuple((int(a), int(b)) for a, b in row["paused_spans"] or ())
        job = Job(
            row["path"], row["codec"] or "wav", self._keyring, spans, config, row["queue"] or ""
        )
        loop = asyncio.get_running_loop()
        began = time.monotonic()
        try:
            if self._pool is None:
                raise BrokenProcessPool("the pool is not running")
            transcript, cpu_s = await loop.run_in_executor(self._pool, run_job_timed, job)
        except BrokenProcessPool as exc:
            await self._replace_pool(str(exc))
            self._failed(recording_id, f"worker process died: {exc}")
            return
        except (OSError, ValueError, rec.RecordingCryptoError, rec.KeyringError, ModelError) as exc:
            self._failed(recording_id, str(exc))
            return
        elapsed = time.monotonic() - began
        try:
            await save_transcript(self._store, row, transcript, self._keyring)
        except (sa.exc.SQLAlchemyError, rec.KeyringError, rec.RecordingCryptoError) as exc:
            self._failed(recording_id, f"transcript not stored: {exc}")
            return
        self._forget(recording_id)
        self.metrics.transcriptions.labels(outcome="done").inc()
        self.metrics.duration.observe(elapsed)
        self.metrics.cpu.inc(cpu_s)
        self.metrics.audio.inc(transcript.duration_s)
        self._report_qa(row, transcript)
        log.info(
            "transcribed",
            call_id=row["call_id"],
            recording_id=recording_id,
            audio_s=round(transcript.duration_s, 1),
            seconds=round(elapsed, 2),
            cpu_s=round(cpu_s, 2),
            qa_failed=[r.rule for r in transcript.qa if not r.passed],
        )

    def _report_qa(self, row: dict[str, Any], transcript: Transcript) -> None:
        queue = row["queue"] or ""
        for result in transcript.qa:
            outcome = "pass" if result.passed else "fail"
            self.metrics.qa_results.labels(queue=queue, rule=result.rule, outcome=outcome).inc()
        failed = [r for r in transcript.qa if not r.passed]
        if failed and self._bus is not None:
            self._bus.publish(
                Event(
                    type="qa", at=time.time(), event="failed", call_id=row["call_id"],
                    queue=queue or None, agent_id=row["agent_id"],
                    data={
                        "recording_id": row["id"],
                        "failed": [r.rule for r in failed],
                        "rules": [
                            {"rule": r.rule, "type": r.type, "passed": r.passed,
                             "times": [[e.start_s, e.end_s] for e in r.evidence]}
                            for r in transcript.qa
                        ],
                    },
                )
            )  # fmt: skip

    def _failed(self, recording_id: str, why: str) -> None:
        attempts = self._attempts.get(recording_id, 0) + 1
        self._attempts[recording_id] = attempts
        if attempts >= self._config.max_attempts:
            log.error(
                "transcription_failed", recording_id=recording_id, attempts=attempts, reason=why
            )
            self.metrics.transcriptions.labels(outcome="failed").inc()
            self._forget(recording_id)
            return
        delay = self._config.retry_backoff_s * 2 ** (attempts - 1)
        log.warning(
            "transcription_retry", recording_id=recording_id, attempt=attempts, in_s=delay,
            reason=why,
        )  # fmt: skip
        self.metrics.transcriptions.labels(outcome="retry").inc()
        self._retries[recording_id] = asyncio.get_running_loop().call_later(
            delay, self._retry, recording_id
        )

    def _retry(self, recording_id: str) -> None:
        self._retries.pop(recording_id, None)
        self._queue.put_nowait(recording_id)

    async def _replace_pool(self, why: str) -> None:
        """A worker died (killed, out of memory, a crash in native code): every job in that pool
        failed with it. Only the first consumer to see it replaces the pool."""
        broken = self._pool
        if broken is None or not getattr(broken, "_broken", False):
            return
        self.metrics.workers_up.set(0)
        self.metrics.restarts.inc()
        log.error("transcription_worker_died", reason=why)
        stop_pool(broken)
        self._pool = self._new_pool()
        await self._warm_up()


def worker_init() -> None:
    """In each worker: a Ctrl-C or a service manager's SIGTERM goes to the whole process group;
    the daemon drains its calls first and then stops its workers itself (as the media workers
    do, engine/runtime/workers.py). And a worker whose daemon died (SIGKILL, a crash) exits
    instead of waiting forever for jobs: a thread waits on the parent's sentinel."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def exit_with_parent() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=exit_with_parent, name="exit-with-daemon", daemon=True).start()


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Drop the queued jobs (the store still lists their recordings for the next start) and end
    the workers now: a decode under way is not waited for, it would hold the daemon's exit for
    as long as the recording takes (the executor joins its processes at interpreter exit)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.kill()  # SIGKILL: they ignore SIGTERM (worker_init)


class TranscriptionCollector(Collector):
    """The backlog, read at scrape time."""

    def __init__(self, service: TranscriptionService) -> None:
        self._service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "acd_transcription_backlog",
            "Recordings waiting to be transcribed (queued, waiting for a retry, or in a worker).",
            value=self._service.backlog,
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())
