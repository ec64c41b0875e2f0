"""Encryption at rest: AES-256-GCM in independently authenticated chunks, and the keyring.

How this works. An encrypted recording is::

    file header:  MAGIC(8) | version u8 | content format u8 | key id length u8 | key id | salt(16)
    chunk*:       ciphertext length u32 BE | flags u8 | ciphertext (plaintext + 16-byte GCM tag)

Each file gets its own subkey, HKDF-SHA256(master key, salt, info), so the per-chunk nonce can be a
plain counter (chunk index as 8 bytes big-endian + 4 zero bytes) without any risk of nonce reuse
across files sharing a master key. The AAD of every chunk is the whole file header plus the chunk
index plus its flags, so chunks cannot be reordered, moved between files or have their "final" flag
flipped (the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizar, "Online
Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015).

The writer emits one chunk per flush, so a crash loses at most the chunk being written: the reader
decrypts every complete chunk and reports the file as *truncated* (no chunk flagged final) rather
than rejecting it. A torn last chunk (its length says more than the file holds) is ignored.

WAV inside: a WAV header needs its sizes patched at the end, which an append-only ciphertext cannot
do. The plaintext is therefore a WAV whose header carries placeholder sizes, written as chunk 0, and
the *decryptor* rebuilds the RIFF and data sizes from the authenticated plaintext length (known from
the chunk framing before a single byte is decrypted, which also gives the download API its
Content-Length). Decrypted output is always a valid WAV.

Keys: a keyring maps key ids to 32-byte keys; new files use the active key id; old files name their
key id in the header, so rotating the active key never requires re-encrypting anything.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import os
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from recordings.wav import HEADER_BYTES, NotCanonicalWavError, parse_header, size_fields

log = structlog.get_logger("recordings.crypto")

MAGIC = b"\x89ACDREC\n"  # non-ASCII first byte and a newline catch text-mode mangling, as PNG does
FORMAT_VERSION = 1
KEY_BYTES = 32  # AES-256
SALT_BYTES = 16
TAG_BYTES = 16
NONCE_BYTES = 12  # the GCM nonce size with no extra GHASH step (NIST SP 800-38D 5.2.1.1)
FLAG_FINAL = 0x01
_HKDF_INFO = b"acd recording chunk key v1"
_CHUNK_HEAD = struct.Struct(">IB")
# One flush of a 1 s stereo 8 kHz recording is 32 KB; a 16 MiB bound rejects garbage lengths
# before we try to allocate them, yet leaves room for long flush intervals and compressed formats.
MAX_CHUNK_PLAINTEXT_BYTES = 16 * 1024 * 1024
_KEY_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
ENV_KEYS = "ACD_RECORDING_KEYS"
ENV_ACTIVE_KEY_ID = "ACD_RECORDING_ACTIVE_KEY_ID"


class ContentFormat(enum.IntEnum):
    """What the plaintext inside an encrypted recording is."""

    WAV = 0
    FLAC = 1
    OGG_OPUS = 2


class RecordingCryptoError(Exception):
    """Base of the errors raised when an encrypted recording cannot be read."""


class NotEncryptedRecordingError(RecordingCryptoError):
    """The file does not start with our magic: it is not an encrypted recording (maybe plain WAV)."""


class UnsupportedFormatVersionError(RecordingCryptoError):
    """Written by a newer format version than this reader knows."""


class UnknownKeyIdError(RecordingCryptoError, KeyError):
    """The file names a key id the keyring does not hold (key removed, wrong keyring)."""


class ChunkAuthenticationError(RecordingCryptoError):
    """A chunk failed GCM authentication: wrong key under the right id, or the file was tampered.

    ``chunk_index`` 0 failing usually means the wrong key; a later index means modified bytes.
    You do NOT get this for a file that merely ends early (crash): that is ``truncated``.
    """

    def __init__(self, chunk_index: int) -> None:
        super().__init__(f"chunk {chunk_index} failed authentication (wrong key or tampered file)")
        self.chunk_index = chunk_index


class CorruptRecordingError(RecordingCryptoError):
    """The framing is impossible (absurd length, data after the final chunk, bad header)."""


class KeyringError(ValueError):
    """A key file or environment variable could not be turned into a keyring."""


@dataclass(frozen=True, slots=True)
class Keyring:
    """Key id -> 32-byte AES key, plus the id new recordings are encrypted with."""

    keys: Mapping[str, bytes]
    active_key_id: str | None = None

    def __post_init__(self) -> None:
        for key_id, key in self.keys.items():
            if not _KEY_ID_RE.fullmatch(key_id):
                raise KeyringError(f"key id {key_id!r}: expected 1-64 of [A-Za-z0-9._-]")
            if len(key) != KEY_BYTES:
                raise KeyringError(f"key {key_id!r}: expected {KEY_BYTES} bytes, got {len(key)}")
        if self.active_key_id is not None and self.active_key_id not in self.keys:
            raise KeyringError(f"active key id {self.active_key_id!r} is not in the keyring")

    def key(self, key_id: str) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            raise UnknownKeyIdError(key_id) from None

    def active(self) -> tuple[str, bytes]:
        if self.active_key_id is None:
            raise KeyringError("the keyring has no active key id: cannot encrypt new recordings")
        return self.active_key_id, self.keys[self.active_key_id]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Keyring:
        """JSON: ``{"active": "2026-11", "keys": {"2026-10": "<base64>", "2026-11": "<base64>"}}``."""
        p = Path(path)
        mode = p.stat().st_mode
        if mode & 0o077:
            # Not fatal (containers often mount secrets 0644), but an operator should know.
            log.warning("recording key file is readable by group/others", path=str(p))
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise KeyringError(f"{p}: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), dict):
            raise KeyringError(f'{p}: expected an object with "keys": {{id: base64 key}}')
        active = doc.get("active")
        if active is not None and not isinstance(active, str):
            raise KeyringError(f'{p}: "active" must be a key id string')
        keys = {str(k): _b64_key(f"{p}: keys.{k}", v) for k, v in doc["keys"].items()}
        return cls(keys, active)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Keyring:
        """``ACD_RECORDING_KEYS="id1=<base64>,id2=<base64>"``; active is ``ACD_RECORDING_ACTIVE_KEY_ID``
        or else the last id listed (append a new key to rotate)."""
        env = os.environ if environ is None else environ
        raw = env.get(ENV_KEYS, "").strip()
        if not raw:
            raise KeyringError(f"{ENV_KEYS} is empty or unset")
        keys: dict[str, bytes] = {}
        last: str | None = None
        for item in raw.split(","):
            key_id, sep, b64 = item.strip().partition("=")
            if not sep:
                raise KeyringError(f"{ENV_KEYS}: expected id=<base64>, got {key_id!r}")
            keys[key_id] = _b64_key(f"{ENV_KEYS}: {key_id}", b64)
            last = key_id
        return cls(keys, env.get(ENV_ACTIVE_KEY_ID) or last)


def _b64_key(where: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise KeyringError(f"{where}: expected a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyringError(f"{where}: not valid base64") from exc


def _subkey(master_key: bytes, salt: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=_HKDF_INFO)
    return AESGCM(hkdf.derive(master_key))


def _nonce(index: int) -> bytes:
    return index.to_bytes(8, "big") + b"\x00\x00\x00\x00"


def _aad(file_header: bytes, index: int, flags: int) -> bytes:
    return file_header + struct.pack(">QB", index, flags)


def build_file_header(key_id: str, salt: bytes, content_format: ContentFormat) -> bytes:
    kid = key_id.encode("ascii")
    return MAGIC + bytes((FORMAT_VERSION, int(content_format), len(kid))) + kid + salt


class ChunkEncryptor:
    """Turns plaintext pieces into framed chunks; the caller owns the file and writes the bytes."""

    def __init__(
        self, key_id: str, master_key: bytes, content_format: ContentFormat = ContentFormat.WAV
    ) -> None:
        salt = os.urandom(SALT_BYTES)
        self.key_id = key_id
        self.file_header = build_file_header(key_id, salt, content_format)
        self._aead = _subkey(master_key, salt)
        self._index = 0
        self.finished = False

    def chunks(self, plaintext: bytes, *, final: bool = False) -> list[bytes]:
        """Frame ``plaintext`` as one or more chunks; ``final`` flags the last one."""
        if self.finished:
            raise RuntimeError("the final chunk was already written")
        out: list[bytes] = []
        view = memoryview(plaintext)
        pieces = [
            view[i : i + MAX_CHUNK_PLAINTEXT_BYTES]
            for i in range(0, len(view), MAX_CHUNK_PLAINTEXT_BYTES)
        ] or [view]
        for n, piece in enumerate(pieces):
            flags = FLAG_FINAL if final and n == len(pieces) - 1 else 0
            ct = self._aead.encrypt(
                _nonce(self._index), bytes(piece), _aad(self.file_header, self._index, flags)
            )
            out.append(_CHUNK_HEAD.pack(len(ct), flags) + ct)
            self._index += 1
        self.finished = final
        return out


@dataclass(frozen=True, slots=True)
class _ChunkRef:
    offset: int  # of the ciphertext
    length: int  # ciphertext length including the tag
    flags: int


@dataclass(slots=True)
class EncryptedFileInfo:
    """What the framing says, before any decryption."""

    key_id: str
    content_format: ContentFormat
    file_header: bytes
    salt: bytes
    chunks: list[_ChunkRef] = field(default_factory=list)
    truncated: bool = False  # no complete chunk flagged final: the writer did not finish (crash)
    torn_bytes: int = 0  # bytes of an incomplete last chunk, ignored

    @property
    def plaintext_bytes(self) -> int:
        return sum(c.length - TAG_BYTES for c in self.chunks)


def read_file_header(f: BinaryIO) -> tuple[bytes, str, ContentFormat, bytes]:
    fixed = f.read(len(MAGIC) + 3)
    if len(fixed) < len(MAGIC) or fixed[: len(MAGIC)] != MAGIC:
        raise NotEncryptedRecordingError("no encrypted-recording magic")
    if len(fixed) < len(MAGIC) + 3:
        raise CorruptRecordingError("file header is incomplete")
    version, fmt, kid_len = fixed[len(MAGIC) :]
    if version != FORMAT_VERSION:
        raise UnsupportedFormatVersionError(f"format version {version}, this reader knows 1")
    rest = f.read(kid_len + SALT_BYTES)
    if len(rest) < kid_len + SALT_BYTES:
        raise CorruptRecordingError("file header is incomplete")
    try:
        content_format = ContentFormat(fmt)
        key_id = rest[:kid_len].decode("ascii")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptRecordingError(f"bad file header: {exc}") from exc
    return fixed + rest, key_id, content_format, rest[kid_len:]


def scan(f: BinaryIO) -> EncryptedFileInfo:
    """Walk the chunk framing (no key needed): offsets, final flag, truncation."""
    f.seek(0, os.SEEK_END)
    file_bytes = f.tell()
    f.seek(0)
    header, key_id, content_format, salt = read_file_header(f)
    info = EncryptedFileInfo(key_id, content_format, header, salt)
    pos = len(header)
    final_seen = False
    while pos < file_bytes:
        if final_seen:
            raise CorruptRecordingError("data after the final chunk")
        if file_bytes - pos < _CHUNK_HEAD.size:
            info.torn_bytes = file_bytes - pos
            break
        f.seek(pos)
        length, flags = _CHUNK_HEAD.unpack(f.read(_CHUNK_HEAD.size))
        if length < TAG_BYTES or length > MAX_CHUNK_PLAINTEXT_BYTES + TAG_BYTES:
            raise CorruptRecordingError(f"chunk {len(info.chunks)} has impossible length {length}")
        start = pos + _CHUNK_HEAD.size
        if start + length > file_bytes:
            info.torn_bytes = file_bytes - pos
            break
        info.chunks.append(_ChunkRef(start, length, flags))
        final_seen = bool(flags & FLAG_FINAL)
        pos = start + length
    info.truncated = not final_seen
    return info


class DecryptedStream:
    """A readable view of one recording's plaintext, for files and for the download API.

    ``size_bytes`` is known up front (Content-Length). Iterating yields plaintext pieces; a WAV comes
    out with its RIFF/data sizes rebuilt and any torn last sample frame dropped. Authentication
    errors are raised while iterating, at the first bad chunk.
    """

    def __init__(self, path: str | os.PathLike[str], keyring: Keyring) -> None:
        self.path = Path(path)
        with self.path.open("rb") as f:
            self.info = scan(f)
        self._master = keyring.key(self.info.key_id)
        self.size_bytes = self.info.plaintext_bytes
        self._wav_data_bytes: int | None = None
        if self.info.content_format is ContentFormat.WAV and self.size_bytes >= HEADER_BYTES:
            # Whole stereo frames only; the header's block align is checked when chunk 0 decrypts.
            data = self.size_bytes - HEADER_BYTES
            self._wav_data_bytes = data - data % 4
            self.size_bytes = HEADER_BYTES + self._wav_data_bytes

    @property
    def key_id(self) -> str:
        return self.info.key_id

    @property
    def truncated(self) -> bool:
        return self.info.truncated

    def __iter__(self) -> Iterator[bytes]:
        aead = _subkey(self._master, self.info.salt)
        remaining = self.size_bytes
        head = bytearray()
        with self.path.open("rb") as f:
            for index, ref in enumerate(self.info.chunks):
                f.seek(ref.offset)
                ct = f.read(ref.length)
                try:
                    pt = aead.decrypt(
                        _nonce(index), ct, _aad(self.info.file_header, index, ref.flags)
                    )
                except InvalidTag:
                    raise ChunkAuthenticationError(index) from None
                if self._wav_data_bytes is not None and len(head) < HEADER_BYTES:
                    head += pt
                    if len(head) < HEADER_BYTES:
                        continue
                    pt = self._patched_header(bytes(head[:HEADER_BYTES])) + bytes(
                        head[HEADER_BYTES:]
                    )
                # Every chunk is authenticated, even past the last byte we emit (an empty
                # final chunk still proves the file was finished and not cut).
                if len(pt) > remaining:
                    pt = pt[:remaining]
                remaining -= len(pt)
                if pt:
                    yield pt

    def _patched_header(self, header: bytes) -> bytes:
        assert self._wav_data_bytes is not None
        try:
            layout = parse_header(header)
        except NotCanonicalWavError as exc:
            raise CorruptRecordingError(f"decrypted WAV header: {exc}") from exc
        data = self._wav_data_bytes - self._wav_data_bytes % layout.block_align
        riff_field, data_field = size_fields(data)
        return header[:4] + riff_field + header[8:40] + data_field


@dataclass(frozen=True, slots=True)
class DecryptResult:
    key_id: str
    content_format: ContentFormat
    plaintext_bytes: int
    chunks: int
    truncated: bool  # the file ended before its final chunk (crash); everything complete was kept


def decrypt_file(
    src: str | os.PathLike[str], dst: str | os.PathLike[str] | BinaryIO, keyring: Keyring
) -> DecryptResult:
    """Decrypt ``src`` into a path or a binary stream. A path is written atomically (tmp + rename),
    so an authentication failure never leaves a half-decrypted file behind."""
    stream = DecryptedStream(src, keyring)
    if isinstance(dst, str | os.PathLike):
        out = Path(dst)
        tmp = out.with_name(out.name + ".part")
        try:
            with tmp.open("wb") as f:
                for piece in stream:
                    f.write(piece)
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        for piece in stream:
            dst.write(piece)
    return DecryptResult(
        stream.info.key_id,
        stream.info.content_format,
        stream.size_bytes,
        len(stream.info.chunks),
        stream.info.truncated,
    )


def is_encrypted(path: str | os.PathLike[str]) -> bool:
    with Path(path).open("rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def open_recording_stream(
    path: str | os.PathLike[str], keyring: Keyring | None, *, piece_bytes: int = 64 * 1024
) -> tuple[int, Iterator[bytes]]:
    """(size, pieces) of a recording's playable bytes, plain or encrypted: the download API body.

    Raises ``UnknownKeyIdError`` (or ``KeyringError`` with no keyring) for an encrypted file it
    cannot open; authentication failures surface while iterating.
    """
    p = Path(path)
    if is_encrypted(p):
        if keyring is None:
            raise KeyringError("recording is encrypted and no keyring is configured")
        stream = DecryptedStream(p, keyring)
        return stream.size_bytes, iter(stream)
    size = p.stat().st_size

    def plain() -> Iterator[bytes]:
        with p.open("rb") as f:
            while piece := f.read(piece_bytes):
                yield piece

    return size, plain()


# -- sealed blobs: small records that belong with a recording (its transcript) --------------------
#
# One AES-256-GCM message: MAGIC | key id length u8 | key id | salt(16) | nonce(12) | ciphertext.
# The subkey is derived per blob as for files (HKDF with its own salt, a different info string), so
# a random 96-bit nonce is used exactly once per subkey. The caller's ``aad`` (e.g. the recording
# id) binds the blob to its row: a blob copied onto another row does not open.
BLOB_MAGIC = b"\x89ACDBLB\n"
_BLOB_HKDF_INFO = b"acd sealed blob key v1"
_BLOB_NONCE_BYTES = 12


def seal_blob(keyring: Keyring, plaintext: bytes, aad: bytes) -> tuple[str, bytes]:
    """(key id, sealed bytes) with the keyring's active key."""
    key_id, key = keyring.active()
    salt, nonce = os.urandom(SALT_BYTES), os.urandom(_BLOB_NONCE_BYTES)
    kid = key_id.encode("ascii")
    head = BLOB_MAGIC + bytes([len(kid)]) + kid + salt + nonce
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=_BLOB_HKDF_INFO)
    return key_id, head + AESGCM(hkdf.derive(key)).encrypt(nonce, plaintext, head + aad)


