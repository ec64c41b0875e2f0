"""Registrar binding store (RFC 3261 10.3), sans-I/O.

How this works
--------------
The message layer hands ``Registrar.register`` plain values taken from an authenticated
REGISTER (address-of-record, the Contact entries with their ``expires``/``q`` params, the
Expires header, Call-ID, CSeq number) plus ``now``. The registrar applies RFC 3261 10.3 steps
6-8 to a copy of that AOR's bindings and commits the copy only if every contact succeeded
(10.3 step 7: all or nothing), then returns a ``RegisterResult``: the status code to answer
and, for a 200, the bindings to list in its Contact header with their remaining seconds.

Expiry is driven from outside: ``next_expiry()`` is the next deadline to arm a timer for and
``expire(now)`` removes and returns what ran out, so the engine can mark an agent unavailable.
Every change also comes back as ``added`` / ``refreshed`` / ``removed`` in the result.

Contact URIs are compared through ``contact_key`` (default: the string as given). The SIP URI
comparison of RFC 3261 19.1.4 belongs to the message layer; pass its normaliser in.
"""

from __future__ import annotations

import enum
import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_EXPIRES_S",
    "DEFAULT_MAX_CONTACTS_PER_AOR",
    "DEFAULT_MAX_EXPIRES_S",
    "DEFAULT_MIN_EXPIRES_S",
    "WILDCARD",
    "Binding",
    "ContactLimitPolicy",
    "ContactRequest",
    "ListedContact",
    "RegisterResult",
    "Registrar",
]

WILDCARD = "*"
# RFC 3261 10.2.1.1: without any expiry the registrar picks one; 3600 s is the RFC's example.
DEFAULT_EXPIRES_S = 3600
# Asterisk (minimum_expiration) and Kamailio (min_expires) both default to 60 s: shorter
# refreshes cost more than they buy in failure detection.
DEFAULT_MIN_EXPIRES_S = 60
# Asterisk's maximum_expiration is 7200 s; we keep one hour so a dead phone is noticed (and its
# agent made unavailable) within that time at worst.
DEFAULT_MAX_EXPIRES_S = 3600
# One agent rarely has more than a desk phone, a softphone and a mobile app; ten leaves room
# and keeps a misbehaving client from growing the table without bound.
DEFAULT_MAX_CONTACTS_PER_AOR = 10
# Rebuild the timer heap when stale entries outnumber live ones by this factor.
_HEAP_SLACK_FACTOR = 2


class ContactLimitPolicy(enum.Enum):
    """What a REGISTER that would exceed ``max_contacts_per_aor`` does."""

    REJECT = "reject"  # 403: the new contact is refused
    # Drop the least recently refreshed bindings: a rebooted phone (new Call-ID, new port)
    # gets in at once instead of waiting an hour for its old binding to expire.
    REPLACE_OLDEST = "replace_oldest"


@dataclass(frozen=True, slots=True)
class ContactRequest:
    """One Contact header entry of a REGISTER: the URI (or ``*``) and its params."""

    uri: str
    expires: int | None = None
    q: float | None = None


@dataclass(frozen=True, slots=True)
class Binding:
    """A stored binding of ``contact`` to ``aor`` (RFC 3261 10.3 step 8)."""

    aor: str
    contact: str
    expires_at: float
    q: float | None
    call_id: str
    cseq: int
    updated_at: float

    def expires_in_s(self, now: float) -> int:
        # Rounded up so a live binding never advertises 0 (which means "removed").
        return max(0, math.ceil(self.expires_at - now - 1e-6))


@dataclass(frozen=True, slots=True)
class ListedContact:
    """An entry for the 200 OK Contact header: ``<uri>;expires=N[;q=Q]``."""

    uri: str
    expires_s: int
    q: float | None


@dataclass(frozen=True, slots=True)
class RegisterResult:
    status_code: int
    reason: str
    contacts: tuple[ListedContact, ...] = ()
    min_expires_s: int | None = None  # the Min-Expires header of a 423
    added: tuple[Binding, ...] = ()
    refreshed: tuple[Binding, ...] = ()
    removed: tuple[Binding, ...] = ()  # by this request, including expired ones swept on the way

    @property
    def ok(self) -> bool:
        return self.status_code == 200


