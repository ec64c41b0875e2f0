"""The daemon's lifecycle: start, serve, reload on SIGHUP, drain and stop on SIGTERM/SIGINT.

How this works: ``Daemon.run()`` opens the CDR store (applying migrations), then the HTTP listener,
then marks itself ready. Long-lived tasks (event-loop lag monitor, later the SIP and media services)
live in one ``asyncio.TaskGroup`` owned here, so none is fire-and-forget: shutdown cancels them all and
waits for them. Signals only set flags or schedule work on the loop; they never run logic inside a
signal handler.

The SIP listeners answer a load balancer's OPTIONS probe (Kamailio's dispatcher) as ``/readyz``
answers: they open refusing (503), ``_track_readiness`` turns them on once every readiness check
passes and keeps them in step (a check failing, or the drain, turns them off again).

Reload (SIGHUP): the new file is validated first, with its enabled plugins loaded again
(engine.plugins); if it is invalid (or a plugin is broken) the running config and plugins stay
and the reason is logged and counted. Keys that need a restart (listen addresses, storage) are
reported. Plugins' event consumers are the event bus's consumers.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import ssl
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

import routing_core as rc
from engine import api
from engine.api.admin import AdminRefused
from engine.api.app import ReadyCheck, make_app, openapi_document, run_checks
from engine.calls.callbacks import CallbackRequest
from engine.calls.dialout import DialoutOffer
from engine.calls.flows import FlowRunner
from engine.calls.service import CallService
from engine.cluster import LeaderElection
from engine.config import (
    DIALLED_CALLBACK_MODES,
    SERVICE_CHANNELS,
    AdminObject,
    Config,
    ConfigError,
)
from engine.plugins import PluginSet, load_config
from engine.recording.service import RecordingCollector, RecordingService
from engine.routing.agents import AgentDirectory
from engine.routing.service import RoutingCollector, RoutingService
from engine.runtime.events import EventBus
from engine.runtime.logs import configure_logging
from engine.runtime.metrics import EventLoopLagMonitor, Metrics
from engine.runtime.systemd import Notifier
from engine.storage import StorageError, Store, database_url
from engine.storage.admin import load_objects, put_objects
from engine.storage.cdr import CdrWriter, close_interrupted_calls
from engine.storage.tasks import TaskWriter
from engine.tasks import (
    PluginTasks,
    Task,
    TaskCollector,
    TaskError,
    TaskMetrics,
    TaskService,
    TaskState,
)
from engine.transcription.service import (
    TranscriptionCollector,
    TranscriptionMetrics,
    TranscriptionService,
)
from engine.web import add_web_routes
from engine.webhooks import WebhookService
from engine.webrtc.gateway import WebRtcGateway

log = structlog.stdlib.get_logger("acd.daemon")

# Keys whose change only takes effect after a restart: the sockets and database are opened once.
_RESTART_ONLY = ("http", "sip", "storage", "runtime", "cluster")
# How often the SIP health answer (OPTIONS 200/503) is brought in step with the readiness checks:
# within a probe interval of Kamailio's usual ds_ping_interval (docs/kamailio.md), and cheap (one
# storage ping a second).
_READINESS_EVERY_S = 1.0
GC_YOUNG_THRESHOLD = 10_000  # allocations between young collections once the daemon is ready


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        plugins: PluginSet | None = None,
    ) -> None:
        self.config = config
        self.plugins = plugins or PluginSet()
        self.config_path = config_path
        self.metrics = Metrics()
        self.store: Store | None = None
        # the admin API's agents and queues, applied on top of the file at start and each reload
        self.admin_objects: list[AdminObject] = []
        self.cdr: CdrWriter | None = None
        self.routing: RoutingService | None = None
        self.recordings: RecordingService | None = None
        self.calls: CallService | None = None
        self.agents: AgentDirectory | None = None
        self.tasks: TaskService | None = None
        self.task_writer: TaskWriter | None = None
        self.webrtc: WebRtcGateway | None = None
        self.webhooks: WebhookService | None = None
        self.transcription: TranscriptionService | None = None
        self.sip_addr: tuple[str, int] | None = None
        self._http_client: aiohttp.ClientSession | None = None
        self.api = api.ApiContext(
            get_config=lambda: self.config,
            reload=self.reload,
            admin_objects=lambda: self.admin_objects,
            admin_change=self.admin_change,
        )
        self.http_port: int | None = None
        self._runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._admin_lock = asyncio.Lock()
        self._started_monotonic = time.monotonic()
        self.systemd = Notifier()

    # -- readiness -----------------------------------------------------------------------------

    def _ready_checks(self) -> dict[str, ReadyCheck]:
        async def storage() -> str | None:
            if self.store is None:
                return "not open"
            try:
                await self.store.ping()
            except StorageError as exc:
                self.metrics.storage_errors.inc()
                return str(exc)
            return None

        async def listeners() -> str | None:
            if self.http_port is None:
                return "HTTP listener not open"
            if self.sip_addr is None:
                return "SIP listener not open"
            if self.calls is not None and self.calls.draining:
                return "draining: new calls get 503"
            return None

        async def cdr() -> str | None:
            return None if self.cdr is None else await self.cdr.ready_check()

        async def recordings() -> str | None:
            return None if self.recordings is None else self.recordings.healthy()

        checks: dict[str, ReadyCheck] = {
            "storage": storage,
            "listeners": listeners,
            "cdr": cdr,
            "recordings": recordings,
        }
        if self.config.webrtc.workers > 0:  # read at start, like the pool itself

            async def webrtc_workers() -> str | None:
                if self.webrtc is None:
                    return "media workers not started"
                return self.webrtc.workers_not_ready()

            checks["webrtc_workers"] = webrtc_workers
        if self.config.media.workers > 0:

            async def media_workers() -> str | None:
                workers = None if self.calls is None else self.calls.media_workers
                if workers is None:
                    return "media workers not started"
                return workers.not_ready()

            checks["media_workers"] = media_workers
        return checks

    # -- lifecycle -----------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload_requested.set()

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    def _remove_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    async def _start_http(self) -> None:
        paths, schemas = api.openapi_paths()
        tokens = api.TokenTable(self.metrics.registry)
        if self.calls is not None:  # token bans outlast a restart, in the SIP bans' file
            security = self.calls.security
            tokens.on_ban = security.changed
            security.keep(
                "api",
                tokens.export_bans,
                lambda state, elapsed_s: tokens.restore_bans(self.config, state, elapsed_s),
            )
        app = make_app(
            self.metrics,
            self._ready_checks(),
            middlewares=(api.make_auth_middleware(tokens),),
            openapi_doc=openapi_document(paths, schemas),
        )
        app[api.TOKENS_KEY] = tokens
        api.add_routes(app, self.api)
        add_web_routes(app)

        def agent_of(token: str) -> str | None:
            principal = tokens.lookup(self.config, token)
            return None if principal is None else principal.agent_id

        self.webrtc = WebRtcGateway(
            lambda: self.config,
            agent_of,
            self.metrics.registry,
            on_unexpected=self.metrics.unexpected_errors.labels(where="webrtc").inc,
        )
        self.webrtc.add_routes(app)
        await self.webrtc.start()  # media workers ([webrtc] workers): up before the first login
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self.config.http.shutdown_timeout_s,
        )
        await runner.setup()
        http = self.config.http
        tls = None
        if http.cert_file:  # validation made sure key_file is there and matches
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # TLS 1.2 and newer
            tls.load_cert_chain(http.cert_file, http.key_file)
        site = web.TCPSite(runner, http.bind, http.port, ssl_context=tls)
        await site.start()
        self._runner = runner
        server = site._server  # aiohttp exposes the bound port only through the server object
        sockets = getattr(server, "sockets", None) or ()
        self.http_port = sockets[0].getsockname()[1] if sockets else self.config.http.port

    @property
    def _http_scheme(self) -> str:
        return "https" if self.config.http.cert_file else "http"

    async def _track_readiness(self) -> None:
        """Answer SIP OPTIONS probes 200 exactly while /readyz would answer 200."""
        assert self.calls is not None
        checks = self._ready_checks()
        while True:
            try:
                outcome = await run_checks(checks)
            except Exception as exc:  # a check's bug: 503 and say why, never end the daemon
                self.metrics.unexpected_errors.labels(where="readiness").inc()
                outcome = {"readiness": f"check failed: {exc!r}"}
            failing = {name: reason for name, reason in outcome.items() if reason != "ok"}
            accepting = not failing and not self.calls.draining
            if accepting != self.calls.listeners.accepting:
                log.info("sip_probe_answer", answer=200 if accepting else 503, failing=failing)
                self.calls.listeners.set_accepting(accepting)
            await asyncio.sleep(_READINESS_EVERY_S)

    async def _reload_loop(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            self.reload()

    def reload(self) -> bool:
        """Validate and apply the config file again; False (and the old config kept) if invalid."""
        self.systemd.reloading()
        applied = self._reload()
        self.systemd.ready(
            f"{self._status()}; config reloaded"
            if applied
            else f"{self._status()}; the last reload was rejected (see the log), the config in use kept"
        )
        return applied

    async def _create_callback(self, request: CallbackRequest) -> str:
        """A waiting caller's callback (engine.calls.callbacks): a task of channel "callback"
        in the call's queue, with the call's priority and place in line."""
        assert self.tasks is not None
        task, _ = await self.tasks.create(
            channel="callback", queue=request.queue, created_by="system",
            priority=request.priority, requirements=request.requirements,
            customer={"number": request.number},
            data={"call_id": request.call_id, "number": request.number, "trunk": request.trunk,
                  "dialed": request.dialed},
            external_id=f"callback:{request.call_id}", enqueued_at=request.place_at,
            channels=("callback",),
        )  # fmt: skip
        return task.id

    def _ring_callback(self, task: Task, agent_id: str) -> bool:
        """An offer of a callback task in an agent_first queue: the call layer rings the agent
        and dials the customer (engine.calls.dialout); True when it took the offer."""
        assert self.calls is not None
        qcfg = next((q for q in self.config.queues if q.name == task.queue), None)
        callback = qcfg.callback if qcfg is not None else None
        if (
            task.channel != "callback"
            or callback is None
            or callback.mode not in DIALLED_CALLBACK_MODES
        ):
            return False
        data = task.data or {}
        self.calls.dialout.offer(
            DialoutOffer(
                task_id=task.id, agent_id=agent_id, queue=task.queue,
                number=str(data.get("number", "")), dialed=str(data.get("dialed", "")),
                call_id=str(data.get("call_id", "")), attempt=int(data.get("attempts", 0)) + 1,
            )
        )  # fmt: skip
        return True

    async def _callback_answered(self, task_id: str, agent_id: str, call_id: str) -> bool:
        """An agent-first callback's customer answered: the task becomes the agent's (False
        when it cannot: cancelled through the API meanwhile)."""
        assert self.tasks is not None
        try:
            await self.tasks.phone_answered(task_id, agent_id, call_id)
        except TaskError as exc:
            log.warning("callback_task_not_accepted", task_id=task_id, reason=str(exc))
            return False
        except StorageError as exc:  # accepted all the same: the next write stores it
            log.error("callback_accept_not_stored", task_id=task_id, reason=str(exc))
        return True

    async def _callback_dialed(
        self, task_id: str, agent_id: str, call_id: str, outcome: str
    ) -> None:
        """An agent-first attempt ended: the task is completed, retried or failed, and counted."""
        assert self.tasks is not None
        assert self.calls is not None
        task = self.tasks.get(task_id)
        if task is None:
            return
        qcfg = next((q for q in self.config.queues if q.name == task.queue), None)
        callback = qcfg.callback if qcfg is not None else None
        try:
            result = await self.tasks.dial_ended(
                task_id, agent_id, call_id, outcome,
                attempts=callback.attempts if callback is not None else 1,
                retry_s=callback.retry_s if callback is not None else 0.0,
            )  # fmt: skip
        except (TaskError, StorageError) as exc:  # e.g. cancelled by the API meanwhile
            log.warning("callback_task_not_updated", task_id=task_id, reason=str(exc))
            return
        if result is not None:
            self.calls.callbacks.metrics.total.labels(queue=task.queue, outcome=result).inc()
        log.info("callback_attempt_ended", task_id=task_id, outcome=outcome, result=result)

    def _callbacks_waiting(self, queue: str) -> list[tuple[int, float]]:
        """(priority, effective enqueue time) of the callback tasks not yet taken in ``queue``:
        the callers behind them hear their position counting them."""
        if self.tasks is None:
            return []
        return [
            (t.priority, t.enqueued_at)
            for t in self.tasks.tasks.values()
            if t.channel == "callback" and t.queue == queue
            and t.state in (TaskState.WAITING, TaskState.OFFERED)
        ]  # fmt: skip

    def _set_consumers(self) -> None:
        consumers = list(self.plugins.consumers)
        if self.webhooks is not None:
            consumers.append(("webhooks", self.webhooks.consume))
        self.bus.set_consumers(consumers)

    def _status(self) -> str:
        """One line for `systemctl status`."""
        calls = len(self.calls.calls) if self.calls is not None else 0
        sip = ", ".join(_listener_text(x) for x in self.calls.listening) if self.calls else "-"
        return f"ready: SIP {sip}, HTTP port {self.http_port}, {calls} live calls"

    def _reload(self) -> bool:
        if self.config_path is None:
            log.warning(
                "reload_skipped", reason="running on the embedded default; no file to re-read"
            )
            self.metrics.config_reloads.labels(outcome="rejected").inc()
            return False
        try:
            new, plugins = load_config(self.config_path, overlay=self.admin_objects)
        except ConfigError as exc:
            log.error("reload_rejected", reason=str(exc), kept=self.config.source)
            self.metrics.config_reloads.labels(outcome="rejected").inc()
            return False
        refused = [] if self.routing is None else self.routing.refused(new)
        if refused:
            log.error("reload_rejected", reason="; ".join(refused), kept=self.config.source)
            self.metrics.config_reloads.labels(outcome="rejected").inc()
            return False
        needs_restart = [k for k in _RESTART_ONLY if getattr(new, k) != getattr(self.config, k)]
        if self.routing is not None:
            try:
                self.routing.apply(new)
            except rc.RoutingError:
                # The config checks refuse everything the routing core does, so this is our bug:
                # logged, and the daemon (and the rest of the reload) goes on.
                log.exception("reload_routing_failed", file=str(self.config_path))
        if self.agents is not None:
            self.agents.apply(new)
        if self.calls is not None:
            self.calls.apply(new, plugins)
        if self.webhooks is not None:
            self.webhooks.apply(new)
        self.plugins = plugins
        self._set_consumers()
        if self.tasks is not None:
            self.tasks.apply(new)
        if self.recordings is not None:
            self.recordings.apply(new)
        if self.transcription is not None:
            needs_restart += self.transcription.apply(new)
        elif new.transcription.enabled:
            needs_restart.append("transcription.enabled")
        self.config = new
        configure_logging(new.log)
        self.metrics.config_reloads.labels(outcome="applied").inc()
        log.info("reload_applied", file=str(self.config_path), restart_needed_for=needs_restart)
        return True

    async def admin_change(
        self, changes: Sequence[tuple[str, str, Mapping[str, Any] | None]], actor: str
    ) -> None:
        """Admin API changes, all or none ((kind, name, body); body None deletes): the file with
        the stored objects and these on top must pass the file's checks (else ConfigError) and
        must not strand waiting callers (else AdminRefused); then they are stored and applied
        like a reload."""
        if self.store is None:
            raise AdminRefused("the store is not open")
        if self.config_path is None:
            raise AdminRefused("the daemon runs on the embedded default: no file to build on")
        async with self._admin_lock:
            objects = list(self.admin_objects)
            for kind, name, body in changes:
                objects = [o for o in objects if (o.kind, o.name) != (kind, name)]
                objects.append(AdminObject(kind=kind, name=name, body=body, deleted=body is None))
            new, _plugins = load_config(self.config_path, overlay=objects)
            refused = [] if self.routing is None else self.routing.refused(new)
            if refused:
                raise AdminRefused("; ".join(refused))
            try:
                await put_objects(self.store, changes, by=actor)
            except (SQLAlchemyError, OSError) as exc:
                raise AdminRefused(f"not stored: {exc}") from exc
            self.admin_objects = objects
            if not self.reload():  # the file itself changed meanwhile and is now invalid
                raise AdminRefused("stored, but the reload was rejected (see reload_rejected)")

    async def _apply_admin_objects(self) -> bool:
        """At start: the effective config is the file with the admin API's stored agents and
        queues on top (engine.config.overlay). False (logged) when the store cannot be read or
        the stored objects no longer fit the file: the daemon does not start without them."""
        assert self.store is not None
        try:
            self.admin_objects = await load_objects(self.store)
        except (SQLAlchemyError, OSError) as exc:
            log.error("admin_objects_unreadable", reason=str(exc))
            return False
        if not self.admin_objects:
            return True
        if self.config_path is None:
            log.error(
                "admin_objects_without_file",
                reason="the store holds admin API objects but no config file was given",
                objects=len(self.admin_objects),
            )
            return False
        try:
            self.config, self.plugins = load_config(self.config_path, overlay=self.admin_objects)
        except ConfigError as exc:
            log.error("admin_objects_rejected", reason=str(exc), objects=len(self.admin_objects))
            return False
        log.info("admin_objects_applied", objects=len(self.admin_objects))
        return True

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or ``request_stop``); returns the process exit code."""
        loop = asyncio.get_running_loop()
        self._install_signal_handlers(loop)
        try:
            return await self._serve()
        finally:
            self._remove_signal_handlers(loop)

    async def _serve(self) -> int:
        url = database_url(self.config.storage, base_dir=Path.cwd())
        try:
            self.store = await Store.open(url)
        except StorageError as exc:
            log.error("storage_open_failed", reason=str(exc), url=_redact(url))
            return 1
        if not await self._apply_admin_objects():
            await self.store.close()
            return 1
        self.bus = EventBus()
        self.cdr = CdrWriter(self.store, self.metrics, bus=self.bus)
        try:  # rows of calls a crash (or SIGKILL) of this node cut off: closed, with the reason
            interrupted = await close_interrupted_calls(
                self.store, self.config.runtime.node, time.time()
            )
        except StorageError as exc:
            log.error("interrupted_calls_not_closed", reason=str(exc))
        else:
            if interrupted:
                log.warning(
                    "interrupted_calls_closed",
                    calls=interrupted,
                    node=self.config.runtime.node,
                    message=f"{interrupted} calls were live when this node last stopped; "
                    "their CDR rows now say failed, interrupted",
                )
        self.routing = RoutingService(
            self.config, loop=asyncio.get_running_loop(), max_tasks=self.config.runtime.max_tasks
        )
        # Compile or load every numba kernel before any listener opens (DESIGN.md section 4): the
        # first call must not pay a compile.
        began = time.monotonic()
        compiled, loaded = await asyncio.to_thread(self.routing.warmup)
        log.info(
            "routing_kernels_ready",
            compiled=compiled,
            loaded_from_cache=loaded,
            seconds=round(time.monotonic() - began, 3),
            # A cold cache (first start after an install or upgrade) costs ~20 s here.
            hint="`acd precompile` fills the cache ahead of a start" if compiled else None,
        )
        self.metrics.registry.register(RoutingCollector(lambda: self.routing))
        self.api.store, self.api.cdr, self.api.routing = self.store, self.cdr, self.routing
        self.api.bus = self.bus
        try:
            self.recordings = RecordingService(self.config, self.store, base_dir=Path.cwd())
            await self.recordings.start_writer()
        except (OSError, ValueError) as exc:
            log.error("recordings_start_failed", reason=str(exc))
            await self.store.close()
            return 1
        self.metrics.registry.register(RecordingCollector(self.recordings))
        self.api.recordings = self.recordings
        if self.config.transcription.enabled:
            # Finished recordings are transcribed in worker processes (read at start).
            self.transcription = TranscriptionService(
                self.config,
                self.store,
                keyring=self.recordings.keyring,
                bus=self.bus,
                metrics=TranscriptionMetrics(self.metrics.registry),
                on_unexpected=self.metrics.unexpected_errors.labels(where="transcription").inc,
            )
            self.metrics.registry.register(TranscriptionCollector(self.transcription))
            self.recordings.on_indexed = self.transcription.recording_indexed
        self.api.transcription = self.transcription
        loop = asyncio.get_running_loop()
        self.agents = AgentDirectory(self.config, self.routing, self.cdr, loop)
        # CRM lookups from call flows: one pooled client, bounded per host.
        self._http_client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit_per_host=32))
        # Events out: the plugins' consumers and the [[webhooks]], fed by the bus.
        self.webhooks = WebhookService(
            self.config, self.store, self._http_client, self.metrics.registry
        )
        self.api.webhooks = self.webhooks
        self._set_consumers()
        self.calls = CallService(
            self.config,
            routing=self.routing,
            agents=self.agents,
            cdr=self.cdr,
            recordings=self.recordings,
            metrics=self.metrics,
            flows=FlowRunner(
                self.config,
                self._http_client,
                plugins=self.plugins,
                on_plugin_error=self.metrics.unexpected_errors.labels(where="plugin").inc,
            ),
            bus=self.bus,
        )
        self.api.calls = self.calls
        try:  # the expected wait's handling times and abandonments survive a restart
            await self.calls.queueing.learn(self.store, time.time() - 86400.0)
        except StorageError as exc:
            log.error("wait_history_not_read", reason=str(exc))
        # Chats, e-mails, social messages and tickets: routing tasks of their channels.
        self.task_writer = TaskWriter(self.store, on_error=self.metrics.storage_errors.inc)
        self.tasks = TaskService(
            self.config,
            self.routing,
            writer=self.task_writer,
            bus=self.bus,
            metrics=TaskMetrics(self.metrics.registry),
            on_work_done=self.agents.call_completed,
            cdr=self.cdr,
        )
        self.metrics.registry.register(TaskCollector(lambda: self.tasks))
        self.api.tasks = self.tasks
        self.calls.flows.tasks = PluginTasks(self.tasks)  # plugin steps: tickets, follow-ups
        # The router's decisions go to the call layer (voice), the task service (the other
        # channels) and the agent directory, all built on it.
        task_handlers = self.tasks.handlers()
        self.routing.connect(
            on_offer=self.calls.on_offer,
            on_withdraw=self.calls.on_withdraw,
            on_queue_empty=self.calls.on_queue_empty,
            on_wrap_up_end=self.agents.wrap_up_ended,
            channels=dict.fromkeys(SERVICE_CHANNELS, task_handlers),
        )
        if self.cdr is not None:  # the calls row's wrap_up_s: the time the agent really took
            self.routing.on_wrap_up_done = self.cdr.call_wrap_up
        self.calls.callbacks.create_task = self._create_callback
        self.calls.callbacks.waiting = self._callbacks_waiting
        # Agent-first callbacks: the task's offers ring the agent's phone (engine.calls.dialout).
        self.tasks.ring, self.tasks.unring = self._ring_callback, self.calls.dialout.withdraw
        self.calls.dialout.refused = self.tasks.phone_refused
        self.calls.dialout.answered = self._callback_answered
        self.calls.dialout.ended = self._callback_dialed
        try:  # what was open when the daemon stopped goes back in its queues, in its order
            await self.tasks.recover(self.store)
        except StorageError as exc:
            log.error("tasks_recovery_failed", reason=str(exc))
            await self._shutdown()
            return 1
        try:
            self.sip_addr = await self.calls.start()
        except OSError as exc:
            log.error("sip_listen_failed", reason=str(exc))
            await self._shutdown()
            return 1
        try:
            await self._start_http()
        except OSError as exc:
            log.error(
                "http_listen_failed",
                bind=self.config.http.bind,
                port=self.config.http.port,
                reason=str(exc),
            )
            await self._shutdown()  # SIP listeners, media workers, the store: all that started
            return 1
        if self.webrtc is not None:
            self.calls.attach_webrtc(self.webrtc)  # browser agents ring through their softphone
        try:
            async with asyncio.TaskGroup() as tasks:
                owned = [
                    tasks.create_task(EventLoopLagMonitor(self.metrics.event_loop_lag).run()),
                    tasks.create_task(self._reload_loop()),
                    tasks.create_task(self.cdr.run()),
                    tasks.create_task(self.recordings.purge_loop()),
                    tasks.create_task(self.systemd.watchdog()),
                    tasks.create_task(self._track_readiness()),
                    tasks.create_task(self.webhooks.run()),
                ]
                if self.config.cluster.leader_election:  # one routing authority among nodes
                    election = LeaderElection(
                        self.config.storage.url,
                        interval_s=self.config.cluster.check_interval_s,
                        registry=self.metrics.registry,
                    )
                    owned.append(tasks.create_task(election.run()))
                task_writes = tasks.create_task(self.task_writer.run())
                if self.transcription is not None:
                    owned.append(tasks.create_task(self.transcription.run()))
                # Everything allocated so far (config, routing arrays, compiled kernels) lives for the
                # whole run: move it out of the collector's reach so a full collection never walks it
                # in the middle of a dispatch (measured: it dominated routing p99).
                gc.freeze()
                # A live call's objects (legs, transactions, dialogs, SDP) live for its seconds, so
                # at the default 700 allocations per young collection they are walked again and
                # again and promoted to be walked once more. A young collection every 10000
                # allocations (tens of ms apart at full load) halved the collector's CPU in
                # benchmarks/profile_acd.py's 200 calls (40 -> 21 ms, docs/performance.md).
                # Cycles are still collected, only a little later.
                gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
                self.metrics.ready.set(1)
                log.info(
                    "ready",
                    http=f"{self._http_scheme}://{self.config.http.bind}:{self.http_port}",
                    storage=self.store.dialect,
                    # the first listener (what the README's examples dial), then all of them
                    sip=_listener_text(self.calls.listening[0]),
                    sip_listeners=[_listener_text(x) for x in self.calls.listening],
                    config=self.config.source or "embedded default",
                    plugins=[p.plugin.name for p in self.plugins.plugins],
                    startup_s=round(time.monotonic() - self._started_monotonic, 3),
                )
                self.systemd.ready(self._status())
                await self._stop.wait()
                log.info("stopping", live_calls=len(self.calls.calls))
                self.systemd.stopping(f"draining {len(self.calls.calls)} live calls")
                self.metrics.ready.set(0)
                await self.calls.drain(self.config.runtime.drain_timeout_s)
                await self.task_writer.close()  # every task change is on disk before exit
                await task_writes
                for task in owned:
                    task.cancel()
        finally:
            await self._shutdown()
        log.info("stopped")
        return 0

    async def _shutdown(self) -> None:
        self.systemd.close()
        if self.calls is not None:
            await self.calls.stop()
        if self.agents is not None:
            self.agents.close()
        if self.tasks is not None:
            self.tasks.close()
        if self.webhooks is not None:  # what is still pending goes to the dead-letter list
            await self.webhooks.close()
        if self._http_client is not None:
            await self._http_client.close()
        if self.routing is not None:
            self.routing.close()
        if self.recordings is not None:
            await self.recordings.stop()
        if self.cdr is not None:
            await self.cdr.close()
        if self.webrtc is not None:  # before the HTTP server: open WebSockets would hold it up
            await self.webrtc.close()
        if self._runner is not None:
            try:
                await self._runner.cleanup()
            except OSError as exc:
                log.warning("http_cleanup_failed", reason=str(exc))
        if self.store is not None:
            await self.store.close()


def _redact(url: str) -> str:
    """Hide a password in a database URL before logging it."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def run_daemon(
    config: Config, *, config_path: Path | None, plugins: PluginSet | None = None
) -> int:
    """Run the daemon to completion on the configured event loop; the process exit code."""
    loop_factory: Any = None
    if config.runtime.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop_unavailable", fallback="asyncio")
        else:
            loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(Daemon(config, config_path=config_path, plugins=plugins).run())


def _listener_text(listener: tuple[str, tuple[str, int]]) -> str:
    kind, (host, port) = listener
    return f"{kind}:{host}:{port}"
