"""The engine's side of call recording: policy per queue, the index in the CDR store, health, metrics,
crash recovery at start, retention purges, and authorised downloads.

How this works: ``RecordingService.start(call_id, queue, agent_id)`` decides from the queue's policy
whether this call is recorded (always / never / on demand / a stable sample), writes the index row
*first* (so a crash leaves a row that points at the file), and returns the ``recordings.Recording``
the media bridge feeds through its tap. When the recording closes, its result (duration, size,
sha256, error, paused spans) completes the row. At start, rows that were never completed are files
a crash left behind: they are repaired and marked ``recovered``.

The writer runs in its own threads (recordings package); this module only talks to it from the
event loop and awaits its futures. Downloads stream the decrypted audio from a worker thread and
every attempt, allowed or not, goes to the audit log.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

import recordings as rec
from engine.config import Config, QueueConfig
from engine.storage import Store
from engine.storage.schema import recordings as recordings_table
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


class RecordingService:
    def __init__(self, config: Config, store: Store, *, base_dir: Path) -> None:
        self._config = config
        self._store = store
        rc = config.recordings
        self.root = Path(rc.dir) if Path(rc.dir).is_absolute() else base_dir / rc.dir
        self.keyring = self._load_keyring(config)
        self.writer = rec.RecordingWriter(
            dict(DECODERS),
            rec.WriterConfig(flush_interval_s=rc.flush_interval_s),
            keyring=self.keyring,
        )
        self._pending: set[asyncio.Future[Any]] = set()
        self.index_errors = 0

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
        if self.writer.healthy():
            return None
        return f"recording writes failing: {self.writer.last_error}"

    # -- one call ----------------------------------------------------------------------------------

    async def start(
        self, call_id: str, queue: str, agent_id: str | None, *, on_demand: bool = False
    ) -> rec.Recording | None:
        """A Recording to feed, or None when the queue's policy says this call is not recorded."""
        qcfg = next((q for q in self._config.queues if q.name == queue), None)
        if qcfg is None:
            return None
        policy = queue_policy(self._config, qcfg)
        if not on_demand and not rec.should_record(policy, call_id):
            return None
        recording_id = uuid.uuid4().hex
        now = time.time()
        day = datetime.fromtimestamp(now, UTC)
        suffix = {"wav": "wav", "flac": "flac", "opus": "opus"}[policy.format.value]
        path = self.root / f"{day:%Y/%m/%d}" / f"{recording_id}.{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        key_id = self.keyring.active_key_id if policy.encrypt and self.keyring else None
        async with self._store.engine.begin() as conn:
            await conn.execute(
                recordings_table.insert().values(
                    id=recording_id, call_id=call_id, queue=queue, agent_id=agent_id,
                    started_at=now, path=str(path), codec=policy.format.value, key_id=key_id,
                )
            )  # fmt: skip
        recording = self.writer.start_recording(
            recording_id, path, fmt=policy.format, encrypt=policy.encrypt, call_id=call_id
        )
        done = asyncio.wrap_future(recording.result)
        self._pending.add(done)
        done.add_done_callback(self._finished)
        return recording

    def _finished(self, fut: asyncio.Future[rec.RecordingResult]) -> None:
        self._pending.discard(fut)
        if fut.cancelled() or fut.exception() is not None:
            log.error("recording_result_missing", reason=str(fut.exception()))
            return
        task = asyncio.get_running_loop().create_task(self._complete_row(fut.result()))
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
        try:
            async with self._store.engine.begin() as conn:
                await conn.execute(
                    recordings_table.update()
                    .where(recordings_table.c.id == result.recording_id)
                    .values(**values)
                )
        except sa.exc.SQLAlchemyError as exc:
            self.index_errors += 1
            log.error("recording_index_failed", recording_id=result.recording_id, reason=str(exc))

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
            live = Path(path) if codec == "wav" else Path(f"{path}.live.wav")
            target = live if live.exists() else Path(path)
            if not target.exists():
                await self._mark(recording_id, error="file missing after a crash", recovered=True)
                continue
            try:
                result = await asyncio.to_thread(rec.recover_file, target)
            except (OSError, rec.RecordingCryptoError) as exc:
                await self._mark(recording_id, error=f"recovery failed: {exc}", recovered=True)
                continue
            if not result.ok:
                await self._mark(
                    recording_id, error=f"recovery failed: {result.problem}", recovered=True
                )
                continue
            await self._mark(
                recording_id,
                recovered=True,
                path=str(target),
                size_bytes=target.stat().st_size,
                duration_s=result.duration_s,
                error="recovered after a crash",
            )
            recovered.append(recording_id)
            log.warning("recording_recovered", recording_id=recording_id, path=str(target))
        return recovered

    async def _mark(self, recording_id: str, **values: Any) -> None:
        async with self._store.engine.begin() as conn:
            await conn.execute(
                recordings_table.update()
                .where(recordings_table.c.id == recording_id)
                .values(**values)
            )

    def retention_policy(self) -> rec.RetentionPolicy:
        default = self._config.recordings.retention_days or None
        days: dict[str, int | None] = {}
        for q in self._config.queues:
            if q.retention_days is not None:
                days[q.name] = q.retention_days or None
        return rec.RetentionPolicy(days_by_queue=days, default_days=default)

    async def purge(self, *, dry_run: bool = False, now: float | None = None) -> rec.PurgeReport:
        """Delete recordings past their queue's retention (never legal hold); mark their rows."""
        now = time.time() if now is None else now
        async with self._store.engine.connect() as conn:
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
        report = await asyncio.to_thread(
            rec.purge, index, self.retention_policy(), now, dry_run=dry_run, root=self.root
        )
        if not dry_run:
            gone = [row.recording_id for row in (*report.deleted, *report.missing)]
            if gone:
                async with self._store.engine.begin() as conn:
                    await conn.execute(
                        recordings_table.update()
                        .where(recordings_table.c.id.in_(gone))
                        .values(purged_at=now)
                    )
        return report

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

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())
