"""Every ``[security]`` key through the running daemon (`acd run`): flood limits, bans, scanners.

The peers are raw SIP clients of our own on 127.0.0.x addresses (the daemon listens on
127.0.0.1): one request at a time over a plain UDP (or TCP) socket, never retransmitted, so a test
sees exactly which requests are answered and which are dropped. Digest answers are computed with
``sip.auth.DigestClient`` from the daemon's own 401. What the daemon did is read where an operator
reads it: the SIP answers, ``/metrics``, ``/api/v1/security/bans`` and the log lines.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sip.auth import DigestClient
from sip.message import Response, parse_message
from tests.conftest import free_port
from tests.e2e.conftest import DaemonFactory, DaemonProcess, wait_until

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-security-0123"
#: Agent 1001 (what the attackers guess at) and the admin token for the API.
BASE = f"""
[[api.tokens]]
name = "ops"
role = "admin"
token = "{ADMIN}"

[[queues]]
name = "support"

[[agents]]
id = "1001"
password = "alice-secret-1001"
queues = {{ support = 0 }}
"""
#: No answer within this long means dropped. Loopback answers take a millisecond or two, but a
#: loaded test machine can stall the daemon for a few hundred ms (an answer arriving after the
#: wait would read as a drop); waits for an answer end as soon as it comes.
SILENCE_S = 1.0


class Phone:
    """A SIP client of our own on one 127.0.0.x address: one request at a time over UDP (or TCP),
    raw bytes, never retransmitted."""

    def __init__(self, host: str, *, tcp_to: tuple[str, int] | None = None) -> None:
        self.host = host
        if tcp_to is None:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((host, 0))
        else:
            self.sock = socket.create_connection(tcp_to, timeout=2, source_address=(host, 0))
        self.tcp = tcp_to is not None
        self.port = int(self.sock.getsockname()[1])
        self._buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(
        self,
        method: str,
        target: tuple[str, int],
        *,
        user: str = "1001",
        user_agent: str = "acd-tests",
        call_id: str | None = None,
        cseq: int = 1,
        authorization: str | None = None,
        silence_s: float = SILENCE_S,
    ) -> Response | None:
        """Send one request; its final response, or None when nothing came back in silence_s."""
        branch = "z9hG4bK" + uuid.uuid4().hex
        proto = "TCP" if self.tcp else "UDP"
        lines = [
            f"{method} {self.uri(target)} SIP/2.0",
            f"Via: SIP/2.0/{proto} {self.host}:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{target[0]}>;tag={uuid.uuid4().hex[:8]}",
            f"To: <sip:{user}@{target[0]}>",
            f"Call-ID: {call_id or uuid.uuid4().hex}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{user}@{self.host}:{self.port}>",
            f"User-Agent: {user_agent}",
            "Expires: 60",
        ]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        data = ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
        if self.tcp:
            self.sock.sendall(data)
        else:
            self.sock.sendto(data, target)
        deadline = time.monotonic() + silence_s
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                wire = self._read()
            except (TimeoutError, BlockingIOError):
                return None
            message = parse_message(wire)
            if isinstance(message, Response) and message.status >= 200 and branch in wire.decode():
                return message
        return None

    def _read(self) -> bytes:
        if not self.tcp:
            return self.sock.recv(65535)
        while b"\r\n\r\n" not in self._buffer:
            chunk = self.sock.recv(65535)
            if not chunk:
                raise TimeoutError("connection closed")
            self._buffer += chunk
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        self._buffer = rest  # our requests' answers carry no body
        return head + b"\r\n\r\n"

    @staticmethod
    def uri(target: tuple[str, int]) -> str:
        return f"sip:{target[0]}:{target[1]}"

    def register(self, target: tuple[str, int], password: str, *, user: str = "1001") -> int | None:
        """REGISTER, the daemon's 401, REGISTER with the digest of ``password``: the final status
        (None: a request went unanswered)."""
        call_id = uuid.uuid4().hex
        challenge = self.send("REGISTER", target, user=user, call_id=call_id)
        if challenge is None or challenge.status != 401:
            return None if challenge is None else challenge.status
        value = DigestClient(user, password).authorize(
            challenge.headers.get_all("www-authenticate"), method="REGISTER", uri=self.uri(target)
        )
        answer = self.send(
            "REGISTER", target, user=user, call_id=call_id, cseq=2, authorization=value
        )
        return None if answer is None else answer.status

    def options(
        self, target: tuple[str, int], user_agent: str = "acd-tests", silence_s: float = SILENCE_S
    ) -> int | None:
        answer = self.send("OPTIONS", target, user_agent=user_agent, silence_s=silence_s)
        return None if answer is None else answer.status


@pytest.fixture
def phones() -> Iterator[dict[str, Phone]]:
    """Phones by address, opened on first use and closed when the test ends."""
    opened: dict[str, Phone] = {}

    class Book(dict[str, Phone]):
        def __missing__(self, host: str) -> Phone:
            phone = opened[host] = self[host] = Phone(host)
            return phone

    yield Book()
    for phone in opened.values():
        phone.close()


def sip_target(daemon: DaemonProcess, kind: str = "udp") -> tuple[str, int]:
    ready = daemon.wait_for_log("ready")
    for listener in ready["sip_listeners"]:  # type: ignore[attr-defined]
        transport, host, port = str(listener).split(":")
        if transport == kind:
            return host, int(port)
    raise AssertionError(f"no {kind} listener: {ready}")


def api(daemon: DaemonProcess, method: str, path: str) -> tuple[int, object]:
    request = urllib.request.Request(daemon.base_url + path, method=method)
    request.add_header("Authorization", f"Bearer {ADMIN}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def bans(daemon: DaemonProcess) -> dict[str, dict[str, object]]:
    status, body = api(daemon, "GET", "/api/v1/security/bans")
    assert status == 200, body
    return {b["address"]: b for b in body}  # type: ignore[index, union-attr]


def metric(daemon: DaemonProcess, name: str, **labels: str) -> float:
    _, body, _ = daemon.get("/metrics")
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name + (f"{{{wanted}}}" if labels else "")) + r" ([0-9.e+-]+)$"
    match = re.search(pattern, body.decode(), re.M)
    return float(match.group(1)) if match else 0.0


def log_events(daemon: DaemonProcess, event: str) -> list[dict[str, object]]:
    return [line for line in daemon.log_lines() if line.get("event") == event]


def security(extra: str) -> str:
    return BASE + extra


# -- bans ------------------------------------------------------------------------------------------


def test_failed_logins_ban_the_source_on_every_listener_and_others_are_served(
    start_daemon: DaemonFactory, phones: dict[str, Phone]
) -> None:
    """bans.enabled and bans.max_failures, banned_action = "drop", one ban table for UDP and TCP;
    the ban line, the API, the metrics; a reload that changes the policy keeps the ban."""
    daemon = start_daemon(
        security(
            f"""
