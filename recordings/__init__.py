"""Call recordings on disk: crash-safe writers, encryption at rest, retention and index.

Knows PCM frames and metadata, nothing of SIP or queues.
"""
