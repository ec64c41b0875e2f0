"""Customer identity across channels: one customer's calls and tasks, found by what identifies them.

How this works: a customer is known by a phone number (a call's caller, a task's
``customer.phone``), an e-mail address (``customer.email``) or the CRM's id (``customer.id``).
A task's row keeps those three in indexed columns (``customer_phone``, ``customer_email``,
``customer_ref``, migration 0016), written with the task from ``customer_keys``: the phone with
only its digits and a leading ``+`` (``+1 (555) 010-2000`` and ``+15550102000`` are one
customer), the e-mail lower-cased. A call's ``caller`` is matched with and without the ``+``,
since trunks send E.164 either way. The keys of the tasks found join the search once, so the
identities a customer gave on one channel link their contacts on the others. ``contacts`` merges
both tables newest first: the agent's
screen-pop (engine.calls.softphones) and ``GET /api/v1/customers/contacts`` read it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from engine.storage.schema import calls, tasks
from engine.storage.store import Store

MAX_CONTACTS = 200
_NOT_DIALLABLE = re.compile(r"[^0-9]")


def normalize_phone(number: str | None) -> str | None:
    """Digits with a leading ``+`` if it had one; None when no digit is left."""
    if not number:
        return None
    number = number.strip()
    for scheme in ("tel:", "sip:", "sips:"):
        if number.lower().startswith(scheme):
            number = number[len(scheme) :].split("@", 1)[0]
    digits = _NOT_DIALLABLE.sub("", number)
    if not digits:
        return None
    return f"+{digits}" if number.startswith("+") else digits


def normalize_email(address: str | None) -> str | None:
    address = (address or "").strip().lower()
    return address or None


def customer_keys(customer: Mapping[str, Any] | None) -> dict[str, str | None]:
    """The indexed columns of a task row from its ``customer`` object."""
    customer = customer or {}
    ref = customer.get("id")
    return {
        "customer_phone": normalize_phone(customer.get("phone")),
        "customer_email": normalize_email(customer.get("email")),
        "customer_ref": str(ref)[:255] if ref else None,
    }


def _phone_forms(phones: set[str]) -> list[str]:
    bare = {p.lstrip("+") for p in phones}
    return sorted(bare | {f"+{b}" for b in bare})


async def contacts(
    store: Store,
    *,
    phone: str | None = None,
    email: str | None = None,
    ref: str | None = None,
    limit: int = 20,
    finished_calls_only: bool = False,
) -> list[dict[str, Any]]:
    """The customer's calls and tasks on every channel, newest first, at most ``limit``: each
    ``{kind: "call"|"task", id, channel, queue, agent_id, arrived_at, ended_at, state,
    disposition, talk_s, subject}``. At least one key must be given (else: an empty list).
    The keys of the tasks found join the search once (a chat known by its e-mail address whose
    ticket also gave the phone number finds that number's calls too).
    ``finished_calls_only``: leave out live calls (the screen-pop of a call is not its own)."""
    phones = {p for p in [normalize_phone(phone)] if p}
    emails = {e for e in [normalize_email(email)] if e}
    refs = {ref} if ref else set()
    found: dict[str, dict[str, Any]] = {}
    async with store.engine.connect() as conn:
        for _round in range(2):
            matches: list[sa.ColumnElement[bool]] = []
            if phones:
                matches.append(tasks.c.customer_phone.in_(_phone_forms(phones)))
            if emails:
                matches.append(tasks.c.customer_email.in_(sorted(emails)))
            if refs:
                matches.append(tasks.c.customer_ref.in_(sorted(refs)))
            if not matches:
                break
            query = (
                sa.select(
                    tasks.c.id, tasks.c.channel, tasks.c.queue, tasks.c.agent_id,
                    tasks.c.arrived_at, tasks.c.ended_at, tasks.c.state, tasks.c.disposition,
                    tasks.c.handle_s, tasks.c.subject, tasks.c.customer_phone,
                    tasks.c.customer_email, tasks.c.customer_ref,
                )
                .where(sa.or_(*matches))
                .order_by(tasks.c.arrived_at.desc())
                .limit(limit)
            )  # fmt: skip
            known = (len(phones), len(emails), len(refs))
            for row in (await conn.execute(query)).mappings():
                task = dict(row)
                for key, into in (
                    ("customer_phone", phones), ("customer_email", emails), ("customer_ref", refs),
                ):  # fmt: skip
                    if value := task.pop(key):
                        into.add(value)
                task["talk_s"] = task.pop("handle_s")
                found[f"task:{task['id']}"] = {**task, "kind": "task"}
            if known == (len(phones), len(emails), len(refs)):
                break
        if phones:
            call_query = (
                sa.select(
                    calls.c.id, calls.c.queue, calls.c.agent_id, calls.c.arrived_at,
                    calls.c.ended_at, calls.c.disposition, calls.c.talk_s,
                )
                .where(calls.c.caller.in_(_phone_forms(phones)))
                .order_by(calls.c.arrived_at.desc())
                .limit(limit)
            )  # fmt: skip
            if finished_calls_only:
                call_query = call_query.where(calls.c.ended_at.is_not(None))
            for row in (await conn.execute(call_query)).mappings():
                state = "ended" if row["ended_at"] is not None else "live"
                found[f"call:{row['id']}"] = {**row, "kind": "call", "channel": "voice",
                                              "state": state, "subject": None}  # fmt: skip
    rows = sorted(found.values(), key=lambda r: r["arrived_at"], reverse=True)
    return rows[:limit]