[security]
banned_action = "drop"
[security.bans]
enabled = true
max_failures = 3

[[sip.listeners]]
transport = "tcp"
bind = "127.0.0.1"
port = {free_port()}
"""
        )
    )
    sip = sip_target(daemon)
    attacker = phones["127.0.0.2"]
    assert [attacker.register(sip, f"guess-{i}") for i in range(3)] == [403, 403, 403]
    # banned: the right password gets nowhere now, and nothing at all is answered
    assert attacker.register(sip, "alice-secret-1001") is None
    assert attacker.options(sip) is None
    over_tcp = Phone("127.0.0.2", tcp_to=sip_target(daemon, "tcp"))
    try:
        assert over_tcp.options(sip) is None  # the TCP listener shares the ban table
    finally:
        over_tcp.close()
    assert phones["127.0.0.3"].register(sip, "alice-secret-1001") == 200  # another source

    (ban,) = log_events(daemon, "security_ban")
    assert (ban["address"], ban["reason"], ban["failures"], ban["strikes"], ban["user"]) == (
        "127.0.0.2", "auth_failures", 3, 1, "1001",
    )  # fmt: skip
    assert ban["ban_s"] == 600.0
    assert ban["logger"] == "acd.security"
    assert str(ban["message"]).startswith("SIP source 127.0.0.2 banned until ")
    listed = bans(daemon)["127.0.0.2"]
    assert (listed["reason"], listed["failures"], listed["strikes"]) == ("auth_failures", 3, 1)
    assert 590 < float(listed["remaining_s"]) <= 600  # type: ignore[arg-type]
    assert metric(daemon, "acd_security_bans_active") == 1
    assert metric(daemon, "acd_security_bans_total", reason="auth_failures") == 1
    assert metric(daemon, "acd_sip_auth_failures_total", reason="bad_credentials") == 3
    assert metric(daemon, "acd_sip_auth_failures_total", reason="unknown_user") == 0
    assert metric(daemon, "acd_sip_parse_errors_total", reason="banned_dropped") >= 3

    # A reload with another policy: the ban stays, with its time and strikes, under the new one.
    text = daemon.config_path.read_text()
    daemon.config_path.write_text(
        text.replace('banned_action = "drop"', 'banned_action = "reject"')
    )
    status, _ = api(daemon, "POST", "/api/v1/reload")
    assert status == 200
    assert attacker.options(sip) == 403  # still banned, now answered 403 Forbidden
    # the same end (epoch seconds are worked out from the loop's clock at each answer: ms apart)
    until = float(bans(daemon)["127.0.0.2"]["until"])  # type: ignore[arg-type]
    assert abs(until - float(listed["until"])) < 0.05  # type: ignore[arg-type]
    assert [e["why"] for e in log_events(daemon, "security_policy")] == ["start", "reload"]
    # A reload that allow-lists the source frees it (and says so).
    text = daemon.config_path.read_text()
    daemon.config_path.write_text(
        text.replace("[security]\n", '[security]\nallow = ["127.0.0.2"]\n')
    )
    assert api(daemon, "POST", "/api/v1/reload")[0] == 200
    assert attacker.options(sip) == 200
    (unban,) = log_events(daemon, "security_unban")
    assert (unban["address"], unban["reason"]) == ("127.0.0.2", "reload")
    assert bans(daemon) == {}


def test_bans_outlast_a_sigkill_and_a_lift_outlasts_a_restart(
    start_daemon: DaemonFactory, phones: dict[str, Phone], tmp_path: Path
) -> None:
    """The ban table is in runtime.var_dir/security-bans.json: a SIGKILLed daemon comes back with
    the attacker still banned until the same time, and the API's token guesser too; one lifted
    through the API stays lifted."""
    var = tmp_path / "state"
    text = security(
        f'[runtime]\nvar_dir = "{var}"\n'
        '[security]\nbanned_action = "reject"\n[security.bans]\nmax_failures = 2\n'
    )
    first = start_daemon(text)
    sip = sip_target(first)
    attacker = phones["127.0.0.2"]
    assert attacker.register(sip, "x", user="1001") == 403
    assert attacker.register(sip, "y", user="1001") == 403
    until = float(bans(first)["127.0.0.2"]["until"])  # type: ignore[arg-type]
    assert [api_from(first, "127.0.0.4", f"guess-{i}")[0] for i in (1, 2)] == [401, 401]
    assert api_from(first, "127.0.0.4", ADMIN)[0] == 429
    state = var / "security-bans.json"

    def both_written() -> bool:  # within a second of each ban
        saved = json.loads(state.read_text()) if state.exists() else {}
        return bool(saved.get("state")) and "127.0.0.4" in json.dumps(saved.get("others"))

    wait_until(both_written, 5.0, "both bans in the state file")
    first.proc.kill()
    first.proc.wait()

    second = start_daemon(text)
    sip = sip_target(second)
    listed = bans(second)["127.0.0.2"]
    assert abs(float(listed["until"]) - until) < 1.0  # type: ignore[arg-type]
    assert listed["strikes"] == 1
    assert attacker.options(sip) == 403  # still banned, on the new process
    assert phones["127.0.0.3"].options(sip) == 200
    status, headers = api_from(second, "127.0.0.4", ADMIN)  # the token guesser: still refused
    assert status == 429
    assert 0 < int(headers["Retry-After"]) <= 600  # the default ban_s
    assert api_from(second, "127.0.0.3", ADMIN)[0] == 200
    (restored,) = log_events(second, "security_bans_restored")
    assert restored["active"] == 1
    assert metric(second, "acd_security_bans_active") == 1
    assert api(second, "DELETE", "/api/v1/security/bans/127.0.0.2")[0] == 200
    assert second.stop() == 0  # SIGTERM: the last state is written on the way out

    third = start_daemon(text)
    sip = sip_target(third)
    assert bans(third) == {}
    assert attacker.options(sip) == 200
    assert metric(third, "acd_security_state_errors_total", op="load") == 0


def test_banned_action_reject_answers_403_and_unknown_users_are_counted(
    start_daemon: DaemonFactory, phones: dict[str, Phone]
) -> None:
    daemon = start_daemon(
        security('[security]\nbanned_action = "reject"\n[security.bans]\nmax_failures = 2\n')
    )
    sip = sip_target(daemon)
    attacker = phones["127.0.0.2"]
    assert attacker.register(sip, "x", user="admin") == 403  # no such agent
    assert attacker.register(sip, "y", user="1001") == 403
    assert attacker.options(sip) == 403  # banned and told so
    assert attacker.send("REGISTER", sip) is not None
    assert metric(daemon, "acd_sip_auth_failures_total", reason="unknown_user") == 1
    assert metric(daemon, "acd_sip_auth_failures_total", reason="bad_credentials") == 1
    assert metric(daemon, "acd_sip_parse_errors_total", reason="banned_rejected") == 2


def test_windows_ban_times_doubling_cap_and_forgetting(
    start_daemon: DaemonFactory, phones: dict[str, Phone]
) -> None:
    """bans.find_window_s, ban_s, max_ban_s, forget_s; a ban that runs out is logged."""
    daemon = start_daemon(
        security(
            "[security.bans]\nmax_failures = 2\nfind_window_s = 0.5\nban_s = 1.5\n"
            "max_ban_s = 2.5\nforget_s = 2.0\nuser_max_failures = 0\n"
        )
    )
    sip = sip_target(daemon)
    slow = phones["127.0.0.2"]
    assert slow.register(sip, "a") == 403
    time.sleep(0.7)  # the first failure has left the window
    assert slow.register(sip, "b") == 403
    assert slow.options(sip) == 200  # not banned: never two failures within 0.5 s
    fast = phones["127.0.0.3"]

    def served() -> bool:
        return fast.options(sip, silence_s=0.2) == 200

    assert [fast.register(sip, "a"), fast.register(sip, "b")] == [403, 403]
    assert not served()  # banned
    first = bans(daemon)["127.0.0.3"]
    assert round(float(first["until"]) - float(first["since"]), 1) == 1.5  # type: ignore[arg-type]
    wait_until(served, 5, "the first ban to run out")
    unban = daemon.wait_for_log("security_unban")  # from the guard's timer, at the ban's end
    assert (unban["address"], unban["reason"]) == ("127.0.0.3", "expired")
    assert [fast.register(sip, "c"), fast.register(sip, "d")] == [403, 403]
    second = bans(daemon)["127.0.0.3"]
    assert second["strikes"] == 2
    # doubled from 1.5 s, but capped at max_ban_s
    assert round(float(second["until"]) - float(second["since"]), 1) == 2.5  # type: ignore[arg-type]
    wait_until(served, 6, "the second ban to run out")
    time.sleep(2.1)  # forget_s without a ban: a first offender again
    assert [fast.register(sip, "e"), fast.register(sip, "f")] == [403, 403]
    assert bans(daemon)["127.0.0.3"]["strikes"] == 1
    assert [e["ban_s"] for e in log_events(daemon, "security_ban")] == [1.5, 2.5, 1.5]


def test_failures_for_one_user_from_many_sources_ban_the_next_one(
    start_daemon: DaemonFactory, phones: dict[str, Phone]
) -> None:
    """bans.user_max_failures: a guesser spread over addresses, each under max_failures."""
    daemon = start_daemon(security("[security.bans]\nmax_failures = 5\nuser_max_failures = 3\n"))
    sip = sip_target(daemon)
    guessers = [phones[f"127.0.0.{n}"] for n in (2, 3, 4)]
    assert [g.register(sip, f"guess-{i}") for i, g in enumerate(guessers)] == [403] * 3
    assert guessers[0].options(sip) == 200  # the first two stay in
    assert guessers[1].options(sip) == 200
    assert guessers[2].options(sip) is None  # the third failure for 1001 banned its source
    ban = bans(daemon)["127.0.0.4"]
    assert (ban["reason"], ban["user"], ban["failures"]) == ("user_auth_failures", "1001", 3)
    assert phones["127.0.0.5"].register(sip, "alice-secret-1001") == 200  # the user is not locked


def test_allow_listed_and_trunk_sources_are_never_banned_or_limited(
    start_daemon: DaemonFactory, phones: dict[str, Phone]
) -> None:
    """allow, and every trunk's allow networks: failures and floods from them are let through."""
    daemon = start_daemon(
        security(
            '[security]\nallow = ["127.0.0.4/32"]\n'
            "[security.flood]\nrate_per_s = 1\nburst = 3\n"
            "[security.bans]\nmax_failures = 2\n"
            '[[trunks]]\nname = "carrier"\nallow = ["127.0.0.5"]\n'
        )
    )
    sip = sip_target(daemon)
    for host in ("127.0.0.4", "127.0.0.5"):
        phone = phones[host]
        assert [phone.register(sip, f"guess-{i}") for i in range(4)] == [403] * 4, host
        assert [phone.options(sip) for _ in range(10)] == [200] * 10, host
    assert bans(daemon) == {}
    assert [phones["127.0.0.6"].options(sip) for _ in range(5)] == [200, 200, 200, None, None]


