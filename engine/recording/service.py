"""The engine's side of call recording: policy per queue, the index in the CDR store, health, metrics,
crash recovery at start, retention purges, and authorised downloads.

How this works: ``RecordingService.start(call_id, queue, agent_id)`` decides from the queue's policy
whether this call is recorded (always / never / on demand / a stable sample), writes the index row
*first* (so a crash leaves a row that points at the file), and returns the ``recordings.Recording``
the media bridge feeds through its tap. When the recording closes, its result (duration, size,
sha256, error, paused spans) completes the row. At start, rows that were never completed are files
a crash left behind: they are repaired and marked ``recovered``.

On demand: ``start_on_demand`` is the API's way in (any policy but ``never``); the engine attaches
the returned recording to the live bridge through ``recordings.OnDemandRecording``, which shifts
the bridge's sample positions so the file's position 0 is the moment of the request. Its row has
``on_demand`` set and names who asked in ``started_by``; the API writes the audit row.

Retention: ``purge_index`` is the one purge, used by the daemon's scheduled job and by the
operator's ``acd recordings purge --config`` (engine/cli/recordings.py): it reads the live index,
deletes through ``recordings.purge`` (never a legal-hold row), marks the rows ``purged_at`` and
writes one audit row per deletion, in the same transaction.

The writer runs in its own threads (recordings package); this module only talks to it from the
event loop and awaits its futures. Downloads stream the decrypted audio from a worker thread and
every attempt, allowed or not, goes to the audit log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

import recordings as rec
from engine.config import Config, QueueConfig
from engine.recording.spec import RecordingSpec, RemoteRecorder
from engine.storage import Store
from engine.storage.schema import audit_log, transcripts
from engine.storage.schema import recordings as recordings_table
from recordings.retention import SECONDS_PER_DAY
from sip.rtp.g711 import DECODERS

log = structlog.stdlib.get_logger("acd.recordings")

_FORMATS = {
    "wav": rec.RecordingFormat.WAV,
    "flac": rec.RecordingFormat.FLAC,
    "opus": rec.RecordingFormat.OGG_OPUS,
}
CONTENT_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "opus": "audio/ogg"}


def queue_policy(config: Config, queue: QueueConfig) -> rec.RecordingPolicy:
    mode, percent = rec.RecordingMode.ALWAYS, 100.0
    if queue.record == "never":
        mode = rec.RecordingMode.NEVER
    elif queue.record == "on_demand":
        mode = rec.RecordingMode.ON_DEMAND
    elif queue.record.endswith("%"):
        mode, percent = rec.RecordingMode.SAMPLED, float(queue.record[:-1])
    return rec.RecordingPolicy(
        mode=mode,
        sample_percent=percent,
        encrypt=queue.encrypt_recordings,
        format=_FORMATS[config.recordings.format],
        sample_seed=queue.name,
    )


class RecordingLost(RuntimeError):
    """A recording whose writer went away mid-call (a media worker died, or refused the call):
    the result future fails with this, and the service repairs the file written so far at once and
    completes its index row (the call layer goes on recording in a new file that ``continues`` it).
    """

    def __init__(self, why: str, recording_id: str, path: str, codec: str, call_id: str) -> None:
        super().__init__(why)
        self.why, self.recording_id, self.path, self.codec = why, recording_id, path, codec
        self.call_id = call_id


class RecordingRefused(Exception):
    """An on-demand start the rules forbid; the text says why (the API answers 409 with it).

    Not raised for a storage failure (that is ``sqlalchemy.exc.SQLAlchemyError``) nor for a call
    that does not exist (the caller looks the call up first)."""


def recordings_root(config: Config, base_dir: Path) -> Path:
    """Where recordings live: ``[recordings] dir``, relative to the daemon's working directory."""
    directory = Path(config.recordings.dir)
    return directory if directory.is_absolute() else base_dir / directory


def retention_policy(config: Config) -> rec.RetentionPolicy:
    """Days to keep per queue from the config (0 in the config means forever, None here)."""
    default = config.recordings.retention_days or None
    days: dict[str, int | None] = {}
    for q in config.queues:
        if q.retention_days is not None:
            days[q.name] = q.retention_days or None
    return rec.RetentionPolicy(days_by_queue=days, default_days=default)


@dataclass(frozen=True, slots=True)
class PurgeLine:
    """One recording a purge deleted, would delete, found gone, failed on, or kept (legal hold)."""

    recording_id: str
    queue: str
    age_days: float
    size_bytes: int | None
    path: str
    # deleted | would delete | file already gone | failed | kept: legal hold
    outcome: str
    why: str = ""


