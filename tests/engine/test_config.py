"""Config decoding and validation: every mistake names the file and the key path."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from engine.calls.media import srtp_mode
from engine.cli.main import embedded_default_text
from engine.config import (
    CallbackConfig,
    Config,
    ConfigError,
    MenuStep,
    Strategy,
    load_config,
    parse_config,
)

REPO = Path(__file__).resolve().parents[2]


def test_shipped_default_config_is_valid_and_binds_to_loopback_only() -> None:
    cfg = load_config(REPO / "config" / "acd.toml")
    assert cfg.http.bind == "127.0.0.1"
    assert [listener.bind for listener in cfg.sip.listeners] == ["127.0.0.1"]
    assert [q.name for q in cfg.queues] == ["support", "sales"]
    agents = {a.id: a for a in cfg.agents}
    assert agents["1001"].skills == {"support": 8, "sales": 3}
    assert agents["1002"].skills == {"support": 4, "sales": 9}
    assert cfg.source.endswith("acd.toml")


def test_embedded_default_is_the_shipped_file() -> None:
    assert embedded_default_text() == (REPO / "config" / "acd.toml").read_text()


def test_empty_file_gives_complete_defaults() -> None:
    cfg = parse_config("", "empty.toml")
    assert cfg.http.port == 8080
    assert cfg.sip.t1_ms == 500
    assert cfg.storage.sqlite_path == "var/acd.sqlite3"
    assert cfg.queues == ()


def test_config_is_frozen() -> None:
    cfg = parse_config("", "x.toml")
    with pytest.raises((AttributeError, TypeError)):
        cfg.http.port = 1  # type: ignore[misc]
    assert isinstance(cfg, msgspec.Struct)


QUEUES3 = '[[queues]]\nname = "a"\n[[queues]]\nname = "b"\n[[queues]]\nname = "c"\n'


@pytest.mark.parametrize(
    ("text", "key_path", "fragment"),
    [
        ("[http]\nprot = 8080\n", "http.prot", "unknown key"),
        ("[htp]\nport = 8080\n", "htp", "unknown key"),
        ('[http]\nport = "8080"\n', "http.port", "expected an integer, found string '8080'"),
        (QUEUES3 + 'ring_timeout_s = "x"\n', "queues[2].ring_timeout_s", "expected a number"),
        (QUEUES3 + "ring_timout_s = 5\n", "queues[2].ring_timout_s", "unknown key"),
        (QUEUES3 + "ring_timeout_s = -1\n", "queues[2].ring_timeout_s", "expected a number > 0"),
        (QUEUES3 + "last_agent_days = -1\n", "queues[2].last_agent_days", "a number >= 0"),
        (
            QUEUES3 + "preferred_agent_timeout_s = -5\n",
            "queues[2].preferred_agent_timeout_s",
            "a number >= 0",
        ),
        (QUEUES3 + "keep_place_s = -0.5\n", "queues[2].keep_place_s", "a number >= 0"),
        (
            QUEUES3 + "priority_aging_per_min = -1\n",
            "queues[2].priority_aging_per_min",
            "a number >= 0",
        ),
        (QUEUES3 + 'keep_place_s = "1m"\n', "queues[2].keep_place_s", "expected a number"),
        (QUEUES3 + "busy_delay_s = -1\n", "queues[2].busy_delay_s", "a number >= 0"),
        (QUEUES3 + "auto_pause_after = -1\n", "queues[2].auto_pause_after", "found -1"),
        (QUEUES3 + "weight = 9999999999\n", "queues[2].weight", "int32"),
        (QUEUES3 + "steps = [{ after_s = -2.0 }]\n", "queues[2].steps[0].after_s", ">= 0"),
        (
            QUEUES3 + "steps = [{ after_s = 2.0, max_penalty = -1 }]\n",
            "queues[2].steps[0].max_penalty",
            "found -1",
        ),
        ('[[queues]]\nname = "a"\nstrategy = "fastest"\n', "queues[0].strategy", "'ring_all'"),
        ('[log]\nlevel = "loud"\n', "log.level", "expected one of 'debug', 'info'"),
        ("[[agents]]\nname = 'x'\n", "agents[0].id", "required key is missing"),
        (
            '[[queues]]\nname = "a"\n[[agents]]\nid = "1001"\nqueues = { b = 1 }\n',
            "agents[0].queues.b",
            "configured queue (a), found 'b'",
        ),
        ('[[agents]]\nid = "1"\n[[agents]]\nid = "1"\n', "agents[1].id", "duplicate agent id"),
        ('[[agents]]\nid = "1"\nskills = { support = 0 }\n', "agents[0].skills.support", "1..100"),
        ("[http]\nport = 70000\n", "http.port", "expected a port"),
        ('[http]\nbind = "localhost"\n', "http.bind", "expected an IP address"),
        ('[[sip.listeners]]\ntransport = "sctp"\n', "sip.listeners[0].transport", "'udp'"),
        ("[sip]\nt1_ms = 5000\nt2_ms = 4000\n", "sip.t2_ms", ">= sip.t1_ms"),
        ('[storage]\nurl = "mysql://x"\n', "storage.url", "postgresql://"),
        ("[cluster]\nleader_election = true\n", "cluster.leader_election", "found SQLite"),
        ("[cluster]\ncheck_interval_s = 0\n", "cluster.check_interval_s", "> 0"),
        ("http = 5\n", "http", "expected a table, found integer 5"),
        ('source = "x"\n', "source", "unknown key"),
        (QUEUES3 + "csat = { timeout_s = 0 }\n", "queues[2].csat.timeout_s", "a number > 0"),
        (QUEUES3 + 'csat = { prompt = "../x" }\n', "queues[2].csat.prompt", "a name of letters"),
        (QUEUES3 + 'csat = { second_prompt = "a b" }\n', "queues[2].csat.second_prompt", "name"),
        (QUEUES3 + "csat = { questions = 2 }\n", "queues[2].csat.questions", "unknown key"),
        (QUEUES3 + "csat = true\n", "queues[2].csat", "expected object"),
        (QUEUES3 + 'callback = { key = "12" }\n', "queues[2].callback.key", "one key of"),
        (QUEUES3 + 'callback = { key = "A" }\n', "queues[2].callback.key", "found 'A'"),
        (QUEUES3 + 'callback = { prompt = "../x" }\n', "queues[2].callback.prompt", "name"),
        (
            QUEUES3 + 'announce_every_s = 5.0\ncallback = { confirm_prompt = "a b" }\n',
            "queues[2].callback.confirm_prompt",
            "a name of letters",
        ),
        (QUEUES3 + "callback = { retries = 1 }\n", "queues[2].callback.retries", "unknown key"),
        (QUEUES3 + "callback = {}\n", "queues[2].announce_every_s", "> 0 with callback"),
        (
            QUEUES3 + "announce_every_s = 5.0\n" + 'callback = { mode = "auto" }\n',
            "queues[2].callback.mode",
            "'agent_first'",
        ),
        (
            QUEUES3 + "announce_every_s = 5.0\n" + 'callback = { mode = "agent_first" }\n',
            "queues[2].callback.trunk",
            "expected the trunk",
        ),
        (
            QUEUES3 + "announce_every_s = 5.0\n" + 'callback = { mode = "customer_first" }\n',
            "queues[2].callback.trunk",
            "with mode = 'customer_first'",
        ),
        (
            QUEUES3
            + "announce_every_s = 5.0\n"
            + 'callback = { mode = "agent_first", trunk = "x" }\n',
            "queues[2].callback.trunk",
            "configured trunk (none defined), found 'x'",
        ),
        (
            '[[trunks]]\nname = "t"\nallow = ["127.0.0.1/32"]\n'
            + QUEUES3
            + "announce_every_s = 5.0\n"
            + 'callback = { mode = "agent_first", trunk = "t" }\n',
            "queues[2].callback.trunk",
            "without one",
        ),
        (
            QUEUES3 + "announce_every_s = 5.0\n" + "callback = { attempts = 0 }\n",
            "queues[2].callback.attempts",
            "found 0",
        ),
        (
            QUEUES3 + "announce_every_s = 5.0\n" + "callback = { retry_s = -1 }\n",
            "queues[2].callback.retry_s",
            ">= 0",
        ),
        (
            QUEUES3 + "announce_every_s = 5.0\n" + "callback = { ring_timeout_s = 0 }\n",
            "queues[2].callback.ring_timeout_s",
            "> 0",
        ),
        (
            QUEUES3 + "announce_every_s = 5.0\n" + 'callback = { whisper_prompt = "a/b" }\n',
            "queues[2].callback.whisper_prompt",
            "a name of letters",
        ),
    ],
)
def test_mistakes_name_file_and_key_path(text: str, key_path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/acd/acd.toml")
    err = info.value
    assert err.file == "/etc/acd/acd.toml"
    assert err.key_path == key_path
    assert fragment in err.problem
    assert str(err).startswith(f"/etc/acd/acd.toml: {key_path}: ")


def test_invalid_toml_names_the_file() -> None:
    with pytest.raises(ConfigError, match=r"^bad\.toml: not valid TOML: .*line 2"):
        parse_config("[http]\nport = = 1\n", "bad.toml")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="file not found") as info:
        load_config(missing)
    assert info.value.file == str(missing)


def test_full_config_roundtrip_fields() -> None:
    cfg = parse_config(
        """
