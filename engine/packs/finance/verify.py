"""The ``verify_identity`` step: account + PIN by DTMF, a one-time code, the bank's answer.

The bank's service is two JSON endpoints (docs/packs/finance.md):

- ``verify_url`` gets ``{"account", "pin", "caller", "dialed"}`` and answers
  ``{"verified": bool, "customer_id": str, "segment": str, "otp_required": bool}``;
- ``otp_url`` gets ``{"customer_id", "code", "caller"}`` and answers ``{"verified": bool}``.

Anything but a 200 with a JSON object in ``timeout_s`` is a service error.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final

import aiohttp
import msgspec
import structlog

from engine.config import ConfigNames
from engine.plugins import StepContext, StepResult

log = structlog.stdlib.get_logger("acd.packs.finance")

# A bank's answer is a few fields; anything larger is not one.
MAX_ANSWER_BYTES: Final = 16 * 1024
MAX_FIELD_CHARS: Final = 64


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class FinanceSettings(_Struct, frozen=True):
    verify_url: str  # POST account + PIN here (http(s))
    otp_url: str = ""  # POST the one-time code here; empty: no second factor
    timeout_s: float = 3.0  # one request to the bank's service
    vip_segments: tuple[str, ...] = ("wealth", "private")  # segments routed to vip_flow


class VerifyIdentity(_Struct, frozen=True):
    account_prompt: str = ""  # played (a digit interrupts it) before the account number
    pin_prompt: str = ""
    otp_prompt: str = ""
    invalid_prompt: str = ""  # after a refused try, before the next
    account_digits: int = 10  # at most; '#' ends earlier
    pin_digits: int = 4
    otp_digits: int = 6
    timeout_s: float = 5.0  # silence between digits that ends the input
    max_tries: int = 3
    verified_flow: str = ""  # jump here when verified (empty: the next step)
    vip_flow: str = ""  # when verified and the segment is a VIP one (empty: as verified)
    failed_flow: str = ""  # when not verified (empty: hang up, identity_not_verified)


def _is_url(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def check_settings(settings: FinanceSettings) -> str | None:
    if not _is_url(settings.verify_url):
        return f"verify_url: expected an http(s) URL, found {settings.verify_url!r}"
    if settings.otp_url and not _is_url(settings.otp_url):
        return f"otp_url: expected an http(s) URL, found {settings.otp_url!r}"
    if not settings.timeout_s > 0:
        return f"timeout_s: expected a number > 0, found {settings.timeout_s}"
    return None


def check_step(step: VerifyIdentity, known: ConfigNames) -> str | None:
    for key in ("account_digits", "pin_digits", "otp_digits"):
        if not 1 <= getattr(step, key) <= 32:
            return f"{key}: expected 1 to 32 digits, found {getattr(step, key)}"
    if not 1 <= step.max_tries <= 10:
        return f"max_tries: expected 1 to 10, found {step.max_tries}"
    if not step.timeout_s > 0:
        return f"timeout_s: expected a number > 0, found {step.timeout_s}"
    for key in ("verified_flow", "vip_flow", "failed_flow"):
        flow = getattr(step, key)
        if flow and flow not in known.flows:
            return f"{key}: no flow named {flow!r}"
    return None


async def _digits(ctx: StepContext, prompt: str, max_digits: int, timeout_s: float) -> str:
    first = await ctx.call.play([prompt], barge_in=True) if prompt else None
    return await ctx.call.read_digits(
        max_digits=max_digits, terminator="#", timeout_s=timeout_s, first=first or ""
    )


async def _ask(ctx: StepContext, url: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """The bank's JSON answer, or None (logged without the body: it holds a PIN or code)."""
    settings: FinanceSettings = ctx.settings
    if ctx.http is None:
        return None
    try:
        async with asyncio.timeout(settings.timeout_s):
            async with ctx.http.post(url, json=body) as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
        if len(raw) > MAX_ANSWER_BYTES:
            raise ValueError("answer too large")
        answer = json.loads(raw)
        if not isinstance(answer, dict):
            raise ValueError("expected a JSON object")
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        log.warning("identity_service_failed", url=url, reason=str(exc) or type(exc).__name__)
        return None
    return answer


def _field(answer: dict[str, Any], key: str) -> str:
    value = answer.get(key)
    return "" if value is None else str(value)[:MAX_FIELD_CHARS]


async def verify_identity(step: VerifyIdentity, ctx: StepContext) -> StepResult | None:
    settings: FinanceSettings = ctx.settings
    data = ctx.data
    result = "no_input"
    for tries in range(1, step.max_tries + 1):
        data["verify_tries"] = tries
        if tries > 1 and step.invalid_prompt:
            await ctx.call.play([step.invalid_prompt], barge_in=False)
        account = await _digits(ctx, step.account_prompt, step.account_digits, step.timeout_s)
        if not account:
            result = "no_input"
            continue
        data["account_last4"] = account[-4:]
        pin = await _digits(ctx, step.pin_prompt, step.pin_digits, step.timeout_s)
        answer = await _ask(
            ctx,
            settings.verify_url,
            {"account": account, "pin": pin, "caller": data.get("caller"),
             "dialed": data.get("dialed")},
        )  # fmt: skip
        if answer is None:
            result = "service_error"
            break
        if answer.get("verified") is not True:
            result = "wrong_credentials"
            continue
        customer, segment = _field(answer, "customer_id"), _field(answer, "segment")
        if settings.otp_url and answer.get("otp_required") is True:
            code = await _digits(ctx, step.otp_prompt, step.otp_digits, step.timeout_s)
            checked = await _ask(
                ctx,
                settings.otp_url,
                {"customer_id": customer, "code": code, "caller": data.get("caller")},
            )
            if checked is None:
                result = "service_error"
                break
            if checked.get("verified") is not True:
                result = "otp_failed"
                continue
        data.update(verified=True, verify_result="verified", customer_id=customer, segment=segment)
        if step.vip_flow and segment in settings.vip_segments:
            return StepResult(goto=step.vip_flow)
        return StepResult(goto=step.verified_flow) if step.verified_flow else None
    data.update(verified=False, verify_result=result)
    if step.failed_flow:
        return StepResult(goto=step.failed_flow)
    return StepResult(hangup=True, reason="identity_not_verified", prompt=step.invalid_prompt)
