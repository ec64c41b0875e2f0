"""PROTOS c07-sip on the wire: all 4527 cases (and their CANCEL teardowns) over UDP to a running UAS.

PROTOS's pass criterion: the target survives every case (no crash, no hang, bounded memory) and
still answers the valid case 0 afterwards. The UAS is the in-process asyncio `SimpleUas` (INVITE ->
486, so no dialogs pile up; T1 = 10 ms so transactions clear quickly). Cases are rendered in memory
from the tarball with the shared protos_render.py and sent in paced batches; after each batch the
sender waits for the UAS to catch up (its receive counter), so the kernel socket buffer never
overflows and every case is really processed.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import resource
import tarfile
from pathlib import Path
from types import ModuleType

from sip.message import Response, parse_message
from sip.transport.udp import serve_udp
from tests.e2e.sipp.simple_uas import SimpleUas, make_endpoint

PROTOS = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "sip"
BATCH = 50
T1_S = 0.01  # 64*T1 = 0.64 s: transactions end quickly, so the live set stays small
MAX_UDP_PAYLOAD = 65507  # IPv4: 65535 - 20 (IP header) - 8 (UDP header)
#: RSS growth allowed over the second half of the run. Live transactions (64*T1 of traffic, some
#: holding 64 kB messages) reach a steady state in the first half; "flat" means the second half
#: adds no more than allocator noise.
RSS_GROWTH_LIMIT_BYTES = 16 * 1024 * 1024


def _render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("protos_render", PROTOS / "protos_render.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cases() -> list[tuple[int, bytes]]:
    out = []
    with tarfile.open(PROTOS / "protos-c07-sip.tar.gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith("cases/"):
                fh = tar.extractfile(member)
                assert fh is not None
                out.append((int(member.name.split("/")[1]), fh.read()))
    out.sort()
    return out


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


class _Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.responses: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.responses.append(data)


async def test_protos_c07_all_cases_over_udp() -> None:
    render = _render_module().render
    cases = _cases()
    assert len(cases) == 4527
    app = SimpleUas(invite_status=486)
    proto = await serve_udp(lambda a: make_endpoint(a, t1_s=T1_S), app)
    loop = asyncio.get_running_loop()
    sink_transport, sink = await loop.create_datagram_endpoint(_Sink, local_addr=("127.0.0.1", 0))
    lport = sink_transport.get_extra_info("sockname")[1]
    target = proto.local_addr
    to = f"acd@{target[0]}:{target[1]}"
    received = 0
    original = proto.datagram_received

    def counting(data: bytes, addr: tuple[str | object, ...]) -> None:
        nonlocal received
        received += 1
        original(data, addr)

    proto.datagram_received = counting  # type: ignore[method-assign]
    try:
        rss_mid = 0
        sent = 0
        for i in range(0, len(cases), BATCH):
            if i == (len(cases) // 2) // BATCH * BATCH:
                gc.collect()
                rss_mid = _rss_bytes()
            for _num, raw in cases[i : i + BATCH]:
                invite, teardown = render(raw, to, "127.0.0.1", lport)
                # 81 cases exceed the largest UDP payload: send what fits (the over-long path).
                sink_transport.sendto(invite[:MAX_UDP_PAYLOAD], target)
                sink_transport.sendto(teardown[:MAX_UDP_PAYLOAD], target)
                sent += 2
            for _ in range(200):  # wait until the UAS has processed the batch
                if received >= sent:
                    break
                await asyncio.sleep(0.005)
            assert received >= sent, f"UAS stalled at case {i}"
            sink.responses.clear()  # the sender's own memory is not under test
        await asyncio.sleep(0.2)
        gc.collect()
        rss_growth = _rss_bytes() - rss_mid

        # The valid case 0 is still answered afterwards.
        sink.responses.clear()
        invite, _ = render(cases[0][1], to, "127.0.0.1", lport)
        sink_transport.sendto(invite, target)
        for _ in range(100):
            if any(r.startswith(b"SIP/2.0 486") for r in sink.responses):
                break
            await asyncio.sleep(0.01)
        finals = [parse_message(r) for r in sink.responses]
        assert any(isinstance(m, Response) and m.status == 486 for m in finals)

        assert app.errors == []  # no exception escaped or was swallowed inside the core
        assert proto.endpoint.rejections.get("internal_error", 0) == 0
        assert rss_growth < RSS_GROWTH_LIMIT_BYTES, rss_growth
        # Every transaction ends by its timers (64*T1): nothing is left behind.
        await asyncio.sleep(64 * T1_S + 0.5)
        assert proto.endpoint.server_transaction_count == 0
        assert proto.endpoint.dialog_count == 0
    finally:
        sink_transport.close()
        proto.close()