def open_blob(keyring: Keyring, blob: bytes, aad: bytes) -> bytes:
    """The plaintext of ``seal_blob``'s output. Raises ``UnknownKeyIdError`` for a key the keyring
    lacks, ``ChunkAuthenticationError`` (chunk 0) for a tampered or misplaced blob, and
    ``CorruptRecordingError`` for bytes that are not a sealed blob."""
    if not blob.startswith(BLOB_MAGIC) or len(blob) < len(BLOB_MAGIC) + 1:
        raise CorruptRecordingError("not a sealed blob")
    n = blob[len(BLOB_MAGIC)]
    at = len(BLOB_MAGIC) + 1
    key_id = blob[at : at + n].decode("ascii", "replace")
    salt = blob[at + n : at + n + SALT_BYTES]
    nonce = blob[at + n + SALT_BYTES : at + n + SALT_BYTES + _BLOB_NONCE_BYTES]
    head_len = at + n + SALT_BYTES + _BLOB_NONCE_BYTES
    if len(blob) < head_len + 16:
        raise CorruptRecordingError("sealed blob is truncated")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=_BLOB_HKDF_INFO)
    aead = AESGCM(hkdf.derive(keyring.key(key_id)))
    try:
        return aead.decrypt(nonce, blob[head_len:], blob[:head_len] + aad)
    except InvalidTag:
        raise ChunkAuthenticationError(0) from None
