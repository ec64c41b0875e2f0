"""The post-call CSAT survey (``queues[].csat``) against the real daemon and real peers.

One daemon for the module, two queues with a survey: ``support`` with the shipped prompts and
their second question, ``quick`` with short questions (``digit-1``, ``digit-2``), a 2 s timeout and
no thanks. Each test has its own static agent, a SIPp UAS that answers, talks 1 s and hangs up
(``agent_hangs_up.xml``); only that agent logs in. Callers: a SIPp script sending RFC 4733 digits
from SIPp's pcap files, one streaming a sox-made WAV of silence and in-band keypad tones, SIPp's
built-in uac hanging up mid-question, and a baresip phone whose received audio must hold the
shipped prompts. SIPp's exit status says each peer saw exactly what its scenario expects; the
SQLite CDR row, the queue events, ``/metrics`` and the API must say the score given (or none).
A last test runs its own daemon with ``[media] workers = 1``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.configs import front_door
from tests.e2e.conftest import DaemonProcess, running_daemon
from tests.e2e.peers import SIPP, Baresip, free_port_block, sipp, stop
from tests.e2e.test_call_scenarios import SCENARIOS, sip_target, sipp_output, wait_until
from tests.e2e.test_queue_keys import best_match, prompt_samples

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-0123456789"
AGENTS = ("rfc4733", "silent", "leaves", "heard")
Proc = subprocess.Popen[bytes]


class Survey:
    """The module's daemon and the SIP port each test's agent answers on."""

    def __init__(self, daemon: DaemonProcess, agent_ports: dict[str, int]) -> None:
        self.daemon = daemon
        self.agent_ports = agent_ports


QUEUES = """
[[queues]]
name = "support"
wrap_up_s = 30.0
record = "never"
csat = {{ second_prompt = "csat-effort" }}

[[queues]]
name = "quick"
wrap_up_s = 30.0
record = "{quick_record}"
csat = {{ prompt = "digit-1", second_prompt = "{quick_second}", timeout_s = 2.0, thanks_prompt = "" }}
"""


@contextlib.contextmanager
def survey_daemon(
    workdir: Path,
    agents: tuple[str, ...],
    *,
    media_workers: int = 0,
    quick_record: str = "never",
    quick_second: str = "digit-2",
) -> Iterator[Survey]:
    """``acd run`` with the two survey queues and ``agents`` (static, at ports of their own),
    stopped by PID at the end (and checked to exit 0)."""
    ports = {agent: free_port_block(4) for agent in agents}
    members = "".join(
        f'[[agents]]\nid = "{agent}"\nlogin = "static"\n'
        f'contact = "sip:{agent}@127.0.0.1:{port}"\nqueues = {{ support = 0, quick = 0 }}\n'
        for agent, port in ports.items()
    )
    extra = front_door(
        ADMIN, numbers=("support", "quick"), rtp_base=free_port_block(100),
        media_workers=media_workers,
    )  # fmt: skip
    extra += f'[recordings]\ndir = "{workdir / "recordings"}"\nflush_interval_s = 0.2\n'
    workdir.mkdir(exist_ok=True)
    config = extra + QUEUES.format(quick_record=quick_record, quick_second=quick_second) + members
    with running_daemon(workdir, config) as daemon:
        yield Survey(daemon, ports)


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Survey]:
    with survey_daemon(tmp_path_factory.mktemp("csat"), AGENTS) as running:
        yield running


def api(daemon: DaemonProcess, path: str, body: object = None) -> object:
    import urllib.request

    request = urllib.request.Request(
        daemon.base_url + path,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "PUT",
    )
    request.add_header("Authorization", f"Bearer {ADMIN}")
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read())


def agent_phone(workdir: Path, port: int) -> Proc:
    """agent_hangs_up.xml for one call, on the port the agent's contact names."""
    args = [SIPP, "-sf", str(SCENARIOS / "agent_hangs_up.xml"), "-i", "127.0.0.1",
            "-p", str(port), "-mp", str(port + 2), "-cp", str(port + 1), "-m", "1",
            "-nostdin", "-trace_err", "-error_file", str(workdir / f"agent-{port}-errors.log")]  # fmt: skip
    log_path = workdir / f"agent-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def one_call(
    survey: Survey, tmp_path: Path, agent: str, number: str, caller_args: list[str]
) -> tuple[sqlite3.Row, list[tuple[str, dict[str, object]]]]:
    """``agent`` logs in, its phone and a caller running ``caller_args`` take one call to
    ``number``; both must exit 0. The call's CDR row and its queue events (event, data)."""
    daemon = survey.daemon
    phone = agent_phone(tmp_path, survey.agent_ports[agent])
    caller = None
    try:
        view = api(daemon, f"/api/v1/agents/{agent}/state", {"state": "logged_in"})
        assert view["state"] == "available", view  # type: ignore[index]
        caller = sipp(tmp_path, caller_args, sip_target(daemon), "-s", number, "-m", "1")
        assert caller.wait(timeout=30) == 0, sipp_output(caller)
        assert phone.wait(timeout=10) == 0, sipp_output(phone)
    finally:
        stop(phone)
        if caller is not None:
            stop(caller)
        api(daemon, f"/api/v1/agents/{agent}/state", {"state": "logged_out"})
    return call_of(daemon, agent)


