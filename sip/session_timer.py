"""RFC 4028 session timers: the Session-Expires and Min-SE headers and the UAS negotiation.

Pure functions over a received request; `sip.endpoint` applies the outcome (422, the headers of
the 2xx, and the timers: refresh at half the interval when we are the refresher, BYE shortly before
expiry when the peer is and no refresh came). Modes follow Asterisk's ``session-timers``:
``accept`` uses timers only when the request asks for them (the default), ``refuse`` never (a
``Require: timer`` then gets 420 from the UAS checks, since "timer" is not in Supported).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sip.errors import ParseError
from sip.headers import split_list
from sip.message import Request

#: RFC 4028 4/5: no session interval may be shorter than 90 s.
MIN_SE_FLOOR_S: Final = 90
REFRESHERS: Final = ("uac", "uas")
MODES: Final = ("accept", "refuse")


@dataclass(frozen=True, slots=True)
class SessionExpires:
    """``Session-Expires: delta-seconds [;refresher=uac|uas]``."""

    delta_s: int
    refresher: str | None = None

    @classmethod
    def parse(cls, value: str) -> SessionExpires:
        head, *params = (p.strip() for p in value.split(";"))
        if not head.isdigit() or len(head) > 10:
            raise ParseError(f"bad Session-Expires {value!r}", status_hint=400)
        refresher = None
        for param in params:
            name, _, arg = param.partition("=")
            if name.strip().lower() == "refresher":
                refresher = arg.strip().lower()
                if refresher not in REFRESHERS:
                    raise ParseError(f"bad refresher in Session-Expires {value!r}", status_hint=400)
        return cls(int(head), refresher)

    def __str__(self) -> str:
        return f"{self.delta_s};refresher={self.refresher}" if self.refresher else str(self.delta_s)


def parse_min_se(value: str) -> int:
    """``Min-SE: delta-seconds`` (generic params ignored)."""
    head = value.split(";")[0].strip()
    if not head.isdigit() or len(head) > 10:
        raise ParseError(f"bad Min-SE {value!r}", status_hint=400)
    return int(head)


@dataclass(frozen=True, slots=True)
class SessionTimerPolicy:
    """What we accept as a UAS. ``min_se_s`` is our floor (RFC 4028 requires >= 90)."""

    mode: str = "accept"
    session_expires_s: int = 1800
    min_se_s: int = MIN_SE_FLOOR_S

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"session timer mode must be one of {MODES}")
        if self.min_se_s < MIN_SE_FLOOR_S or self.session_expires_s < self.min_se_s:
            raise ValueError("need 90 <= min_se_s <= session_expires_s (RFC 4028 4)")


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The session timer of a 2xx we send: its interval and who refreshes."""

    interval_s: int
    refresher: str  # "uac" or "uas": the side of the request being answered
    peer_supports: bool  # the request said Supported: timer

    @property
    def we_refresh(self) -> bool:
        return self.refresher == "uas"

    def response_headers(self) -> list[tuple[str, str]]:
        headers = [("Session-Expires", f"{self.interval_s};refresher={self.refresher}")]
        if self.peer_supports:  # 9: a UAC that supports timers is told the timer is in force
            headers.append(("Require", "timer"))
        return headers


def _supports_timer(req: Request) -> bool:
    return any(tag.lower() == "timer" for tag in req.supported)


def session_expires_of(req: Request) -> SessionExpires | None:
    """The request's Session-Expires (None if absent); ParseError (400) when malformed."""
    value = req.headers.get("session-expires")
    return None if value is None else SessionExpires.parse(value)


def too_small(req: Request, policy: SessionTimerPolicy) -> int | None:
    """Our Min-SE to answer 422 with (6, 9), or None when the request is acceptable.

    Only a UAC that supports timers can retry with a larger interval; for one that does not, the
    interval is raised to our floor in `negotiate` instead (we refresh then)."""
    if policy.mode == "refuse":
        return None
    se = session_expires_of(req)
    if se is None or se.delta_s >= policy.min_se_s or not _supports_timer(req):
        return None
    return policy.min_se_s


def negotiate(req: Request, policy: SessionTimerPolicy) -> Negotiated | None:
    """The session timer of our 2xx to `req` (INVITE or UPDATE), or None for no timer.

    With a Session-Expires in the request the interval is the smaller of it and ours, never
    below the request's Min-SE nor our floor; the refresher is the one the request named, else
    the UAC when it supports timers, else us (9)."""
    if policy.mode == "refuse":
        return None
    se = session_expires_of(req)
    if se is None:
        return None
    their_min = MIN_SE_FLOOR_S
    min_se = req.headers.get("min-se")
    if min_se is not None:
        their_min = max(their_min, parse_min_se(min_se))
    interval = max(min(se.delta_s, policy.session_expires_s), their_min, policy.min_se_s)
    supports = _supports_timer(req)
    refresher = se.refresher or ("uac" if supports else "uas")
    if refresher == "uac" and not supports:
        refresher = "uas"  # a UAC that cannot refresh by this extension is not made to
    return Negotiated(interval, refresher, supports)


def parse_allow(values: list[str]) -> frozenset[str]:
    """Methods of the peer's Allow header lines (upper case)."""
    return frozenset(m.strip().upper() for v in values for m in split_list(v) if m.strip())
