"""SRTP (SDES, RFC 4568) through the whole ACD with real phones: baresip's srtp module both ends.

One daemon, its ``[media] srtp`` changed by reload between the cases (new calls use the value in
force), with ``[media] workers = 1``: the media worker carries the SRTP calls on the keys the
daemon negotiated:

* "require": caller and agent run ``mediaenc=srtp-mand`` (RTP/SAVP, which baresip then insists
  on: it drops any packet that is not SRTP under its key). Each hears the other's tone, and a raw
  capture on loopback (AF_PACKET; the tests run as root) shows what the daemon sent each phone
  was RTP with an 80-bit tag whose payload is not the G.711 of either tone. A plain caller gets
  488 and never reaches the queue.
* "offer": an SRTP caller bridged to a plain agent (baresip without the module answers our
  RTP/AVP + a=crypto offer in the clear): both tones heard, the caller's leg encrypted.
* "off": the RTP/SAVP-only caller gets 488.

And an agent with ``secure = true`` (a second daemon, ``[media] srtp`` left "off", a TLS listener):
its REGISTER over UDP gets 403 TLS Required and it stays logged out; registered over TLS
(``;transport=tls``, baresip's own TLS listener with a certificate the daemon trusts) the INVITE
goes over TLS, its leg is RTP/SAVP, and the plain caller and the SRTP agent hear each other.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from sip.rtp.g711 import ULAW_DECODE
from tests.conftest import free_port, self_signed_cert
from tests.e2e.configs import front_door
from tests.e2e.conftest import DaemonFactory, DaemonProcess, wait_until
from tests.e2e.peers import Baresip, dominant_hz, free_port_block
from tests.e2e.test_call_path import ADMIN, api
from tests.sip.media.media_helpers import tone_share

pytestmark = pytest.mark.e2e

PHONE = "regint=60;answermode=auto;audio_codecs=PCMU"
ETH_P_ALL = 0x0003


def config(rtp_base: int, srtp: str) -> str:
    return (
        front_door(ADMIN, rtp_base=rtp_base, media_workers=1).replace(
            "workers = 1\n", f'workers = 1\nsrtp = "{srtp}"\n'
        )
        + """
[[queues]]
name = "support"
requirements = { support = 1 }
ring_timeout_s = 10.0
wrap_up_s = 0.5

[[agents]]
id = "1001"
password = "alice-secret-1001"
skills = { support = 8 }
queues = { support = 0 }
"""
    )


def agent_state(daemon: DaemonProcess) -> str:
    return str(api(daemon, "/api/v1/agents/1001")["state"])  # type: ignore[index]


def metric(daemon: DaemonProcess, name: str) -> float:
    _, body, _ = daemon.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in /metrics")


def reload(daemon: DaemonProcess, edit: Callable[[str], str]) -> None:
    """Rewrite the daemon's config file with ``edit`` and SIGHUP it; back once it applied."""
    before = sum(1 for line in daemon.log_lines() if line.get("event") == "reload_applied")
    daemon.config_path.write_text(edit(daemon.config_path.read_text()))
    daemon.signal(signal.SIGHUP)
    wait_until(
        lambda: (
            sum(1 for line in daemon.log_lines() if line.get("event") == "reload_applied") > before
        ),
        10,
        "reload applied",
    )


def set_srtp(daemon: DaemonProcess, mode: str) -> None:
    def edit(text: str) -> str:
        for old in ("off", "offer", "require"):
            text = text.replace(f'srtp = "{old}"', f'srtp = "{mode}"')
        return text

    reload(daemon, edit)


class Capture:
    """UDP datagrams on loopback from the daemon's RTP ports, by destination port."""

    def __init__(self, ports: range) -> None:
        self.ports = ports
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.by_dst: dict[int, list[bytes]] = {}
        self.to_daemon: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, meta = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            if meta[2] == socket.PACKET_OUTGOING:
                continue  # loopback shows each datagram twice: keep the incoming copy
            ip = frame[14:]
            if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
                continue
            ihl = (ip[0] & 0x0F) * 4
            src, dst = struct.unpack_from("!HH", ip, ihl)
            if src in self.ports:
                self.by_dst.setdefault(dst, []).append(ip[ihl + 8 :])
            elif dst in self.ports:
                self.to_daemon.append(ip[ihl + 8 :])

    def to(self, phone: Baresip) -> list[bytes]:
        """What the daemon sent to the phone's RTP range (``Baresip``: base + 4 .. + 22)."""
        ports = range(phone.sip_port + 4, phone.sip_port + 23)
        return [p for port, packets in list(self.by_dst.items()) if port in ports for p in packets]

    def plain_rtcp_to_daemon(self) -> int:
        """RTCP the phones sent in the clear: its packets' length fields add up to the whole
        datagram, where SRTCP has E || index and an 80-bit tag after them (libre sends an RTCP
        APP "PING" in the clear as the call starts, and may send its BYE so as it ends)."""
        return sum(1 for p in list(self.to_daemon) if 200 <= p[1] <= 204 and _plain_rtcp(p))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _plain_rtcp(datagram: bytes) -> bool:
    at = 0
    while at + 4 <= len(datagram):
        at += 4 * (int.from_bytes(datagram[at + 2 : at + 4], "big") + 1)
    return at == len(datagram)


