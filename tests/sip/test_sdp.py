"""SDP parsing/serialisation and RFC 3264 offer/answer on real-world bodies."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip.sdp import (
    PCMA,
    PCMU,
    AnswerMismatchError,
    Attribute,
    AudioCapabilities,
    Codec,
    Connection,
    Direction,
    MediaDescription,
    NoCommonMediaError,
    Origin,
    SdpError,
    SessionDescription,
    TimeDescription,
    hold_offer,
    is_hold,
    make_offer,
    negotiate_answer,
    parse_sdp,
    process_answer,
    resume_offer,
)

SEED_DIR = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "testdata"
    / "sip"
    / "fuzz-seeds"
    / "pjproject"
    / "fuzz-sdp"
)

# SIPp 3.6.1 built-in "uac" scenario body (`sipp -sd uac`), rendered for 127.0.0.1:6000.
SIPP_UAC = (
    "v=0\r\n"
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 6000 RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
)

# baresip offering opus, G.722, G.711 and RFC 4733 events (shape of baresip 1.0 offers).
BARESIP_OFFER = (
    "v=0\r\n"
    "o=- 3973070478 208142209 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "a=tool:baresip 1.0.0\r\n"
    "m=audio 24200 RTP/AVP 96 9 0 8 101\r\n"
    "b=AS:96\r\n"
    "a=rtpmap:96 opus/48000/2\r\n"
    "a=fmtp:96 stereo=1;sprop-stereo=1\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=sendrecv\r\n"
    "a=label:1\r\n"
    "a=rtcp-rsize\r\n"
    "a=ptime:20\r\n"
)

# Asterisk-style trunk offer: PCMA first, GSM, events 0-16, maxptime, LF-only line ends.
ASTERISK_OFFER = (
    "v=0\n"
    "o=- 1700000000 1700000000 IN IP4 192.0.2.10\n"
    "s=Asterisk\n"
    "c=IN IP4 192.0.2.10\n"
    "t=0 0\n"
    "m=audio 10000 RTP/AVP 8 0 3 101\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:3 GSM/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-16\n"
    "a=ptime:30\n"
    "a=maxptime:150\n"
    "a=sendrecv\n"
)

# FreeSWITCH-style offer: opus at 102, CN, explicit a=rtcp, events at 101.
FREESWITCH_OFFER = (
    "v=0\r\n"
    "o=FreeSWITCH 1700000000 1700000001 IN IP4 198.51.100.7\r\n"
    "s=FreeSWITCH\r\n"
    "c=IN IP4 198.51.100.7\r\n"
    "t=0 0\r\n"
    "m=audio 16384 RTP/AVP 102 9 0 8 101 13\r\n"
    "a=rtpmap:102 opus/48000/2\r\n"
    "a=fmtp:102 useinbandfec=1; maxaveragebitrate=30000; maxplaybackrate=48000\r\n"
    "a=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=rtpmap:13 CN/8000\r\n"
    "a=ptime:20\r\n"
    "a=rtcp:16385 IN IP4 198.51.100.7\r\n"
)

# A plain SIP phone offer with an audio and a video stream, media-level c= only, no rtpmap
# for the static payload types (RFC 3551 table 4 applies).
PLAIN_AV_OFFER = (
    "v=0\r\n"
    "o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com\r\n"
    "s=-\r\n"
    "t=0 0\r\n"
    "m=audio 49170 RTP/AVP 18 8\r\n"
    "c=IN IP4 203.0.113.5\r\n"
    "m=video 51372 RTP/AVP 31\r\n"
    "c=IN IP4 203.0.113.5\r\n"
    "a=rtpmap:31 H261/90000\r\n"
)

LOCAL = AudioCapabilities(address="10.0.0.1", port=30000)


def test_parse_sipp_body_field_by_field() -> None:
    sdp = parse_sdp(SIPP_UAC.encode())
    assert sdp.origin == Origin("user1", 53655765, 2353687637, "IN", "IP4", "127.0.0.1")
    assert sdp.session_name == "-"
    assert sdp.connection == Connection("IN", "IP4", "127.0.0.1")
    assert sdp.times == (TimeDescription(0, 0),)
    (m,) = sdp.media
    assert (m.media, m.port, m.proto, m.formats) == ("audio", 6000, "RTP/AVP", ("0",))
    assert m.rtpmap("0") is not None
    assert sdp.serialize() == SIPP_UAC


def test_parse_baresip_offer_keeps_unknown_attributes_verbatim() -> None:
    sdp = parse_sdp(BARESIP_OFFER)
    assert sdp.attributes == (Attribute("tool", "baresip 1.0.0"),)
    m = sdp.media[0]
    assert m.bandwidths == ("AS:96",)
    rm = m.rtpmaps()["96"]
    assert (rm.encoding, rm.clock_rate, rm.channels) == ("opus", 48000, 2)
    assert m.fmtp("96") == "stereo=1;sprop-stereo=1"
    assert m.fmtp("101") == "0-15"
    assert m.ptime_ms == 20
    assert m.direction is Direction.SENDRECV
    assert Attribute("label", "1") in m.attributes
    assert Attribute("rtcp-rsize") in m.attributes
    assert sdp.serialize() == BARESIP_OFFER


def test_lf_only_input_is_read_and_written_with_crlf() -> None:
    sdp = parse_sdp(ASTERISK_OFFER)
    out = sdp.serialize()
    assert out == ASTERISK_OFFER.replace("\n", "\r\n")
    assert sdp.media[0].maxptime_ms == 150


def test_answer_to_sipp_offer() -> None:
    result = negotiate_answer(parse_sdp(SIPP_UAC), LOCAL, session_id=42)
    audio = result.audio
    assert audio.codec == Codec("PCMU", 0)
    assert audio.telephone_event_pt is None
    assert (audio.remote_address, audio.remote_port, audio.remote_rtcp_port) == (
        "127.0.0.1",
        6000,
        6001,
    )
    assert audio.direction is Direction.SENDRECV
    assert audio.ptime_ms == 20
    assert audio.remote_hold is False
    assert result.sdp.serialize() == (
        "v=0\r\n"
        "o=- 42 0 IN IP4 10.0.0.1\r\n"
        "s=-\r\n"
        "c=IN IP4 10.0.0.1\r\n"
        "t=0 0\r\n"
        "m=audio 30000 RTP/AVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    )


def test_answer_to_baresip_keeps_offerers_telephone_event_pt_and_fmtp() -> None:
    result = negotiate_answer(parse_sdp(BARESIP_OFFER), LOCAL, session_id=7)
    audio = result.audio
    assert audio.codec == Codec("PCMU", 0)
    assert audio.telephone_event_pt == 101
    assert audio.telephone_event_fmtp == "0-15"
    m = result.sdp.media[0]
    assert m.formats == ("0", "101")
    assert m.fmtp("101") == "0-15"
    assert m.port == 30000
    assert m.direction is Direction.SENDRECV


def test_preference_order_is_configurable() -> None:
    offer = parse_sdp(ASTERISK_OFFER)  # offers PCMA before PCMU
    ours_first = negotiate_answer(offer, LOCAL)
    assert ours_first.audio.codec.name == "PCMU"
    pcma_pref = negotiate_answer(offer, replace(LOCAL, codecs=(PCMA, PCMU)))
    assert pcma_pref.audio.codec == Codec("PCMA", 8)
    offerer_order = negotiate_answer(offer, replace(LOCAL, prefer_offer_order=True))
    assert offerer_order.audio.codec.name == "PCMA"


def test_ptime_from_offer_is_honoured() -> None:
    result = negotiate_answer(parse_sdp(ASTERISK_OFFER), LOCAL)
    assert result.audio.ptime_ms == 30
    assert result.sdp.media[0].ptime_ms == 30
    assert result.audio.telephone_event_fmtp == "0-16"


def test_freeswitch_offer_uses_explicit_rtcp_port() -> None:
    result = negotiate_answer(parse_sdp(FREESWITCH_OFFER), LOCAL)
    assert result.audio.codec == Codec("PCMU", 0)
    assert result.audio.remote_rtcp_port == 16385
    assert result.audio.remote_port == 16384
    assert result.audio.telephone_event_pt == 101


def test_non_audio_lines_rejected_with_port_zero_and_static_pt_without_rtpmap() -> None:
    result = negotiate_answer(parse_sdp(PLAIN_AV_OFFER), LOCAL)
    audio, video = result.sdp.media
    assert audio.port == 30000
    assert audio.formats == ("8",)
    assert result.audio.codec == Codec("PCMA", 8)
    assert result.audio.remote_address == "203.0.113.5"
    assert (video.media, video.port, video.formats) == ("video", 0, ("31",))
    assert video.attributes == ()


def test_multiple_audio_lines_only_first_usable_is_accepted() -> None:
    text = SIPP_UAC + "m=audio 6002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    text = text.replace("m=audio 6000 RTP/AVP 0", "m=audio 0 RTP/AVP 0", 1)
    result = negotiate_answer(parse_sdp(text), LOCAL)
    assert [m.port for m in result.sdp.media] == [0, 30000]
    assert result.audio.media_index == 1
    assert result.audio.remote_port == 6002


def test_no_common_codec_maps_to_488() -> None:
    offer = parse_sdp(SIPP_UAC.replace("RTP/AVP 0", "RTP/AVP 18").replace("0 PCMU", "18 G729"))
    with pytest.raises(NoCommonMediaError) as info:
        negotiate_answer(offer, LOCAL)
    assert info.value.status_code == 488
    # SRTP-only offers are not for us either.
    with pytest.raises(NoCommonMediaError):
        negotiate_answer(parse_sdp(SIPP_UAC.replace("RTP/AVP", "RTP/SAVP")), LOCAL)


@pytest.mark.parametrize(
    ("offered", "answered", "hold"),
    [
        ("sendrecv", Direction.SENDRECV, False),
        ("sendonly", Direction.RECVONLY, True),
        ("recvonly", Direction.SENDONLY, False),
        ("inactive", Direction.INACTIVE, True),
    ],
)
def test_direction_answered_per_rfc3264(offered: str, answered: Direction, hold: bool) -> None:
    offer = parse_sdp(SIPP_UAC + f"a={offered}\r\n")
    result = negotiate_answer(offer, LOCAL)
    assert result.sdp.media[0].direction is answered
    assert result.audio.direction is answered
    assert result.audio.remote_hold is hold
    assert is_hold(offer) is hold


def test_session_level_direction_applies_to_media() -> None:
    text = SIPP_UAC.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n")
    offer = parse_sdp(text)
    assert offer.media_direction(0) is Direction.SENDONLY
    assert negotiate_answer(offer, LOCAL).audio.direction is Direction.RECVONLY


def test_rfc2543_hold_with_zero_connection_address() -> None:
    offer = parse_sdp(SIPP_UAC.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"))
    assert is_hold(offer)
    result = negotiate_answer(offer, LOCAL)
    assert result.audio.remote_hold is True
    assert not result.audio.direction.sends  # never send RTP to 0.0.0.0


def test_reoffer_unchanged_keeps_answer_changed_bumps_version() -> None:
    offer = parse_sdp(SIPP_UAC)
    first = negotiate_answer(offer, LOCAL, session_id=99)
    same = negotiate_answer(offer, LOCAL, previous_offer=offer, previous_answer=first.sdp)
    assert same.offer_changed is False
    assert same.sdp == first.sdp
    assert same.audio.remote_port == 6000
    held = hold_offer(offer)
    assert held.origin.session_version == offer.origin.session_version + 1
    second = negotiate_answer(held, LOCAL, previous_offer=offer, previous_answer=first.sdp)
    assert second.offer_changed is True
    assert second.sdp.origin.session_id == 99
    assert second.sdp.origin.session_version == 1
    assert second.sdp.media[0].direction is Direction.RECVONLY
    # Same content again with a bumped remote version: our answer does not change, nor its version.
    third = negotiate_answer(
        bump_remote(held), LOCAL, previous_offer=held, previous_answer=second.sdp
    )
    assert third.sdp.origin.session_version == 1


def bump_remote(sdp: SessionDescription) -> SessionDescription:
    return replace(sdp, origin=replace(sdp.origin, session_version=sdp.origin.session_version + 1))


def test_make_offer_and_process_answer() -> None:
    offer = make_offer("10.0.0.1", 30000, session_id=5)
    assert offer.serialize() == (
        "v=0\r\n"
        "o=- 5 0 IN IP4 10.0.0.1\r\n"
        "s=-\r\n"
        "c=IN IP4 10.0.0.1\r\n"
        "t=0 0\r\n"
        "m=audio 30000 RTP/AVP 0 8 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-16\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    )
    answer = parse_sdp(
        "v=0\r\no=bob 1 1 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n"
    )
    audio = process_answer(offer, answer)
    assert audio.codec == Codec("PCMA", 8)
    assert audio.telephone_event_pt == 101
    assert audio.telephone_event_fmtp == "0-15"
    assert (audio.remote_address, audio.remote_port) == ("192.0.2.2", 4000)
    assert audio.direction is Direction.SENDRECV


def test_our_offer_answered_by_our_answerer_roundtrip() -> None:
    offer = make_offer("10.0.0.1", 30000, (PCMA, PCMU), session_id=5)
    answer = negotiate_answer(parse_sdp(offer.serialize()), replace(LOCAL, port=40000))
    audio = process_answer(offer, parse_sdp(answer.sdp.to_bytes()))
    assert audio.codec == answer.audio.codec == Codec("PCMU", 0)
    assert audio.remote_port == 40000
    assert answer.audio.remote_port == 30000


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.replace("RTP/AVP 8 101", "RTP/AVP 18 101"), "not offered"),
        (lambda s: s + "m=video 0 RTP/AVP 31\r\n", "m-lines"),
        (lambda s: s.replace("m=audio", "m=video"), "answers"),
        (lambda s: s.replace("m=audio 4000", "m=audio 0"), "no audio"),
    ],
)
def test_process_answer_rejects_non_subset(mutate: object, message: str) -> None:
    offer = make_offer("10.0.0.1", 30000, session_id=5)
    base = (
        "v=0\r\no=bob 1 1 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
    )
    assert callable(mutate)
    with pytest.raises(AnswerMismatchError, match=message):
        process_answer(offer, parse_sdp(mutate(base)))


def test_process_answer_rejects_impossible_direction() -> None:
    offer = make_offer("10.0.0.1", 30000, session_id=5, direction=Direction.SENDONLY)
    answer = parse_sdp(
        "v=0\r\no=bob 1 1 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n"
    )
    with pytest.raises(AnswerMismatchError, match="cannot answer"):
        process_answer(offer, answer)


def test_hold_and_resume_offers() -> None:
    offer = make_offer("10.0.0.1", 30000, session_id=5, session_version=3)
    held = hold_offer(offer)
    assert held.origin.session_version == 4
    assert held.media[0].direction is Direction.SENDONLY
    assert [a for a in held.media[0].attributes if a.name == "sendrecv"] == []
    assert is_hold(held)
    resumed = resume_offer(held)
    assert resumed.origin.session_version == 5
    assert resumed.media[0].direction is Direction.SENDRECV
    assert not is_hold(resumed)
    assert hold_offer(offer, inactive=True).media[0].direction is Direction.INACTIVE
    # A stream we only receive on goes inactive on hold (RFC 3264 8.4).
    recv = make_offer("10.0.0.1", 30000, session_id=5, direction=Direction.RECVONLY)
    assert hold_offer(recv).media[0].direction is Direction.INACTIVE


def test_hold_moves_session_level_direction_down() -> None:
    sdp = parse_sdp(SIPP_UAC.replace("t=0 0\r\n", "t=0 0\r\na=sendrecv\r\n"))
    held = hold_offer(sdp)
    assert held.direction is None
    assert held.media_direction(0) is Direction.SENDONLY
    assert parse_sdp(held.serialize()) == held


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "o=- 1 1 IN IP4 1.2.3.4\r\n",
        "v=1\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n",
        "v=0\r\no=- x 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\n",  # no t=
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 70000 RTP/AVP 0\r\n",
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP\r\n",
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n",
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\na=ptime:abc\r\n",
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\nv=0\r\n",
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nX=1\r\n",
        "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\na=x\ry\r\n",
        "v=0\r\no=- " + "9" * 5000 + " 1 IN IP4 h\r\ns=-\r\nt=0 0\r\n",
    ],
)
def test_malformed_sdp_raises_sdp_error(bad: str) -> None:
    with pytest.raises(SdpError):
        parse_sdp(bad)


def test_non_utf8_bytes_raise_sdp_error() -> None:
    with pytest.raises(SdpError):
        parse_sdp(b"v=0\r\ns=\xff\xfe\r\n")


# -- properties -----------------------------------------------------------------------------

_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, blacklist_characters="\x7f", codec="utf-8"),
    max_size=12,
)
_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-._+", min_size=1, max_size=8)
_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.:-", min_size=1, max_size=12)
_u64 = st.integers(min_value=0, max_value=2**64 - 1)
_connection = st.builds(Connection, _token, _token, _word)
_plain_attr = st.builds(
    Attribute,
    _token.filter(lambda n: n.lower() not in ("rtpmap", "fmtp", "ptime", "maxptime", "rtcp")),
    st.none() | _text,
)
_typed_attr = st.one_of(
    st.builds(
        lambda pt, name, rate: Attribute("rtpmap", f"{pt} {name}/{rate}"),
        st.integers(0, 127),
        _token.filter(lambda t: "/" not in t),
        st.integers(1, 96000),
    ),
    st.builds(lambda ms: Attribute("ptime", str(ms)), st.integers(1, 1000)),
    st.builds(lambda pt, p: Attribute("fmtp", f"{pt} {p}"), st.integers(0, 127), _text),
    st.sampled_from([Attribute(d.value) for d in Direction]),
)
_attrs = st.lists(st.one_of(_plain_attr, _typed_attr), max_size=5).map(tuple)
_media = st.builds(
    MediaDescription,
    media=_token,
    port=st.integers(0, 65535),
    proto=st.sampled_from(["RTP/AVP", "RTP/SAVP", "udp", "TCP/RTP/AVP"]),
    formats=st.lists(_token, min_size=1, max_size=4).map(tuple),
    port_count=st.none() | st.integers(1, 4),
    title=st.none() | _text,
    connections=st.lists(_connection, max_size=2).map(tuple),
    bandwidths=st.lists(_text, max_size=2).map(tuple),
    key=st.none() | _text,
    attributes=_attrs,
)
_session = st.builds(
    SessionDescription,
    origin=st.builds(Origin, _token, _u64, _u64, _token, _token, _word),
    session_name=_text,
    info=st.none() | _text,
    uri=st.none() | _text,
    emails=st.lists(_text, max_size=2).map(tuple),
    phones=st.lists(_text, max_size=2).map(tuple),
    connection=st.none() | _connection,
    bandwidths=st.lists(_text, max_size=2).map(tuple),
    times=st.lists(
        st.builds(
            TimeDescription,
            st.integers(0, 2**32),
            st.integers(0, 2**32),
            st.lists(_text, max_size=2).map(tuple),
        ),
        min_size=1,
        max_size=2,
    ).map(tuple),
    zone=st.none() | _text,
    key=st.none() | _text,
    attributes=_attrs,
    media=st.lists(_media, max_size=3).map(tuple),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_session)
def test_serialize_parse_roundtrip(sdp: SessionDescription) -> None:
    text = sdp.serialize()
    assert "\n" not in text.replace("\r\n", "")
    assert parse_sdp(text) == sdp
    assert parse_sdp(text.replace("\r\n", "\n")) == sdp


def _parses_or_sdp_error(data: str | bytes) -> None:
    try:
        sdp = parse_sdp(data)
    except SdpError:
        return
    assert parse_sdp(sdp.serialize()) == sdp
    try:
        answer = negotiate_answer(sdp, LOCAL)
    except NoCommonMediaError:
        return
    assert len(answer.sdp.media) == len(sdp.media)
    assert parse_sdp(answer.sdp.serialize()) == answer.sdp


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_parses_or_raises_sdp_error(text: str) -> None:
    _parses_or_sdp_error(text)


def _seeds() -> list[bytes]:
    seeds = sorted(SEED_DIR.glob("*.sdp"))
    assert len(seeds) >= 6, f"pjproject SDP seeds missing under {SEED_DIR}"
    return [p.read_bytes() for p in seeds] + [
        s.encode() for s in (SIPP_UAC, BARESIP_OFFER, ASTERISK_OFFER, FREESWITCH_OFFER)
    ]


SEEDS = _seeds()


def test_pjproject_seeds_parse_or_raise() -> None:
    parsed = 0
    for seed in SEEDS:
        try:
            parse_sdp(seed)
        except SdpError:
            continue
        parsed += 1
    # Five of the six pjproject seeds are valid SDP; the sixth is deliberately corrupted.
    assert parsed == len(SEEDS) - 1


@settings(max_examples=300, deadline=None)
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from("rid")),
        max_size=8,
    ),
)
def test_mutated_seeds_parse_or_raise_sdp_error(
    seed: bytes, edits: list[tuple[int, int, str]]
) -> None:
    data = bytearray(seed)
    for pos, byte, op in edits:
        i = pos % (len(data) + 1)
        if op == "r" and i < len(data):
            data[i] = byte
        elif op == "i":
            data.insert(i, byte)
        elif op == "d" and i < len(data):
            del data[i]
    _parses_or_sdp_error(bytes(data))


def test_lone_surrogates_raise_sdp_error() -> None:
    with pytest.raises(SdpError):
        parse_sdp(SIPP_UAC.replace("s=-", "s=\udc80"))
