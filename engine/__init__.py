"""The ACD daemon: composition root for sip, routing_core and recordings."""

__version__ = "0.1.0"
