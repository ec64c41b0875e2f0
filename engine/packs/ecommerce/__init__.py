"""The e-commerce pack: a web shop's order-status line and after-sales tickets (docs/packs/ecommerce.md).

How this works: ``order_status`` (``orders``) collects the order number by DTMF, asks the
shop's order service ``[plugins.ecommerce] order_url`` for the order and logistics status, and
speaks the answer from recorded fragments; a service that fails or is slow sends the caller to
the step's ``failed_flow``. ``create_ticket`` (``tickets``) opens an after-sales ticket in the
tickets' lifecycle from the call, linked to the call's id. The peak-hour overflow preset is
queue values (``max_wait_s``, ``max_length``, ``overflow`` to a flow that opens a call-back
ticket), documented and shipped as config/packs/ecommerce.toml, which the tests load.

QA rule pack ``order_care``: what a shop's agent says on an after-sales call (the case number,
the refund or delivery timeline) and what they must not (asking for the full card number).
"""

from engine.config import QaRuleConfig
from engine.packs.ecommerce.orders import (
    EcommerceSettings,
    OrderStatus,
    answer_prompts,
    check_settings,
    order_status,
)
from engine.packs.ecommerce.orders import check_step as check_order_step
from engine.packs.ecommerce.tickets import CreateTicket, create_ticket
from engine.packs.ecommerce.tickets import check_step as check_ticket_step
from engine.plugins import Plugin, StepType

ORDER_CARE = (
    QaRuleConfig(
        name="case number given",
        type="required",
        phrases=("your case number is", "your ticket number is", "your reference is"),
    ),
    QaRuleConfig(
        name="timeline given",
        type="required",
        phrases=("working days", "within a week", "you will receive your refund"),
    ),
    QaRuleConfig(
        name="no card number asked",
        type="forbidden",
        phrases=("full card number", "the three digits on the back", "your card's security code"),
    ),
)

plugin = Plugin(
    name="ecommerce",
    version="1.0",
    description="web shop: order status by DTMF from the order service, after-sales tickets",
    settings=EcommerceSettings,
    check_settings=check_settings,
    steps={
        "order_status": StepType(OrderStatus, order_status, check_order_step),
        "create_ticket": StepType(CreateTicket, create_ticket, check_ticket_step),
    },
    qa_rules={"order_care": ORDER_CARE},
)

__all__ = [
    "ORDER_CARE",
    "CreateTicket",
    "EcommerceSettings",
    "OrderStatus",
    "answer_prompts",
    "plugin",
]
