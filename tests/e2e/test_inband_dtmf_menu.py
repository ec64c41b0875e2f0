"""In-band DTMF through the daemon (``trunks[].dtmf``, default "auto").

SIPp is a trunk caller whose SDP offers PCMU without telephone-event, so its digits can only be
tones in the audio. It streams a WAV made with sox: one second of silence, the two tones of "2"
for 0.2 s (barging into the menu prompt), 1.5 s more silence, "2" again, and silence. The menu's
"2" is the sales queue: the CDR row must say the call was queued there. The second "2" arrives
while the caller waits in the queue, where no flow reads digits: detection is off there (its CPU
is only spent while a flow runs), so exactly one in-band digit is counted.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.e2e.configs import front_door
from tests.e2e.conftest import DaemonFactory
from tests.e2e.peers import free_port_block, sipp, stop
from tests.e2e.test_call_scenarios import SCENARIOS, sip_target

pytestmark = pytest.mark.e2e

ADMIN = "admin-token-0123456789"
MENU = (
    '{ type = "answer" }, { type = "menu", prompt = "ivr-menu", '
    'options = { "1" = "support", "2" = "sales" }, timeout_s = 3.0 }'
)
QUEUES = "".join(
    f'[[flows]]\nname = "{q}"\nsteps = [{{ type = "enqueue", queue = "{q}" }}]\n'
    f'[[queues]]\nname = "{q}"\nrecord = "never"\n'
    for q in ("support", "sales")
)


def keypad_wav(workdir: Path, digit_hz: tuple[int, int]) -> Path:
    """silence 1 s, the digit 0.2 s, silence 1.5 s, the digit 0.2 s, silence 1 s: u-law, 8 kHz."""

    def sox(*args: object) -> None:
        subprocess.run(["sox", *map(str, args)], check=True, timeout=30, cwd=workdir)

    pcm = ["-r", "8000", "-c", "1", "-b", "16"]
    for hz in digit_hz:
        sox("-n", *pcm, f"tone{hz}.wav", "synth", 0.2, "sine", hz)
    sox("-m", *(f"tone{hz}.wav" for hz in digit_hz), "digit.wav")  # each tone at half scale
    for seconds in (1.0, 1.5):
        sox("-n", *pcm, f"silence{seconds}.wav", "trim", 0, seconds)
    parts = ["silence1.0.wav", "digit.wav", "silence1.5.wav", "digit.wav", "silence1.0.wav"]
    sox(*parts, "keypad16.wav")
    sox("keypad16.wav", "-e", "u-law", "-b", 8, "keypad.wav")
    return workdir / "keypad.wav"


def test_an_in_band_caller_chooses_the_menu_option_that_queues_it(
    start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    daemon = start_daemon(
        front_door(ADMIN, numbers=("ivr",), steps=MENU, rtp_base=free_port_block(100)) + QUEUES
    )
    keypad_wav(tmp_path, (697, 1336))  # "2"
    caller = sipp(
        tmp_path, ["-sf", str(SCENARIOS / "caller_inband_dtmf.xml")], sip_target(daemon),
        "-s", "ivr", "-m", "1", "-d", "4500",
    )  # fmt: skip
    try:
        assert caller.wait(timeout=20) == 0, caller.log_path.read_text()[-3000:]  # type: ignore[attr-defined]
    finally:
        stop(caller)
    _, exposition, _ = daemon.get("/metrics")
    text = exposition.decode()
    assert 'acd_dtmf_digits_total{method="inband"} 1.0' in text
    assert 'acd_dtmf_digits_total{method="rfc4733"}' not in text  # none came as RFC 4733
    assert daemon.stop() == 0
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as db:
        rows = db.execute("SELECT flow, queue, disposition, hangup_side FROM calls").fetchall()
    assert rows == [("ivr", "sales", "abandoned", "caller")]