def test_admins_list_and_lift_bans_and_every_lift_is_audited(
    start_daemon: DaemonFactory, phones: dict[str, Phone]
) -> None:
    daemon = start_daemon(security("[security.bans]\nmax_failures = 2\nban_s = 300\n"))
    sip = sip_target(daemon)
    attacker = phones["127.0.0.2"]
    assert [attacker.register(sip, "a"), attacker.register(sip, "b")] == [403, 403]
    assert attacker.options(sip) is None
    assert api(daemon, "DELETE", "/api/v1/security/bans/127.0.0.9")[0] == 404  # not banned
    assert api(daemon, "DELETE", "/api/v1/security/bans/not-an-ip")[0] == 400
    status, lifted = api(daemon, "DELETE", "/api/v1/security/bans/127.0.0.2")
    assert status == 200
    assert (lifted["address"], lifted["reason"], lifted["strikes"]) == (
        "127.0.0.2",
        "auth_failures",
        1,
    )  # type: ignore[index]
    assert attacker.options(sip) == 200  # served again at once
    assert bans(daemon) == {}
    assert metric(daemon, "acd_security_bans_active") == 0
    (unban,) = log_events(daemon, "security_unban")
    assert (unban["address"], unban["reason"]) == ("127.0.0.2", "lifted")
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        audit = db.execute(
            "SELECT actor, action, object_type, object_id, outcome FROM audit_log ORDER BY id"
        ).fetchall()
    assert audit == [
        ("ops", "security_unban", "address", "127.0.0.9", "not_found"),
        ("ops", "security_unban", "address", "127.0.0.2", "done"),
    ]
    # Lifting forgives the ban, not the record: the next ban of this source lasts twice as long.
    assert [attacker.register(sip, "c"), attacker.register(sip, "d")] == [403, 403]
    again = bans(daemon)["127.0.0.2"]
    assert again["strikes"] == 2
    assert round(float(again["until"]) - float(again["since"])) == 600  # type: ignore[arg-type]


