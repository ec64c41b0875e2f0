"""Call recordings on disk: crash-safe writers, encryption at rest, retention and index.

Knows PCM frames and metadata, nothing of SIP or queues. The engine wires it together:

- ``RecordingWriter(decoders=...)`` owns the writer threads; ``start_recording()`` returns a
  ``Recording`` that implements the media tap's ``RecordingSink`` (``feed``/``gap``/``close``) and
  resolves ``Recording.result`` with a ``RecordingResult`` for the index.
- ``recover_file()`` (``repair()`` for plain WAV) for files left by a crash, ``Keyring``/``decrypt_file``/``open_recording_stream`` for
  encryption at rest and downloads, ``purge()`` for retention, ``should_record()`` for policies,
  ``recordings_cli_main()`` for ``acd recordings ...``.
"""

from recordings.cli import recordings_cli_main
from recordings.crypto import (
    ChunkAuthenticationError,
    ContentFormat,
    CorruptRecordingError,
    DecryptedStream,
    DecryptResult,
    Keyring,
    KeyringError,
    NotEncryptedRecordingError,
    RecordingCryptoError,
    UnknownKeyIdError,
    decrypt_file,
    is_encrypted,
    open_recording_stream,
)
from recordings.on_demand import OnDemandRecording
from recordings.outputs import FsyncPolicy, RecordingFormat
from recordings.policy import RecordingMode, RecordingPolicy, should_record
from recordings.recovery import recover_file
from recordings.retention import IndexRow, PurgeReport, RetentionPolicy, purge, select_for_purge
from recordings.wav import RepairResult, repair
from recordings.writer import (
    Decoder,
    Recording,
    RecordingResult,
    RecordingWriter,
    WriterConfig,
    WriterStats,
)

__all__ = [
    "ChunkAuthenticationError",
    "ContentFormat",
    "CorruptRecordingError",
    "Decoder",
    "DecryptResult",
    "DecryptedStream",
    "FsyncPolicy",
    "IndexRow",
    "Keyring",
    "KeyringError",
    "NotEncryptedRecordingError",
    "OnDemandRecording",
    "PurgeReport",
    "Recording",
    "RecordingCryptoError",
    "RecordingFormat",
    "RecordingMode",
    "RecordingPolicy",
    "RecordingResult",
    "RecordingWriter",
    "RepairResult",
    "RetentionPolicy",
    "UnknownKeyIdError",
    "WriterConfig",
    "WriterStats",
    "decrypt_file",
    "is_encrypted",
    "open_recording_stream",
    "purge",
    "recordings_cli_main",
    "recover_file",
    "repair",
    "select_for_purge",
    "should_record",
]
