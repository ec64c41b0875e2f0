"""Fixtures shared by the whole suite: free ports, the repo root, a real PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port that was free on 127.0.0.1 a moment ago (bind to 0, read it back, release)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throw-away certificate and key for 127.0.0.1 (PEM files in ``directory``), for TLS tests."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session", autouse=True)
def warm_numba_cache() -> None:
    """Compile the routing kernels once (numba's on-disk cache) before any daemon starts.

    On a fresh clone the cache is cold: without this every daemon the e2e tests start would pay the
    full compile (15-20 s on these machines) inside its start-up.
    """
    from routing_core import Router

    Router(n_skills=1).warmup()


def _pg_bin() -> Path:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    raise RuntimeError(
        "PostgreSQL server binaries not found: scripts/test installs the Debian package 'postgresql'"
    )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1, stopped (by its PID) at the end of the session."""
    bindir = _pg_bin()
    # Not under pytest's tmp tree: that is private to root (0700) and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="acd-test-pg-"))
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    # initdb refuses to run as root: run the server as the cluster owner Debian creates, directly
    # (subprocess's user=), so the PID we stop at the end is the postmaster itself.
    owner: str | None = None
    if os.geteuid() == 0:
        owner = "postgres"
        shutil.chown(base, owner)
        shutil.chown(sockets, owner)
    subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "acd", "-E", "UTF8"],
        check=True,
        capture_output=True,
        user=owner,
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            str(bindir / "postgres"),
            "-D", str(data),
            "-p", str(port),
            "-k", str(sockets),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=owner,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            ready = subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                capture_output=True,
            )
            if ready.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the test PostgreSQL server did not start")
            time.sleep(0.2)
        subprocess.run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "acd", "acd_test"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://acd@127.0.0.1:{port}/acd_test"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage_per_file() -> Iterator[None]:
    """Collect garbage when a test file ends, so that a socket or transport a file leaves unclosed
    fails that file's last test (filterwarnings = error) instead of whichever test the worker runs
    next (with xdist that is another file each run)."""
    yield
    import gc

    gc.collect()
