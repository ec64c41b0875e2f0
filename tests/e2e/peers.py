"""Real peers for end-to-end tests: baresip phones (agent or caller) driven over ctrl_tcp, SIPp,
and Kamailio running the shipped config/kamailio/kamailio.cfg in front of acd nodes.

Each phone gets its own config directory, SIP/TCP/TLS ports (port, port+1) and RTP range, plays a
tone file as its microphone, and records what it hears (sndfile module: ``*-dec.wav``). Processes
are stopped by their own PID when the test ends.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import subprocess
import sys
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np


def write_tone(path: Path, hz: float, seconds: float) -> None:
    t = np.arange(int(8000 * seconds)) / 8000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((8000 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes())


def dominant_hz(pcm: np.ndarray, rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(float) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])


def free_port_block(size: int, step: int = 2) -> int:
    """A base port whose UDP and TCP ports base..base+size-1 were all free a moment ago."""
    for _ in range(300):
        # Below Linux's ephemeral range (32768-60999): no client socket or bind-0 port of another
        # test (or xdist worker) can be handed a port inside the block after it was checked.
        base = random.randrange(10000, 32768 - size, step)
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + size):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    s = socket.socket(socket.AF_INET, kind)
                    socks.append(s)
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


class Baresip:
    """One baresip process: ``account`` is the accounts-file line, ``tone_hz`` its microphone;
    it binds ``host`` (any 127.0.0.x: a source address of its own)."""

    def __init__(
        self,
        workdir: Path,
        account: str,
        tone_hz: float,
        *,
        dial: str | None = None,
        host: str = "127.0.0.1",
        source: Path | None = None,
        modules: tuple[str, ...] = (),
        extra_config: str = "",
    ) -> None:
        """``source``: an 8 kHz mono 16-bit WAV to use as the microphone instead of the tone
        (the call ends when it ends, so make it longer than the call). ``modules``: more
        baresip modules to load, e.g. ``("srtp.so",)`` for an account's ``mediaenc=srtp``.
        ``extra_config``: more config lines (``sip_certificate`` for its TLS listener)."""
        self.dir = workdir
        self.host = host
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "rec").mkdir(exist_ok=True)
        if source is None:
            write_tone(self.dir / "tone.wav", tone_hz, 120)
        else:
            (self.dir / "tone.wav").write_bytes(source.read_bytes())
        base = free_port_block(24)
        self.sip_port, self.ctrl_port, rtp = base, base + 2, base + 4
        (self.dir / "config").write_text(
            f"sip_listen {host}:{self.sip_port}\n"
            f"net_interface {host}\n"
            "audio_player aubridge,sink_b\naudio_alert aubridge,sink_b\n"
            f"audio_source aufile,{self.dir}/tone.wav\n"
            f"rtp_ports {rtp}-{rtp + 18}\n"
            "module_path /usr/lib/baresip/modules\n"
            "module g711.so\nmodule aufile.so\nmodule aubridge.so\nmodule sndfile.so\n"
            "module ctrl_tcp.so\n"
            + "".join(f"module {m}\n" for m in modules)
            + f"ctrl_tcp_listen {host}:{self.ctrl_port}\n"
            "module_tmp account.so\nmodule_app menu.so\n"
            f"snd_path {self.dir}/rec\n" + extra_config
        )
        (self.dir / "accounts").write_text(account + "\n")
        self.log_path = self.dir / "baresip.log"
        args = ["baresip", "-f", str(self.dir)]
        if dial:
            args += ["-e", f"/dial {dial}"]
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.output:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"baresip never printed {text!r}:\n{self.output[-3000:]}")

    def command(self, command: str, params: str = "") -> dict[str, object]:
        body = json.dumps({"command": command, "params": params, "token": "t"}).encode()
        with socket.create_connection((self.host, self.ctrl_port), timeout=5) as s:
            s.sendall(str(len(body)).encode() + b":" + body + b",")
            data = b""
            while b'"response"' not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        length, _, rest = data.partition(b":")
        return json.loads(rest[: int(length)])  # type: ignore[no-any-return]

    def heard(self) -> np.ndarray:
        """What the phone decoded (its received audio), from the sndfile dump."""
        files = sorted((self.dir / "rec").glob("*-dec.wav"))
        assert files, f"no recording of received audio:\n{self.output[-2000:]}"
        with wave.open(str(files[-1])) as w:
            return np.frombuffer(w.readframes(w.getnframes()), "<i2")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


SIPP = "/usr/bin/sipp"


def sipp(
    workdir: Path,
    scenario: list[str],
    target: str | None,
    *extra: str,
    background: bool = False,
    host: str = "127.0.0.1",
) -> subprocess.Popen[bytes]:
    """Start SIPp with a built-in (``["-sn", "uac"]``) or file scenario on its own ports, bound
    to ``host`` (any 127.0.0.x: a source address of its own)."""
    base = free_port_block(4)
    args = [SIPP, *scenario]
    if target:
        args.append(target)
    args += ["-i", host, "-p", str(base), "-mp", str(base + 2), "-cp", str(base + 1),
             "-nostdin", "-trace_err", "-error_file", str(workdir / f"sipp-{base}-errors.log"),
             *extra]  # fmt: skip
    with (workdir / f"sipp-{base}.log").open("wb") as log:
        proc = subprocess.Popen(args, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    proc.sip_port = base  # type: ignore[attr-defined]
    proc.log_path = workdir / f"sipp-{base}.log"  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


SIMPLE_UAS = Path(__file__).parent / "sipp" / "simple_uas.py"


@contextlib.contextmanager
def simple_uas(workdir: Path, status: int = 200) -> Iterator[int]:
    """The stack's test UAS (sipp/simple_uas.py) on a port of its own, answering every INVITE with
    ``status`` (200 with SDP; 180 rings for good), whatever the user part: many static agents'
    contacts on one process. Yields its port; stopped by PID."""
    port = free_port_block(1)
    proc = subprocess.Popen(
        [sys.executable, str(SIMPLE_UAS), "--port", str(port), "--status", str(status)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workdir,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield port
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


KAMAILIO = "/usr/sbin/kamailio"
KAMAILIO_CFG = Path(__file__).resolve().parents[2] / "config" / "kamailio" / "kamailio.cfg"


class Kamailio:
    """The shipped config/kamailio/kamailio.cfg run by the real Kamailio in the foreground
    (``-DD -E``), on 127.0.0.1:``port`` (UDP), with its pid file, control socket and runtime
    files in ``workdir`` and ``nodes`` ((host, port) of each acd node) as dispatcher set 1.
    ``defines`` override the cfg's other defines (PING_INTERVAL_S, FR_TIMER_MS...)."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        nodes: list[tuple[str, int]],
        *,
        defines: dict[str, str] | None = None,
        children: int = 2,
    ) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.ctl = f"unix:{self.dir / 'kamailio_ctl'}"
        (self.dir / "dispatcher.list").write_text(
            "".join(f"1 sip:{host}:{node_port} 0 0\n" for host, node_port in nodes)
        )
        values = {
            "LISTEN": f"udp:127.0.0.1:{port}",
            "DISPATCHER_LIST": f'"{self.dir / "dispatcher.list"}"',
            "CTL_SOCKET": f'"{self.ctl}"',
            **(defines or {}),
        }
        args = [KAMAILIO, "-f", str(KAMAILIO_CFG), "-DD", "-E", "-n", str(children),
                "-m", "64", "-M", "8", "-Y", str(self.dir), "-P", str(self.dir / "kamailio.pid"),
                "-w", str(self.dir)]  # fmt: skip
        for name, value in values.items():
            args += ["-A", f"{name}={value}"]
        self.log_path = self.dir / "kamailio.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def destinations(self) -> dict[str, str]:
        """Each node's URI -> its dispatcher flags (``kamcmd dispatcher.list``): "AP" is active
        (and probed), "IP" inactive, "TP" trying (one failure, still selected)."""
        out = subprocess.run(
            ["kamcmd", "-s", self.ctl, "dispatcher.list"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode != 0:
            return {}
        uris = re.findall(r"URI:\s*(\S+)", out.stdout)
        flags = re.findall(r"FLAGS:\s*(\S+)", out.stdout)
        return dict(zip(uris, flags, strict=True))

    def wait_for_flags(
        self, want: Callable[[dict[str, str]], bool], timeout_s: float = 20.0
    ) -> dict[str, str]:
        """Poll the dispatcher's view (every 50 ms) until ``want`` holds for it; that view."""
        deadline = time.monotonic() + timeout_s
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"kamailio exited {self.proc.returncode}:\n{self.output}")
            seen = self.destinations()
            if seen and want(seen):
                return seen
            time.sleep(0.05)
        raise AssertionError(f"dispatcher never got there: {seen}\n{self.output[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
