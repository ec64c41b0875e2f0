"""engine.calls.security: the policy a config asks for, and what a reload keeps of the bans."""

from __future__ import annotations

import time
from pathlib import Path

from engine.calls.security import Security, policy_of
from engine.config import parse_config
from sip.security import BanLifted, SecurityEvent, SourceBanned

BANS = "[security.bans]\nmax_failures = 1\nban_s = 600\n"


def security(text: str, events: list[SecurityEvent]) -> Security:
    return Security(parse_config(text, "t.toml"), events.append)


async def test_a_reload_keeps_bans_and_frees_only_what_it_allow_lists() -> None:
    events: list[SecurityEvent] = []
    sec = security(BANS, events)
    assert sec.guard is not None
    now = sec.now()
    for address in ("192.0.2.1", "192.0.2.2"):
        sec.guard.auth_failed(address, "1001", now)
    assert [type(e) for e in events] == [SourceBanned, SourceBanned]
    old_guard = sec.guard

    assert sec.apply(parse_config(BANS, "t.toml"), now + 1) == (False, [])  # same policy
    assert sec.guard is old_guard

    trunk = '[[trunks]]\nname = "carrier"\nallow = ["192.0.2.2"]\n'
    replaced, ended = sec.apply(parse_config(BANS + trunk, "t.toml"), now + 2)
    assert (replaced, ended) == (True, ["192.0.2.2"])  # a trunk now: never banned
    assert sec.guard is not old_guard
    (kept,) = sec.bans(now + 2)
    assert (kept.address, kept.until, kept.strikes) == ("192.0.2.1", now + 600, 1)

    replaced, ended = sec.apply(parse_config("[security.bans]\nenabled = false\n", "t.toml"), now)
    assert (replaced, ended) == (True, ["192.0.2.1"])  # bans turned off free everyone
    assert sec.bans(now) == []


async def test_lifting_finds_the_ban_by_any_spelling_of_its_ip() -> None:
    events: list[SecurityEvent] = []
    sec = security(BANS, events)
    assert sec.guard is not None
    now = sec.now()
    sec.guard.auth_failed("2001:db8::7", None, now)
    assert sec.lift("not-an-ip", now) is None
    assert sec.lift("2001:db8::8", now) is None
    ban = sec.lift("[2001:0db8:0:0::7]", now)
    assert ban is not None
    assert ban.address == "2001:db8::7"
    assert events[-1] == BanLifted("2001:db8::7", "lifted", now)
    assert sec.lift("2001:db8::7", now) is None  # lifted already
    assert abs(sec.wall(now + 60) - (time.time() + 60)) < 1  # the loop's clock as epoch seconds


def test_no_policy_when_everything_is_off_and_no_guard_then() -> None:
    off = "[security]\ndrop_scanners = false\n[security.flood]\nenabled = false\n"
    cfg = parse_config(off + "[security.bans]\nenabled = false\n", "off.toml")
    assert policy_of(cfg) is None
    sec = Security(cfg, lambda event: None)
    assert sec.guard is None
    assert sec.lift("192.0.2.1", 0.0) is None


async def test_bans_are_written_and_read_back_with_the_downtime_taken_off(tmp_path: Path) -> None:
    import json

    text = BANS + f'[runtime]\nvar_dir = "{tmp_path}"\n'
    errors: list[str] = []
    sec = Security(parse_config(text, "t.toml"), [].append, errors.append)
    assert sec.guard is not None
    assert sec.restore() == 0  # no file yet: nothing, and no error
    sec.guard.auth_failed("192.0.2.1", "1001", sec.now())
    await sec.flush()
    saved = json.loads(sec.state_path.read_bytes())
    assert [s["address"] for s in saved["state"]["sources"]] == ["192.0.2.1"]
    saved["saved_at"] -= 100.0  # as if the daemon had been down 100 s since
    sec.state_path.write_text(json.dumps(saved))

    later = Security(parse_config(text, "t.toml"), [].append, errors.append)
    assert later.restore() == 1
    (ban,) = later.bans(later.now())
    assert 499.0 < ban.until - later.now() < 500.5  # 600 s ban, 100 s of it spent while down
    assert errors == []

    for broken in ("{", '{"saved_at": 1, "state": {"version": 99}}', "[]"):
        sec.state_path.write_text(broken)
        again = Security(parse_config(text, "t.toml"), [].append, errors.append)
        assert again.restore() == 0  # starts with none, says so, counts it
    assert errors == ["load", "load", "load"]

    # An unwritable state directory: counted, nothing raised.
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    bad = Security(
        parse_config(BANS + f'[runtime]\nvar_dir = "{blocked}"\n', "t.toml"),
        [].append,
        errors.append,
    )
    assert bad.guard is not None
    bad.guard.auth_failed("192.0.2.9", None, bad.now())
    await bad.flush()
    assert errors[-1] == "save"


async def test_another_trackers_state_is_kept_in_the_file_under_its_name(tmp_path: Path) -> None:
    """keep(): the API's token bans ride in the same file; kept before or after restore, and a
    broken part of theirs is counted without losing the SIP bans."""
    import json

    text = BANS + f'[runtime]\nvar_dir = "{tmp_path}"\n'
    errors: list[str] = []
    sec = Security(parse_config(text, "t.toml"), [].append, errors.append)
    sec.keep("api", lambda: {"banned": ["192.0.2.7"]}, lambda state, elapsed_s: None)
    sec.keep("idle", lambda: None, lambda state, elapsed_s: None)  # nothing to keep: left out
    await sec.flush()
    saved = json.loads(sec.state_path.read_bytes())
    assert saved["others"] == {"api": {"banned": ["192.0.2.7"]}}
    saved["saved_at"] -= 30.0
    sec.state_path.write_text(json.dumps(saved))

    got: list[tuple[object, float]] = []
    early = Security(parse_config(text, "t.toml"), [].append, errors.append)
    early.keep("api", lambda: None, lambda state, elapsed_s: got.append((state, elapsed_s)))
    early.restore()  # kept first, restored after: handed over at restore
    late = Security(parse_config(text, "t.toml"), [].append, errors.append)
    late.restore()
    late.keep("api", lambda: None, lambda state, elapsed_s: got.append((state, elapsed_s)))
    assert [state for state, _ in got] == [{"banned": ["192.0.2.7"]}] * 2
    assert all(30.0 <= elapsed_s < 31.0 for _, elapsed_s in got)  # the downtime
    assert errors == []

    def refuse(state: object, elapsed_s: float) -> None:
        raise ValueError("not a state of mine")

    sec.guard.auth_failed("192.0.2.1", "1001", sec.now())  # type: ignore[union-attr]
    await sec.flush()
    broken = Security(parse_config(text, "t.toml"), [].append, errors.append)
    broken.keep("api", lambda: None, refuse)
    assert broken.restore() == 1  # the SIP ban is back; the API part is counted
    assert errors == ["load"]
