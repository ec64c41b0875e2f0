"""SDES: SRTP keys in SDP (RFC 4568), the ``a=crypto`` attribute with inline keys, sans-I/O.

How this works: `parse_crypto` reads one ``a=crypto`` value (RFC 4568 9.1 grammar) into a
`CryptoAttribute`, or returns ``None`` for one we cannot use (an unknown suite, a key with an MKI,
a key derivation rate, session parameters): RFC 4568 6 says an answerer ignores such lines and
picks among the rest. `new_crypto` makes our own key from `secrets` (never logged: a
`CryptoAttribute`'s ``repr`` hides the key). `SrtpKeys` is what one leg agreed: the key we send
with (ours, in our SDP) and the key the peer sends with (theirs), as `sip.rtp.srtp` contexts.

    crypto-attribute = "crypto:" tag 1*WSP crypto-suite 1*WSP key-params *(1*WSP session-param)
    key-params       = key-method ":" key-info        ; "inline:" key||salt base64 ["|" lifetime] ["|" MKI:len]
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from sip.rtp.srtp import MASTER_KEY_LEN, MASTER_SALT_LEN, SrtpContext, SrtpProfile

__all__ = ["CryptoAttribute", "SrtpKeys", "find_crypto", "new_crypto", "parse_crypto"]

# RFC 4568 9.1: tag = 1*9DIGIT; crypto-suite = 1*(ALPHA / DIGIT / "_")
_CRYPTO = re.compile(r"^(\d{1,9})[ \t]+([A-Za-z0-9_]+)[ \t]+(\S+)(?:[ \t]+(.*))?$")
# RFC 4568 6.1: lifetime is a decimal or 2^n; a MKI is "value:length"
_LIFETIME = re.compile(r"^(?:\d+|2\^\d+)$")


@dataclass(frozen=True, slots=True)
class CryptoAttribute:
    """One usable ``a=crypto`` line: a tag, a suite and one inline master key and salt."""

    tag: int
    suite: SrtpProfile
    key: bytes = field(repr=False)
    salt: bytes = field(repr=False)

    def serialize(self) -> str:
        """The attribute value (after ``a=crypto:``)."""
        inline = base64.b64encode(self.key + self.salt).decode("ascii")
        return f"{self.tag} {self.suite.value} inline:{inline}"

    def context(self) -> SrtpContext:
        return SrtpContext(self.suite, self.key, self.salt)


def new_crypto(
    tag: int = 1, suite: SrtpProfile = SrtpProfile.AES_CM_128_HMAC_SHA1_80
) -> CryptoAttribute:
    """A fresh master key and salt from the OS's CSPRNG (RFC 4568 6.1: MUST be random)."""
    return CryptoAttribute(
        tag, suite, secrets.token_bytes(MASTER_KEY_LEN), secrets.token_bytes(MASTER_SALT_LEN)
    )


def parse_crypto(value: str) -> CryptoAttribute | None:
    """One ``a=crypto`` value, or None when it is malformed or not one we can use."""
    match = _CRYPTO.match(value.strip())
    if match is None or match.group(4):  # session parameters (KDR, UNENCRYPTED_SRTP, ...)
        return None
    try:
        suite = SrtpProfile(match.group(2).upper())
    except ValueError:
        return None
    key_params = match.group(3)
    if ";" in key_params or not key_params.lower().startswith("inline:"):
        return None  # several keys (each needs an MKI) or a key method other than inline
    parts = key_params[len("inline:") :].split("|")
    if len(parts) > 2 or (len(parts) == 2 and not _LIFETIME.match(parts[1])):
        return None  # an MKI: we do not put MKIs in packets
    try:
        raw = base64.b64decode(parts[0], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != MASTER_KEY_LEN + MASTER_SALT_LEN:
        return None
    return CryptoAttribute(int(match.group(1)), suite, raw[:MASTER_KEY_LEN], raw[MASTER_KEY_LEN:])


def find_crypto(values: Iterable[str]) -> list[CryptoAttribute]:
    """The usable ones among a media section's ``a=crypto`` values, in the offerer's order."""
    return [c for c in map(parse_crypto, values) if c is not None]


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    """What one leg agreed: ``local`` encrypts what we send, ``remote`` what the peer sends."""

    local: CryptoAttribute
    remote: CryptoAttribute

    def contexts(self) -> tuple[SrtpContext, SrtpContext]:
        """(protect context for our packets, unprotect context for theirs)."""
        return self.local.context(), self.remote.context()
