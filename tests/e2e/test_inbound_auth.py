"""Digest authentication through the daemon, for the keys that configure it.

* ``trunks[].username`` / ``password``: a PBX or carrier that authenticates instead of calling
  from an address some trunk's ``allow`` lists. SIPp (sipp/scenarios/caller_digest*.xml) is that
  trunk: its INVITE gets 407 Proxy-Authenticate, it answers with Proxy-Authorization, and the
  call runs as the trunk whose credentials it gave; with a wrong password it gets 403, which is
  counted and leaves a CDR row.
* ``agents[].password_ha1``: a real phone (baresip) registers with the password whose
  MD5(id:realm:password) is all the config holds, and the agent becomes available.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.configs import front_door
from tests.e2e.conftest import DaemonFactory
from tests.e2e.peers import Baresip
from tests.e2e.test_call_scenarios import (
    Peers,
    finished,
    peers,  # noqa: F401 - the fixture
    sip_target,
    sipp_output,
    state,
    wait_until,
)

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-0123456789"


def test_trunk_with_credentials_only_is_challenged_then_admitted(
    start_daemon: DaemonFactory,
    peers: Peers,  # noqa: F811
) -> None:
    # No trunk allows 127.0.0.1: only the digest credentials can say who is calling.
    keys = 'username = "pbx-in"\npassword = "trunk-secret-1"'
    daemon = start_daemon(
        front_door(ADMIN, trunk="pbx", trunk_keys=keys) + '[[queues]]\nname = "support"\n'
    )
    # SIPp digests "sip:ip:port" unless told the Request-URI, which RFC 3261 22.4 says it is.
    uri = ("-auth_uri", f"support@{sip_target(daemon)}")
    admitted = peers.scripted_caller(
        daemon, "caller_digest", "-au", "pbx-in", "-ap", "trunk-secret-1", *uri, "-d", "300"
    )
    assert finished(admitted, 15) == 0, sipp_output(admitted)
    refused = peers.scripted_caller(
        daemon, "caller_digest_refused", "-au", "pbx-in", "-ap", "not-the-password", *uri
    )
    assert finished(refused, 15) == 0, sipp_output(refused)
    _, exposition, _ = daemon.get("/metrics")
    assert 'acd_sip_parse_errors_total{reason="auth_failed"} 1.0' in exposition.decode()
    assert daemon.stop() == 0  # the CDR writer has flushed
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        rows = db.execute(
            "SELECT trunk, caller, disposition, hangup_reason FROM calls ORDER BY arrived_at"
        ).fetchall()
    # One row per attempt; the 407 challenges are part of admission, not attempts of their own.
    assert rows == [
        ("pbx", "5550100", "abandoned", "bye"),
        (None, "5550100", "rejected", "403 Authentication failed"),
    ]


def test_agent_registers_with_the_password_whose_ha1_is_configured(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    ha1 = hashlib.md5(b"1007:acd:ha1-only-secret").hexdigest()  # what md5sum gives an operator
    daemon = start_daemon(
        front_door(ADMIN)
        + '[[queues]]\nname = "support"\n'
        + f'[[agents]]\nid = "1007"\npassword_ha1 = "{ha1}"\nqueues = {{ support = 0 }}\n'
    )
    sip = sip_target(daemon)
    phone = Baresip(
        tmp_path / "agent",
        f"<sip:1007@{sip}>;auth_pass=ha1-only-secret;regint=60;audio_codecs=PCMU",
        440,
    )
    try:
        phone.wait_for("200 OK")
        wait_until(lambda: state(daemon, "1007") == "available", 10, "agent 1007 available")
    finally:
        phone.stop()
    assert daemon.stop() == 0