def call_of(
    daemon: DaemonProcess, agent: str
) -> tuple[sqlite3.Row, list[tuple[str, dict[str, object]]]]:
    """The CDR row of ``agent``'s call (once written) and its queue events (event, data)."""
    path = daemon.workdir / "var" / "acd.sqlite3"

    def row() -> sqlite3.Row | None:
        with sqlite3.connect(path) as db:
            db.row_factory = sqlite3.Row
            return db.execute(  # type: ignore[no-any-return]
                "SELECT * FROM calls WHERE agent_id = ? AND ended_at IS NOT NULL", (agent,)
            ).fetchone()

    wait_until(lambda: row() is not None, 10, f"the CDR row of {agent}'s call")
    found = row()
    assert found is not None
    with sqlite3.connect(path) as db:
        events = db.execute(
            "SELECT event, data FROM queue_events WHERE call_id = ? ORDER BY id", (found["id"],)
        ).fetchall()
    return found, [(e, json.loads(d or "{}")) for e, d in events]


def keypad_wav(workdir: Path, digit_hz: tuple[int, int] | None, lead_s: float) -> None:
    """keypad.wav for caller_inband_awaits_bye.xml: ``lead_s`` of silence, the key's two tones for
    0.2 s (none: silence), 10 s of silence; u-law, 8 kHz."""

    def sox(*args: object) -> None:
        subprocess.run(["sox", *map(str, args)], check=True, timeout=30, cwd=workdir)

    pcm = ["-r", "8000", "-c", "1", "-b", "16"]
    sox("-n", *pcm, "lead.wav", "trim", 0, lead_s)
    sox("-n", *pcm, "tail.wav", "trim", 0, 10.0)
    parts = ["lead.wav", "tail.wav"]
    if digit_hz is not None:
        for hz in digit_hz:
            sox("-n", *pcm, f"tone{hz}.wav", "synth", 0.2, "sine", hz)
        sox("-m", *(f"tone{hz}.wav" for hz in digit_hz), "digit.wav")  # each at half scale
        parts.insert(1, "digit.wav")
    sox(*parts, "keypad16.wav")
    sox("keypad16.wav", "-e", "u-law", "-b", 8, "keypad.wav")


