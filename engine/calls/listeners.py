"""SIP listeners: one sans-I/O endpoint per [[sip.listeners]] entry (UDP, TCP, TLS) and its transport.

How this works: ``start`` opens every configured listener with ``sip.transport.udp.serve_udp`` or
``sip.transport.tcp.serve_tcp`` (TLS is TCP with the listener's certificate). Each gets a
``sip.endpoint.Endpoint`` built from ``[sip]`` (timers, user agent, 100rel, session timers) with
the agent directory's registrar and digest authentication against the agents' passwords (or
their stored MD5 HA1, ``password_ha1``), the daemon's one ``sip.security.Guard``
(engine.calls.security: every listener shares its flood and ban tables, and a reload may
replace it, ``use_guard``), and hands every event to ``on_event``. An outbound INVITE leaves
on the first listener of the kind
its URI asks for (``endpoint_for``); ``family`` says which addresses a listener can reach.
After the call layer has fed an endpoint, ``transmit`` flushes what its cores queued.
``set_accepting`` says what every listener answers a load balancer's OPTIONS probe (Kamailio's
dispatcher, docs/kamailio.md): 200 while the daemon takes calls, 503 while it starts, drains or
fails a readiness check; listeners open refusing and the daemon turns them on once ready.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
from collections.abc import Callable
from typing import Any

from engine.config import Config
from sip import Uri
from sip.auth import DigestAlgorithm, DigestAuthenticator, Password, StoredHa1, UserSecret
from sip.endpoint import Endpoint, EndpointConfig, EndpointEvent
from sip.registrar import Registrar
from sip.security import Guard
from sip.session_timer import SessionTimerPolicy
from sip.transport.tcp import TcpTransport, serve_tcp
from sip.transport.udp import UdpTransport, serve_udp

# PRACK and UPDATE (RFC 3262, 3311) on top of the core's methods: trunks that require 100rel or
# refresh sessions by UPDATE (RFC 4028) keep their calls.
ALLOW = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "REGISTER", "PRACK", "UPDATE")
#: Retry-After of the 503 an OPTIONS probe gets while the daemon takes no calls. Kamailio's
#: dispatcher re-probes on its own ds_ping_interval and ignores it; other probers read it.
UNAVAILABLE_RETRY_AFTER_S = 5


class Listeners:
    """The SIP listeners of the call layer and the endpoints they feed."""

    def __init__(
        self,
        config: Config,
        registrar: Registrar,
        on_event: Callable[[Endpoint, EndpointEvent], None],
        guard: Guard | None = None,
    ) -> None:
        self._config = config
        self._registrar = registrar
        self._on_event = on_event
        self.guard = guard
        self.secrets = agent_secrets(config)
        #: Agents with ``secure = true``: their phones register over TLS only (403 otherwise).
        self.tls_users = secure_agents(config)
        #: Digest answers for a user name that is no agent's (each ends in a 403 the endpoint
        #: counts as auth_failed): the "unknown_user" part of acd_sip_auth_failures_total.
        self.unknown_user_failures = 0
        self.transport: UdpTransport | TcpTransport | None = None  # the first listener's
        # Every listener's transport, and the first endpoint of each kind ("udp", "tcp", "tls"):
        # where an INVITE to a contact with ;transport=... leaves from.
        self.transports: list[UdpTransport | TcpTransport] = []
        self.by_kind: dict[str, Endpoint] = {}
        self.listening: list[tuple[str, tuple[str, int]]] = []  # (kind, address) per listener
        # What OPTIONS probes get (sip.Endpoint.unavailable_retry_after_s): refused until ready.
        self._unavailable: int | None = UNAVAILABLE_RETRY_AFTER_S

    def apply(self, config: Config) -> None:
        """A reload: agents' passwords and TLS-only flags apply to the next registration."""
        self._config = config
        self.secrets = agent_secrets(config)
        self.tls_users = secure_agents(config)

    def use_guard(self, guard: Guard | None) -> None:
        """Screen every listener with ``guard`` from now on (a reload changed the policy)."""
        self.guard = guard
        for transport in self.transports:
            transport.endpoint.security = guard

    def set_accepting(self, accepting: bool) -> None:
        """Answer OPTIONS probes 200 (``accepting``) or 503 on every listener from now on."""
        self._unavailable = None if accepting else UNAVAILABLE_RETRY_AFTER_S
        for transport in self.transports:
            transport.endpoint.unavailable_retry_after_s = self._unavailable

    @property
    def accepting(self) -> bool:
        return self._unavailable is None

    @property
    def endpoint(self) -> Endpoint:
        assert self.transport is not None
        return self.transport.endpoint

    async def start(self) -> tuple[str, int]:
        """Open every [[sip.listeners]] entry (UDP, TCP, TLS); the first one's address."""
        sip_cfg = self._config.sip
        authenticator = DigestAuthenticator(
            sip_cfg.realm,
            algorithms=tuple(DigestAlgorithm(a) for a in sip_cfg.digest_algorithms),
        )

        def lookup(username: str) -> UserSecret | None:
            secret = self.secrets.get(username)
            if secret is None:
                # sip.auth asks only once the nonce is ours; no secret is a failure (403) then
                self.unknown_user_failures += 1
            return secret

        def make_endpoint(addr: tuple[str, int], kind: str) -> Endpoint:
            endpoint = Endpoint(
                EndpointConfig(
                    local_host=addr[0],
                    local_port=addr[1],
                    transport=kind.upper(),
                    t1_s=sip_cfg.t1_ms / 1000,
                    t2_s=sip_cfg.t2_ms / 1000,
                    t4_s=sip_cfg.t4_ms / 1000,
                    user_agent=sip_cfg.user_agent,
                    relayed_methods=("INVITE",),
                    force_rport=True,
                    allow=ALLOW,
                    supported=("100rel",),
                    session_timer=SessionTimerPolicy(
                        sip_cfg.session_timers, sip_cfg.session_expires_s, sip_cfg.min_se_s
                    ),
                ),
                registrar=self._registrar,
                authenticator=authenticator,
                user_lookup=lookup,
                guard=self.guard,
                tls_only=lambda user: user in self.tls_users,
            )
            endpoint.unavailable_retry_after_s = self._unavailable
            return endpoint

        addresses: list[tuple[str, int]] = []
        try:
            for listener in sip_cfg.listeners:
                kind = listener.transport.lower()
                factory = functools.partial(_make, make_endpoint, kind)
                transport: UdpTransport | TcpTransport
                if kind == "udp":
                    transport = await serve_udp(
                        factory, self._on_event, listener.bind, listener.port
                    )
                    addresses.append(transport.local_addr)
                else:
                    server_ssl, client_ssl = (
                        _tls_contexts(listener) if kind == "tls" else (None, None)
                    )
                    transport = await serve_tcp(
                        factory, self._on_event, listener.bind, listener.port,
                        server_ssl=server_ssl, client_ssl=client_ssl,
                    )  # fmt: skip
                    config = transport.endpoint.config
                    addresses.append((config.local_host, config.local_port))
                self.transports.append(transport)
                self.by_kind.setdefault(kind, transport.endpoint)
        except BaseException:
            self.close()
            raise
        if not self.transports:
            raise OSError("no SIP listener configured ([[sip.listeners]])")
        self.transport = self.transports[0]
        self.listening = [
            (listener.transport.lower(), addr)
            for listener, addr in zip(sip_cfg.listeners, addresses, strict=True)
        ]
        return addresses[0]

    def endpoint_for(self, uri: Uri | None) -> Endpoint:
        """The endpoint an outbound INVITE to ``uri`` leaves on: its ;transport= (sips: is TLS),
        if we listen on that kind, else the first listener's."""
        kind = "udp"
        if uri is not None:
            kind = "tls" if uri.scheme == "sips" else (uri.transport or "udp")
        return self.by_kind.get(kind.lower(), self.endpoint)

    def transmit(self) -> None:
        for transport in self.transports:
            transport.transmit()

    def close(self) -> None:
        for transport in self.transports:
            transport.close()
        self.transports.clear()


