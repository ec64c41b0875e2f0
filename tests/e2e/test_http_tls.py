"""The HTTP listener with a certificate and closed probe paths, through the real daemon: HTTPS
only, /metrics behind a monitoring token (what a Prometheus scrape config sends), /healthz still
open for the load balancer, and a monitoring token good for nothing else."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import self_signed_cert
from tests.e2e.conftest import DaemonFactory

SCRAPE = "scrape-token-0123456789"
BOSS = "boss-token-0123456789abc"
AGENT = "agent-1001-token-0123456"


def _config() -> str:
    return f"""
[[api.tokens]]
name = "prometheus"
role = "monitoring"
token = "{SCRAPE}"

[[api.tokens]]
name = "boss"
role = "supervisor"
token = "{BOSS}"

[[queues]]
name = "support"

[[agents]]
id = "1001"
queues = {{ support = 1 }}
api_token = "{AGENT}"
"""


def _http_table(cert: Path, key: Path) -> str:
    return f'cert_file = "{cert}"\nkey_file = "{key}"\nopen_paths = ["/healthz"]\n'


def _get(url: str, ctx: ssl.SSLContext | None, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def _event_stream_close_code(base: str, ctx: ssl.SSLContext, token: str) -> int | None:
    import aiohttp

    url = base.replace("https://", "wss://") + "/api/v1/events"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, ssl=ctx) as ws:
        sock = ws.get_extra_info("socket")
        await ws.send_json({"type": "auth", "token": token})
        await ws.receive(timeout=5)
        code = ws.close_code
    # The TLS transport's close_notify exchange outlives the session; asyncio.run would end the
    # loop with the socket still open (a ResourceWarning at the next gc), so wait for it here.
    for _ in range(250):
        if sock.fileno() == -1:
            break
        await asyncio.sleep(0.02)
    assert sock.fileno() == -1, "the wss:// client socket never closed"
    return code


def test_https_listener_with_metrics_behind_a_monitoring_token(
    tmp_path: Path, start_daemon: DaemonFactory
) -> None:
    cert, key = self_signed_cert(tmp_path)
    daemon = start_daemon(_config(), http_extra=_http_table(cert, key), wait=False)
    trusted = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{daemon.http_port}"
    deadline = time.monotonic() + 60
    while True:
        assert daemon.proc.poll() is None, daemon.log_path.read_text()
        try:
            if _get(base + "/readyz", trusted, SCRAPE)[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, daemon.log_path.read_text()
        time.sleep(0.05)
    assert daemon.wait_for_log("ready")["http"] == f"https://127.0.0.1:{daemon.http_port}"

    # TLS is the only way in: plain HTTP on the port is no answer, an untrusting client refuses.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}/healthz", timeout=5)
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(base + "/healthz", ssl.create_default_context())

    # /healthz stays open (the load balancer's probe); /readyz and /metrics want a token.
    assert _get(base + "/healthz", trusted)[0] == 200
    status, body = _get(base + "/metrics", trusted)
    assert status == 401
    assert json.loads(body)["status"] == 401
    assert _get(base + "/readyz", trusted)[0] == 401
    assert _get(base + "/metrics", trusted, "wrong-token-000000000000")[0] == 401
    assert _get(base + "/metrics", trusted, AGENT)[0] == 403  # an agent is no scraper
    status, text = _get(base + "/metrics", trusted, SCRAPE)
    assert status == 200
    assert b"acd_ready 1.0" in text
    assert _get(base + "/metrics", trusted, BOSS)[0] == 200

    # The monitoring token reads nothing of the API, not even what an agent may.
    status, body = _get(base + "/api/v1/agents", trusted, SCRAPE)
    assert status == 403
    assert "monitoring tokens" in json.loads(body)["detail"]
    assert _get(base + "/api/v1/agents", trusted, BOSS)[0] == 200

    # Nor the event stream (it authenticates in its first message, over wss:// here).
    assert asyncio.run(_event_stream_close_code(base, trusted, SCRAPE)) == 4403
    assert asyncio.run(_event_stream_close_code(base, trusted, "wrong-token-000000000000")) == 4401

    # What Prometheus itself would scrape, checked by promtool.
    promtool = shutil.which("promtool")
    assert promtool, "scripts/test installs prometheus (promtool)"
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, check=False
    )
    assert check.returncode == 0, check.stderr.decode()
    assert daemon.stop() == 0
