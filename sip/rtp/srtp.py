"""SRTP and SRTCP (RFC 3711) with the AES_CM_128_HMAC_SHA1_80 and _32 suites (RFC 4568 6.2), sans-I/O.

How this works
--------------
* One `SrtpContext` holds one master key and salt: the key ONE sender uses (SDES gives each
  direction its own, RFC 4568 6.1). A leg has two, one to `protect_*` what we send and one to
  `unprotect_*` what we receive; a context is never used for both.
* Session keys come from the key derivation function (RFC 3711 4.3.1) with a key derivation rate
  of 0, the SDES default (RFC 4568 6.1: no ``KDR`` parameter): each is the AES-CM keystream under
  the master key with IV ``(label || r) XOR master_salt`` shifted by 16 bits, derived once.
* Encryption is AES in counter mode (RFC 3711 4.1.1) with IV ``k_s * 2^16 XOR SSRC * 2^64 XOR
  index * 2^16``; authentication is HMAC-SHA1 over the packet and the rollover counter, truncated
  to 80 or 32 bits (4.2.1). AES-CTR and HMAC-SHA1 are the ``cryptography`` package's; the tag is
  compared in constant time.
* Each SSRC has its own state (RFC 3711 3.2.3): the sender's rollover counter (ROC) increments
  when the sequence number wraps; the receiver guesses the packet index from the highest one
  seen (appendix A), and keeps a replay window of `REPLAY_WINDOW` packets (3.3.2). The state is
  updated only after the tag checks, so a forged packet cannot move it.
* `unprotect_rtp` / `unprotect_rtcp` return ``None`` for a packet to drop and count why in
  `SrtpStats` (auth failure, replay, malformed); they never raise for anything the peer sent, so
  a socket callback needs no ``except``. `SrtpError` is for our own misuse (a bad key length).
* SRTCP (RFC 3711 3.4) always carries an 80-bit tag, also with the _32 suite (RFC 4568 6.2.1),
  and an E flag plus a 31-bit index of its own after the encrypted part.
* `SrtpContext.export` / `SrtpContext.restore` move a context to another process (a media
  worker carrying the leg, engine/media): an `SrtpState` holds the master key and salt and each
  source's ROC, highest sequence and replay windows, so the far end sees one continuous stream.
Keys are bytes in memory only; nothing here logs, and `repr` of a context or a state shows no key.
"""

from __future__ import annotations

import enum
import hashlib
import hmac as _stdlib_hmac
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "MASTER_KEY_LEN",
    "MASTER_SALT_LEN",
    "REPLAY_WINDOW",
    "SrtpContext",
    "SrtpError",
    "SrtpProfile",
    "SrtpState",
    "SrtpStats",
    "aes_cm_keystream",
    "derive_session_key",
]

#: RFC 4568 6.2.1: both suites use a 128-bit master key and a 112-bit master salt.
MASTER_KEY_LEN = 16
MASTER_SALT_LEN = 14
#: RFC 3711 4.2.1: the authentication key is 160 bits (n_a) for HMAC-SHA1.
_AUTH_KEY_LEN = 20
#: RFC 3711 3.3.2: the replay window must hold at least 64 packets; libsrtp uses 128, we use the
#: minimum because legs carry one audio stream of 50 packets a second.
REPLAY_WINDOW = 64
#: SRTCP's tag is 80 bits for both suites (RFC 4568 6.2.1).
_SRTCP_TAG_LEN = 10
_SRTCP_E_FLAG = 0x80000000
_SRTCP_INDEX_MASK = 0x7FFFFFFF
# RFC 3711 4.3.2 key derivation labels.
_LABEL_RTP_ENCRYPTION = 0x00
_LABEL_RTP_AUTH = 0x01
_LABEL_RTP_SALT = 0x02
_LABEL_RTCP_ENCRYPTION = 0x03
_LABEL_RTCP_AUTH = 0x04
_LABEL_RTCP_SALT = 0x05
_RTP_HEADER_LEN = 12
_RTCP_HEADER_LEN = 8
_SEQ_MOD = 1 << 16
_ROC_MOD = 1 << 32
_SEQ_SSRC = struct.Struct("!H4xI")
_U32 = struct.Struct("!I")


class SrtpError(ValueError):
    """Our caller misused the API: a master key or salt of the wrong length.

    You do NOT get it for anything a peer sent: `SrtpContext.unprotect_rtp` returns ``None``.
    """


