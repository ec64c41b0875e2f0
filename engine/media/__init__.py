"""Media offload: bridged calls' RTP, recording and hold music in worker processes."""