def assert_not_plaintext(packets: list[bytes], tag_len: int = 10) -> None:
    rtp = [p for p in packets if len(p) > 12 and p[0] >> 6 == 2 and p[1] & 0x7F == 0]
    assert len(rtp) > 50, f"only {len(rtp)} RTP packets captured"
    assert {len(p) for p in rtp[5:]} == {12 + 160 + tag_len}  # G.711 20 ms + the SRTP tag
    payload = np.frombuffer(b"".join(p[12 : 12 + 160] for p in rtp[-50:]), np.uint8)
    pcm = ULAW_DECODE[payload]
    shares = {hz: tone_share(pcm, hz) for hz in (440, 880)}
    assert max(shares.values()) < 0.05, shares  # neither tone in the clear (a tone alone: ~1)


@contextlib.contextmanager
def phones(
    daemon: DaemonProcess, tmp_path: Path, caller_enc: str | None, agent_enc: str | None
) -> Iterator[tuple[Baresip, Baresip]]:
    sip = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    enc = {None: "", "srtp-mand": ";mediaenc=srtp-mand"}
    agent = Baresip(
        tmp_path / f"agent-{time.monotonic_ns()}",
        f"<sip:1001@{sip}>;auth_pass=alice-secret-1001;{PHONE}{enc[agent_enc]}",
        880,
        modules=("srtp.so",) if agent_enc else (),
    )
    caller: Baresip | None = None
    try:
        agent.wait_for("200 OK")
        wait_until(lambda: agent_state(daemon) == "available", 10, "agent 1001 available")
        caller = Baresip(
            tmp_path / f"caller-{time.monotonic_ns()}",
            f"<sip:5551234@{sip}>;regint=0;audio_codecs=PCMU{enc[caller_enc]}",
            440,
            dial=f"sip:support@{sip}",
            modules=("srtp.so",) if caller_enc else (),
        )
        yield agent, caller
    finally:
        for phone in (caller, agent):
            if phone is not None:
                phone.stop()


def bridged_both_ways(
    daemon: DaemonProcess,
    agent: Baresip,
    caller: Baresip,
    *,
    hold: bool = False,
    before_hangup: Callable[[], None] | None = None,
) -> None:
    """Bridged audio both ways; with ``hold``, the agent holds and resumes first (two
    re-INVITEs with SDP on the encrypted leg), so what the phones hear last is after them.
    ``before_hangup`` runs while the call is still up."""
    wait_until(lambda: agent_state(daemon) == "busy", 20, "agent 1001 on the call")
    if hold:
        time.sleep(0.5)
        assert agent.command("hold").get("ok") is True
        daemon.wait_for_log("call_hold")
        time.sleep(0.5)
        assert agent.command("resume").get("ok") is True
        daemon.wait_for_log("call_resume")
    time.sleep(2.0)  # bridged audio both ways
    if before_hangup is not None:
        before_hangup()
    caller.command("hangup")
    wait_until(lambda: agent_state(daemon) in ("wrap_up", "available"), 10, "call end")