class SrtpProfile(enum.StrEnum):
    """The crypto suites we speak, named as in SDES (RFC 4568 6.2)."""

    AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
    AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"

    @property
    def rtp_tag_len(self) -> int:
        return 10 if self is SrtpProfile.AES_CM_128_HMAC_SHA1_80 else 4


@dataclass(slots=True)
class SrtpStats:
    """What a context did, for a leg's media counters. Drops are counted, never raised."""

    protected: int = 0
    unprotected: int = 0
    auth_failures: int = 0
    replays: int = 0
    malformed: int = 0


def _aes_cm(key: bytes, iv: int, data: bytes) -> bytes:
    """AES counter mode (RFC 3711 4.1.1): the 128-bit counter block starts at ``iv``."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def aes_cm_keystream(key: bytes, iv: int, length: int) -> bytes:
    """``length`` bytes of AES-CM keystream from counter block ``iv`` (RFC 3711 B.2)."""
    return _aes_cm(key, iv, bytes(length))


def derive_session_key(
    master_key: bytes, master_salt: bytes, label: int, length: int, index: int = 0
) -> bytes:
    """RFC 3711 4.3.1 with a key derivation rate of 0 (``r = 0`` for every packet index).

    ``index`` is accepted for the test vectors (B.3 uses 0); with kdr 0 it never changes the key.
    """
    del index  # kdr = 0: r = index DIV kdr is defined as 0 (RFC 3711 4.3.1)
    key_id = label << 48  # label (8 bits) || r (48 bits)
    x = key_id ^ int.from_bytes(master_salt, "big")
    return _aes_cm(master_key, x << 16, bytes(length))


@dataclass(slots=True)
class _SourceState:
    """Per-SSRC state (RFC 3711 3.2.3): ROC and highest sequence (s_l), replay bitmap."""

    roc: int = 0
    highest_seq: int = -1  # -1: nothing sent/received yet
    replay_bits: int = 0  # bit i set: packet (highest_index - i) seen
    rtcp_index: int = 0  # sender: next SRTCP index; receiver: highest seen
    rtcp_highest: int = -1
    rtcp_replay_bits: int = 0

    def highest_index(self) -> int:
        return (self.roc << 16) | self.highest_seq

    def as_tuple(self) -> tuple[int, int, int, int, int, int]:
        return (self.roc, self.highest_seq, self.replay_bits, self.rtcp_index, self.rtcp_highest,
                self.rtcp_replay_bits)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SrtpState:
    """A context as it moves between processes (`SrtpContext.export` / `restore`): plain and
    picklable. Its repr shows no key."""

    profile: str
    master_key: bytes = field(repr=False)
    master_salt: bytes = field(repr=False)
    #: SSRC -> (ROC, highest sequence, replay bits, SRTCP index, SRTCP highest, SRTCP bits)
    sources: dict[int, tuple[int, int, int, int, int, int]] = field(default_factory=dict)


def _replay_check(highest: int, bits: int, index: int) -> bool:
    """True when ``index`` is new: beyond the window's top or unseen and inside it."""
    if highest < 0 or index > highest:
        return True
    delta = highest - index
    return delta < REPLAY_WINDOW and not (bits >> delta) & 1


def _replay_update(highest: int, bits: int, index: int) -> tuple[int, int]:
    if highest < 0:
        return index, 1
    if index > highest:
        shift = index - highest
        bits = ((bits << shift) | 1) & ((1 << REPLAY_WINDOW) - 1) if shift < REPLAY_WINDOW else 1
        return index, bits
    return highest, bits | (1 << (highest - index))


def _rtp_header_len(packet: bytes) -> int:
    """Bytes of RTP header before the payload (RFC 3550 5.1, 5.3.1), or -1 if truncated."""
    if len(packet) < _RTP_HEADER_LEN or packet[0] >> 6 != 2:
        return -1
    length = _RTP_HEADER_LEN + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        if len(packet) < length + 4:
            return -1
        length += 4 + 4 * int.from_bytes(packet[length + 2 : length + 4], "big")
    return length if len(packet) >= length else -1


