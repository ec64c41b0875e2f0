"""Offline transcription of recordings and QA rules over the transcripts (issue 19, first slice).

- ``asr``: the ``Transcriber`` interface, PocketSphinx 5 behind it, 8 -> 16 kHz upsampling

Not yet wired into the daemon: no worker pool, store table or API reads these yet.
"""
