"""Encryption at rest: confidentiality, integrity, truncation after a crash, key rotation, CLI."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from recordings_testkit import (
    DECODERS,
    RATE_HZ,
    dominant_hz,
    frames,
    read_wav,
    tone,
    ulaw_encode,
    wait_for,
)

from recordings import (
    ChunkAuthenticationError,
    ContentFormat,
    CorruptRecordingError,
    Keyring,
    KeyringError,
    NotEncryptedRecordingError,
    RecordingFormat,
    RecordingResult,
    RecordingWriter,
    UnknownKeyIdError,
    WriterConfig,
    decrypt_file,
    is_encrypted,
    open_recording_stream,
    recordings_cli_main,
)
from recordings.crypto import MAGIC, TAG_BYTES, scan

FAST = WriterConfig(flush_interval_s=0.05)
K1 = bytes(range(32))
K2 = bytes(range(100, 132))


def _record(
    tmp_path: Path, name: str, keyring: Keyring | None, *, seconds: float = 2.0, encrypt: bool
) -> tuple[Path, RecordingResult]:
    n = int(seconds * RATE_HZ)
    left = ulaw_encode(tone(440, n))
    right = tone(1000, n)
    path = tmp_path / name
    with RecordingWriter(DECODERS, FAST, keyring=keyring) as w:
        rec = w.start_recording(name, path, encrypt=encrypt)
        for pos, f in frames(right):
            rec.feed(0, pos, left[pos : pos + len(f) // 2], "PCMU")
            rec.feed(1, pos, f, "L16")
            if pos % 2000 == 0:
                # Let a flush happen every 0.25 s of audio so the file has several chunks.
                wait_for(lambda: w.stats().queue_depth == 0)
                time.sleep(FAST.flush_interval_s * 1.5)
        rec.close(n)
        res = rec.result.result(timeout=10)
    return path, res


def test_encrypted_matches_plain_and_hides_content(tmp_path: Path) -> None:
    keyring = Keyring({"k1": K1}, "k1")
    plain_path, plain_res = _record(tmp_path, "plain.wav", None, encrypt=False)
    enc_path, enc_res = _record(tmp_path, "enc.wav.enc", keyring, encrypt=True)
    raw = enc_path.read_bytes()
    assert raw.startswith(MAGIC)
    assert b"RIFF" not in raw
    assert b"WAVE" not in raw
    pcm = plain_path.read_bytes()[44:]
    # No 64-byte run of the plaintext audio appears in the ciphertext.
    for off in range(0, len(pcm) - 64, 4096):
        assert pcm[off : off + 64] not in raw
    assert enc_res.encrypted
    assert enc_res.key_id == "k1"
    assert enc_res.duration_s == plain_res.duration_s == 2.0
    assert is_encrypted(enc_path)
    assert not is_encrypted(plain_path)

    out = tmp_path / "dec.wav"
    result = decrypt_file(enc_path, out, keyring)
    assert not result.truncated
    assert out.read_bytes() == plain_path.read_bytes()  # header sizes rebuilt, PCM identical
    _, _, data = read_wav(out)
    assert abs(dominant_hz(data[:, 0]) - 440) < 5


def test_without_key_unreadable(tmp_path: Path) -> None:
    enc_path, _ = _record(tmp_path, "e.enc", Keyring({"k1": K1}, "k1"), encrypt=True)
    with pytest.raises(UnknownKeyIdError):
        decrypt_file(enc_path, tmp_path / "x.wav", Keyring({"other": K2}, "other"))
    with pytest.raises(ChunkAuthenticationError) as exc:
        decrypt_file(enc_path, tmp_path / "x.wav", Keyring({"k1": K2}, "k1"))
    assert exc.value.chunk_index == 0
    assert not (tmp_path / "x.wav").exists()  # never a half-decrypted file
    assert not (tmp_path / "x.wav.part").exists()
    with pytest.raises(KeyringError):
        open_recording_stream(enc_path, None)


def test_tampered_byte_detected(tmp_path: Path) -> None:
    keyring = Keyring({"k1": K1}, "k1")
    enc_path, _ = _record(tmp_path, "t.enc", keyring, encrypt=True)
    with enc_path.open("rb") as f:
        info = scan(f)
    target = info.chunks[2]
    raw = bytearray(enc_path.read_bytes())
    raw[target.offset + 10] ^= 0x01
    enc_path.write_bytes(bytes(raw))
    with pytest.raises(ChunkAuthenticationError) as exc:
        decrypt_file(enc_path, io.BytesIO(), keyring)
    assert exc.value.chunk_index == 2


def test_header_and_final_flag_tamper_detected(tmp_path: Path) -> None:
    keyring = Keyring({"k1": K1}, "k1")
    enc_path, _ = _record(tmp_path, "h.enc", keyring, encrypt=True)
    good = enc_path.read_bytes()
    info = scan(io.BytesIO(good))
    # Flip the salt: a different subkey, chunk 0 fails.
    salt_at = len(info.file_header) - 1
    bad = bytearray(good)
    bad[salt_at] ^= 0x80
    enc_path.write_bytes(bytes(bad))
    with pytest.raises(ChunkAuthenticationError):
        decrypt_file(enc_path, io.BytesIO(), keyring)
    # Clear the final flag on the last chunk: authenticated in the AAD, so it fails.
    last = info.chunks[-1]
    bad = bytearray(good)
    bad[last.offset - 1] = 0
    enc_path.write_bytes(bytes(bad))
    with pytest.raises(ChunkAuthenticationError):
        decrypt_file(enc_path, io.BytesIO(), keyring)


def test_reordered_chunks_detected(tmp_path: Path) -> None:
    from recordings.crypto import ChunkEncryptor
    from recordings.wav import wav_header

    enc = ChunkEncryptor("k1", K1)
    c0 = enc.chunks(wav_header(0))[0]
    c1 = enc.chunks(b"\x01" * 400)[0]
    c2 = enc.chunks(b"\x02" * 400)[0]
    c3 = enc.chunks(b"", final=True)[0]
    p = tmp_path / "r.enc"
    p.write_bytes(enc.file_header + c0 + c1 + c2 + c3)
    good = io.BytesIO()
    assert not decrypt_file(p, good, Keyring({"k1": K1})).truncated
    assert good.getvalue()[44:] == b"\x01" * 400 + b"\x02" * 400
    p.write_bytes(enc.file_header + c0 + c2 + c1 + c3)  # same lengths, swapped
    with pytest.raises(ChunkAuthenticationError) as exc:
        decrypt_file(p, io.BytesIO(), Keyring({"k1": K1}))
    assert exc.value.chunk_index == 1
    p.write_bytes(enc.file_header + c0 + c1 + c2 + c3 + c1)  # data after the final chunk
    with pytest.raises(CorruptRecordingError):
        decrypt_file(p, io.BytesIO(), Keyring({"k1": K1}))


def test_truncated_file_decrypts_complete_chunks(tmp_path: Path) -> None:
    keyring = Keyring({"k1": K1}, "k1")
    enc_path, _ = _record(tmp_path, "c.enc", keyring, encrypt=True)
    full = enc_path.read_bytes()
    info = scan(io.BytesIO(full))
    assert not info.truncated
    keep = info.chunks[3]
    # Cut inside chunk 4: chunks 0-3 are complete.
    enc_path.write_bytes(full[: keep.offset + keep.length + 7])
    out = tmp_path / "c.wav"
    result = decrypt_file(enc_path, out, keyring)
    assert result.truncated
    assert result.chunks == 4
    expected_pcm = sum(c.length - TAG_BYTES for c in info.chunks[1:4])
    _, _, data = read_wav(out)  # valid WAV: sizes rebuilt from the authenticated length
    assert len(data) * 4 == expected_pcm - expected_pcm % 4
    assert abs(dominant_hz(data[:, 1]) - 1000) < 5
    size, pieces = open_recording_stream(enc_path, keyring)
    assert size == len(b"".join(pieces)) == out.stat().st_size


def test_torn_sample_frame_inside_plaintext_is_dropped(tmp_path: Path) -> None:
    # Write an encrypted file by hand whose last chunk ends mid-sample-frame.
    from recordings.crypto import ChunkEncryptor
    from recordings.wav import wav_header

    enc = ChunkEncryptor("k1", K1)
    blob = (
        enc.file_header + b"".join(enc.chunks(wav_header(0))) + b"".join(enc.chunks(b"\x01" * 10))
    )
    p = tmp_path / "torn.enc"
    p.write_bytes(blob)
    out = tmp_path / "torn.wav"
    res = decrypt_file(p, out, Keyring({"k1": K1}))
    assert res.truncated
    _, _, data = read_wav(out)
    assert len(data) == 2  # 10 bytes -> two whole stereo frames, 2 bytes dropped
    assert out.stat().st_size == 44 + 8


def test_key_rotation(tmp_path: Path) -> None:
    old_ring = Keyring({"2026-10": K1}, "2026-10")
    old_path, old_res = _record(tmp_path, "old.enc", old_ring, encrypt=True, seconds=0.5)
    new_ring = Keyring({"2026-10": K1, "2026-11": K2}, "2026-11")
    new_path, new_res = _record(tmp_path, "new.enc", new_ring, encrypt=True, seconds=0.5)
    assert old_res.key_id == "2026-10"
    assert new_res.key_id == "2026-11"
    # Both decrypt with the rotated keyring; the old file was never rewritten.
    a = io.BytesIO()
    b = io.BytesIO()
    assert decrypt_file(old_path, a, new_ring).key_id == "2026-10"
    assert decrypt_file(new_path, b, new_ring).key_id == "2026-11"
    assert a.getvalue() == b.getvalue()
    with pytest.raises(UnknownKeyIdError):
        decrypt_file(new_path, io.BytesIO(), old_ring)


def test_keyring_sources(tmp_path: Path) -> None:
    kf = tmp_path / "keys.json"
    kf.write_text(
        json.dumps(
            {
                "active": "b",
                "keys": {"a": base64.b64encode(K1).decode(), "b": base64.b64encode(K2).decode()},
            }
        )
    )
    kf.chmod(0o600)
    ring = Keyring.from_file(kf)
    assert ring.active() == ("b", K2)
    assert ring.key("a") == K1
    env = {
        "ACD_RECORDING_KEYS": f"a={base64.b64encode(K1).decode()},b={base64.b64encode(K2).decode()}"
    }
    assert Keyring.from_env(env).active() == ("b", K2)  # the last listed is active
    assert Keyring.from_env({**env, "ACD_RECORDING_ACTIVE_KEY_ID": "a"}).active() == ("a", K1)
    with pytest.raises(KeyringError):
        Keyring.from_env({})
    with pytest.raises(KeyringError):
        Keyring.from_env({"ACD_RECORDING_KEYS": "a=" + base64.b64encode(b"short").decode()})
    with pytest.raises(KeyringError):
        Keyring.from_env({"ACD_RECORDING_KEYS": "a=not*base64"})
    with pytest.raises(KeyringError):
        Keyring({"a": K1}, "missing")
    with pytest.raises(KeyringError):
        Keyring({"bad id!": K1})
    with pytest.raises(KeyringError):
        Keyring({"a": K1}).active()  # no active key: cannot encrypt


def test_encrypt_without_keyring_refused_up_front(tmp_path: Path) -> None:
    w = RecordingWriter(DECODERS, FAST)
    with pytest.raises(KeyringError):
        w.start_recording("x", tmp_path / "x.enc", encrypt=True)


def test_not_encrypted_and_corrupt_framing(tmp_path: Path) -> None:
    plain, _ = _record(tmp_path, "p.wav", None, encrypt=False, seconds=0.1)
    with pytest.raises(NotEncryptedRecordingError):
        decrypt_file(plain, io.BytesIO(), Keyring({"k1": K1}))
    enc = tmp_path / "bad.enc"
    header = MAGIC + bytes((1, 0, 2)) + b"k1" + b"\x00" * 16
    enc.write_bytes(header + struct.pack(">IB", 0xFFFFFFF0, 0) + b"\x00" * 64)
    with pytest.raises(CorruptRecordingError):
        decrypt_file(enc, io.BytesIO(), Keyring({"k1": K1}))


def test_encrypted_flac(tmp_path: Path) -> None:
    import av

    keyring = Keyring({"k1": K1}, "k1")
    path = tmp_path / "f.flac.enc"
    with RecordingWriter(DECODERS, FAST, keyring=keyring) as w:
        rec = w.start_recording("f", path, fmt=RecordingFormat.FLAC, encrypt=True)
        for pos, f in frames(tone(440, RATE_HZ)):
            rec.feed(0, pos, f, "L16")
        wait_for(lambda: rec.live_path.exists() and rec.live_path.stat().st_size > 100)
        with rec.live_path.open("rb") as live:
            # The live file a crash would leave is an encrypted WAV, whatever the final format.
            assert scan(live).content_format is ContentFormat.WAV
        rec.close(RATE_HZ)
        res = rec.result.result(timeout=10)
    assert res.encrypted
    assert res.path == path
    assert b"fLaC" not in path.read_bytes()
    assert not (tmp_path / "f.flac.enc.live.wav").exists()
    out = tmp_path / "f.flac"
    decrypt_file(path, out, keyring)
    with av.open(str(out)) as c:
        pcm = np.concatenate([fr.to_ndarray().reshape(-1, 2) for fr in c.decode(audio=0)])
    assert np.array_equal(pcm[:, 0], np.frombuffer(tone(440, RATE_HZ), "<i2"))


def test_cli_decrypt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    keyring = Keyring({"k1": K1}, "k1")
    enc_path, _ = _record(tmp_path, "cli.enc", keyring, encrypt=True, seconds=0.5)
    kf = tmp_path / "keys.json"
    kf.write_text(json.dumps({"active": "k1", "keys": {"k1": base64.b64encode(K1).decode()}}))
    kf.chmod(0o600)
    out = tmp_path / "cli.wav"
    assert (
        recordings_cli_main(["decrypt", str(enc_path), "-o", str(out), "--key-file", str(kf)]) == 0
    )
    _, _, data = read_wav(out)
    assert len(data) == RATE_HZ // 2
    monkeypatch.setenv("ACD_RECORDING_KEYS", "k1=" + base64.b64encode(K2).decode())
    assert recordings_cli_main(["decrypt", str(enc_path), "-o", str(tmp_path / "y.wav")]) == 1
    assert "ChunkAuthenticationError" in capsys.readouterr().err
    os.truncate(enc_path, enc_path.stat().st_size - 5)
    monkeypatch.setenv("ACD_RECORDING_KEYS", "k1=" + base64.b64encode(K1).decode())
    assert recordings_cli_main(["decrypt", str(enc_path), "-o", str(tmp_path / "z.wav")]) == 0
    assert "final chunk" in capsys.readouterr().err


def test_recover_file_cuts_torn_chunk(tmp_path: Path) -> None:
    from recordings import recover_file

    keyring = Keyring({"k1": K1}, "k1")
    enc_path, _ = _record(tmp_path, "rc.enc", keyring, encrypt=True, seconds=1.0)
    full = enc_path.read_bytes()
    with enc_path.open("rb") as f:
        info = scan(f)
    last = info.chunks[-2]
    enc_path.write_bytes(full[: last.offset + last.length] + full[last.offset + last.length : -9])
    res = recover_file(enc_path)
    assert res.ok
    assert res.repaired
    assert res.torn_bytes > 0
    assert enc_path.stat().st_size == last.offset + last.length
    out = io.BytesIO()
    dec = decrypt_file(enc_path, out, keyring)
    assert dec.truncated
    assert res.duration_s == (len(out.getvalue()) - 44) / 32000
    again = recover_file(enc_path)
    assert not again.repaired
