"""SRTP/SRTCP (RFC 3711): the appendix B vectors, libsrtp interop both ways, ROC, replay, forgery."""

from __future__ import annotations

import struct

import pylibsrtp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.rtp.srtp import (
    REPLAY_WINDOW,
    SrtpContext,
    SrtpError,
    SrtpProfile,
    aes_cm_keystream,
    derive_session_key,
)

KEY = bytes(range(16))
SALT = bytes(range(100, 114))
SSRC = 0x11223344
_80 = SrtpProfile.AES_CM_128_HMAC_SHA1_80
_32 = SrtpProfile.AES_CM_128_HMAC_SHA1_32
_LIBSRTP_PROFILE = {
    _80: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    _32: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}


def rtp(seq: int, payload: bytes = b"\xd5" * 160, *, ssrc: int = SSRC, ts: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, 8, seq & 0xFFFF, ts, ssrc) + payload


def rtcp_rr(ssrc: int = SSRC) -> bytes:
    # an RR with one report block (RFC 3550 6.4.2): 8 bytes header + 24 bytes block
    return struct.pack("!BBHI", 0x81, 201, 7, ssrc) + bytes(range(24))


def libsrtp_session(profile: SrtpProfile, inbound: bool) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=KEY + SALT,
        ssrc_type=(
            pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
        ),
        srtp_profile=_LIBSRTP_PROFILE[profile],
    )
    return pylibsrtp.Session(policy=policy)


def test_b2_aes_cm_keystream() -> None:
    """RFC 3711 B.2: the keystream for session key 2B7E..., salt F0F1...FD, index 0, SSRC 0."""
    key = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
    iv = int("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000", 16)
    stream = aes_cm_keystream(key, iv, 0x10000 * 16)
    assert stream[:48].hex().upper() == (
        "E03EAD0935C95E80E166B16DD92B4EB4"
        "D23513162B02D0F72A43A2FE4A5F97AB"
        "41E95B3BB0A2E8DD477901E4FCA894C0"
    )
    # the last three blocks listed: counters ...FEFF, ...FF00, ...FF01
    assert stream[0xFEFF * 16 : 0xFF02 * 16].hex().upper() == (
        "EC8CDF7398607CB0F2D21675EA9EA1E4"
        "362B7C3C6773516318A077D7FC5073AE"
        "6A2CC3787889374FBEB4C81B17BA6C44"
    )


def test_b3_key_derivation() -> None:
    """RFC 3711 B.3: cipher, salt and authentication keys from master key E1F9... salt 0EC6..."""
    master_key = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139")
    master_salt = bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")
    assert derive_session_key(master_key, master_salt, 0x00, 16).hex().upper() == (
        "C61E7A93744F39EE10734AFE3FF7A087"
    )
    assert derive_session_key(master_key, master_salt, 0x02, 14).hex().upper() == (
        "30CBBC08863D8C85D49DB34A9AE1"
    )
    auth = derive_session_key(master_key, master_salt, 0x01, 94).hex().upper()
    assert auth.startswith(
        "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE"
        "E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25"
        "6D6E919A48B610EF17C2041E47403576"
    )


@pytest.mark.parametrize("profile", [_80, _32])
def test_protect_matches_libsrtp_and_round_trips(profile: SrtpProfile) -> None:
    """Byte-identical to libsrtp (aiortc's pylibsrtp) in both directions, across a ROC wrap."""
    ours_tx = SrtpContext(profile, KEY, SALT)
    ours_rx = SrtpContext(profile, KEY, SALT)
    theirs_tx = libsrtp_session(profile, inbound=False)
    theirs_rx = libsrtp_session(profile, inbound=True)
    for n, seq in enumerate([*range(65530, 65536), *range(6)]):
        plain = rtp(seq, bytes([n]) * 160, ts=n * 160)
        protected = ours_tx.protect_rtp(plain)
        assert len(protected) == len(plain) + profile.rtp_tag_len
        assert protected[12:172] != plain[12:]
        assert protected == theirs_tx.protect(plain)
        assert theirs_rx.unprotect(protected) == plain
        assert ours_rx.unprotect_rtp(protected) == plain
    assert ours_rx.stats.unprotected == 12
    assert ours_rx.stats.auth_failures == ours_rx.stats.replays == 0


@pytest.mark.parametrize("profile", [_80, _32])
def test_srtcp_matches_libsrtp(profile: SrtpProfile) -> None:
    ours_tx = SrtpContext(profile, KEY, SALT)
    ours_rx = SrtpContext(profile, KEY, SALT)
    theirs_tx = libsrtp_session(profile, inbound=False)
    theirs_rx = libsrtp_session(profile, inbound=True)
    for _ in range(3):
        plain = rtcp_rr()
        protected = ours_tx.protect_rtcp(plain)
        assert len(protected) == len(plain) + 4 + 10  # E||index, then the 80-bit tag always
        assert protected[8:32] != plain[8:]
        # libsrtp counts SRTCP from 1, we from 0 (RFC 3711 3.3.1): same keys, different index,
        # so check that each side reads the other's packets
        assert theirs_rx.unprotect_rtcp(protected) == plain
        theirs = theirs_tx.protect_rtcp(plain)
        assert ours_rx.unprotect_rtcp(theirs) == plain
    assert ours_rx.unprotect_rtcp(theirs) is None  # the same SRTCP index again
    assert ours_rx.unprotect_rtcp(theirs_tx.protect_rtcp(plain)) == plain
    assert ours_rx.stats.replays == 1