def metric(daemon: DaemonProcess, name: str, **labels: str) -> float:
    """The value of the ``name`` series with exactly ``labels``, 0 if it is not exported."""
    _, exposition, _ = daemon.get("/metrics")
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_caller_rates_4_by_rfc4733_after_the_agent_hangs_up(survey: Survey, tmp_path: Path) -> None:
    (tmp_path / "pcap").symlink_to("/usr/share/sip-tester")  # SIPp's RFC 2833 digit captures
    row, events = one_call(
        survey, tmp_path, "rfc4733", "quick", ["-sf", str(SCENARIOS / "caller_csat.xml")]
    )
    # 7 is not a score: the caller heard "invalid" and the question again, and answered 4
    assert (row["csat_score"], row["csat_second_score"]) == (4, 2)
    assert (row["disposition"], row["hangup_side"]) == ("answered", "agent")
    invalid = [
        line for line in survey.daemon.log_lines() if line.get("event") == "csat_invalid_key"
    ]
    assert [(line["call_id"], line["digit"]) for line in invalid] == [(row["id"], "7")]
    survey_s = row["ended_at"] - row["agent_answered_at"] - row["talk_s"]
    assert survey_s > 2.26, survey_s  # the "invalid" prompt was played in full (no barge-in)
    # The conversation lasted the agent's 1 s; the survey after it is not talk time.
    assert row["talk_s"] == pytest.approx(1.0, abs=0.6)
    assert row["ended_at"] - row["agent_answered_at"] > row["talk_s"] + 1.0  # the caller stayed
    assert [e for e, _ in events] == ["enter", "offer", "answer", "complete"]
    assert events[-1][1]["hangup_side"] == "agent"
    daemon = survey.daemon
    assert metric(daemon, "acd_csat_responses_total", queue="quick", question="1", score="4") == 1
    assert metric(daemon, "acd_csat_responses_total", queue="quick", question="2", score="2") == 1
    assert metric(daemon, "acd_csat_surveys_total", queue="quick", outcome="answered") == 1
    # The agent went to wrap-up when it hung up, not when the survey ended.
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        (wrap_up_at,) = db.execute(
            "SELECT at FROM agent_events WHERE agent_id = 'rfc4733' AND state = 'wrap_up'"
        ).fetchone()
    assert wrap_up_at < row["ended_at"] - 1.0
    figures = api(daemon, f"/api/v1/stats/intervals?queue=quick&since={row['arrived_at'] - 1}")
    assert [(f["queue"], f["figures"]["csat_responses"], f["figures"]["csat_average"])
            for f in figures] == [("quick", 1, 4.0)]  # type: ignore[attr-defined,index]  # fmt: skip
    (quick,) = [q for q in api(daemon, "/api/v1/queues") if q["name"] == "quick"]  # type: ignore[attr-defined,index]
    assert quick["today"]["csat_average"] == 4.0


def test_a_silent_caller_gives_no_score_and_is_hung_up_after_the_timeout(
    survey: Survey, tmp_path: Path
) -> None:
    keypad_wav(tmp_path, None, lead_s=1.0)  # silence only
    scenario = ["-sf", str(SCENARIOS / "caller_inband_awaits_bye.xml")]
    row, events = one_call(survey, tmp_path, "silent", "quick", scenario)
    assert (row["csat_score"], row["csat_second_score"]) == (None, None)
    assert (row["disposition"], row["hangup_side"]) == ("answered", "agent")
    assert [e for e, _ in events][-1] == "complete"
    assert metric(survey.daemon, "acd_csat_surveys_total", queue="quick", outcome="no_answer") == 1
    # digit-1 (0.44 s), then timeout_s = 2 s of waiting, then our BYE; no second question
    survey_s = row["ended_at"] - row["agent_answered_at"] - row["talk_s"]
    assert 2.4 <= survey_s < 3.5, survey_s


def test_a_caller_who_hangs_up_during_the_question_leaves_no_score(
    survey: Survey, tmp_path: Path
) -> None:
    # SIPp's built-in uac hangs up 2.5 s after its ACK: the agent left after 1 s, and the
    # shipped question takes 6.6 s to say.
    row, events = one_call(survey, tmp_path, "leaves", "support", ["-sn", "uac", "-d", "2500"])
    assert (row["csat_score"], row["disposition"], row["hangup_side"]) == (
        None, "answered", "caller",
    )  # fmt: skip
    assert events[-1][0] == "complete"
    assert events[-1][1]["hangup_side"] == "agent"
    assert metric(survey.daemon, "acd_csat_surveys_total", queue="support", outcome="hung_up") == 1


