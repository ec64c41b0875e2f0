"""Queue announcements as prompt playlists: position in queue and expected wait.

Callers hear "You are caller number | 3 | in the queue." and "Your expected wait time is | 4 |
minutes." The numbers are spoken from the shipped digit prompts the way Asterisk's say.c reads
cardinal numbers in English (twenty-one = "20" + "1"; 342 = "3 hundred 40 2"). Waits are rounded up
to whole minutes, and anything under a minute is "less than 1 minute" - the wording callers are used
to from Asterisk's announce-holdtime.
"""

from __future__ import annotations

import math
from pathlib import Path

SHIPPED_PROMPTS = Path(__file__).parents[1] / "prompts"
# Beyond this a spoken number stops helping; Asterisk also caps announce-position (announce-position-limit).
MAX_SPOKEN_NUMBER = 999


def number_prompts(n: int) -> list[str]:
    """Prompt names that speak the cardinal ``n`` (0..999)."""
    if not 0 <= n <= MAX_SPOKEN_NUMBER:
        raise ValueError(f"can speak 0..{MAX_SPOKEN_NUMBER}, not {n}")
    if n <= 20:
        return [f"digit-{n}"]
    names: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        names += [f"digit-{hundreds}", "hundred"]
    if rest == 0:
        return names
    if rest <= 20:
        return [*names, f"digit-{rest}"]
    tens, units = divmod(rest, 10)
    names.append(f"digit-{tens * 10}")
    if units:
        names.append(f"digit-{units}")
    return names


def position_prompts(position: int) -> list[str]:
    """'You are caller number N in the queue.' (position counts from 1)."""
    return ["position", *number_prompts(min(position, MAX_SPOKEN_NUMBER)), "in-queue"]


def expected_wait_prompts(wait_s: float) -> list[str]:
    """'Your expected wait time is N minutes.', rounded up; under a minute is 'less than 1 minute'."""
    if wait_s < 60:
        return ["expected-wait", "less-than", "digit-1", "minute"]
    minutes = min(math.ceil(wait_s / 60), MAX_SPOKEN_NUMBER)
    return ["expected-wait", *number_prompts(minutes), "minute" if minutes == 1 else "minutes"]