[http]
bind = "::1"
port = 0
[[sip.listeners]]
transport = "TCP"
bind = "127.0.0.1"
port = 5070
[[queues]]
name = "billing.eu"
strategy = "ring_all"
max_length = 10
""",
        "full.toml",
    )
    assert isinstance(cfg, Config)
    assert cfg.http.bind == "::1"
    assert cfg.http.port == 0
    assert cfg.sip.listeners[0].transport == "TCP"
    assert cfg.queues[0].strategy is Strategy.RING_ALL
    assert cfg.queues[0].max_length == 10


def test_default_config_is_the_loopback_demo() -> None:
    cfg = load_config(REPO / "config" / "acd.toml")
    (trunk,) = cfg.trunks
    assert trunk.allow == ("127.0.0.0/8",)
    assert not trunk.username
    assert {(r.number, r.flow) for r in cfg.routes} == {
        ("support", "support"),
        ("sales", "sales"),
        ("ivr", "ivr"),
    }
    flows = {f.name: f for f in cfg.flows}
    assert [type(s).__name__ for s in flows["support"].steps] == [
        "AnswerStep",
        "PlayStep",
        "EnqueueStep",
    ]
    menu = flows["ivr"].steps[1]
    assert isinstance(menu, MenuStep)
    assert menu.options == {"1": "support", "2": "sales"}


BASE = """
[[trunks]]
name = "pbx"
allow = ["192.0.2.0/24"]
[[flows]]
name = "main"
steps = [{ type = "answer" }, { type = "enqueue", queue = "q" }]
[[queues]]
name = "q"
"""


@pytest.mark.parametrize(
    ("extra", "key_path", "fragment"),
    [
        ('[[routes]]\nnumber = "1"\nflow = "nope"\n', "routes[0].flow", "configured flow (main)"),
        (
            '[[routes]]\ntrunk = "x"\nnumber = "1"\nflow = "main"\n',
            "routes[0].trunk",
            "trunk (pbx)",
        ),
        ('[[routes]]\nflow = "main"\n', "routes[0]", "exactly one of `number` or `pattern`"),
        ('[[routes]]\npattern = "(1"\nflow = "main"\n', "routes[0].pattern", "regular expression"),
        ('[[trunks]]\nname = "t2"\nallow = ["300.1.1.1"]\n', "trunks[1].allow[0]", "network"),
        ('[[trunks]]\nname = "t2"\n', "trunks[1].allow", "the trunk is open"),
        ('[[trunks]]\nname = "t2"\nusername = "pbx"\n', "trunks[1].password", "both username"),
        (
            '[[trunks]]\nname = "t2"\nallow = ["10.0.0.0/8"]\ndtmf = "tones"\n',
            "trunks[1].dtmf",
            "'inband'",
        ),
        (
            '[[trunks]]\nname = "t2"\nallow = ["10.0.0.0/8"]\nsrtp = "sdes"\n',
            "trunks[1].srtp",
            "'' ([media] srtp)",
        ),
        (
            '[[trunks]]\nname = "t2"\nusername = "u"\npassword = "p"\n'
            '[[trunks]]\nname = "t3"\nusername = "u"\npassword = "q"\n',
            "trunks[2].username",
            "no other trunk",
        ),
        (
            '[[trunks]]\nname = "t2"\nallow = ["10.0.0.0/8"]\ncodecs = ["G729"]\n',
            "trunks[1].codecs[0]",
            "PCMU",
        ),
        (
            '[[flows]]\nname = "m2"\nsteps = [{ type = "menu", prompt = "p", options = { "1" = "zz" } }]\n',
            "flows[1].steps[0].options.1",
            "configured flow",
        ),
        (
            '[[flows]]\nname = "m2"\nsteps = [{ type = "menu", prompt = "p", options = { "12" = "main" } }]\n',
            "flows[1].steps[0].options",
            "single DTMF digits",
        ),
        (
            '[[flows]]\nname = "m2"\nsteps = [{ type = "dance" }]\n',
            "flows[1].steps[0].type",
            "'menu'",
        ),
        (
            '[[flows]]\nname = "m2"\nsteps = [{ type = "play" }]\n',
            "flows[1].steps[0].prompt",
            "required",
        ),
        ('[[flows]]\nname = "m2"\nsteps = []\n', "flows[1].steps", "at least one step"),
        ("[media]\nworkers = 65\n", "media.workers", "0 (media in the daemon) to 64"),
        ("[media]\nworkers = -1\n", "media.workers", "found -1"),
        ('[media]\nsrtp = "on"\n', "media.srtp", "'off', 'offer' or 'require', found 'on'"),
        (
            '[[flows]]\nname = "m2"\nsteps = [{ type = "enqueue", queue = "zz" }]\n',
            "flows[1].steps[0].queue",
            "queue (q)",
        ),
        (
            '[[flows]]\nname = "m2"\nsteps = [{ type = "set", preferred_agent = "9999" }]\n',
            "flows[1].steps[0].preferred_agent",
            "configured agent (none defined), found '9999'",
        ),
        (
            '[[flows]]\nname = "m2"\nsteps = [{ type = "set", tier = "{tier}" }]\n',
            "flows[1].steps[0].priorities",
            "`tier` and `priorities` together",
        ),
        (
            '[[flows]]\nname = "m2"\nsteps = [{ type = "set", priorities = { vip = 5 } }]\n',
            "flows[1].steps[0].tier",
            "`tier` and `priorities` together",
        ),
        (
            '[[flows]]\nname = "m2"\nsteps = [{ type = "lookup", url = "ftp://x" }]\n',
            "flows[1].steps[0].url",
            "http(s)",
        ),
        (
            '[[trunks]]\nname = "t2"\nallow = ["10.0.0.0/8"]\noutbound_proxy = "pbx.example:99999"\n',
            "trunks[1].outbound_proxy",
            "host:port",
        ),
        (
            '[[trunks]]\nname = "t2"\nallow = ["10.0.0.0/8"]\noutbound_proxy = "sip:u@pbx.example"\n',
            "trunks[1].outbound_proxy",
            "sip:/sips: URI",
        ),
        ('[sip]\ndns_servers = ["ns.example.com"]\n', "sip.dns_servers[0]", "IP address"),
        ("[sip]\ndns_timeout_s = 0\n", "sip.dns_timeout_s", "> 0"),
        (
            '[[flows]]\nname = "m2"\nsteps = [{ type = "transfer", trunk = "pbx", number = "1" }]\n',
            "flows[1].steps[0].trunk",
            "outbound_proxy",
        ),
        ('[[queues]]\nname = "q2"\nrecord = "sometimes"\n', "queues[1].record", "percentage"),
        (
            '[[queues]]\nname = "q2"\nsteps = [{ after_s = 30.0 }, { after_s = 10.0 }]\n',
            "queues[1].steps[1].after_s",
            "increasing",
        ),
        ('[[queues]]\nname = "q2"\noverflow = "zz"\n', "queues[1].overflow", "flow (main)"),
        ('[[agents]]\nid = "9"\nlogin = "static"\n', "agents[0].contact", "sip: URI"),
        (
            '[[agents]]\nid = "9"\nlogin = "static"\ncontact = "sip:9@192.0.2.1"\nsecure = true\n',
            "agents[0].contact",
            "sips: or ;transport=tls URI for secure = true",
        ),
        (
            '[[agents]]\nid = "9"\nlogin = "webrtc"\nsecure = true\n',
            "agents[0].secure",
            "DTLS-SRTP",
        ),
        ('[[agents]]\nid = "9"\npassword_ha1 = "abc"\n', "agents[0].password_ha1", "32 hex"),
        (
            f'[[agents]]\nid = "9"\npassword = "p"\npassword_ha1 = "{"a" * 32}"\n',
            "agents[0].password_ha1",
            "not both",
        ),
        (
            f'[sip]\ndigest_algorithms = ["SHA-256", "MD5"]\n[[agents]]\nid = "9"\npassword_ha1 = "{"a" * 32}"\n',
            "agents[0].password_ha1",
            "MD5",
        ),
        ('[[agents]]\nid = "9"\ncapacity = { voice = -1 }\n', "agents[0].capacity.voice", ">= 0"),
        ('[[agents]]\nid = "9"\ncapacity = { fax = 1 }\n', "agents[0].capacity.fax", "ticket"),
        (
            "sla = { voice = { resolution_s = 60 } }\n",
            "queues[0].sla.voice",
            "service_level_s",
        ),
        (
            "sla = { ticket = { first_response_s = -1 } }\n",
            "queues[0].sla.ticket.first_response_s",
            ">= 0",
        ),
        ("reopen_sticky_s = -5\n", "queues[0].reopen_sticky_s", ">= 0"),
        (
            "close_solved_after_s = -1\n",
            "queues[0].close_solved_after_s",
            ">= 0",
        ),
        (
            "[media]\nrtp_port_min = 3000\nrtp_port_max = 2000\n",
            "media.rtp_port_max",
            "rtp_port_min",
        ),
        (
            '[[api.tokens]]\nname = "x"\nrole = "root"\ntoken = "0123456789abcdef"\n',
            "api.tokens[0].role",
            "'supervisor'",
        ),
        ('[[api.tokens]]\nname = "x"\nrole = "admin"\n', "api.tokens[0]", "exactly one of `token`"),
        (
            '[[api.tokens]]\nname = "x"\nrole = "admin"\ntoken = "short"\n',
            "api.tokens[0].token",
            "16 characters",
        ),
        (
            '[[api.tokens]]\nname = "x"\nrole = "admin"\ntoken_sha256 = "abc"\n',
            "api.tokens[0].token_sha256",
            "64 lowercase hex",
        ),
    ],
)
def test_telephony_mistakes_name_the_key(extra: str, key_path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + extra, "t.toml")
    assert info.value.key_path == key_path, str(info.value)
    assert fragment in info.value.problem


def _keys(struct: type[msgspec.Struct]) -> set[str]:
    """Every TOML key of a struct tree (field names, recursing into nested structs and lists)."""
    import typing

    keys: set[str] = set()
    for f in msgspec.structs.fields(struct):
        if f.name == "source" or f.name == "type":
            continue
        keys.add(f.name)
        for t in (
            f.type,
            *typing.get_args(f.type),
            *(a for x in typing.get_args(f.type) for a in typing.get_args(x)),
        ):
            if isinstance(t, type) and issubclass(t, msgspec.Struct):
                keys |= _keys(t)
    return keys


def test_every_config_key_is_documented() -> None:
    import engine.config as c

    doc = (REPO / "docs" / "configuration.md").read_text()
    keys = _keys(Config)
    for step in c.Step.__args__:
        keys |= _keys(step)
    import re

    # Words inside `code spans` and [section] headers count as documented.
    lines = [line for line in doc.splitlines() if not line.startswith("```")]
    spans = [span for line in lines for span in re.findall(r"`([^`]+)`", line)]
    spans += re.findall(r"^#+ .*?\[\[?([^\]]+)\]", doc, re.M)
    documented = {word for span in spans for word in re.findall(r"[a-z_0-9]+", span)}
    missing = sorted(keys - documented)
    assert not missing, f"docs/configuration.md does not mention: {missing}"
    assert len(keys) > 60  # the walk really found the tree


def test_strategies_match_the_routing_core_names() -> None:
    # The config words are the routing core's strategies; a new strategy must appear in both.
    import routing_core

    assert {s.name for s in Strategy} == {s.name for s in routing_core.Strategy}


def test_var_dir_is_home_to_the_state_paths_the_file_leaves_out() -> None:
    cfg = parse_config('[runtime]\nvar_dir = "/srv/acd"\n', "t.toml")
    assert cfg.storage.sqlite_path == "/srv/acd/acd.sqlite3"
    assert cfg.recordings.dir == "/srv/acd/recordings"
    given = parse_config(
        '[runtime]\nvar_dir = "/srv/acd"\n[storage]\nsqlite_path = "db.sqlite3"\n'
        '[recordings]\ndir = "/data/rec"\n',
        "t.toml",
    )
    assert (given.storage.sqlite_path, given.recordings.dir) == ("db.sqlite3", "/data/rec")
    plain = parse_config("", "t.toml")
    assert (plain.storage.sqlite_path, plain.recordings.dir) == (
        "var/acd.sqlite3",
        "var/recordings",
    )
    with pytest.raises(ConfigError) as info:
        parse_config('[runtime]\nvar_dir = ""\n', "t.toml")
    assert info.value.key_path == "runtime.var_dir"


def test_security_defaults_screen_sources_with_fail2ban_and_pike_figures() -> None:
    sec = parse_config("", "x.toml").security
    assert (sec.allow, sec.banned_action, sec.drop_scanners, sec.ban_scanners) == (
        (),
        "drop",
        True,
        False,
    )
    assert (sec.flood.enabled, sec.flood.rate_per_s, sec.flood.burst) == (True, 50.0, 100)
    b = sec.bans
    assert (b.enabled, b.max_failures, b.find_window_s, b.ban_s) == (True, 5, 600.0, 600.0)
    assert (b.max_ban_s, b.forget_s, b.user_max_failures) == (604800.0, 86400.0, 10)


def test_security_section_decodes_every_key() -> None:
    sec = parse_config(
        """