# -- floods and scanners --------------------------------------------------------------------------


def test_a_flooding_source_is_dropped_and_counted_while_others_are_served(
    start_daemon: DaemonFactory, phones: dict[str, Phone]
) -> None:
    """flood.enabled, flood.rate_per_s, flood.burst."""
    daemon = start_daemon(security("[security.flood]\nenabled = true\nrate_per_s = 4\nburst = 5\n"))
    sip = sip_target(daemon)
    flooder = phones["127.0.0.2"]
    answered = [flooder.options(sip) for _ in range(8)]
    assert answered[:5] == [200] * 5  # the burst
    assert answered.count(None) >= 2  # then dropped (a token may come back meanwhile)
    assert phones["127.0.0.3"].options(sip) == 200  # its own bucket
    assert metric(daemon, "acd_sip_parse_errors_total", reason="flood_dropped") == answered.count(
        None
    )
    assert metric(daemon, "acd_security_floods_total") == 1
    (flood,) = log_events(daemon, "security_flood")
    assert flood["address"] == "127.0.0.2"
    time.sleep(1.5)  # under the rate for burst / rate_per_s: let in again
    assert flooder.options(sip) == 200


def test_scanners_are_dropped_silently_and_with_ban_scanners_banned(
    start_daemon: DaemonFactory, phones: dict[str, Phone]
) -> None:
    """drop_scanners and ban_scanners."""
    daemon = start_daemon(security("[security]\ndrop_scanners = true\nban_scanners = true\n"))
    sip = sip_target(daemon)
    scanner = phones["127.0.0.2"]
    assert scanner.options(sip, user_agent="friendly-scanner") is None
    assert scanner.options(sip) is None  # banned as a scanner: everything it sends is dropped
    assert phones["127.0.0.3"].options(sip, user_agent="Yealink SIP-T46S 66.86.0.15") == 200
    assert metric(daemon, "acd_sip_parse_errors_total", reason="scanner_dropped") == 1
    assert bans(daemon)["127.0.0.2"]["reason"] == "scanner"
    assert metric(daemon, "acd_security_bans_total", reason="scanner") == 1


