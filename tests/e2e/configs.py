"""Config fragments the end-to-end tests share: the front of a test call center.

Each test appends its own queues and agents; what every one of them needs first is an admin token for
the API, a loopback trunk, a route per dialled number to a flow that answers and queues the caller
in the queue of the same name, and (for tests with media) an RTP port range of its own and
recordings flushed often.
"""

from __future__ import annotations

QUEUE_STEPS = '{{ type = "answer" }}, {{ type = "enqueue", queue = "{queue}" }}'


def front_door(
    admin: str,
    *,
    numbers: tuple[str, ...] = ("support",),
    steps: str | None = None,
    trunk: str = "local",
    trunk_keys: str | None = None,
    rtp_base: int | None = None,
    flush_s: float | None = None,
    media_workers: int = 0,
    allow: tuple[str, ...] = ("127.0.0.0/8",),
) -> str:
    """Admin token, a loopback trunk (``allow``: all of loopback unless a test keeps some
    127.0.0.x addresses off the trunk; or a trunk described by ``trunk_keys``), and each number
    routed to a flow of that name; the flow answers and enqueues in the queue of that name, or runs
    ``steps`` (for a single number)."""
    parts = []
    if rtp_base is not None:
        parts.append(
            f"[media]\nrtp_port_min = {rtp_base}\nrtp_port_max = {rtp_base + 98}\n"
            f"workers = {media_workers}\n"
        )
    if flush_s is not None:
        parts.append(f"[recordings]\nflush_interval_s = {flush_s}\n")
    parts.append(f'[[api.tokens]]\nname = "ops"\nrole = "admin"\ntoken = "{admin}"\n')
    if trunk_keys is None:
        trunk_keys = "allow = [" + ", ".join(f'"{network}"' for network in allow) + "]"
    parts.append(f'[[trunks]]\nname = "{trunk}"\n{trunk_keys}\n')
    for number in numbers:
        flow_steps = steps if steps is not None else QUEUE_STEPS.format(queue=number)
        parts.append(f'[[routes]]\nnumber = "{number}"\nflow = "{number}"\n')
        parts.append(f'[[flows]]\nname = "{number}"\nsteps = [{flow_steps}]\n')
    return "\n" + "\n".join(parts) + "\n"
