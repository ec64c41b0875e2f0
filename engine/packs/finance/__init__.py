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
"""

from engine.packs.finance.verify import (
    FinanceSettings,
    VerifyIdentity,
    check_settings,
    check_step,
    verify_identity,
)
from engine.plugins import Plugin, StepType

plugin = Plugin(
    name="finance",
    version="1.0",
    description="banking: caller identity verification (account, PIN, one-time code), VIP routing",
    settings=FinanceSettings,
    check_settings=check_settings,
    steps={"verify_identity": StepType(VerifyIdentity, verify_identity, check_step)},
)

__all__ = ["FinanceSettings", "VerifyIdentity", "plugin"]
