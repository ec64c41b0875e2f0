"""asyncio transports (UDP, TCP, TLS) that feed bytes and ``now`` into the sans-I/O SIP core."""
