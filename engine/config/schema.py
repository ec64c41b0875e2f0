"""The configuration's struct tree: one frozen msgspec struct per TOML table, defaults beside each key.

How this works: ``Config`` is the root; every table of the file is a field of it (``sip``,
``queues``, ``agents``, ...), decoded by msgspec with ``forbid_unknown_fields`` everywhere so a
misspelled key is an error. A key's comment here says what it does; docs/configuration.md says
the same for operators. Cross-field rules live in ``validate``; reading the file in ``load``.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Final

import msgspec

from sip import ParseError, Uri

# The channels an agent's `capacity` names and a routing task has (DESIGN.md section 9); the
# order is the Router's channel index (engine.routing.service.CHANNELS). Tasks created through
# the API are of TASK_CHANNELS; voice tasks are calls.
# queues[].callback.mode: who dials the customer (engine.calls.dialout).
CALLBACK_MODES: Final = ("manual", "agent_first", "customer_first")
# the modes in which the daemon places the call (engine.calls.dialout)
DIALLED_CALLBACK_MODES: Final = ("agent_first", "customer_first")
CHANNEL_NAMES: Final = ("voice", "chat", "email", "callback", "social", "ticket")


TASK_CHANNELS: Final = ("chat", "email", "social", "ticket")
# The task service's channels: the API's and "callback", the tasks a waiting caller's key leaves
# (queues[].callback; engine.calls.callbacks). A callback is a phone call to make: the Router
# counts it on the agent's voice capacity (engine.routing.service.ROUTED_AS).
SERVICE_CHANNELS: Final = (*TASK_CHANNELS, "callback")

# What outbound webhooks may subscribe to (engine.webhooks; docs/webhooks.md says what each carries).
WEBHOOK_EVENTS: Final = (
    "call.started",
    "call.answered",
    "call.completed",
    "task.created",
    "task.assigned",
    "task.completed",
)


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base for every config table: immutable, unknown keys rejected."""


class LogFormat(Enum):
    AUTO = "auto"  # JSON lines when stderr is not a terminal, readable console output when it is
    JSON = "json"
    CONSOLE = "console"


