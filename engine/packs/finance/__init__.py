"""The finance pack: a bank's IVR identity check as a flow step (docs/packs/finance.md).

How this works: ``verify_identity`` collects the account number and PIN by DTMF and POSTs them
to ``[plugins.finance] verify_url`` (the bank's own service decides; the daemon keeps no
credentials). When that answer asks for it and ``otp_url`` is set, the caller types the one-time
code the bank sent (SMS, app) and it is checked at ``otp_url``. The step then jumps: to
``vip_flow`` for a verified caller of one of ``vip_segments`` (wealth clients to certified
advisors, by skill), to ``verified_flow`` for other verified callers, to ``failed_flow``
otherwise (no such flow: the call ends with reason ``identity_not_verified``). The PIN and the
code never reach flow data, logs or the CDR; the account number appears only as its last four
digits. A bank service that is down or slow counts as "not verified" (``verify_result``
``service_error``): a bank routes such callers to manual verification, not to a dead line.

QA rule pack ``risk_disclosure``: the risk warning an adviser must give and the promises they
must not make, for ``engine.transcription.qa`` (which the daemon does not run on its own yet).
"""

from engine.config import QaRuleConfig
from engine.packs.finance.verify import (
    FinanceSettings,
    VerifyIdentity,
    check_settings,
    check_step,
    verify_identity,
)
from engine.plugins import Plugin, StepType

# What a regulator expects an adviser to say on an investment call (MiFID II / FCA COBS 4
# style): the risk warning, early; and never a promise of returns. Fuzzy-matched in the
# agent's channel of the transcript (engine.transcription.qa).
RISK_DISCLOSURE = (
    QaRuleConfig(
        name="risk warning",
        type="required",
        phrases=(
            "the value of investments can go down as well as up",
            "you may get back less than you invested",
            "your capital is at risk",
        ),
        within_s=300.0,
    ),
    QaRuleConfig(
        name="no guaranteed returns",
        type="forbidden",
        phrases=("guaranteed return", "you cannot lose", "risk free"),
    ),
    QaRuleConfig(
        name="past performance",
        type="required",
        phrases=("past performance is not a guide to future returns",),
    ),
)

plugin = Plugin(
    name="finance",
    version="1.0",
    description="banking: caller identity verification (account, PIN, one-time code), VIP routing",
    settings=FinanceSettings,
    check_settings=check_settings,
    steps={"verify_identity": StepType(VerifyIdentity, verify_identity, check_step)},
    qa_rules={"risk_disclosure": RISK_DISCLOSURE},
)

__all__ = ["RISK_DISCLOSURE", "FinanceSettings", "VerifyIdentity", "plugin"]
