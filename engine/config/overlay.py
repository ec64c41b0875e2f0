"""Objects made through the admin API, applied on top of the config file.

How this works: an ``AdminObject`` is one stored agent or queue (``kind``, ``name``, ``body`` in the
shape of its TOML section, or ``deleted``). ``apply_overlay(raw, objects)`` takes the file's TOML
table (as :mod:`tomllib` gives it) and replaces the same-named entry of ``agents`` (by ``id``) or
``queues`` (by ``name``), appends a new one, or drops a deleted one. ``load.parse_config`` does
this before decoding, so a stored body goes through the very same decoding and ``validate``
checks as the file (and a bad one fails with the same named key). ``effective_toml`` gives the
merged table for ``acd export config``.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from engine.config.errors import ConfigError

# kind -> (the TOML array it lives in, the key naming an entry)
KINDS: Final[Mapping[str, tuple[str, str]]] = {
    "agent": ("agents", "id"),
    "queue": ("queues", "name"),
}


@dataclass(frozen=True, slots=True)
class AdminObject:
    """One stored object: an agent (by id) or a queue (by name); body None when deleted."""

    kind: str
    name: str
    body: Mapping[str, Any] | None
    deleted: bool = False


def entry_index(raw: Mapping[str, Any], kind: str, name: str) -> int | None:
    """Where the entry ``name`` of ``kind`` is in the raw table's array (None: not there)."""
    table, key = KINDS[kind]
    entries = raw.get(table)
    if not isinstance(entries, list):
        return None
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and entry.get(key) == name:
            return i
    return None


def apply_overlay(raw: dict[str, Any], objects: Iterable[AdminObject]) -> dict[str, Any]:
    """Apply the stored objects to the raw TOML table, in place (and return it)."""
    for obj in objects:
        table, key = KINDS[obj.kind]
        entries = raw.setdefault(table, [])
        if not isinstance(entries, list):
            continue  # the file's own error: decoding reports it at its key
        index = entry_index(raw, obj.kind, obj.name)
        if obj.deleted or obj.body is None:
            if index is not None:
                del entries[index]
            continue
        body = {**copy.deepcopy(dict(obj.body)), key: obj.name}
        if index is None:
            entries.append(body)
        else:
            entries[index] = body
    return raw


def effective_toml(text: str, file: str, objects: Iterable[AdminObject]) -> dict[str, Any]:
    """The file's TOML table with the objects applied (for the config export)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"not valid TOML: {exc}") from None
    return apply_overlay(raw, objects)
