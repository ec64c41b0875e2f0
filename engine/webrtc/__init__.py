"""WebRTC: the browser agent's softphone leg (signalling gateway and its media worker)."""