def test_survey_of_a_call_bridged_in_a_media_worker(tmp_path: Path) -> None:
    """With ``[media] workers = 1`` the bridge (and its recording) ran in a worker process: the
    caller's leg comes back to the daemon for the survey, whose in-band key is heard there; the
    recording holds the conversation only."""
    with survey_daemon(
        tmp_path / "daemon", ("worker",), media_workers=1, quick_record="always", quick_second=""
    ) as running:
        keypad_wav(tmp_path, (697, 1477), lead_s=2.5)  # "3"
        scenario = ["-sf", str(SCENARIOS / "caller_inband_awaits_bye.xml")]
        row, _ = one_call(running, tmp_path, "worker", "quick", scenario)
        assert (row["csat_score"], row["hangup_side"]) == (3, "agent")
        daemon = running.daemon
        path = daemon.workdir / "var" / "acd.sqlite3"

        def duration() -> float | None:
            with sqlite3.connect(path) as db:
                found = db.execute(
                    "SELECT duration_s FROM recordings WHERE call_id = ?", (row["id"],)
                ).fetchone()
            return None if found is None else found[0]

        wait_until(lambda: duration() is not None, 10, "the recording's duration")
        assert duration() == pytest.approx(row["talk_s"], abs=0.3)  # not the survey after it
        assert row["ended_at"] - row["agent_answered_at"] > row["talk_s"] + 1.0


def test_a_baresip_caller_hears_the_questions_and_answers_them(
    survey: Survey, tmp_path: Path
) -> None:
    """What the caller hears is the survey (its received audio holds the shipped prompts), and
    a real phone's RFC 4733 keys answer both questions."""
    daemon = survey.daemon
    phone = agent_phone(tmp_path, survey.agent_ports["heard"])
    sip = sip_target(daemon)
    caller = None
    try:
        api(daemon, "/api/v1/agents/heard/state", {"state": "logged_in"})
        caller = Baresip(
            tmp_path / "caller", f"<sip:5550177@{sip}>;regint=0;audio_codecs=PCMU", 440,
            dial=f"sip:support@{sip}",
        )  # fmt: skip
        caller.wait_for("Call established")

        def in_survey() -> bool:
            calls = api(daemon, "/api/v1/calls")
            return [c["phase"] for c in calls] == ["survey"]  # type: ignore[index, attr-defined]

        wait_until(in_survey, 10, "the agent to hang up")
        time.sleep(1.2)  # listening to the first question
        assert caller.command("sndcode", "4").get("ok") is True
        time.sleep(0.8)  # into the second question
        assert caller.command("sndcode", "5").get("ok") is True
        wait_until(lambda: api(daemon, "/api/v1/calls") == [], 10, "our BYE after the thanks")
        assert phone.wait(timeout=10) == 0, sipp_output(phone)
    finally:
        stop(phone)
        if caller is not None:
            caller.stop()
        api(daemon, "/api/v1/agents/heard/state", {"state": "logged_out"})
    row, _ = call_of(daemon, "heard")
    assert (row["csat_score"], row["csat_second_score"], row["hangup_side"]) == (4, 5, "agent")
    assert caller is not None
    heard = caller.heard()
    assert best_match(heard, prompt_samples("csat-question")[:8000]) > 0.9  # its first second
    assert best_match(heard, prompt_samples("csat-effort")[:4000]) > 0.9
    # "Thank you for your feedback": the phone drops what its jitter buffer holds at our BYE
    assert best_match(heard, prompt_samples("csat-thanks")[:16000]) > 0.9
    assert best_match(heard, prompt_samples("csat-effort")[-8000:]) < 0.5  # interrupted by 5
