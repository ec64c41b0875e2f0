"""RFC 4475 torture messages sent over a real UDP socket to a running UAS built from the stack.

Every file of the manifest is sent as one datagram to an in-process asyncio UAS (`SimpleUas`:
answers INVITE with 200 + SDP, registrar without auth) on 127.0.0.1; the final status that comes
back (or the absence of any answer) is compared with `EXPECTED`, which follows the manifest's
expected handling. badinv01 (Via broken) and scalar02 (CSeq overflows) get the manifest's 400 too:
the broken header is left out of the answer, which goes to the datagram's source address (RFC 3261
18.2.2 / RFC 3581 4: the Via cannot be used). The UAS uses force_rport, because the torture
messages' Via sent-by addresses (192.0.2.x, example.com) are not where our test socket listens.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sip.endpoint import Endpoint
from sip.message import Response, parse_message
from sip.transport.udp import UdpTransport, serve_udp
from tests.e2e.sipp.simple_uas import SimpleUas, make_endpoint

RFC4475 = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "sip" / "rfc4475"
NO_ANSWER = 0

#: file -> expected final status (NO_ANSWER: dropped), with the manifest's reason.
EXPECTED: dict[str, int] = {
    # valid: processed normally
    "wsinv.dat": 481,  # its To carries a tag: a re-INVITE for a dialog we do not have
    "intmeth.dat": 501,  # unknown method at a UAS: 501 with Allow
    "esc01.dat": 200,  # INVITE
    "escnull.dat": 200,  # REGISTER, two distinct contacts
    "esc02.dat": 501,  # RE%47IST%45R is not REGISTER
    "lwsdisp.dat": 200,  # OPTIONS
    "longreq.dat": 200,  # INVITE
    "dblreq.dat": 200,  # REGISTER; trailing octets ignored
    "semiuri.dat": 200,  # OPTIONS
    "transports.dat": 200,  # OPTIONS
    "mpart01.dat": 405,  # MESSAGE is a known method this UAS does not serve (with Allow)
    "unreason.dat": NO_ANSWER,  # a response matching no transaction
    "noreason.dat": NO_ANSWER,  # idem
    # invalid: 400 (505 for the version), responses dropped
    "badinv01.dat": 400,  # the Via itself is broken: answered without it, to the source address
    "clerr.dat": 400,
    "ncl.dat": 400,
    "scalar02.dat": 400,  # CSeq above 2**32-1: answered without it, to the source address
    "scalarlg.dat": NO_ANSWER,
    "quotbal.dat": 400,
    "ltgtruri.dat": 400,
    "lwsruri.dat": 400,
    "lwsstart.dat": 200,  # liberal: extra SP accepted, never re-emitted (manifest allows)
    "trws.dat": 200,  # liberal: trailing SP accepted, never re-emitted (manifest allows)
    "escruri.dat": 400,
    "baddate.dat": 200,  # liberal: Date does not matter to us (manifest allows ignoring it)
    "regbadct.dat": 400,
    "badaspec.dat": 400,
    "baddn.dat": 400,
    "badvers.dat": 505,
    "mismatch01.dat": 400,
    "mismatch02.dat": 400,  # manifest: 501, 400 also acceptable
    "bigcode.dat": NO_ANSWER,
    # transaction
    "badbranch.dat": 200,  # RFC 2543 fallback matching; the OPTIONS is answered
    # semantic
    "insuf.dat": 400,
    "unkscm.dat": 416,
    "novelsc.dat": 416,
    "unksm2.dat": 400,  # registrar: To must be a SIP AOR
    "bext01.dat": 420,
    "invut.dat": 415,
    "regaut01.dat": 200,  # registrar without auth ignores the unknown scheme
    "multi01.dat": 400,
    "mcl01.dat": 400,
    "bcast.dat": NO_ANSWER,  # a response: discarded by an endpoint
    "zeromf.dat": 200,  # OPTIONS with Max-Forwards 0 at a UAS
    "cparam01.dat": 200,
    "cparam02.dat": 200,
    "regescrt.dat": 200,
    "sdp01.dat": 406,  # Accept excludes application/sdp
    "inv2543.dat": 200,  # RFC 2543 compatibility kept
    "test.dat": NO_ANSWER,  # no SIP-Version: Call-ID/CSeq readable? not a request line -> dropped
}


def _manifest() -> list[str]:
    with (RFC4475 / "manifest.tsv").open(newline="") as fh:
        return [row["file"] for row in csv.DictReader(fh, delimiter="\t")]


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.queue.put_nowait(data)


@pytest.fixture
async def uas() -> AsyncIterator[tuple[UdpTransport, SimpleUas]]:
    app = SimpleUas()
    proto = await serve_udp(lambda a: make_endpoint(a, t1_s=0.05, force_rport=True), app)
    yield proto, app
    proto.close()


async def exchange(target: tuple[str, int], data: bytes, quiet_s: float = 0.15) -> list[Response]:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(_Client, local_addr=("127.0.0.1", 0))
    try:
        transport.sendto(data, target)
        out: list[Response] = []
        while True:
            try:
                raw = await asyncio.wait_for(client.queue.get(), quiet_s)
            except TimeoutError:
                return out
            msg = parse_message(raw)
            assert isinstance(msg, Response)
            out.append(msg)
            if msg.status >= 200:
                return out
    finally:
        transport.close()


def test_manifest_fully_covered() -> None:
    assert sorted(_manifest()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_rfc4475_message_on_the_wire(name: str, uas: tuple[UdpTransport, SimpleUas]) -> None:
    proto, app = uas
    data = (RFC4475 / name).read_bytes()
    responses = await exchange(proto.local_addr, data)
    final = [r.status for r in responses if r.status >= 200]
    expected = EXPECTED[name]
    assert final == ([] if expected == NO_ANSWER else [expected]), (name, responses)
    assert app.errors == []
    endpoint: Endpoint = proto.endpoint
    if expected in (NO_ANSWER, 400, 405, 505, 501, 416, 415, 420, 406):
        assert sum(endpoint.rejections.values()) >= 1  # every rejection is counted
    if expected == 400:
        # never re-emit the bad syntax: the answer must itself parse, typed headers included
        answer = parse_message(bytes(responses[-1]))
        assert isinstance(answer, Response)
        assert answer.status == 400
        _ = answer.via, answer.from_, answer.to, answer.call_id, answer.cseq


async def test_uas_still_answers_after_all_torture(uas: tuple[UdpTransport, SimpleUas]) -> None:
    proto, app = uas
    for name in sorted(EXPECTED):
        await exchange(proto.local_addr, (RFC4475 / name).read_bytes(), quiet_s=0.02)
    responses = await exchange(
        proto.local_addr,
        (RFC4475 / "zeromf.dat").read_bytes().replace(b"branch=z9hG4bK", b"branch=z9hG4bKagain"),
    )
    assert [r.status for r in responses] == [200]
    assert app.errors == []
