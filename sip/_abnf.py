"""RFC 3261 section 25 grammar as compiled regular expressions.

How this works: each regex sits beside the ABNF it implements (RFC 3261 25.1 unless noted). They
operate on header values that have already been unfolded (RFC 3261 7.3.1: LWS continuation lines are
replaced by a single SP before any of these run), so LWS here is just ``[ \\t]+`` and SWS ``[ \\t]*``.
Everything is compiled once at import. Element regexes are applied with ``match(value, pos)`` and a
list is walked element by element, so commas inside quoted strings or ``<...>`` never split a list.
"""

from __future__ import annotations

import re
from typing import Final

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
TOKEN: Final = r"[A-Za-z0-9\-.!%*_+`'~]+"  # noqa: S105 (grammar, not a secret)
TOKEN_RE: Final = re.compile(TOKEN)

# quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
# qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
# quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
QUOTED_STRING: Final = r'"(?:[^"\\\r\n]|\\[^\r\n])*"'
QUOTED_PAIR_RE: Final = re.compile(r"\\(.)", re.DOTALL)

# host = hostname / IPv4address / IPv6reference
# We accept underscores and a trailing dot in hostnames (seen in the wild) and check IPv6
# references only for their character set; the URI layer never resolves anything.
HOST: Final = r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_.])?"
PORT: Final = r"[0-9]{1,5}"

# gen-value = token / host / quoted-string
# (plus a bare IPv6address, which via-received allows: RFC 3261 20.42)
GEN_VALUE: Final = rf"[0-9A-Fa-f.]*:[0-9A-Fa-f:.]+|{TOKEN}|\[[0-9A-Fa-f:.]+\]|{QUOTED_STRING}"

# generic-param = token [ EQUAL gen-value ]; EQUAL = SWS "=" SWS; SEMI = SWS ";" SWS
PARAMS: Final = rf"(?:[ \t]*;[ \t]*{TOKEN}(?:[ \t]*=[ \t]*(?:{GEN_VALUE}))?)*"
PARAM_RE: Final = re.compile(rf"[ \t]*;[ \t]*({TOKEN})(?:[ \t]*=[ \t]*({GEN_VALUE}))?")

# Request-Line = Method SP Request-URI SP SIP-Version CRLF  (RFC 3261 7.1, 25.1)
# Liberal in one way RFC 4475 3.1.2.9/3.1.2.10 allows: runs of SP and trailing SP. The line is
# re-emitted with single SPs, so the extra SP is never forwarded.
REQUEST_LINE_RE: Final = re.compile(rf"({TOKEN}) +([^ ]+) +([^ ]+) *")
# Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF (RFC 3261 7.2)
STATUS_LINE_RE: Final = re.compile(r"([^ ]+) ([0-9]{3})(?: (.*))?", re.DOTALL)
# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT
SIP_VERSION_RE: Final = re.compile(r"[Ss][Ii][Pp]/[0-9]+\.[0-9]+")

# message-header = field-name HCOLON field-value (RFC 3261 7.3): split with str.partition in
# sip.message; the name is checked against TOKEN_RE unless it is a spelling we know.
# LWS continuation: CRLF followed by SP/HTAB joins the next line (RFC 3261 7.3.1).
FOLD_RE: Final = re.compile(r"[ \t]*\r\n[ \t]+")
# Content-Length for the stream framer, before the full parse (RFC 3261 20.14; compact form "l").
CONTENT_LENGTH_LINE_RE: Final = re.compile(
    rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$",
    re.MULTILINE | re.IGNORECASE,
)

# via-parm = sent-protocol LWS sent-by *( SEMI via-params )   (RFC 3261 20.42, 25.1)
# sent-protocol = protocol-name SLASH protocol-version SLASH transport; SLASH = SWS "/" SWS
VIA_RE: Final = re.compile(
    rf"[ \t]*({TOKEN})[ \t]*/[ \t]*({TOKEN})[ \t]*/[ \t]*({TOKEN})[ \t]+"
    rf"({HOST})(?:[ \t]*:[ \t]*({PORT}))?({PARAMS})[ \t]*"
)

# Fast path for the shape nearly every Via has: "SIP/2.0/UDP host:port;p=v;flag" without LWS.
# The parameter repeat is possessive (``*+``): nothing after it can start with ";", so sre never
# needs to give an iteration back, and skipping its backtracking bookkeeping is measurably cheaper.
FAST_VIA: Final = (
    rf"SIP/2\.0/([A-Z]+) ({HOST})(?::({PORT}))?((?:;{TOKEN}(?:=(?:{TOKEN}|\[[0-9A-Fa-f:.]+\]))?)*+)"
)
FAST_VIA_RE: Final = re.compile(FAST_VIA)

# name-addr = [ display-name ] LAQUOT addr-spec RAQUOT; display-name = *(token LWS)/ quoted-string
# addr-spec form (no <>): RFC 3261 20.10 forbids "," ";" "?" in the URI, so every ";" that follows
# belongs to the header's own parameters.
NAME_ADDR_RE: Final = re.compile(
    rf"[ \t]*(?:(?:({QUOTED_STRING})|({TOKEN}(?:[ \t]+{TOKEN})*))?[ \t]*<([^<>\s\"]+)>"
    rf"|([^\s<>;,\"?]+))({PARAMS})[ \t]*"
)
# Fast path for the usual shapes: ["display" ]<uri>;p=v  with no LWS inside the parameters and a
# URI of printable ASCII (NAME_ADDR_RE's ``[^<>\s"]`` restricted to %x21-7E). The narrower class
# is one bitmap test per character for sre; a URI with other characters simply takes NAME_ADDR_RE,
# which returns the same thing for everything this pattern accepts.
URI_IN_BRACKETS: Final = r"[!#-;=?-~]+"
FAST_NAME_ADDR: Final = rf'(?:"([^"\\\r\n]*)" ?)?<({URI_IN_BRACKETS})>((?:;{TOKEN}(?:={TOKEN})?)*+)'
FAST_NAME_ADDR_RE: Final = re.compile(FAST_NAME_ADDR)
# Contact: "*" (RFC 3261 20.10)
STAR_RE: Final = re.compile(r"[ \t]*\*[ \t]*")