class LogLevel(Enum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class Strategy(Enum):
    """Agent order within a queue (mirrors ``routing_core.Strategy``; names are the config words)."""

    LONGEST_IDLE = "longest_idle"
    FEWEST_CALLS = "fewest_calls"
    LEAST_TALK_TIME = "least_talk_time"
    MOST_SKILLED = "most_skilled"
    ROUND_ROBIN = "round_robin"
    LINEAR = "linear"
    RANDOM = "random"
    WEIGHTED_RANDOM = "weighted_random"
    RING_ALL = "ring_all"


class LogConfig(_Struct, frozen=True):
    level: LogLevel = LogLevel.INFO
    format: LogFormat = LogFormat.AUTO


HTTP_OPEN_PATHS = ("/healthz", "/readyz", "/metrics")


class HttpConfig(_Struct, frozen=True):
    bind: str = "127.0.0.1"
    port: int = 8080
    # Seconds a graceful shutdown waits for in-flight HTTP requests.
    shutdown_timeout_s: float = 5.0
    # HTTPS when both are set: the PEM certificate chain we present and its private key.
    cert_file: str = ""
    key_file: str = ""
    # Which of /healthz, /readyz and /metrics answer without a bearer token; one left out needs a
    # token of the monitoring, supervisor or admin role (Prometheus: `authorization` credentials).
    open_paths: tuple[str, ...] = HTTP_OPEN_PATHS


class SipListener(_Struct, frozen=True):
    transport: str = "udp"  # udp | tcp | tls
    bind: str = "127.0.0.1"
    port: int = 5060
    cert_file: str = ""  # tls: PEM certificate chain we present
    key_file: str = ""  # tls: its PEM private key
    ca_file: str = ""  # tls: CAs our outbound TLS connections trust (empty: the system's)


class SipConfig(_Struct, frozen=True):
    listeners: tuple[SipListener, ...] = (SipListener(),)
    # RFC 3261 17.1.1.1 timer values; operators on lossy or slow links raise T1.
    t1_ms: int = 500
    t2_ms: int = 4000
    t4_ms: int = 5000
    realm: str = "acd"
    user_agent: str = "acd"
    # Digest algorithms challenged, in order. MD5 alone by default: many desk phones (and
    # baresip 1.0) fail to register when a 401 also offers SHA-256 (RFC 8760); add "SHA-256"
    # first where every phone supports it.
    digest_algorithms: tuple[str, ...] = ("MD5",)
    # RFC 4028 session timers, as Asterisk's session-timers: "accept" runs them when a trunk's
    # INVITE asks (refreshing ourselves if it says refresher=uas, hanging up a call whose
    # refreshes stop), "refuse" never does.
    session_timers: str = "accept"
    session_expires_s: int = 1800
    min_se_s: int = 90
    # RFC 3263: name servers for NAPTR/SRV/A/AAAA lookups of host names in trunks' outbound
    # proxies and agents' contacts, as "address" or "address:port"; empty: /etc/resolv.conf.
    dns_servers: tuple[str, ...] = ()
    dns_timeout_s: float = 2.0  # one DNS question, every retry and server included
    # An outbound INVITE whose target sends nothing (not even 100 Trying) for this long goes to
    # the next RFC 3263 target, when there is one (Kamailio's fr_timer); 0 waits for timer B.
    failover_timeout_s: float = 4.0


class FloodConfig(_Struct, frozen=True):
    """Kamailio pike: a token bucket per source address, checked before a request is parsed."""

    enabled: bool = True
    # Kamailio's stock config allows 8 requests/s per source (16 per 2 s); a contact center has
    # whole floors of phones behind one NAT address, so the default is far above one site's
    # signalling and far below a scanner's, which sends as fast as its link allows.
    rate_per_s: float = 50.0
    burst: int = 100  # requests a source may send at once before the rate applies


class BansConfig(_Struct, frozen=True):
    """fail2ban over digest failures: jail.conf's maxretry 5, findtime 10m, bantime 10m with
    bantime.increment (each further ban of a source twice as long, up to max_ban_s)."""

    enabled: bool = True
    max_failures: int = 5  # failed REGISTER digests from one source within find_window_s: banned
    find_window_s: float = 600.0
    ban_s: float = 600.0  # the first ban; then doubling
    max_ban_s: float = 604800.0  # a week: the doubling stops here
    forget_s: float = 86400.0  # a source without a ban this long is a first offender again
    # Failures for one user name from anywhere that also ban the source that fails next (a
    # guesser spread over many addresses); 0 turns it off.
    user_max_failures: int = 10


class SecurityConfig(_Struct, frozen=True):
    """Screening of SIP sources (sip.security): flood limits, auth-failure bans, scanners."""

    # Networks never flood-limited, banned or dropped as scanners (management, known sites);
    # every trunk's `allow` networks are added: a trunk must never be banned.
    allow: tuple[str, ...] = ()
    banned_action: str = "drop"  # drop: silently (fail2ban's DROP) | reject: 403 Forbidden
    drop_scanners: bool = True  # drop requests from SIP scanners' User-Agents (friendly-scanner...)
    # Also ban a scanner's source. Off by default: one spoofed UDP packet would ban its victim.
    ban_scanners: bool = False
    flood: FloodConfig = FloodConfig()
    bans: BansConfig = BansConfig()


class StorageConfig(_Struct, frozen=True):
    # Empty means SQLite at ``sqlite_path``; a postgresql:// URL selects PostgreSQL.
    url: str = ""
    sqlite_path: str = "var/acd.sqlite3"  # when not in the file: runtime.var_dir/acd.sqlite3


class RuntimeConfig(_Struct, frozen=True):
    # uvloop roughly halves per-packet overhead on the media path; "off" is for debugging.
    event_loop: str = "uvloop"
    # Home of the state files whose own key is not in the file: storage.sqlite_path becomes
    # <var_dir>/acd.sqlite3 and recordings.dir <var_dir>/recordings (``engine.config.load``).
    var_dir: str = "var"
    # Grace period SIGTERM gives live calls before the daemon exits anyway.
    drain_timeout_s: float = 30.0
    # How many calls and tasks the router holds at once (waiting, ringing or offered, with an
    # agent): its arrays are sized by it at start. A task create beyond it answers 503.
    max_tasks: int = 8192
    # This daemon's name among the nodes sharing one database: it tags the CDR rows of its calls,
    # and at start it closes only its own rows that a crash left open. Empty: the host name.
    node: str = ""


class ClusterConfig(_Struct, frozen=True):
    """Several nodes on one PostgreSQL database (docs/kamailio.md): the routing authority."""

    # Take part in electing one leader among the nodes sharing storage.url (a PostgreSQL
    # advisory lock; needs a postgresql:// storage.url). The leader shows acd_cluster_leader 1.
    leader_election: bool = False
    # Seconds between a standby's attempts to take the lock (the takeover time after the
    # leader dies) and between the leader's checks that it still holds it.
    check_interval_s: float = 1.0


class RelaxStepConfig(_Struct, frozen=True):
    """One relaxation step: after ``after_s`` of waiting, widen who may take the call."""

    after_s: float
    # skill -> minimum level; absent keeps the queue's requirements
    requirements: dict[str, int] | None = None
    # agents whose penalty in this queue is <= max_penalty become eligible (Asterisk penalty steps)
    max_penalty: int | None = None


class CsatConfig(_Struct, frozen=True):
    """A queue's post-call survey: the caller stays on the line when the agent hangs up."""

    # the question, played once the agent has hung up: the caller presses 1 (poor) to 5 (excellent)
    prompt: str = "csat-question"
    # an optional second question, also answered 1 to 5 (empty: none)
    second_prompt: str = ""
    # how long we wait for the key after a question has been played; then no score (and no
    # second question)
    timeout_s: float = 5.0
    # played after the last answer, before we hang up (empty: hang up at once)
    thanks_prompt: str = "csat-thanks"


class CallbackConfig(_Struct, frozen=True):
    """A queue's callback offer (virtual hold): a waiting caller presses a key to hang up and be
    called back, keeping its place in line."""

    # the key the caller presses while waiting (RFC 4733 or SIP INFO): one of 0-9, *, #
    key: str = "1"
    # played after each periodic announcement (announce_every_s), saying which key to press
    prompt: str = "callback-offer"
    # played once the key is pressed, before we hang up (empty: hang up at once)
    confirm_prompt: str = "callback-confirm"
    # who dials: "manual" (the agent accepts the task and dials the customer by hand) or
    # "agent_first" (the daemon rings the agent's phone, whispers `whisper_prompt` to the agent,
    # then dials the customer through `trunk` and bridges the two) or "customer_first" (the
    # daemon reserves the agent, dials the customer through `trunk`, plays them
    # `whisper_prompt`, then rings the agent and bridges the two on its answer)
    mode: str = "manual"
    # agent_first: the trunk (with an outbound_proxy) the customer is dialled through
    trunk: str = ""
    # agent_first: played to the agent on answer, before the customer is dialled;
    # customer_first: to the customer on answer, before the agent is rung (empty: none)
    whisper_prompt: str = "callback-whisper"
    # agent_first: how many times the customer is dialled (no answer, busy, failure) before the
    # callback ends failed
    attempts: int = 3
    # agent_first: after a failed attempt the task waits this long, then is queued again with
    # its original place (effective enqueue time)
    retry_s: float = 300.0
    # agent_first: how long the customer's phone rings before the attempt counts as no answer
    ring_timeout_s: float = 30.0


class SlaTargetConfig(_Struct, frozen=True):
    """Service-level targets of one task channel in a queue (0 = no target)."""

    # from arrival to the agent's first response (a message from the agent side, or the task
    # moved to pending or solved); the clock stops while a ticket is pending or solved
    first_response_s: float = 0.0
    # from arrival to completion (a ticket: solved), pending and solved time not counted
    resolution_s: float = 0.0


class QueueConfig(_Struct, frozen=True):
    name: str
    strategy: Strategy = Strategy.LONGEST_IDLE
    # skill -> minimum level a task in this queue needs by default
    requirements: dict[str, int] = msgspec.field(default_factory=dict)
    steps: tuple[RelaxStepConfig, ...] = ()
    weight: int = 0  # Asterisk `weight`: a heavier queue wins an agent both queues want
    ring_timeout_s: float = 20.0
    # Asterisk `retry`: after a ring without answer, the caller rings nobody for this long
    retry_delay_s: float = 0.0
    reject_delay_s: float = 0.0
    busy_delay_s: float = 0.0
    no_answer_delay_s: float = 0.0
    auto_pause_after: int = 0  # consecutive misses before the agent is paused; 0 = never
    wrap_up_s: float = 10.0
    max_length: int = 0  # 0 = unlimited; a caller beyond it goes to `overflow`
    max_wait_s: float = 0.0  # 0 = wait forever; then the caller goes to `overflow`
    overflow: str = (
        ""  # a flow name to run on max_length or max_wait (empty: hang up with a prompt)
    )
    join_empty: bool = True  # accept callers when no agent is logged in
    leave_empty: bool = False  # send waiting callers to `overflow` when the last agent logs out
    music_on_hold: str = "moh"  # a prompt name looped while waiting
    announce_every_s: float = 0.0  # 0 = no periodic announcements
    announce_position: bool = True
    announce_wait: bool = True
    service_level_s: float = 20.0
    record: str = "always"  # always | never | on_demand | a percentage such as "25%"
    encrypt_recordings: bool = False  # AES-256-GCM at rest with the active key
    retention_days: int | None = None  # None: [recordings] retention_days; 0 = keep forever
    # how long a chat/email/social/ticket offer waits for the agent's accept before it goes to
    # the next agent (as ring_timeout_s does for a call)
    offer_timeout_s: float = 30.0
    # post-call CSAT survey of this queue's answered callers (absent: none); `csat = {}` takes the
    # shipped prompts
    csat: CsatConfig | None = None
    # callback offer to waiting callers (absent: none); `callback = {}` takes key 1 and the
    # shipped prompts. The caller's key ends the call and leaves a "callback" task with the
    # call's place (effective enqueue time and priority) in this queue
    callback: CallbackConfig | None = None
    # task channel -> SLA targets, e.g. { ticket = { first_response_s = 3600, resolution_s =
    # 86400 } }: due times are stored on each task, a breach is an event and a metric
    sla: dict[str, SlaTargetConfig] = msgspec.field(default_factory=dict)
    # a ticket back from pending (customer reply) or reopened from solved is offered to its last
    # agent alone for this long, when that agent is logged in, then to anyone (0 = to anyone)
    reopen_sticky_s: float = 300.0
    # a solved ticket is closed after this long (Zendesk's default: 4 days); 0 = only by hand
    close_solved_after_s: float = 345600.0
    # last-agent routing: a caller answered by a member of this queue within this many days (the
    # CDR store, by caller id) is offered to that agent first; 0 = off
    last_agent_days: float = 0.0
    # how long a caller waits for its preferred agent (the last agent, or a flow `set`'s
    # preferred_agent) while that agent is logged in but not free, before anyone may answer
    preferred_agent_timeout_s: float = 15.0
    # a caller who hangs up while waiting here and calls again within this many seconds keeps
    # its place (its first enqueue time), as does one that comes back from an overflow or a
    # transfer that did not connect; 0 = a new caller goes to the back
    keep_place_s: float = 0.0
    # priority aging: a waiting caller's priority grows by one point per 1 / this many minutes
    # of waiting, so a long wait overtakes a higher priority in time; 0 = off
    priority_aging_per_min: float = 0.0


class LoginMode(Enum):
    REGISTER = "register"  # a SIP phone registers to us with digest auth
    STATIC = "static"  # reached at a fixed contact, typically an extension behind a PBX trunk
    WEBRTC = "webrtc"  # the browser agent desktop


class AgentConfig(_Struct, frozen=True):
    id: str
    name: str = ""
    password: str = ""  # digest password for the agent's phone (or use password_ha1)
    password_ha1: str = ""  # MD5(id:realm:password), so the file need not hold the password
    login: LoginMode = LoginMode.REGISTER
    contact: str = ""  # SIP URI for login = "static"
    trunk: str = ""  # trunk used to reach a static contact
    skills: dict[str, int] = msgspec.field(default_factory=dict)
    # queue name -> penalty (0 is the best)
    queues: dict[str, int] = msgspec.field(default_factory=dict)
    # channel -> how many at once (voice is 1; chat may be more)
    capacity: dict[str, int] = msgspec.field(default_factory=lambda: {"voice": 1})
    api_token: str = ""  # the agent's token for the API and the agent desktop
    # true: this phone is called only over TLS (a sips: or ;transport=tls contact; a REGISTER
    # over UDP/TCP gets 403) and its leg is always SRTP (RTP/SAVP), whatever [media] srtp says
    secure: bool = False


class TrunkConfig(_Struct, frozen=True):
    name: str
    # source networks allowed to send calls (IP ACL); empty means digest credentials are required
    allow: tuple[str, ...] = ()
    # digest credentials (realm: sip.realm) a source outside every trunk's `allow` may answer our
    # 407 with, to call in as this trunk
    username: str = ""
    password: str = ""
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    # where we send outbound INVITEs (agents behind a PBX, transfers); host:port
    outbound_proxy: str = ""
    outbound_username: str = ""  # credentials we answer a 401/407 from the PBX with
    outbound_password: str = ""
    transport: str = "udp"  # udp | tcp | tls: how our INVITEs reach outbound_proxy"
    # How this trunk's callers send DTMF: "rfc4733" (telephone-event packets), "inband" (tones
    # in the audio, detected while a flow runs; telephone-event is not offered), or "auto"
    # (RFC 4733 when the caller's SDP offers telephone-event, tones otherwise). SIP INFO always.
    dtmf: str = "auto"
    # SRTP on this trunk's legs (its callers, and our INVITEs through it: transfers, static
    # agents behind it): "off" | "offer" | "require" as [media] srtp; "" = [media] srtp
    srtp: str = ""


class RouteConfig(_Struct, frozen=True):
    flow: str
    trunk: str = "*"  # trunk name, or "*" for any trunk
    number: str = ""  # dialed number (Request-URI user part), exact
    pattern: str = ""  # or a regular expression matched against the whole number


class AnswerStep(_Struct, frozen=True, tag="answer", tag_field="type"):
    pass


class PlayStep(_Struct, frozen=True, tag="play", tag_field="type"):
    prompt: str
    barge_in: bool = False  # a DTMF digit stops the prompt


class MenuStep(_Struct, frozen=True, tag="menu", tag_field="type"):
    prompt: str
    options: dict[str, str]  # digit -> flow name
    timeout_s: float = 5.0
    retries: int = 2
    invalid_prompt: str = ""
    default: str = ""  # flow run when retries are exhausted; empty = continue with the next step


class CollectStep(_Struct, frozen=True, tag="collect", tag_field="type"):
    var: str  # flow data key the digits are stored under
    prompt: str = ""
    min_digits: int = 1
    max_digits: int = 16
    terminator: str = "#"
    timeout_s: float = 5.0


class LookupStep(_Struct, frozen=True, tag="lookup", tag_field="type"):
    url: str = ""  # HTTP(S) webhook; receives the call's data as JSON, returns JSON merged into it
    # or a lookup provider an enabled plugin adds ([plugins]): one of url and provider
    provider: str = ""
    timeout_s: float = 2.0
    on_error: str = "continue"  # continue | hangup


class SetStep(_Struct, frozen=True, tag="set", tag_field="type"):
    queue: str = ""
    priority: int | None = None
    requirements: dict[str, int] | None = None
    # an agent id the caller is offered to first (the queue's preferred_agent_timeout_s); may
    # use {var} from flow data, e.g. "{account_manager}" from a lookup's result
    preferred_agent: str = ""
    # a tier such as "vip" (may use {var}, e.g. "{tier}" from a lookup): when it is a key of
    # `priorities`, the call's priority becomes that value; the tier goes to flow data `tier`
    tier: str = ""
    priorities: dict[str, int] = msgspec.field(default_factory=dict)
    data: dict[str, str] = msgspec.field(
        default_factory=dict
    )  # values may use {var} from flow data


class EnqueueStep(_Struct, frozen=True, tag="enqueue", tag_field="type"):
    queue: str = ""  # empty: the queue chosen by an earlier `set`


class TransferStep(_Struct, frozen=True, tag="transfer", tag_field="type"):
    trunk: str  # must have an outbound_proxy: the INVITE goes there
    number: str  # dialed at the trunk; may use {var} from flow data
    timeout_s: float = 30.0  # ring time before giving up (the flow then goes on)


class GotoStep(_Struct, frozen=True, tag="goto", tag_field="type"):
    flow: str


class HangupStep(_Struct, frozen=True, tag="hangup", tag_field="type"):
    prompt: str = ""


class PluginStep(_Struct, frozen=True, tag="plugin", tag_field="type"):
    """A step type an enabled plugin adds (engine.plugins). Not written as such in the file:
    ``load`` turns ``{ type = "verify_pin", ... }`` into this once the plugin's own schema has
    accepted the step's other keys, which ``settings`` keeps as written."""

    name: str  # the plugin's step type
    settings: dict[str, Any] = msgspec.field(default_factory=dict)


Step = (
    AnswerStep
    | PlayStep
    | MenuStep
    | CollectStep
    | LookupStep
    | SetStep
    | EnqueueStep
    | TransferStep
    | GotoStep
    | HangupStep
    | PluginStep
)


# The built-in step types (what a file may write); "plugin" is internal (see PluginStep).
STEP_TYPES: Final = tuple(
    str(msgspec.inspect.type_info(t).tag)  # type: ignore[attr-defined]
    for t in Step.__args__
    if t is not PluginStep
)


class FlowConfig(_Struct, frozen=True):
    name: str
    steps: tuple[Step, ...]


class Role(Enum):
    ADMIN = "admin"  # everything, including reload and recordings of any call
    SUPERVISOR = "supervisor"  # live figures, every agent and CDR, agent state changes
    AGENT = "agent"  # their own state, calls and queues (agents' tokens live in [[agents]])
    # a chat widget, mail gateway or CRM: creates and updates tasks, posts the customer's
    # messages; nothing else (no calls, CDRs, recordings, agents or figures)
    INTEGRATION = "integration"
    # a Prometheus server or a load balancer's probe: /metrics, /healthz and /readyz, nothing else
    MONITORING = "monitoring"


class ApiToken(_Struct, frozen=True):
    name: str  # who holds it: appears in the audit log
    role: Role
    token: str = ""  # the bearer token itself, or
    token_sha256: str = ""  # its SHA-256 hex digest, so the file need not hold the secret


class ApiConfig(_Struct, frozen=True):
    tokens: tuple[ApiToken, ...] = ()


class RecordingsConfig(_Struct, frozen=True):
    # where recordings are written (one file per call, by date); when not in the file:
    # runtime.var_dir/recordings
    dir: str = "var/recordings"
    format: str = "wav"  # wav | flac | opus (compressed files are made from the WAV at close)
    # JSON keyring {"active": id, "keys": {id: base64}}; empty: ACD_RECORDING_KEYS in the environment
    key_file: str = ""
    flush_interval_s: float = 1.0  # at most this much audio is lost if the daemon is killed
    retention_days: int = 0  # default for queues without their own; 0 = keep forever
    purge_interval_s: float = 3600.0  # how often the retention purge runs
    agents_download_own: bool = False  # may agents fetch recordings of their own calls?


QA_RULE_TYPES: Final = ("required", "forbidden", "talk_ratio")


class QaRuleConfig(_Struct, frozen=True):
    """One QA rule over a call's transcript (engine/transcription/qa.py)."""

    name: str  # metric label and API key; may contain spaces ("risk disclosure")
    type: str  # required | forbidden | talk_ratio
    queues: tuple[str, ...] = ()  # empty: every queue
    channel: str = "agent"  # agent | caller | any (required, forbidden)
    phrases: tuple[str, ...] = ()  # any one of these wordings (required, forbidden)
    within_s: float = 0.0  # required: said within this long of the recording's start (0 = anywhere)
    min_similarity: float = 0.75  # fuzzy match 0..1 tolerating recognition errors
    min_ratio: float = 0.0  # talk_ratio: agent speech / all speech
    max_ratio: float = 1.0


class TranscriptionConfig(_Struct, frozen=True):
    """Offline speech recognition of finished recordings and QA rules (engine/transcription/)."""

    # transcribe recordings at all (read at start: a change needs a restart)
    enabled: bool = False
    # worker processes decoding recordings at once (read at start); a decode costs 0.2-0.5 s of CPU
    # per second of audio and channel (benchmarks/bench_transcription.py)
    workers: int = 1
    queues: tuple[str, ...] = ()  # recordings of these queues are transcribed; empty: every queue
    max_attempts: int = 3  # tries per recording before it is counted failed (until the next start)
    retry_backoff_s: float = 30.0  # wait before the 2nd try, doubled for each one after
    engine: str = "pocketsphinx"  # built in, or an acd.transcribers entry point
    model: str = ""  # the engine's model directory; empty: the model bundled with the engine
    keyword_threshold: float = 1e-20  # PocketSphinx keyword-spotting threshold for rule phrases
    card_context: tuple[str, ...] = ("card", "number", "credit", "debit", "visa", "mastercard")
    card_min_digits: int = 4  # digits a run after a context word needs to be masked
    card_window_s: float = 20.0  # how long after a context word a digit run is masked
    rules: tuple[QaRuleConfig, ...] = ()


class MediaConfig(_Struct, frozen=True):
    rtp_port_min: int = 20000
    rtp_port_max: int = 29999
    prompts_dir: str = ""  # empty: the prompts shipped with acd
    # seconds without RTP from a bridged leg before the call is ended (0 = never)
    inactivity_timeout_s: float = 30.0
    # processes that carry bridged calls' media (relay, tap, recording); 0 = the daemon itself
    workers: int = 0
    # SRTP with SDES keys (RFC 4568) on SIP legs: "off" (plain RTP; RTP/SAVP offers get 488),
    # "offer" (callers offering a key get SRTP, others plain; agents are offered a key on
    # RTP/AVP and get SRTP if they answer with one) or "require" (callers without a key get 488;
    # agents are offered RTP/SAVP only). Media workers carry SRTP calls too (keys handed over).
    srtp: str = "off"


class IceServerConfig(_Struct, frozen=True):
    """One ICE server handed to the browser and to the gateway's peer connections."""

    urls: tuple[str, ...]  # stun:host:port, turn:host:port?transport=udp, turns:...
    username: str = ""  # TURN only
    credential: str = ""  # TURN only


class WebRtcConfig(_Struct, frozen=True):
    """The media gateway for browser agents (engine/webrtc/gateway.py)."""

    enabled: bool = True
    # Empty: host candidates only. aiortc's own default would reach out to a public STUN server,
    # which a daemon that may have no internet (and should leak nothing) must not do.
    ice_servers: tuple[IceServerConfig, ...] = ()
    # Addresses offered as ICE host candidates; empty: every interface's (aioice's own choice,
    # which never includes loopback). Loopback is what the demo and the tests need.
    host_addresses: tuple[str, ...] = ("127.0.0.1",)
    # Each browser leg costs tens of ms of CPU per call-second (aiortc): a bound keeps a login
    # storm from starving the SIP side.
    max_sessions: int = 200
    # Worker processes running the legs' media (aiortc, codecs, RTP); 0: the daemon's own process.
    # Read at start: a change needs a restart.
    workers: int = 0


class PluginsConfig(_Struct, frozen=True):
    """Which installed plugins (entry points of group ``acd.plugins``) run, and their settings."""

    # plugin names to load at start and on reload; an installed plugin not listed does nothing
    enabled: tuple[str, ...] = ()
    # name -> that plugin's own settings, written as a [plugins.<name>] table and checked by the
    # plugin's schema (engine.plugins); only enabled plugins may have one
    settings: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


class WebhookConfig(_Struct, frozen=True):
    """One outbound webhook: events POSTed as signed JSON, retried, then dead-lettered."""

    url: str  # http(s) endpoint each event is POSTed to
    # HMAC-SHA256 key of the X-Acd-Signature header (at least 16 characters); the receiver
    # holds the same one
    secret: str
    events: tuple[str, ...] = ()  # event types sent (WEBHOOK_EVENTS); empty: all of them
    timeout_s: float = 5.0  # one attempt: connect, send, status line
    max_attempts: int = 5  # attempts before the delivery goes to the dead-letter list
    # wait before the second attempt; doubled for each further one (capped at 1 hour)
    backoff_s: float = 1.0


class FeatureCodes(_Struct, frozen=True):
    ready: str = "*1"
    not_ready: str = "*2"
    logout: str = "*3"


class Config(_Struct, frozen=True):
    log: LogConfig = LogConfig()
    http: HttpConfig = HttpConfig()
    sip: SipConfig = SipConfig()
    security: SecurityConfig = SecurityConfig()
    media: MediaConfig = MediaConfig()
    storage: StorageConfig = StorageConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    cluster: ClusterConfig = ClusterConfig()
    features: FeatureCodes = FeatureCodes()
    api: ApiConfig = ApiConfig()
    recordings: RecordingsConfig = RecordingsConfig()
    webrtc: WebRtcConfig = WebRtcConfig()
    plugins: PluginsConfig = PluginsConfig()
    webhooks: tuple[WebhookConfig, ...] = ()
    transcription: TranscriptionConfig = TranscriptionConfig()
    trunks: tuple[TrunkConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    flows: tuple[FlowConfig, ...] = ()
    queues: tuple[QueueConfig, ...] = ()
    agents: tuple[AgentConfig, ...] = ()
    # Where this config came from, for messages; not a TOML key.
    source: str = ""


def outbound_proxy_uri(trunk: TrunkConfig) -> Uri | None:
    """The trunk's ``outbound_proxy`` as a SIP URI (None when it is not one): "host:port",
    "host" or a sip:/sips: URI, with ``;transport=`` from the trunk's ``transport`` unless the
    URI names one. RFC 3263 then locates it: a port or a numeric host needs no NAPTR/SRV."""
    text = trunk.outbound_proxy.strip()
    if not text.lower().startswith(("sip:", "sips:")):
        text = f"sip:{text}"
    try:
        uri = Uri.parse(text)
    except ParseError:
        return None
    if (
        not uri.host
        or uri.user is not None
        or uri.headers
        or (uri.port is not None and not 0 < uri.port < 65536)
    ):
        return None
    if trunk.transport != "udp" and uri.transport is None:
        uri = uri.with_param("transport", trunk.transport)
    return uri