def agent_secrets(config: Config) -> dict[str, UserSecret]:
    """Each agent's digest secret: its password, or the MD5 HA1 the config stores instead (the
    config check keeps SHA-256 out of ``sip.digest_algorithms`` then: that HA1 is MD5's)."""
    secrets: dict[str, UserSecret] = {}
    for agent in config.agents:
        if agent.password:
            secrets[agent.id] = Password(agent.password)
        elif agent.password_ha1:
            secrets[agent.id] = StoredHa1({DigestAlgorithm.MD5: agent.password_ha1.lower()})
    return secrets


def secure_agents(config: Config) -> frozenset[str]:
    """The agents whose phones are reached over TLS only (``agents[].secure``)."""
    return frozenset(agent.id for agent in config.agents if agent.secure)


def family(endpoint: Endpoint) -> str:
    """Which addresses ("A", "AAAA" or "any") a listener can send to: a UDP listener sends from
    its own socket, bound to one address family; TCP and TLS open a new connection per peer."""
    if endpoint.config.transport != "UDP":
        return "any"
    try:
        ip = ipaddress.ip_address(endpoint.config.local_host.strip("[]"))
    except ValueError:
        return "any"
    return "A" if ip.version == 4 else "AAAA"


def _make(
    make_endpoint: Callable[[tuple[str, int], str], Endpoint], kind: str, addr: tuple[str, int]
) -> Endpoint:
    return make_endpoint(addr, kind)


def _tls_contexts(listener: Any) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Server context from the listener's certificate and key; client context for our outbound
    TLS connections (verifying peers against ``ca_file``, or the system store)."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(listener.cert_file, listener.key_file)
    client = ssl.create_default_context(cafile=listener.ca_file or None)
    return server, client
