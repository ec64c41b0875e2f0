"""Recording policies: always / never / deterministic sample / on demand."""

from __future__ import annotations

import pytest

from recordings import RecordingMode, RecordingPolicy, should_record


def test_fixed_modes() -> None:
    assert should_record(RecordingPolicy(RecordingMode.ALWAYS), "c1")
    assert not should_record(RecordingPolicy(RecordingMode.NEVER), "c1")
    assert not should_record(RecordingPolicy(RecordingMode.ON_DEMAND), "c1")


def test_sampled_is_deterministic_and_near_the_percentage() -> None:
    policy = RecordingPolicy(RecordingMode.SAMPLED, sample_percent=20.0, sample_seed="s1")
    ids = [f"call-{i}@pbx" for i in range(5000)]
    first = [should_record(policy, c) for c in ids]
    assert first == [should_record(policy, c) for c in ids]  # same call, same answer
    share = sum(first) / len(first)
    assert 0.18 < share < 0.22  # binomial sd is 0.57 %: this is > 3 sd either side
    other_seed = RecordingPolicy(RecordingMode.SAMPLED, sample_percent=20.0, sample_seed="s2")
    assert [should_record(other_seed, c) for c in ids] != first
    # A larger percentage records a superset of the calls (monotone in the percentage).
    wider = RecordingPolicy(RecordingMode.SAMPLED, sample_percent=50.0, sample_seed="s1")
    assert all(should_record(wider, c) for c, picked in zip(ids, first, strict=True) if picked)


def test_sampled_extremes_and_validation() -> None:
    none = RecordingPolicy(RecordingMode.SAMPLED, sample_percent=0.0)
    every = RecordingPolicy(RecordingMode.SAMPLED, sample_percent=100.0)
    ids = [str(i) for i in range(500)]
    assert not any(should_record(none, c) for c in ids)
    assert all(should_record(every, c) for c in ids)
    with pytest.raises(ValueError, match="sample_percent"):
        RecordingPolicy(RecordingMode.SAMPLED, sample_percent=101)
