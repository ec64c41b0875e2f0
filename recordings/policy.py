"""Per-queue recording policy: always, never, a deterministic sample, or on demand.

How this works: the engine asks ``should_record(policy, call_id)`` when a call is bridged. Sampling
hashes ``seed + call_id`` with SHA-256 and compares the first 8 bytes, read as an integer, against the
percentage, so the decision for one call is stable across restarts, replicas and re-evaluations (a
transfer re-asking does not flip it) and independent of arrival order. ``ON_DEMAND`` records nothing
at bridge time; the engine starts a recording when an authorized user asks (the file then starts at
that moment, position 0 being the request).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from recordings.outputs import RecordingFormat

_HASH_SPACE = 1 << 64


class RecordingMode(enum.StrEnum):
    ALWAYS = "always"
    NEVER = "never"
    SAMPLED = "sampled"
    ON_DEMAND = "on_demand"


@dataclass(frozen=True, slots=True)
class RecordingPolicy:
    """One queue's recording settings (the engine decodes them from TOML)."""

    mode: RecordingMode = RecordingMode.ALWAYS
    sample_percent: float = 100.0  # used by SAMPLED only
    encrypt: bool = False
    format: RecordingFormat = RecordingFormat.WAV
    sample_seed: str = ""  # change it to draw a different sample with the same percentage

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_percent <= 100.0:
            raise ValueError(f"sample_percent must be within 0..100, got {self.sample_percent}")


def sample_fraction(seed: str, call_id: str) -> float:
    """A stable number in [0, 1) for this call: uniform over call ids for a fixed seed."""
    digest = hashlib.sha256(f"{seed}\x00{call_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _HASH_SPACE


def should_record(policy: RecordingPolicy, call_id: str) -> bool:
    """Record this call when it is bridged? (ON_DEMAND: not until someone asks.)"""
    if policy.mode is RecordingMode.ALWAYS:
        return True
    if policy.mode is RecordingMode.SAMPLED:
        return sample_fraction(policy.sample_seed, call_id) * 100.0 < policy.sample_percent
    return False