# CSeq = 1*DIGIT LWS Method (RFC 3261 20.16)
CSEQ_RE: Final = re.compile(rf"([0-9]{{1,10}})[ \t]+({TOKEN})")
# Call-ID = callid; callid = word [ "@" word ] (RFC 3261 20.8, 25.1)
WORD: Final = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
CALL_ID_RE: Final = re.compile(rf"{WORD}(?:@{WORD})?")
DIGITS_RE: Final = re.compile(r"[0-9]+")

# Fused fast path for the core headers of one message (sip.message): the values of Via (exactly one
# line), From, To, Call-ID, CSeq, Max-Forwards and Contact (one line), joined by LF in that order,
# with a lone CR standing for an absent Max-Forwards or Contact. A header value never contains CR
# or LF (a bare one fails the parse before this runs) and no segment pattern can match SP/HTAB at
# its ends, so each segment accepts exactly what its own fast-path regex above (or CSEQ_RE,
# CALL_ID_RE, 1*DIGIT) accepts on the stripped value. One regex call then validates and splits all
# of them; when it fails the per-header parsers run, and they accept or raise exactly as they do on
# their own. Contact is not a core header: its segment also takes any other value (group 15 is
# then None) and it is simply left for lazy typing, so it can never make a message fail here.
CORE_RE: Final = re.compile(
    rf"[ \t]*{FAST_VIA}[ \t]*\n"
    rf"[ \t]*{FAST_NAME_ADDR}[ \t]*\n"
    rf"[ \t]*{FAST_NAME_ADDR}[ \t]*\n"
    rf"[ \t]*({WORD}(?:@{WORD})?)[ \t]*\n"
    rf"[ \t]*([0-9]{{1,10}})[ \t]+({TOKEN})[ \t]*\n"
    rf"(?:\r|[ \t]*([0-9]{{1,10}})[ \t]*)\n"
    rf"(?:\r|[ \t]*{FAST_NAME_ADDR}[ \t]*|[^\n]*)"
)

# media-type = m-type SLASH m-subtype *(SEMI m-parameter) (RFC 3261 20.15)
MEDIA_TYPE_RE: Final = re.compile(rf"[ \t]*({TOKEN})[ \t]*/[ \t]*({TOKEN})({PARAMS})[ \t]*")

# challenge/credentials = auth-scheme LWS auth-param *(COMMA auth-param)   (RFC 3261 20.7, 20.44)
# auth-param = auth-param-name EQUAL ( token / quoted-string )
AUTH_RE: Final = re.compile(rf"({TOKEN})(?:[ \t]+(.*))?", re.DOTALL)
AUTH_PARAM_RE: Final = re.compile(
    rf"[ \t]*({TOKEN})[ \t]*=[ \t]*({TOKEN}|{QUOTED_STRING})[ \t]*(?:,|$)"
)

# Comma-list splitting for headers we do not type: respects quoted strings and <...>.
LIST_ITEM_RE: Final = re.compile(rf"(?:{QUOTED_STRING}|<[^>]*>|[^,\"<])+")

# SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]   (RFC 3261 19.1.1, 25.1)
# user = 1*( unreserved / escaped / user-unreserved ); password = *( unreserved / escaped / & = + $ , )
# paramchar = param-unreserved / unreserved / escaped; hnv = hnv-unreserved / unreserved / escaped
_UNRESERVED: Final = r"A-Za-z0-9\-_.!~*'()"
_USER: Final = rf"[{_UNRESERVED}%&=+$,;?/]+"
_PASSWORD: Final = rf"[{_UNRESERVED}%&=+$,]*"
_PARAMCHARS: Final = rf"[{_UNRESERVED}%\[\]/:&+$]+"
_HNVCHARS: Final = rf"[{_UNRESERVED}%\[\]/?:+$]*"
_URI_TAIL: Final = (
    rf"({HOST})(?::({PORT}))?((?:;{_PARAMCHARS}(?:={_PARAMCHARS})?)*)"
    rf"(?:\?({_HNVCHARS}=?{_HNVCHARS}(?:&{_HNVCHARS}=?{_HNVCHARS})*))?"
)
SIP_URI_USER_RE: Final = re.compile(rf"((?i:sips?)):({_USER})(?::({_PASSWORD}))?@{_URI_TAIL}")
SIP_URI_NOUSER_RE: Final = re.compile(rf"((?i:sips?)):{_URI_TAIL}")
URI_PARAM_RE: Final = re.compile(rf";({_PARAMCHARS})(?:=({_PARAMCHARS}))?")
# telephone-subscriber (RFC 3966 section 3), liberal: digits, visual separators, * # and letters.
TEL_URI_RE: Final = re.compile(
    rf"((?i:tel)):([0-9A-Fa-f*#+\-.()%]+)((?:;{_PARAMCHARS}(?:={_PARAMCHARS})?)*)"
)
# absoluteURI = scheme ":" ( hier-part / opaque-part ); scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
ABSOLUTE_URI_RE: Final = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):([^\s<>\"]*)")
BAD_ESCAPE_RE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
