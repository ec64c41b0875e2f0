"""Outbound webhooks: call and task events POSTed as signed JSON to the ``[[webhooks]]`` URLs.

How this works: the daemon makes one ``WebhookService`` and adds its ``consume`` to the event
bus's consumers; deliveries are queued there and sent by the service's own workers, retried with
exponential backoff, and dead-lettered (table ``webhook_dead_letters``) when they run out of
attempts; the API lists dead letters and re-sends one. A call never waits for a webhook.

Where things are: ``service`` (mapping bus events to webhook events, delivery, retries, the
dead-letter list), ``signing`` (the ``X-Acd-Signature`` header and its verification).
docs/webhooks.md is the receiver's side: the body, the headers, how to verify.
"""

from engine.webhooks.service import (
    DeadLetter,
    RetryOutcome,
    WebhookService,
    webhook_event,
)
from engine.webhooks.signing import signature, verify

__all__ = [
    "DeadLetter",
    "RetryOutcome",
    "WebhookService",
    "signature",
    "verify",
    "webhook_event",
]
