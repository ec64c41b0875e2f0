"""Dialog state (RFC 3261 12): creation on both sides, route sets, in-dialog requests, validation."""

from __future__ import annotations

from sip.dialog import DIALOG_TABLE, RETRY_AFTER_S, Dialog, DialogId, DialogInput, DialogState
from sip.message import Request, make_response
from sip.uri import Uri

LOCAL_CONTACT = Uri.parse("sip:acd@10.0.0.1:5060")


def invite() -> Request:
    return Request(
        "INVITE",
        "sip:bob@example.com",
        [
            ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKd1"),
            ("Record-Route", "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"),
            ("Max-Forwards", "70"),
            ("From", '"Alice" <sip:alice@example.com>;tag=ft'),
            ("To", "<sip:bob@example.com>"),
            ("Call-ID", "dlg-1"),
            ("CSeq", "10 INVITE"),
            ("Contact", "<sip:alice@192.0.2.1:5070>"),
        ],
    )


def test_uas_dialog_from_invite() -> None:
    d = Dialog.as_uas(invite(), "lt", LOCAL_CONTACT)
    assert d.id == DialogId("dlg-1", "lt", "ft")
    assert d.remote_seq == 10
    assert d.local_seq == 0
    assert str(d.remote_target) == "sip:alice@192.0.2.1:5070"
    assert [str(r.uri) for r in d.route_set] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    bye = d.create_request("BYE")
    assert str(bye.uri) == "sip:alice@192.0.2.1:5070"  # loose routing: R-URI = remote target
    assert [str(r.uri) for r in bye.route] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    assert bye.cseq is not None
    assert bye.cseq.seq == 1
    assert bye.from_ is not None
    assert bye.from_.tag == "lt"
    assert bye.to is not None
    assert bye.to.tag == "ft"
    assert str(d.next_hop()) == "sip:p1.example.com;lr"


def test_uac_dialog_reverses_route_set_and_takes_contact() -> None:
    req = invite()
    resp = make_response(
        req,
        200,
        to_tag="rt",
        headers=[
            ("Contact", "<sip:bob@192.0.2.9:5080>"),
            ("Record-Route", "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"),
        ],
    )
    d = Dialog.as_uac(req, resp, LOCAL_CONTACT)
    assert d.id == DialogId("dlg-1", "ft", "rt")
    assert d.remote_seq is None
    assert d.local_seq == 10
    assert [str(r.uri) for r in d.route_set] == ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    reinvite = d.create_request("INVITE", body=b"v=0\r\n", content_type="application/sdp")
    assert reinvite.cseq is not None
    assert reinvite.cseq.seq == 11
    assert reinvite.contacts[0].uri == LOCAL_CONTACT  # target refresh carries Contact
    assert str(reinvite.uri) == "sip:bob@192.0.2.9:5080"
    ack = d.create_request("ACK", cseq=11)
    assert ack.cseq is not None
    assert ack.cseq.seq == 11
    assert d.local_seq == 11  # ACK does not consume a CSeq


def test_strict_route_puts_remote_target_last() -> None:
    req = invite()
    req.headers.set("Record-Route", "<sip:strict.example.com>")
    d = Dialog.as_uas(req, "lt", LOCAL_CONTACT)
    bye = d.create_request("BYE")
    assert str(bye.uri) == "sip:strict.example.com"
    assert [str(r.uri) for r in bye.route] == ["sip:alice@192.0.2.1:5070"]


def test_validate_request_order_glare_and_target_refresh() -> None:
    d = Dialog.as_uas(invite(), "lt", LOCAL_CONTACT)

    def req(method: str, seq: int, contact: str | None = None) -> Request:
        r = Request(method, "sip:acd@10.0.0.1", [("CSeq", f"{seq} {method}")])
        if contact:
            r.headers.add("Contact", contact)
        return r

    assert d.validate_request(req("INFO", 9)) == (500, str(RETRY_AFTER_S))  # lower CSeq
    assert d.validate_request(req("INFO", 11)) is None
    assert d.remote_seq == 11
    assert d.validate_request(req("ACK", 1)) is None  # ACK is not CSeq-checked
    d.pending_invite_out = True
    assert d.validate_request(req("INVITE", 12)) == (491, None)
    d.pending_invite_out = False
    d.pending_invite_in = True
    assert d.validate_request(req("INVITE", 13))[0] == 500  # type: ignore[index]
    d.pending_invite_in = False
    assert d.validate_request(req("INVITE", 14, "<sip:alice@192.0.2.50>")) is None
    assert str(d.remote_target) == "sip:alice@192.0.2.50"


def test_dialog_table() -> None:
    d = Dialog.as_uas(invite(), "lt", LOCAL_CONTACT)
    assert d.state is DialogState.EARLY
    assert d.handle(DialogInput.ACCEPTED) is DialogState.CONFIRMED
    assert d.handle(DialogInput.REJECTED) is DialogState.CONFIRMED  # a failed re-INVITE
    assert d.handle(DialogInput.BYE) is DialogState.TERMINATED
    assert d.handle(DialogInput.ACCEPTED) is DialogState.TERMINATED  # unlisted: no change
    assert all(src is not DialogState.TERMINATED for src, _ in DIALOG_TABLE)