def test_header_extension_and_csrcs_stay_in_the_clear() -> None:
    header = struct.pack("!BBHII", 0x92, 0, 7, 1234, SSRC) + struct.pack("!II", 1, 2)
    extension = struct.pack("!HH", 0xBEDE, 1) + b"\x10\xaa\x00\x00"
    plain = header + extension + b"payload!"
    tx, rx = SrtpContext(_80, KEY, SALT), SrtpContext(_80, KEY, SALT)
    protected = tx.protect_rtp(plain)
    assert protected[: len(header) + len(extension)] == header + extension
    assert b"payload!" not in protected
    assert protected == libsrtp_session(_80, inbound=False).protect(plain)
    assert rx.unprotect_rtp(protected) == plain


def test_replay_and_window() -> None:
    tx, rx = SrtpContext(_80, KEY, SALT), SrtpContext(_80, KEY, SALT)
    packets = [tx.protect_rtp(rtp(seq)) for seq in range(200)]
    assert rx.unprotect_rtp(packets[100]) is not None
    assert rx.unprotect_rtp(packets[100]) is None  # replayed
    assert rx.unprotect_rtp(packets[99]) is not None  # late, inside the window: accepted once
    assert rx.unprotect_rtp(packets[99]) is None
    assert rx.unprotect_rtp(packets[100 - REPLAY_WINDOW]) is None  # older than the window
    assert rx.unprotect_rtp(packets[199]) is not None  # a jump forward
    assert rx.unprotect_rtp(packets[150]) is not None  # 49 behind: still in the window
    assert rx.stats.replays == 3
    assert rx.stats.unprotected == 4


def test_forged_tampered_and_malformed_are_counted_not_raised() -> None:
    tx, rx = SrtpContext(_80, KEY, SALT), SrtpContext(_80, KEY, SALT)
    good = tx.protect_rtp(rtp(1))
    tampered = good[:20] + bytes([good[20] ^ 1]) + good[21:]
    other_key = SrtpContext(_80, bytes(16), SALT).protect_rtp(rtp(1))
    assert rx.unprotect_rtp(tampered) is None
    assert rx.unprotect_rtp(other_key) is None
    assert rx.unprotect_rtp(good[:-1]) is None  # truncated tag
    assert rx.unprotect_rtp(b"\x80") is None
    assert rx.unprotect_rtp(b"") is None
    assert rx.unprotect_rtcp(b"\x81\xc9\x00") is None
    assert rx.unprotect_rtcp(SrtpContext(_80, bytes(16), SALT).protect_rtcp(rtcp_rr())) is None
    assert rx.stats.auth_failures == 4
    assert rx.stats.malformed == 3
    # a forged packet did not move the receiver's state: the genuine one still goes through
    assert rx.unprotect_rtp(good) == rtp(1)


def test_wrong_key_lengths_and_non_rtp_are_our_misuse() -> None:
    with pytest.raises(SrtpError):
        SrtpContext(_80, bytes(15), SALT)
    with pytest.raises(SrtpError):
        SrtpContext(_80, KEY, bytes(16))
    with pytest.raises(SrtpError):
        SrtpContext(_80, KEY, SALT).protect_rtp(b"\x00" * 20)
    assert "00010203" not in repr(SrtpContext(_80, KEY, SALT))
    assert SrtpContext(_80, KEY, SALT).uses(KEY, SALT)
    assert not SrtpContext(_80, KEY, SALT).uses(bytes(16), SALT)


@settings(max_examples=50, deadline=None)
@given(
    seqs=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=20),
    start=st.integers(0, 0xFFFF),
)
def test_any_order_within_the_window_decrypts_once(seqs: list[int], start: int) -> None:
    """Packets sent in order from ``start`` (wrapping past 65535 for some) and received
    shuffled/duplicated: each distinct one inside the window decrypts to itself exactly once."""
    tx, rx = SrtpContext(_32, KEY, SALT), SrtpContext(_32, KEY, SALT)
    sent = [tx.protect_rtp(rtp(start + i, bytes([i % 256]) * 20)) for i in range(40)]
    # the receiver's ROC starts at 0 (RFC 3711 3.3.1): the first packet it sees is before any wrap
    order = [0, *(s % 40 for s in seqs)]
    seen: set[int] = set()
    highest = -1
    for i in order:
        out = rx.unprotect_rtp(sent[i])
        if i in seen or (highest >= 0 and highest - i >= REPLAY_WINDOW):
            assert out is None
        else:
            assert out == rtp(start + i, bytes([i % 256]) * 20)
            seen.add(i)
            highest = max(highest, i)
