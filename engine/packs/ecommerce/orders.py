"""The ``order_status`` step: the order number by DTMF, the shop's order service, a spoken answer.

The shop's service is one JSON endpoint (docs/packs/ecommerce.md): ``order_url`` gets
``{"order", "caller", "dialed"}`` and answers ``{"found": true, "status": "shipped", "carrier":
"DHL", "tracking": "...", "eta_days": 3}`` or ``{"found": false}``. Anything but a 200 with such
an object in ``timeout_s`` is a service error, and the caller takes the step's ``failed_flow``
(the fallback branch: an agent, usually) instead of a dead line.

The answer is spoken from recorded fragments (engine/prompts, made by scripts/make_prompts):
"Your order ending in | 4 3 2 1 | has been shipped. | It should arrive in | 3 | days."
"""

from __future__ import annotations

import asyncio
from typing import Final

import aiohttp
import msgspec
import structlog

from engine.config import ConfigNames
from engine.plugins import StepContext, StepResult

log = structlog.stdlib.get_logger("acd.packs.ecommerce")

# An order record is a few fields; anything larger is not one.
MAX_ANSWER_BYTES: Final = 16 * 1024
MAX_FIELD_CHARS: Final = 64
# The statuses a shop's order and logistics systems report (Shopify's fulfilment states and a
# carrier's tracking events, folded), and the fragment that says each.
STATUS_PROMPTS: Final = {
    "processing": "order-processing",
    "shipped": "order-shipped",
    "in_transit": "order-in-transit",
    "out_for_delivery": "order-out-for-delivery",
    "delivered": "order-delivered",
    "cancelled": "order-cancelled",
    "returned": "order-returned",
}
# Statuses after which an expected delivery time means something.
ON_THE_WAY: Final = frozenset({"processing", "shipped", "in_transit"})
# The shipped number prompts say 0-99 (digit-0..20 and the tens).
MAX_SPOKEN_DAYS: Final = 99


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class EcommerceSettings(_Struct, frozen=True):
    order_url: str  # POST the order number here (http(s))
    timeout_s: float = 3.0  # one request to the order service


class OrderStatus(_Struct, frozen=True):
    prompt: str = "order-number"  # asks for the order number (a digit interrupts it)
    not_found_prompt: str = "order-not-found"  # after an order the shop does not know
    unavailable_prompt: str = "order-unavailable"  # when the order service fails
    min_digits: int = 4
    max_digits: int = 12  # at most; '#' ends earlier
    timeout_s: float = 5.0  # silence between digits that ends the input
    max_tries: int = 2
    speak: bool = True  # say the status (and the expected delivery) to the caller
    found_flow: str = ""  # jump here when the order was found (empty: the next step)
    not_found_flow: str = ""  # when not found after max_tries, or no input (empty: next step)
    failed_flow: str = ""  # when the order service failed or timed out (empty: next step)


class OrderAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """The order service's answer; keys beyond these (a shop's own) are ignored."""

    found: bool
    status: str = ""
    carrier: str = ""
    tracking: str = ""
    eta_days: int | None = None


def _is_url(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def check_settings(settings: EcommerceSettings) -> str | None:
    if not _is_url(settings.order_url):
        return f"order_url: expected an http(s) URL, found {settings.order_url!r}"
    if not settings.timeout_s > 0:
        return f"timeout_s: expected a number > 0, found {settings.timeout_s}"
    return None


def check_step(step: OrderStatus, known: ConfigNames) -> str | None:
    if not 1 <= step.min_digits <= step.max_digits <= 32:
        return (
            "min_digits, max_digits: expected 1 <= min_digits <= max_digits <= 32, found "
            f"{step.min_digits} and {step.max_digits}"
        )
    if not 1 <= step.max_tries <= 10:
        return f"max_tries: expected 1 to 10, found {step.max_tries}"
    if not step.timeout_s > 0:
        return f"timeout_s: expected a number > 0, found {step.timeout_s}"
    for key in ("found_flow", "not_found_flow", "failed_flow"):
        flow = getattr(step, key)
        if flow and flow not in known.flows:
            return f"{key}: no flow named {flow!r}"
    return None


def number_prompts(n: int) -> list[str]:
    """0-99 as the shipped digit-N prompts: 3 -> [digit-3], 42 -> [digit-40, digit-2]."""
    if n <= 20:
        return [f"digit-{n}"]
    tens, units = divmod(n, 10)
    return [f"digit-{tens * 10}"] + ([f"digit-{units}"] if units else [])


def answer_prompts(order: str, answer: OrderAnswer) -> list[str]:
    """The spoken answer for a found order; empty for a status the pack has no words for."""
    said = STATUS_PROMPTS.get(answer.status)
    if said is None:
        return []
    prompts = ["order-your-order", *(f"digit-{d}" for d in order[-4:]), said]
    eta = answer.eta_days
    if answer.status in ON_THE_WAY and eta is not None and 1 <= eta <= MAX_SPOKEN_DAYS:
        prompts += ["order-arrives-in", *number_prompts(eta), "day" if eta == 1 else "days"]
    return prompts


async def _ask(ctx: StepContext, body: dict[str, object]) -> OrderAnswer | None:
    """The order service's answer, or None (logged, with why)."""
    settings: EcommerceSettings = ctx.settings
    if ctx.http is None:
        return None
    try:
        async with asyncio.timeout(settings.timeout_s):
            async with ctx.http.post(settings.order_url, json=body) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
        if len(raw) > MAX_ANSWER_BYTES:
            raise ValueError("answer too large")
        return msgspec.json.decode(raw, type=OrderAnswer)
    except (TimeoutError, aiohttp.ClientError, ValueError, msgspec.DecodeError) as exc:
        reason = str(exc) or type(exc).__name__
        log.warning("order_service_failed", url=settings.order_url, reason=reason)
        return None


async def order_status(step: OrderStatus, ctx: StepContext) -> StepResult | None:
    data = ctx.data
    result = "no_input"
    for tries in range(1, step.max_tries + 1):
        data["order_tries"] = tries
        first = await ctx.call.play([step.prompt], barge_in=True) if step.prompt else None
        order = await ctx.call.read_digits(
            max_digits=step.max_digits, terminator="#", timeout_s=step.timeout_s, first=first or ""
        )
        if len(order) < step.min_digits:
            result = "no_input" if not order else "too_short"
            continue
        data["order_number"] = order
        answer = await _ask(
            ctx, {"order": order, "caller": data.get("caller"), "dialed": data.get("dialed")}
        )
        if answer is None:
            data["order_result"] = "service_error"
            if step.unavailable_prompt:
                await ctx.call.play([step.unavailable_prompt], barge_in=False)
            return StepResult(goto=step.failed_flow) if step.failed_flow else None
        if not answer.found:
            result = "not_found"
            if step.not_found_prompt:
                await ctx.call.play([step.not_found_prompt], barge_in=False)
            continue
        data.update(
            order_result="found",
            order_status=answer.status[:MAX_FIELD_CHARS],
            order_carrier=answer.carrier[:MAX_FIELD_CHARS],
            order_tracking=answer.tracking[:MAX_FIELD_CHARS],
            order_eta_days=answer.eta_days,
        )
        prompts = answer_prompts(order, answer) if step.speak else []
        if prompts:
            await ctx.call.play(prompts, barge_in=False)
        return StepResult(goto=step.found_flow) if step.found_flow else None
    data["order_result"] = result
    return StepResult(goto=step.not_found_flow) if step.not_found_flow else None