@dataclass(frozen=True, slots=True)
class IndexPurge:
    report: rec.PurgeReport
    lines: tuple[PurgeLine, ...]


# The audit log's actor for purges the daemon runs on its own schedule.
PURGE_JOB_ACTOR = "retention-job"


async def purge_index(
    store: Store,
    policy: rec.RetentionPolicy,
    root: Path,
    *,
    now: float,
    dry_run: bool,
    actor: str,
) -> IndexPurge:
    """Delete the recordings past their queue's retention, from the live index; mark and audit.

    Legal-hold rows are never touched; those that would otherwise have expired are reported as
    kept. Files are deleted first (in a thread), then their rows get ``purged_at`` and the audit
    rows are written in one transaction: a crash in between leaves rows whose files are gone,
    which the next run reports as "file already gone" and marks."""
    async with store.engine.connect() as conn:
        rows = (
            (
                await conn.execute(
                    sa.select(recordings_table).where(recordings_table.c.purged_at.is_(None))
                )
            )
            .mappings()
            .all()
        )
    index = [
        rec.IndexRow(
            recording_id=r["id"], queue=r["queue"] or "", started_at=r["started_at"],
            legal_hold=r["legal_hold"], path=r["path"],
        )
        for r in rows
    ]  # fmt: skip
    sizes: dict[str, int | None] = {r["id"]: r["size_bytes"] for r in rows}
    held = [dataclasses.replace(row, legal_hold=False) for row in index if row.legal_hold]
    # The same selection as the purge, as if there were no hold: what the hold is keeping.
    kept = rec.select_for_purge(held, policy, now)
    report = await asyncio.to_thread(rec.purge, index, policy, now, dry_run=dry_run, root=root)
    lines = _purge_lines(report, kept, sizes, now)
    if not dry_run and (report.deleted or report.missing or report.failed):
        gone = [row.recording_id for row in (*report.deleted, *report.missing)]
        audits = [
            {
                "at": now, "actor": actor, "role": None, "action": "recording_purge",
                "object_type": "recording", "object_id": line.recording_id,
                "outcome": "failed" if line.outcome == "failed" else "done",
                "remote_addr": None,
                "detail": {
                    "queue": line.queue, "age_days": line.age_days, "size_bytes": line.size_bytes,
                    "path": line.path, "result": line.outcome, **({"why": line.why} if line.why else {}),
                    "retention_days": policy.days_for(line.queue),
                },
            }
            for line in lines
            if line.outcome in ("deleted", "file already gone", "failed")
        ]  # fmt: skip
        async with store.write() as conn:
            if gone:
                await conn.execute(
                    recordings_table.update()
                    .where(recordings_table.c.id.in_(gone))
                    .values(purged_at=now)
                )
                # A transcript goes with its recording (a held recording is never in ``gone``).
                await conn.execute(transcripts.delete().where(transcripts.c.recording_id.in_(gone)))
            await conn.execute(audit_log.insert(), audits)
    return IndexPurge(report, lines)


def _purge_lines(
    report: rec.PurgeReport,
    kept: Sequence[rec.IndexRow],
    sizes: Mapping[str, int | None],
    now: float,
) -> tuple[PurgeLine, ...]:
    def line(row: rec.IndexRow, outcome: str, why: str = "") -> PurgeLine:
        age = round((now - row.started_at) / SECONDS_PER_DAY, 1)
        return PurgeLine(
            row.recording_id, row.queue, age, sizes.get(row.recording_id), row.path, outcome, why
        )

    deleted = "would delete" if report.dry_run else "deleted"
    return (
        *(line(row, deleted) for row in report.deleted),
        *(line(row, "file already gone") for row in report.missing),
        *(line(row, "failed", why) for row, why in report.failed),
        *(line(row, "kept: legal hold") for row in kept),
    )


_WRITE_TRIES = 3
_WRITE_BACKOFF_S = 0.25


def _transient(exc: sa.exc.DBAPIError) -> bool:
    """A refusal worth another try: SQLite busy/locked, or a connection the server dropped."""
    return exc.connection_invalidated or "locked" in str(exc) or "busy" in str(exc)


