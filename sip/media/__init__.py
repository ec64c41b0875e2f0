"""RTP media: the only part of the media path that owns sockets and the event loop."""