def test_srtp_calls_by_mode(start_daemon: DaemonFactory, tmp_path: Path) -> None:
    rtp_base = free_port_block(100)
    daemon = start_daemon(config(rtp_base, "require"))
    capture = Capture(range(rtp_base, rtp_base + 99))
    try:
        counts: list[tuple[float, int]] = []

        def rejected_and_plain() -> None:
            counts.append(
                (metric(daemon, "acd_srtp_packets_rejected_total"), capture.plain_rtcp_to_daemon())
            )

        with phones(daemon, tmp_path, "srtp-mand", "srtp-mand") as (agent, caller):
            bridged_both_ways(daemon, agent, caller, hold=True, before_hangup=rejected_and_plain)
            to_agent = capture.to(agent)
            to_caller = capture.to(caller)
        assert abs(dominant_hz(agent.heard()[-8000:]) - 440) < 10
        assert abs(dominant_hz(caller.heard()[-8000:]) - 880) < 10
        assert_not_plaintext(to_agent)
        assert_not_plaintext(to_caller)
        # dropped while the call was up: at most the plain packets the phones sent (one that came
        # before the leg had its keys was read as plain RTCP); no SRTP packet failed its tag. (As
        # it hangs up, libre may send an RTCP BYE its SRTP context no longer covers.)
        ((rejected, plain),) = counts
        assert rejected <= plain
        # the media worker carried the SRTP call (its legs' keys went with them), re-INVITEs too
        assert (
            'acd_media_handoffs_total{outcome="carried"} 1.0' in daemon.get("/metrics")[1].decode()
        )

        # a caller without SRTP where it is required: 488, and no call reaches the queue
        with phones(daemon, tmp_path, None, None) as (agent, caller):
            caller.wait_for("488")
            assert agent_state(daemon) == "available"

        set_srtp(daemon, "offer")
        with phones(daemon, tmp_path, "srtp-mand", None) as (agent, caller):
            bridged_both_ways(daemon, agent, caller)
            to_caller = capture.to(caller)
            to_agent = capture.to(agent)
        assert abs(dominant_hz(agent.heard()[-8000:]) - 440) < 10
        assert abs(dominant_hz(caller.heard()[-8000:]) - 880) < 10
        assert_not_plaintext(to_caller)
        plain = [p[12:172] for p in to_agent if len(p) == 172][-50:]
        assert len(plain) == 50  # the plain agent's leg: no tag, and the caller's tone in clear
        assert abs(dominant_hz(ULAW_DECODE[np.frombuffer(b"".join(plain), np.uint8)]) - 440) < 10

        set_srtp(daemon, "off")
        with phones(daemon, tmp_path, "srtp-mand", None) as (agent, caller):
            caller.wait_for("488")
            assert agent_state(daemon) == "available"

        # [media] srtp still "off", the callers' trunk says "require": its plain caller gets
        # 488, its SRTP caller is bridged encrypted to the agent's plain leg ([media] srtp)
        reload(
            daemon,
            lambda text: text.replace('name = "local"\n', 'name = "local"\nsrtp = "require"\n'),
        )
        with phones(daemon, tmp_path, None, None) as (agent, caller):
            caller.wait_for("488")
            assert agent_state(daemon) == "available"
        with phones(daemon, tmp_path, "srtp-mand", None) as (agent, caller):
            bridged_both_ways(daemon, agent, caller)
            to_caller, to_agent = capture.to(caller), capture.to(agent)
        assert abs(dominant_hz(agent.heard()[-8000:]) - 440) < 10
        assert_not_plaintext(to_caller)
        assert len([p for p in to_agent if len(p) == 172]) > 50  # plain G.711 to the agent
    finally:
        capture.close()


def test_secure_agent_only_over_tls_and_srtp(start_daemon: DaemonFactory, tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    (tmp_path / "phone.pem").write_text(cert.read_text() + key.read_text())
    tls_port, rtp_base = free_port(), free_port_block(100)
    daemon = start_daemon(
        config(rtp_base, "off").replace(
            "skills = { support = 8 }", "skills = { support = 8 }\nsecure = true"
        )
        + f"""
[[sip.listeners]]
transport = "tls"
bind = "127.0.0.1"
port = {tls_port}
cert_file = "{cert}"
key_file = "{key}"
ca_file = "{cert}"
"""
    )
    udp = str(daemon.wait_for_log("ready")["sip"]).removeprefix("udp:")
    # over UDP, with the right password: 403 TLS Required, and the agent stays logged out
    plain = Baresip(
        tmp_path / "agent-udp", f"<sip:1001@{udp}>;auth_pass=alice-secret-1001;{PHONE}", 880
    )
    try:
        plain.wait_for("403 TLS Required")
    finally:
        plain.stop()
    assert agent_state(daemon) == "logged_out"
    _, metrics, _ = daemon.get("/metrics")
    assert 'acd_sip_parse_errors_total{reason="bad_register"} 1.0' in metrics.decode()

    capture = Capture(range(rtp_base, rtp_base + 99))
    agent = Baresip(
        tmp_path / "agent-tls",
        f"<sip:1001@127.0.0.1:{tls_port};transport=tls>;auth_pass=alice-secret-1001;{PHONE}"
        ";mediaenc=srtp-mand",
        880,
        modules=("srtp.so",),
        extra_config=f"sip_certificate {tmp_path}/phone.pem\n",
    )
    caller: Baresip | None = None
    try:
        agent.wait_for("{0/TLS/v4} 200 OK")
        wait_until(lambda: agent_state(daemon) == "available", 10, "agent 1001 available")
        caller = Baresip(
            tmp_path / "caller-plain", f"<sip:5551234@{udp}>;regint=0;audio_codecs=PCMU", 440,
            dial=f"sip:support@{udp}",
        )  # fmt: skip
        bridged_both_ways(daemon, agent, caller)
        to_agent, to_caller = capture.to(agent), capture.to(caller)
    finally:
        capture.close()
        for phone in (caller, agent):
            if phone is not None:
                phone.stop()
    assert caller is not None
    assert "SRTP is Enabled" in agent.output
    assert abs(dominant_hz(agent.heard()[-8000:]) - 440) < 10
    assert abs(dominant_hz(caller.heard()[-8000:]) - 880) < 10
    assert_not_plaintext(to_agent)
    plain = [p[12:172] for p in to_caller if len(p) == 172][-50:]
    assert len(plain) == 50  # the caller's leg stays plain RTP ([media] srtp = "off")
