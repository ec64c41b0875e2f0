"""Offline transcription of recordings and QA rules over the transcripts (issue 19).

- ``asr``: the ``Transcriber`` interface, PocketSphinx 5 behind it, 8 -> 16 kHz upsampling
- ``audio``: a recording (plain or encrypted, decrypted in memory) as two channels; paused spans cut out
- ``redact``: card-number digit runs masked after a context word
- ``qa``: required / forbidden phrases (fuzzy or spotted) and agent talk ratio, with evidence times
- ``pipeline``: one recording -> per-channel words, spotted phrases, masking and QA results;
  ``run_job`` is the entry point for a worker process
- ``store``: transcripts in the CDR store, sealed when the recording is encrypted; the API's
  reads (a call's transcripts, search, the QA-flagged list)
- ``service``: the daemon's worker pool: recordings queued as they are indexed (and from the
  store at start), decoded in worker processes, retried, stored; QA metrics and events
"""
