"""Daemon configuration: one TOML file decoded into frozen, typed structures.

How this works: ``load_config(path)`` reads the file with :mod:`tomllib`, converts the table into the
``Config`` struct tree with msgspec (``forbid_unknown_fields`` everywhere, so a misspelled key is an
error, not a silently ignored line), then runs the cross-field checks that a type system cannot express
(an agent's queue must exist, ports must be in range, ...). Every failure is raised as
:class:`ConfigError` whose message names the file, the key path in the TOML's own terms
(``queues[2].ring_timeout_s``), what was expected and what was found.

Where things are: ``schema`` (the struct tree, a comment beside each key), ``validate`` (the
cross-field rules), ``load`` (reading, decoding, rewording msgspec's errors, derived paths),
``errors`` (``ConfigError``). Everything is imported from ``engine.config`` itself. Keep the struct
tree there and nowhere else: other modules receive the frozen ``Config`` (or a part of it) and
never look keys up by string.
"""

from engine.config.errors import ConfigError
from engine.config.load import load_config, parse_config
from engine.config.schema import (
    CHANNEL_NAMES,
    STEP_TYPES,
    TASK_CHANNELS,
    AgentConfig,
    AnswerStep,
    ApiConfig,
    ApiToken,
    BansConfig,
    ClusterConfig,
    CollectStep,
    Config,
    EnqueueStep,
    FeatureCodes,
    FloodConfig,
    FlowConfig,
    GotoStep,
    HangupStep,
    HttpConfig,
    IceServerConfig,
    LogConfig,
    LogFormat,
    LoginMode,
    LogLevel,
    LookupStep,
    MediaConfig,
    MenuStep,
    PlayStep,
    QueueConfig,
    RecordingsConfig,
    RelaxStepConfig,
    Role,
    RouteConfig,
    RuntimeConfig,
    SecurityConfig,
    SetStep,
    SipConfig,
    SipListener,
    Step,
    StorageConfig,
    Strategy,
    TransferStep,
    TrunkConfig,
    WebRtcConfig,
    outbound_proxy_uri,
)

__all__ = [
    "CHANNEL_NAMES",
    "STEP_TYPES",
    "TASK_CHANNELS",
    "AgentConfig",
    "AnswerStep",
    "ApiConfig",
    "ApiToken",
    "BansConfig",
    "ClusterConfig",
    "CollectStep",
    "Config",
    "ConfigError",
    "EnqueueStep",
    "FeatureCodes",
    "FloodConfig",
    "FlowConfig",
    "GotoStep",
    "HangupStep",
    "HttpConfig",
    "IceServerConfig",
    "LogConfig",
    "LogFormat",
    "LogLevel",
    "LoginMode",
    "LookupStep",
    "MediaConfig",
    "MenuStep",
    "PlayStep",
    "QueueConfig",
    "RecordingsConfig",
    "RelaxStepConfig",
    "Role",
    "RouteConfig",
    "RuntimeConfig",
    "SecurityConfig",
    "SetStep",
    "SipConfig",
    "SipListener",
    "Step",
    "StorageConfig",
    "Strategy",
    "TransferStep",
    "TrunkConfig",
    "WebRtcConfig",
    "load_config",
    "outbound_proxy_uri",
    "parse_config",
]