[security]
allow = ["10.20.0.0/16", "2001:db8::/32"]
banned_action = "reject"
drop_scanners = true
ban_scanners = true
[security.flood]
enabled = false
rate_per_s = 5
burst = 7
[security.bans]
max_failures = 3
find_window_s = 60
ban_s = 30
max_ban_s = 3600
forget_s = 7200
user_max_failures = 0
""",
        "sec.toml",
    ).security
    assert sec.allow == ("10.20.0.0/16", "2001:db8::/32")
    assert (sec.banned_action, sec.ban_scanners) == ("reject", True)
    assert (sec.flood.enabled, sec.flood.rate_per_s, sec.flood.burst) == (False, 5.0, 7)
    b = sec.bans
    assert (b.max_failures, b.find_window_s, b.ban_s, b.max_ban_s) == (3, 60.0, 30.0, 3600.0)
    assert (b.forget_s, b.user_max_failures) == (7200.0, 0)


@pytest.mark.parametrize(
    ("text", "key_path", "fragment"),
    [
        ("[security]\nalow = []\n", "security.alow", "unknown key"),
        ("[security.flood]\nrate = 5\n", "security.flood.rate", "unknown key"),
        ("[security.bans]\nbantime = 5\n", "security.bans.bantime", "unknown key"),
        ('[security]\nallow = ["10.0.0.0/33"]\n', "security.allow[0]", "expected a network"),
        ('[security]\nallow = "10.0.0.0/8"\n', "security.allow", "expected an array"),
        ('[security]\nbanned_action = "tarpit"\n', "security.banned_action", "'drop' or 'reject'"),
        ('[security]\ndrop_scanners = "yes"\n', "security.drop_scanners", "expected a boolean"),
        (
            "[security]\nban_scanners = true\ndrop_scanners = false\n",
            "security.ban_scanners",
            "drop_scanners = true and bans.enabled = true",
        ),
        (
            "[security]\nban_scanners = true\n[security.bans]\nenabled = false\n",
            "security.ban_scanners",
            "bans.enabled = true",
        ),
        ("[security.flood]\nrate_per_s = 0\n", "security.flood.rate_per_s", "> 0"),
        ("[security.flood]\nrate_per_s = inf\n", "security.flood.rate_per_s", "> 0, found inf"),
        ("[security.flood]\nburst = 0\n", "security.flood.burst", ">= 1"),
        ("[security.flood]\nburst = 1.5\n", "security.flood.burst", "expected an integer"),
        ("[security.bans]\nmax_failures = 0\n", "security.bans.max_failures", ">= 1"),
        ("[security.bans]\nfind_window_s = -1\n", "security.bans.find_window_s", "> 0"),
        ("[security.bans]\nban_s = nan\n", "security.bans.ban_s", "> 0"),
        ("[security.bans]\nforget_s = 0\n", "security.bans.forget_s", "> 0"),
        (
            "[security.bans]\nban_s = 60\nmax_ban_s = 30\n",
            "security.bans.max_ban_s",
            ">= security.bans.ban_s",
        ),
        ("[security.bans]\nuser_max_failures = -1\n", "security.bans.user_max_failures", "0 = off"),
    ],
)
def test_security_mistakes_name_file_and_key_path(text: str, key_path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/acd/acd.toml")
    assert (info.value.file, info.value.key_path) == ("/etc/acd/acd.toml", key_path)
    assert fragment in info.value.problem


def test_security_policy_allow_lists_every_trunk_and_is_none_when_all_is_off() -> None:
    from engine.calls.security import policy_of

    cfg = parse_config(
        """