class SrtpContext:
    """One direction's master key: protect with it (we send) or unprotect (we receive)."""

    __slots__ = (
        "_key_salt",
        "_master",
        "_rtcp_auth",
        "_rtcp_key",
        "_rtcp_salt",
        "_rtp_auth",
        "_rtp_key",
        "_rtp_salt",
        "_sources",
        "profile",
        "stats",
    )

    def __init__(self, profile: SrtpProfile, master_key: bytes, master_salt: bytes) -> None:
        if len(master_key) != MASTER_KEY_LEN or len(master_salt) != MASTER_SALT_LEN:
            raise SrtpError(
                f"{profile} needs a {MASTER_KEY_LEN}-byte key and a {MASTER_SALT_LEN}-byte salt"
            )
        self.profile = profile
        self.stats = SrtpStats()
        self._sources: dict[int, _SourceState] = {}
        self._master = hashlib.sha256(master_key + master_salt).digest()
        self._key_salt = (master_key, master_salt)  # for `export` only

        def derive(label: int, length: int) -> bytes:
            return derive_session_key(master_key, master_salt, label, length)

        self._rtp_key = derive(_LABEL_RTP_ENCRYPTION, MASTER_KEY_LEN)
        self._rtp_salt = int.from_bytes(derive(_LABEL_RTP_SALT, MASTER_SALT_LEN), "big") << 16
        self._rtp_auth = self._keyed_hmac(derive(_LABEL_RTP_AUTH, _AUTH_KEY_LEN))
        self._rtcp_key = derive(_LABEL_RTCP_ENCRYPTION, MASTER_KEY_LEN)
        self._rtcp_salt = int.from_bytes(derive(_LABEL_RTCP_SALT, MASTER_SALT_LEN), "big") << 16
        self._rtcp_auth = self._keyed_hmac(derive(_LABEL_RTCP_AUTH, _AUTH_KEY_LEN))

    def uses(self, master_key: bytes, master_salt: bytes) -> bool:
        """Whether this context was made from that key and salt (a re-offer may re-key)."""
        return _stdlib_hmac.compare_digest(
            self._master, hashlib.sha256(master_key + master_salt).digest()
        )

    def __repr__(self) -> str:
        return f"SrtpContext({self.profile}, sources={len(self._sources)})"

    def export(self) -> SrtpState:
        """This context's key and per-source state, for `restore` in another process."""
        key, salt = self._key_salt
        return SrtpState(
            str(self.profile),
            key,
            salt,
            {ssrc: st.as_tuple() for ssrc, st in self._sources.items()},
        )

    @classmethod
    def restore(cls, state: SrtpState) -> SrtpContext:
        """A context that carries on from ``state`` (`export`): same key, same ROCs and replay
        windows. Its `stats` start at zero (the exporting process counted what it did)."""
        context = cls(SrtpProfile(state.profile), state.master_key, state.master_salt)
        for ssrc, values in state.sources.items():
            context._sources[ssrc] = _SourceState(*values)
        return context

    @staticmethod
    def _keyed_hmac(key: bytes) -> crypto_hmac.HMAC:
        return crypto_hmac.HMAC(key, hashes.SHA1())  # noqa: S303 - RFC 3711 4.2.1 mandates SHA-1

    @staticmethod
    def _tag(keyed: crypto_hmac.HMAC, *parts: bytes) -> bytes:
        h = keyed.copy()  # the key schedule is done once per context
        for part in parts:
            h.update(part)
        return h.finalize()

    def _source(self, ssrc: int) -> _SourceState:
        state = self._sources.get(ssrc)
        if state is None:
            state = self._sources[ssrc] = _SourceState()
        return state

    # --- RTP (RFC 3711 3.1, 3.3) -------------------------------------------------------------

    def protect_rtp(self, packet: bytes) -> bytes:
        """Encrypt and tag one RTP packet we send. Raises `SrtpError` for bytes that are not
        RTP: we built them ourselves, and sending them on unencrypted would leak plaintext."""
        header_len = _rtp_header_len(packet)
        if header_len < 0:
            raise SrtpError("not an RTP packet")
        seq, ssrc = _SEQ_SSRC.unpack_from(packet, 2)
        state = self._source(ssrc)
        # The sender's ROC counts wraps of its own sequence numbers (RFC 3711 3.3.1); the same
        # appendix A estimate keeps a re-sent older packet in its old ROC.
        roc = self._guess_roc(state, seq)
        if state.highest_seq < 0 or (roc << 16) | seq > state.highest_index():
            state.roc, state.highest_seq = roc, seq
        iv = self._rtp_salt ^ (ssrc << 64) ^ (((roc << 16) | seq) << 16)
        encrypted = packet[:header_len] + _aes_cm(self._rtp_key, iv, packet[header_len:])
        tag = self._tag(self._rtp_auth, encrypted, _U32.pack(roc))
        self.stats.protected += 1
        return encrypted + tag[: self.profile.rtp_tag_len]

    def _guess_roc(self, state: _SourceState, seq: int) -> int:
        """RFC 3711 appendix A: the ROC that puts ``seq`` nearest the highest index seen."""
        s_l, roc = state.highest_seq, state.roc
        if s_l < 0:
            return roc
        if s_l < 0x8000:
            return (roc - 1) % _ROC_MOD if seq - s_l > 0x8000 and roc > 0 else roc
        return (roc + 1) % _ROC_MOD if s_l - 0x8000 > seq else roc

    def unprotect_rtp(self, packet: bytes) -> bytes | None:
        """The plain RTP packet, or None (counted in `stats`) for a forged, replayed or
        malformed one."""
        tag_len = self.profile.rtp_tag_len
        body = packet[:-tag_len]
        header_len = _rtp_header_len(body)
        if len(packet) <= tag_len or header_len < 0:
            self.stats.malformed += 1
            return None
        seq, ssrc = _SEQ_SSRC.unpack_from(packet, 2)
        state = self._sources.get(ssrc) or _SourceState()
        roc = self._guess_roc(state, seq)
        index = (roc << 16) | seq
        highest = state.highest_index() if state.highest_seq >= 0 else -1
        if not _replay_check(highest, state.replay_bits, index):
            self.stats.replays += 1
            return None
        tag = self._tag(self._rtp_auth, body, _U32.pack(roc))[:tag_len]
        if not _stdlib_hmac.compare_digest(tag, packet[-tag_len:]):
            self.stats.auth_failures += 1
            return None
        new_highest, state.replay_bits = _replay_update(highest, state.replay_bits, index)
        state.roc, state.highest_seq = new_highest >> 16, new_highest & 0xFFFF
        self._sources[ssrc] = state
        iv = self._rtp_salt ^ (ssrc << 64) ^ (index << 16)
        self.stats.unprotected += 1
        return body[:header_len] + _aes_cm(self._rtp_key, iv, body[header_len:])

    # --- RTCP (RFC 3711 3.4) -----------------------------------------------------------------

    def protect_rtcp(self, packet: bytes) -> bytes:
        """Encrypt a compound RTCP packet we send, append E || SRTCP index and the 80-bit tag."""
        if len(packet) < _RTCP_HEADER_LEN or packet[0] >> 6 != 2:
            raise SrtpError("not an RTCP packet")
        ssrc = _U32.unpack_from(packet, 4)[0]
        state = self._source(ssrc)
        index = state.rtcp_index
        state.rtcp_index = (index + 1) & _SRTCP_INDEX_MASK
        iv = self._rtcp_salt ^ (ssrc << 64) ^ (index << 16)
        encrypted = packet[:_RTCP_HEADER_LEN] + _aes_cm(
            self._rtcp_key, iv, packet[_RTCP_HEADER_LEN:]
        )
        trailer = _U32.pack(_SRTCP_E_FLAG | index)
        tag = self._tag(self._rtcp_auth, encrypted, trailer)[:_SRTCP_TAG_LEN]
        self.stats.protected += 1
        return encrypted + trailer + tag

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        """The plain compound RTCP packet, or None (counted) for a forged, replayed or
        malformed one."""
        if len(packet) < _RTCP_HEADER_LEN + 4 + _SRTCP_TAG_LEN or packet[0] >> 6 != 2:
            self.stats.malformed += 1
            return None
        authenticated = packet[:-_SRTCP_TAG_LEN]
        tag = self._tag(self._rtcp_auth, authenticated)[:_SRTCP_TAG_LEN]
        if not _stdlib_hmac.compare_digest(tag, packet[-_SRTCP_TAG_LEN:]):
            self.stats.auth_failures += 1
            return None
        word = _U32.unpack_from(authenticated, len(authenticated) - 4)[0]
        index = word & _SRTCP_INDEX_MASK
        ssrc = _U32.unpack_from(packet, 4)[0]
        state = self._source(ssrc)
        if not _replay_check(state.rtcp_highest, state.rtcp_replay_bits, index):
            self.stats.replays += 1
            return None
        state.rtcp_highest, state.rtcp_replay_bits = _replay_update(
            state.rtcp_highest, state.rtcp_replay_bits, index
        )
        self.stats.unprotected += 1
        body = authenticated[:-4]
        if not word & _SRTCP_E_FLAG:
            return body  # the sender chose not to encrypt (RFC 3711 3.4)
        iv = self._rtcp_salt ^ (ssrc << 64) ^ (index << 16)
        return body[:_RTCP_HEADER_LEN] + _aes_cm(self._rtcp_key, iv, body[_RTCP_HEADER_LEN:])