def _fail(code: int, reason: str, **kw: int) -> RegisterResult:
    return RegisterResult(code, reason, min_expires_s=kw.get("min_expires_s"))


def _sort_key(b: Binding) -> tuple[float, float]:
    # Highest q first (absent q ranks as 1.0, RFC 3261 16.6 treats it as top), then newest.
    return (-(b.q if b.q is not None else 1.0), -b.updated_at)


@dataclass(slots=True)
class Registrar:
    """Bindings per address-of-record with RFC 3261 10.3 rules and injected time."""

    min_expires_s: int = DEFAULT_MIN_EXPIRES_S
    max_expires_s: int = DEFAULT_MAX_EXPIRES_S
    default_expires_s: int = DEFAULT_EXPIRES_S
    max_contacts_per_aor: int = DEFAULT_MAX_CONTACTS_PER_AOR
    contact_limit_policy: ContactLimitPolicy = ContactLimitPolicy.REPLACE_OLDEST
    contact_key: Callable[[str], str] = str.strip
    _aors: dict[str, dict[str, Binding]] = field(default_factory=dict, init=False)
    _heap: list[tuple[float, int, str, str]] = field(default_factory=list, init=False)
    _seq: int = field(default=0, init=False)
    _count: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.min_expires_s <= self.default_expires_s <= self.max_expires_s:
            raise ValueError("need 0 < min_expires_s <= default_expires_s <= max_expires_s")
        if self.max_contacts_per_aor < 1:
            raise ValueError("max_contacts_per_aor must be positive")

    # -- queries -----------------------------------------------------------------------------

    def bindings(self, aor: str, now: float) -> tuple[Binding, ...]:
        """Live bindings of ``aor``, best first (q, then most recently refreshed)."""
        current = self._aors.get(aor, {})
        return tuple(sorted((b for b in current.values() if b.expires_at > now), key=_sort_key))

    def __len__(self) -> int:
        return self._count

    def next_expiry(self) -> float | None:
        """When the earliest binding runs out; None when there are none."""
        while self._heap:
            expires_at, _, aor, key = self._heap[0]
            b = self._aors.get(aor, {}).get(key)
            if b is not None and b.expires_at == expires_at:
                return expires_at
            heapq.heappop(self._heap)
        return None

    def expire(self, now: float) -> list[Binding]:
        """Remove and return every binding whose expiry is at or before ``now``."""
        removed: list[Binding] = []
        while self._heap and self._heap[0][0] <= now:
            expires_at, _, aor, key = heapq.heappop(self._heap)
            current = self._aors.get(aor)
            b = current.get(key) if current is not None else None
            if current is None or b is None or b.expires_at != expires_at:
                continue
            del current[key]
            self._count -= 1
            if not current:
                del self._aors[aor]
            removed.append(b)
        return removed

    # -- REGISTER processing -----------------------------------------------------------------

    def register(
        self,
        aor: str,
        contacts: Sequence[ContactRequest],
        *,
        call_id: str,
        cseq: int,
        expires: int | None,
        now: float,
    ) -> RegisterResult:
        """Apply one REGISTER (RFC 3261 10.3 steps 6-8). ``expires`` is the Expires header.

        No contacts means a query: 200 with the current bindings.
        """
        if expires is not None and expires < 0:
            return _fail(400, "Invalid Expires")
        swept = self._sweep_aor(aor, now)
        current = self._aors.get(aor, {})

        # Step 6: "*" only alone and only with Expires: 0.
        if any(c.uri.strip() == WILDCARD for c in contacts):
            if len(contacts) != 1 or expires != 0 or contacts[0].expires not in (None, 0):
                return _fail(400, "Invalid Wildcard Contact")
            for b in current.values():
                if b.call_id == call_id and cseq <= b.cseq:
                    return _fail(500, "Out Of Order CSeq")
            dropped = tuple(current.values())
            self._commit(aor, {})
            return self._ok(aor, now, removed=swept + dropped)

        # Step 7: every contact on a copy; commit only if all succeed.
        updated = dict(current)
        added: dict[str, Binding] = {}
        refreshed: dict[str, Binding] = {}
        removed: dict[str, Binding] = {}
        for c in contacts:
            key = self.contact_key(c.uri)
            if not key:
                return _fail(400, "Invalid Contact")
            if c.q is not None and not (math.isfinite(c.q) and 0.0 <= c.q <= 1.0):
                return _fail(400, "Invalid q Value")
            requested = c.expires if c.expires is not None else expires
            if requested is None:
                requested = self.default_expires_s
            if requested < 0:
                return _fail(400, "Invalid Expires")
            if 0 < requested < self.min_expires_s:
                return _fail(423, "Interval Too Brief", min_expires_s=self.min_expires_s)
            granted = min(requested, self.max_expires_s)
            stored = current.get(key)
            if stored is not None and stored.call_id == call_id and cseq <= stored.cseq:
                # Same Call-ID, CSeq not above the stored one: a late or replayed REGISTER.
                # RFC 3261 10.3 step 7 names no status; 500 says "failed" without blaming
                # the syntax, and the UA's next refresh carries a higher CSeq anyway.
                return _fail(500, "Out Of Order CSeq")
            added.pop(key, None)
            refreshed.pop(key, None)
            if granted == 0:
                if updated.pop(key, None) is not None and key in current:
                    removed[key] = current[key]
                continue
            removed.pop(key, None)
            binding = Binding(
                aor=aor,
                contact=c.uri.strip(),
                expires_at=now + granted,
                q=c.q,
                call_id=call_id,
                cseq=cseq,
                updated_at=now,
            )
            updated[key] = binding
            (refreshed if key in current else added)[key] = binding

        if len(updated) > self.max_contacts_per_aor:
            if self.contact_limit_policy is ContactLimitPolicy.REJECT:
                return _fail(403, "Too Many Contacts")
            # Evict bindings this request did not touch, least recently refreshed first.
            untouched = sorted(
                (k for k in updated if k not in added and k not in refreshed),
                key=lambda k: updated[k].updated_at,
            )
            for k in untouched:
                if len(updated) <= self.max_contacts_per_aor:
                    break
                removed[k] = updated.pop(k)
            if len(updated) > self.max_contacts_per_aor:
                return _fail(403, "Too Many Contacts")

        self._commit(aor, updated)
        return self._ok(
            aor,
            now,
            added=tuple(added.values()),
            refreshed=tuple(refreshed.values()),
            removed=swept + tuple(removed.values()),
        )

    # -- internals ---------------------------------------------------------------------------

    def _ok(
        self,
        aor: str,
        now: float,
        *,
        added: tuple[Binding, ...] = (),
        refreshed: tuple[Binding, ...] = (),
        removed: tuple[Binding, ...] = (),
    ) -> RegisterResult:
        listed = tuple(
            ListedContact(b.contact, b.expires_in_s(now), b.q) for b in self.bindings(aor, now)
        )
        return RegisterResult(
            200, "OK", contacts=listed, added=added, refreshed=refreshed, removed=removed
        )

    def _sweep_aor(self, aor: str, now: float) -> tuple[Binding, ...]:
        current = self._aors.get(aor)
        if not current:
            return ()
        gone = tuple(b for b in current.values() if b.expires_at <= now)
        if gone:
            self._commit(aor, {k: b for k, b in current.items() if b.expires_at > now})
        return gone

    def _commit(self, aor: str, new: dict[str, Binding]) -> None:
        old = self._aors.get(aor, {})
        self._count += len(new) - len(old)
        if new:
            self._aors[aor] = new
        else:
            self._aors.pop(aor, None)
        for key, b in new.items():
            prev = old.get(key)
            if prev is None or prev.expires_at != b.expires_at:
                self._seq += 1
                heapq.heappush(self._heap, (b.expires_at, self._seq, aor, key))
        if len(self._heap) > _HEAP_SLACK_FACTOR * self._count + 64:
            self._rebuild_heap()

    def _rebuild_heap(self) -> None:
        self._heap = []
        for aor, bindings in self._aors.items():
            for key, b in bindings.items():
                self._seq += 1
                self._heap.append((b.expires_at, self._seq, aor, key))
        heapq.heapify(self._heap)