[security]
allow = ["10.20.0.0/16"]
[security.bans]
user_max_failures = 0
[[trunks]]
name = "carrier"
allow = ["192.0.2.10", "198.51.100.0/24"]
[[trunks]]
name = "pbx"
username = "pbx"
password = "secret"
""",
        "t.toml",
    )
    policy = policy_of(cfg)
    assert policy is not None
    assert [str(n) for n in policy.allow] == ["10.20.0.0/16", "192.0.2.10/32", "198.51.100.0/24"]
    assert policy.bans is not None
    assert policy.bans.user_max_failures is None  # 0 in the file: off
    assert policy.flood is not None
    assert policy.scanner_user_agents  # drop_scanners
    off = "[security]\ndrop_scanners = false\n[security.flood]\nenabled = false\n"
    assert policy_of(parse_config(off + "[security.bans]\nenabled = false\n", "off.toml")) is None


def test_http_tls_and_open_paths_mistakes_name_the_key(tmp_path: Path) -> None:
    from tests.conftest import self_signed_cert

    cert, key = self_signed_cert(tmp_path)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    _, other_key = self_signed_cert(other_dir)
    cases = [
        (f'[http]\ncert_file = "{cert}"\n', "http.key_file", "http.cert_file is set"),
        (f'[http]\nkey_file = "{key}"\n', "http.cert_file", "http.key_file is set"),
        (
            f'[http]\ncert_file = "{tmp_path / "nope.pem"}"\nkey_file = "{key}"\n',
            "http.cert_file",
            "readable PEM file",
        ),
        (
            f'[http]\ncert_file = "{cert}"\nkey_file = "{other_key}"\n',
            "http.key_file",
            "cannot load the certificate with this key",
        ),
        (
            '[http]\nopen_paths = ["/healthz", "/api/v1/agents"]\n',
            "http.open_paths[1]",
            "'/metrics'",
        ),
    ]
    for text, key_path, fragment in cases:
        with pytest.raises(ConfigError) as info:
            parse_config(text, "/etc/acd/acd.toml")
        assert (info.value.key_path, fragment in info.value.problem) == (key_path, True), text
    cfg = parse_config(
        f'[http]\ncert_file = "{cert}"\nkey_file = "{key}"\nopen_paths = ["/healthz"]\n', "x.toml"
    )
    assert cfg.http.open_paths == ("/healthz",)
    assert parse_config("", "x.toml").http.open_paths == ("/healthz", "/readyz", "/metrics")


def test_callback_offer_defaults_and_keys() -> None:
    cfg = parse_config(
        '[[queues]]\nname = "a"\nannounce_every_s = 20.0\ncallback = {}\n'
        '[[queues]]\nname = "b"\nannounce_every_s = 20.0\ncallback = { key = "#", confirm_prompt = "" }\n'
        '[[queues]]\nname = "c"\n',
        "acd.toml",
    )
    a, b, c = cfg.queues
    assert a.callback == CallbackConfig(
        key="1", prompt="callback-offer", confirm_prompt="callback-confirm"
    )
    assert b.callback is not None
    assert (b.callback.key, b.callback.confirm_prompt) == ("#", "")
    assert c.callback is None
    assert (a.callback.mode, a.callback.attempts, a.callback.retry_s) == ("manual", 3, 300.0)
    assert (a.callback.trunk, a.callback.whisper_prompt) == ("", "callback-whisper")


def test_callback_agent_first_takes_a_trunk_with_an_outbound_proxy() -> None:
    cfg = parse_config(
        '[[trunks]]\nname = "carrier"\nallow = ["127.0.0.1/32"]\n'
        'outbound_proxy = "sip:127.0.0.1:5090"\n'
        '[[queues]]\nname = "a"\nannounce_every_s = 20.0\n'
        'callback = { mode = "agent_first", trunk = "carrier", attempts = 2, retry_s = 0.5,'
        ' ring_timeout_s = 4.0, whisper_prompt = "" }\n',
        "acd.toml",
    )
    callback = cfg.queues[0].callback
    assert callback is not None
    assert (callback.mode, callback.trunk, callback.attempts) == ("agent_first", "carrier", 2)
    assert (callback.retry_s, callback.ring_timeout_s, callback.whisper_prompt) == (0.5, 4.0, "")

    with pytest.raises(ConfigError) as info:
        parse_config(
            '[[trunks]]\nname = "carrier"\nallow = ["127.0.0.1/32"]\n'
            'outbound_proxy = "sip:127.0.0.1:5090"\n'
            '[[queues]]\nname = "a"\nannounce_every_s = 20.0\n'
            'callback = { mode = "agent_first", trunk = "carrier" }\n'
            '[[agents]]\nid = "w1"\nlogin = "webrtc"\npassword = "secret-w1-0123"\n'
            "queues = { a = 0 }\n",
            "acd.toml",
        )
    assert (info.value.file, info.value.key_path) == ("acd.toml", "agents[0].queues.a")
    assert "login = 'webrtc'" in info.value.problem


def test_callback_customer_first_agents_are_sip_phones() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            '[[trunks]]\nname = "carrier"\nallow = ["127.0.0.1/32"]\n'
            'outbound_proxy = "sip:127.0.0.1:5090"\n'
            '[[queues]]\nname = "a"\nannounce_every_s = 20.0\n'
            'callback = { mode = "customer_first", trunk = "carrier" }\n'
            '[[agents]]\nid = "w1"\nlogin = "webrtc"\npassword = "secret-w1-0123"\n'
            "queues = { a = 0 }\n",
            "acd.toml",
        )
    assert (info.value.file, info.value.key_path) == ("acd.toml", "agents[0].queues.a")


@pytest.mark.parametrize(
    ("media", "trunk", "mode"),
    [
        ("off", "", "off"),
        ("off", "require", "require"),
        ("require", "off", "off"),
        ("offer", None, "offer"),
    ],
)
def test_a_trunks_srtp_overrides_the_media_default(
    media: str, trunk: str | None, mode: str
) -> None:
    """A leg through a trunk takes its ``srtp`` unless empty; a leg through none, [media]'s."""
    text = (
        BASE.replace("[[flows]]", f'srtp = "{trunk or ""}"\n[[flows]]')
        + f'[media]\nsrtp = "{media}"\n'
    )
    cfg = parse_config(text, "t.toml")
    assert srtp_mode(cfg, cfg.trunks[0] if trunk is not None else None).value == mode
