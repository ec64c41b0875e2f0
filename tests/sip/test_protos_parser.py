"""PROTOS c07-sip (4527 INVITE cases) at the parser level.

Every case, and its teardown (CANCEL) PDU, either parses or raises ParseError, nothing else; every
typed accessor on a parsed case likewise returns or raises ParseError. The valid case 0 still parses
after all the others, and the parser's memory does not grow with the number of cases. The cases are
rendered in memory with the project's shared protos_render.py, straight from the tarball.
"""

from __future__ import annotations

import csv
import gc
import importlib.util
import io
import random
import re
import tarfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

import sip
import sip.limits

PROTOS = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "sip"
ACCESSORS = (
    "via", "from_", "to", "call_id", "cseq", "max_forwards", "contacts", "contact_star", "route",
    "record_route", "authorization", "proxy_authorization", "www_authenticate",
    "proxy_authenticate", "expires", "content_type", "content_length", "require", "supported",
    "allow", "proxy_require", "unsupported",
)  # fmt: skip


def _renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("protos_render", PROTOS / "protos_render.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cases() -> tuple[dict[int, tuple[bytes, bytes]], list[dict[str, str]]]:
    render = _renderer().render
    random.seed(4527)  # protos_render draws the CSeq from the global random module
    out: dict[int, tuple[bytes, bytes]] = {}
    with tarfile.open(PROTOS / "protos-c07-sip.tar.gz") as tar:
        groups = list(
            csv.DictReader(io.TextIOWrapper(tar.extractfile("groups.tsv")), delimiter="\t")
        )  # type: ignore[arg-type]
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith("cases/"):
                raw = tar.extractfile(member).read()  # type: ignore[union-attr]
                out[int(member.name.split("/")[1])] = render(
                    raw, "acd@127.0.0.1:5060", "127.0.0.1", 5070
                )
    return out, groups


def _error(fn: Callable[[], object]) -> sip.ParseError | None:
    """Run fn; return the ParseError it raised (any other exception propagates and fails)."""
    try:
        fn()
    except sip.ParseError as exc:
        return exc
    return None


def _exercise(data: bytes) -> str:
    """Parse and touch every typed field; return "ok" or the ParseError reason."""
    error = _error(lambda: sip.parse_message(data))
    if error is not None:
        assert error.reason in sip.PARSE_ERROR_REASONS
        assert 400 <= error.status_hint <= 599
        return error.reason
    msg = sip.parse_message(data)
    for name in ACCESSORS:
        error = _error(lambda name=name: getattr(msg, name))  # type: ignore[misc]
        assert error is None or error.reason in sip.PARSE_ERROR_REASONS
    if _error(lambda: msg.contacts) is None:
        for contact in msg.contacts:
            _error(lambda c=contact: c.uri)  # type: ignore[misc]
    if isinstance(msg, sip.Request):
        sip.make_response(msg, 400)  # a UAS must be able to answer whatever parsed
    # Whatever parsed re-serialises into something that parses again.
    sip.parse_message(bytes(msg))
    return "ok"


def test_protos_every_case_parses_or_raises_parse_error(
    cases: tuple[dict[int, tuple[bytes, bytes]], list[dict[str, str]]],
) -> None:
    by_case, groups = cases
    assert len(by_case) == 4527
    assert sorted(by_case) == list(range(4527))
    assert _exercise(by_case[0][0]) == "ok"

    outcome: dict[int, str] = {}
    gc.collect()
    tracemalloc.start()
    try:
        for n in range(4527):
            invite, teardown = by_case[n]
            outcome[n] = _exercise(invite)
            _exercise(teardown)
            if n == 1000:
                gc.collect()
                baseline = tracemalloc.get_traced_memory()[0]
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    # Only `outcome` (a few hundred kB of small ints/str refs) may grow; the parser keeps nothing.
    assert grown < 1_000_000, grown

    # The valid INVITE is still handled after all the hostile ones.
    assert _exercise(by_case[0][0]) == "ok"

    # In the groups that vary a scalar we type, the case parses exactly when the value is legal,
    # judged here by plain string rules independent of the parser.
    spans = {g["group"]: range(int(g["first_case"]), int(g["last_case"]) + 1) for g in groups}
    oracles = {
        "sip-max-forwards": (rb"\r\nMax-Forwards: ([^\r\n]*)\r\n", _legal_max_forwards),
        "sip-cseq-integer": (rb"\r\nCSeq: ([^\r\n]*) INVITE\r\n", _legal_cseq),
        "sip-version": (rb"^INVITE [^ ]+ ([^\r\n]*)\r\n", lambda v: v == b"SIP/2.0"),
    }
    for group, (pattern, legal) in oracles.items():
        for n in spans[group]:
            found = re.search(pattern, by_case[n][0])
            expected_ok = found is not None and legal(found.group(1).strip(b" \t"))
            assert (outcome[n] == "ok") == expected_ok, (group, n, found, outcome[n])
        assert any(outcome[n] != "ok" for n in spans[group])
    # SDP groups vary the body only, which this layer does not read: all parse unless the case is
    # over the 64 KiB message limit (a few are 128 KiB).
    for name in ("sdp-session", "sdp-media-media", "sdp-attribute-rtpmap", "sdp-origin-ip"):
        assert {outcome[n] for n in spans[name]} <= {"ok", "too_large"}, name
        large = {n for n in spans[name] if len(by_case[n][0]) > sip.limits.MAX_MESSAGE_BYTES}
        assert {n for n in spans[name] if outcome[n] == "too_large"} == large, name


def _legal_max_forwards(value: bytes) -> bool:
    return value.isdigit() and len(value) <= 10 and int(value) <= 255


def _legal_cseq(value: bytes) -> bool:
    return value.isdigit() and len(value) <= 10 and int(value) <= 2**32 - 1
