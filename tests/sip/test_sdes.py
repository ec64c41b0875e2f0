"""SDES (RFC 4568): a=crypto grammar, and SRTP in RFC 3264 offer/answer for each SrtpMode."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip.rtp.srtp import SrtpProfile
from sip.sdes import CryptoAttribute, new_crypto, parse_crypto
from sip.sdp import (
    PCMU,
    AnswerMismatchError,
    AudioCapabilities,
    NoCommonMediaError,
    SrtpMode,
    make_offer,
    negotiate_answer,
    parse_sdp,
    process_answer,
)

# RFC 4568 section 4's example key
RFC_INLINE = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"


def offer_body(proto: str, *crypto: str) -> bytes:
    lines = [
        "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
        f"m=audio 4000 {proto} 0 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000",
        *(f"a=crypto:{c}" for c in crypto),
    ]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n").encode()


def test_parse_rfc4568_example_and_round_trip() -> None:
    c = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_INLINE}|2^20|1:4")
    assert c is None  # an MKI: unusable, we put no MKI in packets
    c = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_INLINE}|2^20")
    assert c is not None
    assert (c.tag, c.suite) == (1, SrtpProfile.AES_CM_128_HMAC_SHA1_80)
    assert c.key + c.salt == base64.b64decode(RFC_INLINE)
    assert parse_crypto(c.serialize()) == c
    assert RFC_INLINE not in repr(c)


@pytest.mark.parametrize(
    "value",
    [
        f"1 AES_256_CM_HMAC_SHA1_80 inline:{RFC_INLINE}",  # a suite we do not speak
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_INLINE} KDR=1",  # session parameter
        "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=",  # key too short
        "1 AES_CM_128_HMAC_SHA1_80 inline:not*base64",
        f"x AES_CM_128_HMAC_SHA1_80 inline:{RFC_INLINE}",
        "",
    ],
)
def test_unusable_crypto_lines_are_skipped(value: str) -> None:
    assert parse_crypto(value) is None


@given(st.text(max_size=200))
def test_any_text_parses_or_is_none(value: str) -> None:
    result = parse_crypto(value)
    assert result is None or isinstance(result, CryptoAttribute)


def test_new_keys_are_random() -> None:
    a, b = new_crypto(), new_crypto()
    assert a.key != b.key
    assert a.salt != b.salt
    assert (len(a.key), len(a.salt)) == (16, 14)


def caps(mode: SrtpMode) -> AudioCapabilities:
    return AudioCapabilities(address="127.0.0.2", port=5000, codecs=(PCMU,), srtp=mode)


@pytest.mark.parametrize("mode", [SrtpMode.OFFER, SrtpMode.REQUIRE])
def test_savp_offer_gets_savp_answer_with_our_key(mode: SrtpMode) -> None:
    offer = parse_sdp(
        offer_body(
            "RTP/SAVP",
            f"1 AES_256_CM_HMAC_SHA1_80 inline:{RFC_INLINE}",
            f"2 AES_CM_128_HMAC_SHA1_32 inline:{RFC_INLINE}",
        )
    )
    answer = negotiate_answer(offer, caps(mode))
    m = answer.sdp.media[0]
    assert m.proto == "RTP/SAVP"
    (ours,) = m.crypto
    assert (ours.tag, ours.suite) == (2, SrtpProfile.AES_CM_128_HMAC_SHA1_32)
    keys = answer.audio.srtp
    assert keys is not None
    assert keys.local == ours
    assert keys.remote.key + keys.remote.salt == base64.b64decode(RFC_INLINE)
    assert ours.key != keys.remote.key
    # and our side as offerer reads that answer back to the same keys, mirrored
    assert process_answer(offer, answer.sdp).srtp is not None


def test_best_effort_avp_with_crypto() -> None:
    offer = parse_sdp(offer_body("RTP/AVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_INLINE}"))
    encrypted = negotiate_answer(offer, caps(SrtpMode.OFFER))
    assert encrypted.sdp.media[0].proto == "RTP/AVP"
    assert encrypted.audio.srtp is not None
    plain = negotiate_answer(offer, caps(SrtpMode.OFF))
    assert plain.audio.srtp is None
    assert "crypto" not in plain.sdp.to_bytes().decode()


def test_require_refuses_plain_and_off_refuses_savp() -> None:
    with pytest.raises(NoCommonMediaError) as info:
        negotiate_answer(parse_sdp(offer_body("RTP/AVP")), caps(SrtpMode.REQUIRE))
    assert info.value.status_code == 488
    with pytest.raises(NoCommonMediaError):
        negotiate_answer(
            parse_sdp(offer_body("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_INLINE}")),
            caps(SrtpMode.OFF),
        )
    # SAVP whose only key is unusable: nothing to answer with
    with pytest.raises(NoCommonMediaError):
        negotiate_answer(
            parse_sdp(offer_body("RTP/SAVP", "1 F8_128_HMAC_SHA1_80 inline:" + RFC_INLINE)),
            caps(SrtpMode.OFFER),
        )
    assert (
        negotiate_answer(parse_sdp(offer_body("RTP/AVP")), caps(SrtpMode.OFFER)).audio.srtp is None
    )


def test_offer_modes_and_process_answer() -> None:
    key = new_crypto()
    assert make_offer("127.0.0.1", 4000).media[0].proto == "RTP/AVP"
    best = make_offer("127.0.0.1", 4000, srtp=SrtpMode.OFFER, crypto=key)
    assert (best.media[0].proto, best.media[0].crypto) == ("RTP/AVP", [key])
    required = make_offer("127.0.0.1", 4000, srtp=SrtpMode.REQUIRE, crypto=key)
    assert required.media[0].proto == "RTP/SAVP"
    # a plain answer to the best-effort offer: plain RTP
    plain_answer = negotiate_answer(best, caps(SrtpMode.OFF)).sdp
    assert process_answer(best, plain_answer).srtp is None
    # an encrypted one: our key sends, theirs receives
    answer = negotiate_answer(required, caps(SrtpMode.OFFER))
    keys = process_answer(required, answer.sdp).srtp
    assert keys is not None
    assert keys.local == key
    assert answer.audio.srtp is not None
    assert keys.remote == answer.audio.srtp.local
    # SAVP answered without a key, or with a tag we never offered, is a broken answer
    bare = parse_sdp(
        answer.sdp.to_bytes()
        .decode()
        .replace(answer.sdp.media[0].attributes[-1].serialize() + "\r\n", "")
    )
    with pytest.raises(AnswerMismatchError):
        process_answer(required, bare)
    wrong_tag = parse_sdp(answer.sdp.to_bytes().replace(b"a=crypto:1 ", b"a=crypto:7 "))
    with pytest.raises(AnswerMismatchError):
        process_answer(required, wrong_tag)


def test_reoffer_keeps_our_key_when_given() -> None:
    offer = parse_sdp(offer_body("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_INLINE}"))
    first = negotiate_answer(offer, caps(SrtpMode.OFFER))
    assert first.audio.srtp is not None
    again = AudioCapabilities(
        address="127.0.0.2", port=5000, codecs=(PCMU,), srtp=SrtpMode.OFFER,
        crypto=first.audio.srtp.local,
    )  # fmt: skip
    reoffer = parse_sdp(
        offer_body("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_INLINE}").replace(
            b"o=- 1 1", b"o=- 1 2"
        )
    )
    second = negotiate_answer(reoffer, again, previous_offer=offer, previous_answer=first.sdp)
    assert second.audio.srtp == first.audio.srtp
    # an unchanged re-offer gets the same answer, keys re-derived from it
    same = negotiate_answer(offer, again, previous_offer=offer, previous_answer=first.sdp)
    assert same.audio.srtp == first.audio.srtp
