"""Queue keys through the daemon: what the periodic announcement says (``announce_position``,
``announce_wait``).

Two queues announce every second, ``support`` its callers' position only and ``wait`` the
expected wait only. One answered call in each (SIPp caller, SIPp agent) gives both queues a
wait to estimate from, so leaving the wait out of ``support``'s announcement is the key's doing;
then the agents log out and a baresip caller waits in each queue, recording what it hears. The
prompt each should hear must be in its recording (found by normalised cross-correlation with the
shipped prompt), and the daemon's log says exactly what each announcement was made of.
"""

from __future__ import annotations

import time
import wave
from pathlib import Path

import numpy as np
import pytest

from engine.calls.announcements import SHIPPED_PROMPTS
from tests.e2e.configs import front_door
from tests.e2e.conftest import DaemonFactory, DaemonProcess
from tests.e2e.peers import Baresip, free_port_block
from tests.e2e.test_call_scenarios import (
    ADMIN,
    Peers,
    api,
    finished,
    login,
    peers,  # noqa: F401 - the fixture
    sip_target,
    sipp_output,
    wait_until,
)

pytestmark = pytest.mark.e2e


def prompt_samples(name: str) -> np.ndarray:
    with wave.open(str(SHIPPED_PROMPTS / f"{name}.wav")) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(float)


def best_match(heard: np.ndarray, prompt: np.ndarray) -> float:
    """The highest normalised cross-correlation of ``prompt`` against any stretch of ``heard``:
    about 1 where the prompt was played (G.711 barely changes it), far lower elsewhere."""
    heard = heard.astype(float)
    if len(heard) < len(prompt):
        return 0.0
    size = 1 << (len(heard) + len(prompt)).bit_length()
    dots = np.fft.irfft(np.fft.rfft(heard, size) * np.conj(np.fft.rfft(prompt, size)), size)
    dots = dots[: len(heard) - len(prompt) + 1]
    energy = np.concatenate(([0.0], np.cumsum(heard**2)))
    window = energy[len(prompt) :] - energy[: len(heard) - len(prompt) + 1]
    norms = np.sqrt(np.maximum(window, 1e-9)) * np.linalg.norm(prompt)
    return float(np.max(dots / norms))


def announcements(daemon: DaemonProcess, queue: str) -> list[list[str]]:
    return [
        list(line["prompts"])  # type: ignore[call-overload]
        for line in daemon.log_lines()
        if line.get("event") == "queue_announcement" and line.get("queue") == queue
    ]


def test_announcement_says_position_or_expected_wait_as_configured(
    start_daemon: DaemonFactory,
    peers: Peers,  # noqa: F811
    tmp_path: Path,
) -> None:
    a1, a2 = peers.agent("agent_answer"), peers.agent("agent_answer")
    common = 'announce_every_s = 1.0\nwrap_up_s = 0.0\nrecord = "never"\n'
    daemon = start_daemon(
        front_door(ADMIN, numbers=("support", "wait"), rtp_base=free_port_block(100))
        + f'[[queues]]\nname = "support"\nannounce_wait = false\n{common}'
        + f'[[queues]]\nname = "wait"\nannounce_position = false\n{common}'
        + "".join(
            f'[[agents]]\nid = "{agent}"\nlogin = "static"\nqueues = {{ {queue} = 0 }}\n'
            f'contact = "sip:{agent}@127.0.0.1:{phone.sip_port}"\n'  # type: ignore[attr-defined]
            for agent, queue, phone in (("a1", "support", a1), ("a2", "wait", a2))
        )
    )
    login(daemon, "a1")
    login(daemon, "a2")
    # One answered call per queue: now each has an average wait to announce.
    first = [peers.caller(daemon, 200, number) for number in ("support", "wait")]
    for proc in [*first, a1, a2]:
        assert finished(proc, 15) == 0, sipp_output(proc)
    for agent in ("a1", "a2"):
        api(daemon, f"/api/v1/agents/{agent}/state", {"state": "logged_out"})
    sip = sip_target(daemon)
    callers = {
        number: Baresip(
            tmp_path / number,
            f"<sip:555010{i}@{sip}>;regint=0;audio_codecs=PCMU",
            440,
            dial=f"sip:{number}@{sip}",
        )
        for i, number in enumerate(("support", "wait"))
    }
    try:
        for phone in callers.values():
            phone.wait_for("Call established")
        # The first announcement starts 1 s into the wait: long enough for its first prompt.
        wait_until(lambda: announcements(daemon, "wait") != [], 5, "an announcement")
        time.sleep(2.5)
        for phone in callers.values():
            phone.command("hangup")
    finally:
        for phone in callers.values():
            phone.stop()
    position, wait = prompt_samples("position"), prompt_samples("expected-wait")
    support_heard, wait_heard = callers["support"].heard(), callers["wait"].heard()
    assert best_match(support_heard, position) > 0.9
    assert best_match(wait_heard, wait) > 0.9
    assert best_match(wait_heard, position) < 0.5  # the position prompt was never played there
    assert announcements(daemon, "support")[0] == ["position", "digit-1", "in-queue"]
    assert announcements(daemon, "wait")[0] == ["expected-wait", "less-than", "digit-1", "minute"]
    assert daemon.stop() == 0
