"""Parse time of one ~880-byte INVITE with SDP, with typed access to the key headers.

Prints microseconds per message (median of several timed runs) for our parser and, side by side in
the same process, for sippy's and pyVoIP's parsers as references. The references are NOT project
dependencies: on first run this script installs them with
``pip install --target <repo>/var/bench-ref/ sippy pyVoIP`` (var/ is git-ignored) and puts that
directory on sys.path; if that fails it says so and prints our figure alone.

Typed access measured for every parser: top Via branch, From tag, To tag (absent), Call-ID,
CSeq number and method, first Contact URI, Max-Forwards, Content-Length. Two more rows time our
answer path: building the 200 OK to that INVITE with `make_response` (To tag, Contact, SDP body)
and serializing it with bytes(), and the serialization alone.

Run: .venv/bin/python benchmarks/bench_sip_parse.py [--runs 7] [--number 5000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REF_DIR = REPO / "var" / "bench-ref"
sys.path.insert(0, str(REPO))

import sip  # noqa: E402

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=call\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 9 18 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:9 G722/8000\r\n"
    b"a=rtpmap:18 G729/8000\r\n"
    b"a=fmtp:18 annexb=no\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)
HEAD = (
    "INVITE sip:support@acd.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    "Max-Forwards: 70\r\n"
    "To: <sip:support@acd.example.com>\r\n"
    'From: "Alice Caller" <sip:alice@trunk.example.net>;tag=1928301774\r\n'
    "Call-ID: a84b4c76e66710@pc33.trunk.example.net\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY\r\n"
    "Supported: replaces, timer, 100rel\r\n"
    "Session-Expires: 1800\r\n"
    "User-Agent: ExampleTrunk/4.2\r\n"
    "Content-Type: application/sdp\r\n"
    f"Content-Length: {len(SDP)}\r\n"
    "\r\n"
)
INVITE = HEAD.encode() + SDP


def ours() -> Callable[[], object]:
    parse = sip.parse_message

    def run() -> object:
        msg = parse(INVITE)
        to = msg.to
        from_ = msg.from_
        cseq = msg.cseq
        assert to is not None
        assert from_ is not None
        assert cseq is not None
        return (
            msg.via[0].branch,
            from_.tag,
            to.tag,
            msg.call_id,
            cseq.seq,
            cseq.method,
            msg.contacts[0].uri,
            msg.max_forwards,
            msg.content_length,
        )

    return run


def ours_parse_only() -> Callable[[], object]:
    """Breakdown row: parse_message alone (core headers typed and validated, nothing accessed)."""
    parse = sip.parse_message

    def run() -> object:
        return parse(INVITE)

    return run


ANSWER_SDP = SDP.replace(b"alice", b"acd").replace(b"192.0.2.10", b"192.0.2.1")


def ours_respond() -> Callable[[], object]:
    """Build the 200 OK to the INVITE (as the endpoint does: To tag, Contact, SDP) and serialize it.

    The request is parsed and its core headers typed once outside the timed loop, as they are by
    the time the endpoint answers.
    """
    request = sip.parse_message(INVITE)
    assert isinstance(request, sip.Request)
    _ = request.to, request.via
    extra = [("Contact", "<sip:acd@192.0.2.1:5060>"), ("Content-Type", "application/sdp")]

    def run() -> object:
        response = sip.make_response(
            request, 200, to_tag="a73kszlfl", headers=extra, body=ANSWER_SDP
        )
        return bytes(response)

    return run


def ours_serialize() -> Callable[[], object]:
    """Breakdown row: bytes() of that 200 OK alone."""
    request = sip.parse_message(INVITE)
    assert isinstance(request, sip.Request)
    extra = [("Contact", "<sip:acd@192.0.2.1:5060>"), ("Content-Type", "application/sdp")]
    response = sip.make_response(request, 200, to_tag="a73kszlfl", headers=extra, body=ANSWER_SDP)

    def run() -> object:
        return bytes(response)

    return run


def minimal_split() -> Callable[[], object]:
    """Calibration only: split lines into a dict, no validation, no typed values.

    PEERS.md measured this at about 3.5 us on these machines when idle; the machines are shared,
    so compare ratios to it rather than absolute figures.
    """

    def run() -> object:
        end = INVITE.find(b"\r\n\r\n")
        lines = INVITE[:end].decode().split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return headers, INVITE[end + 4 :]

    return run


def sippy_parser() -> Callable[[], object]:
    from sippy.SipRequest import SipRequest  # type: ignore[import-not-found]

    text = INVITE.decode()

    def run() -> object:
        req = SipRequest(buf=text)
        cseq = req.getHFBody("cseq")
        return (
            req.getHFBody("via").getBranch(),
            req.getHFBody("from").getTag(),
            req.getHFBody("to").getTag(),
            str(req.getHFBody("call-id")),
            cseq.getCSeqNum(),
            cseq.getCSeqMethod(),
            req.getHFBody("contact").getUrl(),
            req.getHFBody("max-forwards").getNum(),
            req.getBody(),
        )

    return run


def pyvoip_parser() -> Callable[[], object]:
    # pyVoIP.SIP and pyVoIP.VoIP import each other; importing VoIP first resolves the cycle.
    import pyVoIP.VoIP  # type: ignore[import-not-found]  # noqa: F401
    from pyVoIP.SIP import SIPMessage  # type: ignore[import-not-found]

    def run() -> object:
        msg = SIPMessage(INVITE)  # parses every header eagerly into dicts
        h = msg.headers
        return (
            h["Via"][0]["branch"],
            h["From"]["tag"],
            h["To"]["tag"],
            h["Call-ID"],
            h["CSeq"]["check"],
            h["CSeq"]["method"],
            h["Contact"],
            h["Max-Forwards"],
            h["Content-Length"],
        )

    return run


def ensure_references() -> str | None:
    """Install sippy and pyVoIP into var/bench-ref once; return an error text or None."""
    if not (REF_DIR / "sippy").is_dir() or not (REF_DIR / "pyVoIP").is_dir():
        print(f"installing reference parsers into {REF_DIR} ...", flush=True)
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(REF_DIR)]
        proc = subprocess.run(
            [*cmd, "sippy", "pyVoIP"], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            return f"pip install failed: {proc.stderr.strip().splitlines()[-1:]}"
    sys.path.insert(0, str(REF_DIR))
    return None


def measure(run: Callable[[], object], runs: int, number: int) -> float:
    run()  # warm caches, fail early
    # CPU time of this process, not wall time: the machines are shared, and wall time would count
    # the moments another process had our core.
    times = timeit.repeat(run, number=number, repeat=runs, timer=time.process_time)
    return statistics.median(times) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--number", type=int, default=5000)
    parser.add_argument("--no-references", action="store_true")
    args = parser.parse_args()

    print(f"message: {len(INVITE)}-byte INVITE with SDP; Python {sys.version.split()[0]}")
    print(f"median of {args.runs} runs x {args.number} parses, CPU time of one process")
    baseline = measure(minimal_split(), args.runs, args.number)
    mine = measure(ours(), args.runs, args.number)
    parse_only = measure(ours_parse_only(), args.runs, args.number)
    respond = measure(ours_respond(), args.runs, args.number)
    serialize = measure(ours_serialize(), args.runs, args.number)
    rows: list[tuple[str, str]] = [
        ("acd sip (ours)", f"{mine:8.2f} us/msg  ({mine / baseline:.1f}x minimal split)"),
        ("  parse only", f"{parse_only:8.2f} us/msg  ({parse_only / baseline:.1f}x minimal split)"),
        ("200 OK (ours)", f"{respond:8.2f} us/msg  (make_response + bytes)"),
        ("  bytes only", f"{serialize:8.2f} us/msg"),
        ("minimal split", f"{baseline:8.2f} us/msg  (calibration: no validation, no typing)"),
    ]
    error = None if args.no_references else ensure_references()
    if error is not None:
        print(f"reference parsers unavailable ({error}); showing our figure only")
    elif not args.no_references:
        for name, factory in (("sippy 2.x", sippy_parser), ("pyVoIP 1.6", pyvoip_parser)):
            try:
                ref = measure(factory(), args.runs, max(args.number // 5, 200))
                figure = f"{ref:8.2f} us/msg  ({ref / baseline:.1f}x minimal split)"
            except Exception as exc:  # a reference that breaks must not hide our figure
                figure = f"failed: {type(exc).__name__}: {exc}"
            rows.append((name, figure))
    for name, figure in rows:
        print(f"  {name:<16} {figure}")


if __name__ == "__main__":
    main()