class RecordingService:
    def __init__(self, config: Config, store: Store, *, base_dir: Path) -> None:
        self._config = config
        self._store = store
        rc = config.recordings
        self.root = recordings_root(config, base_dir)
        self.keyring = self._load_keyring(config)
        self.writer = rec.RecordingWriter(
            dict(DECODERS),
            rec.WriterConfig(flush_interval_s=rc.flush_interval_s),
            keyring=self.keyring,
        )
        self._pending: set[asyncio.Future[Any]] = set()
        self._starting: set[str] = set()  # call ids with an on-demand start in flight
        self.index_errors = 0
        #: Index rows a start could not write (the store refused, e.g. SQLite locked past its
        #: busy timeout): the call is recorded all the same and the row is inserted, complete,
        #: when the recording closes.
        self._unindexed: dict[str, dict[str, Any]] = {}
        #: Set by the call layer with [media] workers: their writers' health (None = healthy).
        self.remote_writer_error: Callable[[], str | None] | None = None
        #: Set by the daemon with [transcription] enabled: told each recording id whose index
        #: row was just completed (closed, or repaired after its writer was lost).
        self.on_indexed: Callable[[str], None] | None = None

    def apply(self, config: Config) -> None:
        """A reloaded config: queue policies (record, encrypt, retention) apply to new calls."""
        self._config = config

    @staticmethod
    def _load_keyring(config: Config) -> rec.Keyring | None:
        """The keyring, if any queue encrypts (or one is configured). A bad key source fails start."""
        wanted = any(q.encrypt_recordings for q in config.queues) or bool(
            config.recordings.key_file
        )
        if not wanted:
            return None
        if config.recordings.key_file:
            return rec.Keyring.from_file(config.recordings.key_file)
        return rec.Keyring.from_env()

    async def start_writer(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.writer.start()
        await self.recover()

    async def stop(self) -> None:
        await asyncio.to_thread(self.writer.stop)
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def healthy(self) -> str | None:
        if not self.writer.healthy():
            return f"recording writes failing: {self.writer.last_error}"
        if self._unindexed:
            return f"recording index writes failing: {len(self._unindexed)} rows wait for the store"
        remote = self.remote_writer_error() if self.remote_writer_error is not None else None
        return None if remote is None else f"recording writes failing: {remote}"

    # -- one call ----------------------------------------------------------------------------------

    async def start(
        self,
        call_id: str,
        queue: str,
        agent_id: str | None,
        *,
        on_demand: bool = False,
        started_by: str | None = None,
        remote: RemoteRecorder | None = None,
        continues: str | None = None,
    ) -> Any:
        """A Recording to feed, or None when the queue's policy says this call is not recorded.

        ``on_demand`` skips the policy's decision (the caller checked ``never``): see
        ``start_on_demand``. With ``remote`` the call's media worker writes the file: the result
        is a `RemoteRecording` for its bridge (the index row is written here all the same).
        ``continues``: the id of this call's recording that ended early (`RecordingLost`); the
        new one is started whatever the policy says now, and inherits its on-demand marks."""
        qcfg = next((q for q in self._config.queues if q.name == queue), None)
        if qcfg is None:
            return None
        policy = queue_policy(self._config, qcfg)
        if continues is not None:
            async with self._store.engine.connect() as conn:
                before = (
                    await conn.execute(
                        sa.select(recordings_table.c.on_demand, recordings_table.c.started_by)
                        .where(recordings_table.c.id == continues)
                    )
                ).first()  # fmt: skip
            if before is not None:
                on_demand, started_by = bool(before.on_demand), before.started_by
        elif not on_demand and not rec.should_record(policy, call_id):
            return None
        recording_id = uuid.uuid4().hex
        now = time.time()
        day = datetime.fromtimestamp(now, UTC)
        suffix = {"wav": "wav", "flac": "flac", "opus": "opus"}[policy.format.value]
        path = self.root / f"{day:%Y/%m/%d}" / f"{recording_id}.{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        key_id = self.keyring.active_key_id if policy.encrypt and self.keyring else None
        row: dict[str, Any] = {
            "id": recording_id, "call_id": call_id, "queue": queue, "agent_id": agent_id,
            "started_at": now, "path": str(path), "codec": policy.format.value, "key_id": key_id,
            "on_demand": on_demand, "started_by": started_by if on_demand else None,
            "continues": continues,
        }  # fmt: skip
        try:
            await self._write(lambda conn: conn.execute(recordings_table.insert().values(**row)))
        except sa.exc.SQLAlchemyError as exc:
            # Never drop the call for its index row: record, and insert the row at the close.
            self.index_errors += 1
            self._unindexed[recording_id] = row
            log.error("recording_index_failed", recording_id=recording_id, call_id=call_id,
                      stage="start", reason=str(exc))  # fmt: skip
        if remote is not None:
            rc = self._config.recordings
            recording: Any = remote.new_recording(
                RecordingSpec(
                    recording_id, str(path), policy.format.value, policy.encrypt, call_id,
                    rc.key_file, rc.flush_interval_s,
                )
            )  # fmt: skip
        else:
            recording = self.writer.start_recording(
                recording_id, path, fmt=policy.format, encrypt=policy.encrypt, call_id=call_id
            )
        done = asyncio.wrap_future(recording.result)
        self._pending.add(done)
        done.add_done_callback(self._finished)
        return recording

    async def start_on_demand(
        self,
        call_id: str,
        queue: str,
        agent_id: str | None,
        *,
        requested_by: str,
        remote: RemoteRecorder | None = None,
    ) -> Any:
        """An authorised user asks to record a live call from now on (API).

        Any policy but ``never`` allows it: ``on_demand`` queues exist for this, and a supervisor
        may also want a sampled call that was not drawn. The engine has already refused calls
        that are not bridged or already recorded; here two requests racing for the same call
        cannot both start one. Raises ``RecordingRefused``."""
        qcfg = next((q for q in self._config.queues if q.name == queue), None)
        if qcfg is None:
            raise RecordingRefused(f"the call's queue {queue!r} is no longer configured")
        if qcfg.record == "never":
            raise RecordingRefused(
                f'queue {queue!r} has record = "never": its policy forbids recording this call'
            )
        if call_id in self._starting:
            raise RecordingRefused("a recording of this call is already being started")
        self._starting.add(call_id)
        try:
            recording = await self.start(
                call_id, queue, agent_id, on_demand=True, started_by=requested_by, remote=remote
            )
        finally:
            self._starting.discard(call_id)
        assert recording is not None  # on_demand skips the policy; the queue exists
        return recording

    def _finished(self, fut: asyncio.Future[rec.RecordingResult]) -> None:
        self._pending.discard(fut)
        if fut.cancelled():
            log.error("recording_result_missing", reason="cancelled")
            return
        exc = fut.exception()
        work: Coroutine[Any, Any, Any]
        if isinstance(exc, RecordingLost):
            log.error(
                "recording_lost", call_id=exc.call_id, recording_id=exc.recording_id, reason=exc.why
            )
            work = self._recover_row(
                exc.recording_id, exc.path, exc.codec, why=exc.why, crashed=False
            )
        elif exc is not None:
            log.error("recording_result_missing", reason=str(exc))
            return
        else:
            work = self._complete_row(fut.result())
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _complete_row(self, result: rec.RecordingResult) -> None:
        values: dict[str, Any] = {
            "duration_s": result.duration_s,
            "size_bytes": result.size_bytes,
            "sha256": result.sha256 or None,
            "path": str(result.path),
            "paused_spans": [list(span) for span in result.paused_spans] or None,
            "error": (result.error or ("interrupted" if result.interrupted else None)),
        }
        started = self._unindexed.pop(result.recording_id, None)

        async def complete(conn: Any) -> None:
            if started is not None:  # its start could not write it: the whole row now
                await conn.execute(recordings_table.insert().values({**started, **values}))
                return
            await conn.execute(
                recordings_table.update()
                .where(recordings_table.c.id == result.recording_id)
                .values(**values)
            )

        try:
            await self._write(complete)
        except sa.exc.SQLAlchemyError as exc:
            self.index_errors += 1
            log.error("recording_index_failed", recording_id=result.recording_id,
                      stage="close", reason=str(exc))  # fmt: skip
            return
        if self.on_indexed is not None:
            self.on_indexed(result.recording_id)

    async def _write(self, work: Callable[[Any], Awaitable[Any]]) -> None:
        """``work`` in one transaction, tried again on a transient refusal (SQLite's "database
        is locked" past its busy timeout, a PostgreSQL connection dropped): three tries."""
        for attempt in range(_WRITE_TRIES):
            try:
                async with self._store.write() as conn:
                    await work(conn)
                return
            except sa.exc.DBAPIError as exc:
                if attempt == _WRITE_TRIES - 1 or not _transient(exc):
                    raise
                log.warning("recording_index_retry", attempt=attempt + 1, reason=str(exc)[:200])
                await asyncio.sleep(_WRITE_BACKOFF_S * (attempt + 1))

    async def wait_idle(self) -> None:
        """Wait until every closed recording's index row is complete (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # -- crash recovery and retention ----------------------------------------------------------------

    async def recover(self) -> list[str]:
        """Repair files whose index row was never completed (the daemon died while recording)."""
        async with self._store.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(
                        recordings_table.c.id, recordings_table.c.path, recordings_table.c.codec
                    ).where(
                        recordings_table.c.duration_s.is_(None),
                        recordings_table.c.purged_at.is_(None),
                    )
                )
            ).all()
        recovered: list[str] = []
        for recording_id, path, codec in rows:
            if await self._recover_row(recording_id, path, codec, why="a crash", crashed=True):
                recovered.append(recording_id)
        return recovered

    async def _recover_row(
        self, recording_id: str, path: str, codec: str, *, why: str, crashed: bool
    ) -> bool:
        """Repair the file of a recording that was never closed and complete its row; True if
        some audio was saved. ``why``: what ended it (``a crash`` at start-up, or what a live
        call's writer died of); ``crashed`` marks the row ``recovered``, as the index has always
        meant by it, the other case says so in ``error`` alone."""
        live = Path(path) if codec == "wav" else Path(f"{path}.live.wav")
        target = live if live.exists() else Path(path)
        try:
            if not target.exists():
                missing = "file missing after a crash" if crashed else f"{why}: nothing was written"
                await self._mark(recording_id, error=missing[:255], recovered=crashed)
                return False
            try:
                result = await asyncio.to_thread(rec.recover_file, target)
            except (OSError, rec.RecordingCryptoError) as exc:
                await self._mark(
                    recording_id, error=f"recovery failed: {exc}"[:255], recovered=crashed
                )
                return False
            if not result.ok:
                await self._mark(
                    recording_id,
                    error=f"recovery failed: {result.problem}"[:255],
                    recovered=crashed,
                )
                return False
            await self._mark(
                recording_id,
                recovered=crashed,
                path=str(target),
                size_bytes=target.stat().st_size,
                duration_s=result.duration_s,
                error="recovered after a crash" if crashed else f"{why}; repaired up to it"[:255],
            )
        except sa.exc.SQLAlchemyError as exc:
            self.index_errors += 1
            log.error("recording_index_failed", recording_id=recording_id, reason=str(exc))
            return False
        log.warning("recording_recovered", recording_id=recording_id, path=str(target), why=why)
        if self.on_indexed is not None:
            self.on_indexed(recording_id)
        return True

    async def _mark(self, recording_id: str, **values: Any) -> None:
        async with self._store.write() as conn:
            await conn.execute(
                recordings_table.update()
                .where(recordings_table.c.id == recording_id)
                .values(**values)
            )

    def retention_policy(self) -> rec.RetentionPolicy:
        return retention_policy(self._config)

    async def purge(self, *, dry_run: bool = False, now: float | None = None) -> rec.PurgeReport:
        """Delete recordings past their queue's retention (never legal hold); mark their rows."""
        now = time.time() if now is None else now
        result = await purge_index(
            self._store, self.retention_policy(), self.root,
            now=now, dry_run=dry_run, actor=PURGE_JOB_ACTOR,
        )  # fmt: skip
        return result.report

    async def purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.recordings.purge_interval_s)
            report = await self.purge()
            if report.deleted or report.failed:
                log.info(
                    "recordings_purged", deleted=len(report.deleted), failed=len(report.failed)
                )

    # -- downloads -----------------------------------------------------------------------------------

    def open_stream(self, path: str) -> tuple[int, Iterator[bytes]]:
        """Blocking: size and pieces of the playable (decrypted) file; run it in a thread."""
        return rec.open_recording_stream(path, self.keyring)


class RecordingCollector(Collector):
    """The writer's figures, read at scrape time."""

    def __init__(self, service: RecordingService) -> None:
        self._service = service

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._service.writer.stats()
        yield GaugeMetricFamily(
            "acd_recording_queue_depth", "Audio frames waiting for a recording writer thread.",
            value=stats.queue_depth,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "acd_recordings_active", "Recordings being written now.", value=stats.recordings_active
        )
        yield CounterMetricFamily(
            "acd_recording_dropped_frames", "Frames dropped because the writer queue was full.",
            value=stats.dropped_frames_total,
        )  # fmt: skip
        yield CounterMetricFamily(
            "acd_recording_bytes_written", "Bytes written to recording files.",
            value=stats.bytes_written_total,
        )  # fmt: skip
        yield CounterMetricFamily(
            "acd_recording_errors",
            "Recording write errors (disk full, I/O).",
            value=stats.errors_total,
        )
        yield CounterMetricFamily(
            "acd_recording_index_errors",
            "Recording index rows the store refused after retries (the audio is kept; a row a "
            "start could not write is inserted when the recording closes).",
            value=self._service.index_errors,
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())
