"""Our own SIP stack: a sans-I/O RFC 3261 core with thin asyncio transports.

Layering (see DESIGN.md section 2): nothing here imports ``engine``, ``routing_core`` or
``recordings``. Only ``sip.transport`` and ``sip.media`` touch the event loop.
"""