def test_everything_off_screens_nothing(
    start_daemon: DaemonFactory, phones: dict[str, Phone]
) -> None:
    """flood.enabled, bans.enabled and drop_scanners all false."""
    daemon = start_daemon(
        security(
            "[security]\ndrop_scanners = false\n[security.flood]\nenabled = false\n"
            "[security.bans]\nenabled = false\n"
        )
    )
    sip = sip_target(daemon)
    attacker = phones["127.0.0.2"]
    assert [attacker.register(sip, f"guess-{i}") for i in range(8)] == [403] * 8
    assert [attacker.options(sip, user_agent="friendly-scanner") for _ in range(150)] == [200] * 150
    assert attacker.register(sip, "alice-secret-1001") == 200
    assert bans(daemon) == {}
    (policy,) = log_events(daemon, "security_policy")
    assert policy["screening"] == "off"
    assert metric(daemon, "acd_sip_auth_failures_total", reason="bad_credentials") == 8


def api_from(daemon: DaemonProcess, host: str, token: str) -> tuple[int, dict[str, str]]:
    """GET /api/v1/agents with ``token`` over a connection from ``host`` (a 127.0.0.x address)."""
    import http.client

    conn = http.client.HTTPConnection(
        "127.0.0.1", daemon.http_port, timeout=5, source_address=(host, 0)
    )
    try:
        conn.request("GET", "/api/v1/agents", headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        response.read()
        return response.status, dict(response.headers)
    finally:
        conn.close()


def test_api_token_guessing_bans_the_source_by_the_bans_policy(
    start_daemon: DaemonFactory,
) -> None:
    daemon = start_daemon(
        BASE
        + '\n[security]\nallow = ["127.0.0.3/32"]\n'
        + "[security.bans]\nmax_failures = 3\nfind_window_s = 60\nban_s = 30\n"
    )
    # the guesser: two wrong tokens are answered 401, the third earns the ban
    assert [api_from(daemon, "127.0.0.2", f"guess-{i}")[0] for i in range(3)] == [401] * 3
    # banned now: even the right token is refused, with when to come back
    status, headers = api_from(daemon, "127.0.0.2", ADMIN)
    assert status == 429
    assert 25 <= int(headers["Retry-After"]) <= 30
    # everyone else is served; an allow-listed source is never banned
    assert api_from(daemon, "127.0.0.1", ADMIN)[0] == 200
    assert [api_from(daemon, "127.0.0.3", f"oops-{i}")[0] for i in range(5)] == [401] * 5
    assert api_from(daemon, "127.0.0.3", ADMIN)[0] == 200
    assert metric(daemon, "acd_api_auth_failures_total", reason="bad_token") == 8
    assert metric(daemon, "acd_api_auth_failures_total", reason="banned") == 1
    (ban,) = [
        line for line in log_events(daemon, "security_ban") if line["reason"] == "api_bad_tokens"
    ]
    assert ban["address"] == "127.0.0.2"
    # the one fail2ban filter of docs/security.md takes the API guesser's line too
    from tests.e2e.test_security_attacks import fail2ban_filter

    matched = [fail2ban_filter().search(raw) for raw in daemon.log_path.read_text().splitlines()]
    assert [m.group("host") for m in matched if m] == ["127.0.0.2"]
