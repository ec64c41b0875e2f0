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
    # b1, b2: phones that ring and are never picked up, staffing the queues while the callers wait
    b1, b2 = peers.agent("agent_no_answer"), peers.agent("agent_no_answer")
    common = 'announce_every_s = 1.0\nwrap_up_s = 0.0\nrecord = "never"\n'
    daemon = start_daemon(
        front_door(ADMIN, numbers=("support", "wait"), rtp_base=free_port_block(100))
        + f'[[queues]]\nname = "support"\nannounce_wait = false\n{common}'
        + f'[[queues]]\nname = "wait"\nannounce_position = false\n{common}'
        + "".join(
            f'[[agents]]\nid = "{agent}"\nlogin = "static"\nqueues = {{ {queue} = 0 }}\n'
            f'contact = "sip:{agent}@127.0.0.1:{phone.sip_port}"\n'  # type: ignore[attr-defined]
            for agent, queue, phone in (
                ("a1", "support", a1),
                ("a2", "wait", a2),
                ("b1", "support", b1),
                ("b2", "wait", b2),
            )
        )
    )
    login(daemon, "a1")
    login(daemon, "a2")
    # One answered call per queue: now each has a handling time to estimate the wait from.
    first = [peers.caller(daemon, 200, number) for number in ("support", "wait")]
    for proc in [*first, a1, a2]:
        assert finished(proc, 15) == 0, sipp_output(proc)
    for agent in ("a1", "a2"):
        api(daemon, f"/api/v1/agents/{agent}/state", {"state": "logged_out"})
    queues: list[dict[str, object]] = api(daemon, "/api/v1/queues")  # type: ignore[assignment]
    assert {q["name"]: q["expected_wait_s"] for q in queues} == {"support": None, "wait": None}
    for agent in ("b1", "b2"):  # they ring for the callers, never answer (ring_timeout_s 20)
        login(daemon, agent)
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
        # Staffed again (b1, b2 ringing): a third caller would wait about one handling time
        queues = api(daemon, "/api/v1/queues")  # type: ignore[assignment]
        for q in queues:
            assert 0.0 < q["expected_wait_s"] < 60.0, q  # type: ignore[operator]
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


def test_the_expected_wait_learns_from_the_stores_calls_across_a_restart(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    """The handling times and abandonments behind the expected wait come from the store's last day
    of calls at start: a restarted daemon tells the first caller what the calls before said."""
    import sqlite3

    from routing_core.predict import WaitPredictor

    db = tmp_path / "acd.sqlite3"
    text = (
        front_door(ADMIN)
        + '[[queues]]\nname = "support"\nwrap_up_s = 10.0\n'
        + '[[agents]]\nid = "a1"\nqueues = { support = 0 }\n'
    )
    first = start_daemon(text, storage=f'sqlite_path = "{db}"')
    assert first.stop() == 0
    now = time.time()
    history = [
        (20.0, 100.0),
        (25.0, 140.0),
        (40.0, None),
        (10.0, 80.0),
    ]  # (wait, talk); None: gave up
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO calls (id, sip_call_id, queue, arrived_at, ended_at, agent_answered_at, "
            "disposition, wait_s, talk_s) VALUES (?, 'x', 'support', ?, ?, ?, ?, ?, ?)",
            [
                (
                    f"h{i}",
                    now - 600 + i,
                    now - 500 + i,
                    None if talk is None else now - 590 + i,
                    "abandoned" if talk is None else "answered",
                    wait,
                    talk,
                )
                for i, (wait, talk) in enumerate(history)
            ],
        )
        conn.execute(  # two days old: not read
            "INSERT INTO calls (id, sip_call_id, queue, arrived_at, ended_at, agent_answered_at, "
            "disposition, wait_s, talk_s) VALUES ('old', 'x', 'support', ?, ?, ?, 'answered', 5, 900)",
            (now - 2 * 86400, now - 2 * 86400 + 950, now - 2 * 86400 + 5),
        )
    second = start_daemon(text, storage=f'sqlite_path = "{db}"')
    queues: list[dict[str, object]] = api(second, "/api/v1/queues")  # type: ignore[assignment]
    assert queues[0]["expected_wait_s"] is None  # nobody staffed yet
    login(second, "a1")
    expected = WaitPredictor()
    for wait, talk in history:
        if talk is None:
            expected.abandoned(wait)
        else:
            expected.answered(wait, talk + 10.0)  # the queue's wrap-up counts
    queues = api(second, "/api/v1/queues")  # type: ignore[assignment]
    told = expected.expected_wait_s(1, 1)
    assert told is not None
    assert queues[0]["expected_wait_s"] == round(told, 1)
    assert 100.0 < told < 130.0  # about one handling time (~113 s), less a little for give-ups
