"""Every stream between services, in one place. Names are `<producer>.<event>` in kebab-case."""

from __future__ import annotations

# applications
SUBMIT_PROCUREMENT = "applications.submit-procurement"  # command stream: external systems submit proposals
PROCUREMENT_SUBMITTED = "applications.procurement-submitted"
REVERIFICATION_REQUESTED = "applications.reverification-requested"
LOAN_REQUESTED = "applications.loan-requested"
PROCUREMENT_WITHDRAWN = "applications.procurement-withdrawn"
# origin verification
ORIGIN_VERIFICATION_COMPLETED = "origin-verification.origin-verification-completed"
# partner registry
COUNTRY_STATUS_CHANGED = "partner-registry.country-status-changed"
PARTNER_AGREEMENT_RECORDED = "partner-registry.partner-agreement-recorded"
REFERENCE_DATA_PUBLISHED = "partner-registry.reference-data-published"
# loan disbursement
LOAN_APPROVED = "loan-disbursement.loan-approved"
LOAN_REJECTED = "loan-disbursement.loan-rejected"

# operator actions (dead-letter replay/discard, facility changes…) that concern a case, per producer
OPERATOR_ACTION_RECORDED = {
    "applications": "applications.operator-action-recorded",
    "origin_verification": "origin-verification.operator-action-recorded",
    "partner_registry": "partner-registry.operator-action-recorded",
    "loan_disbursement": "loan-disbursement.operator-action-recorded",
}

# every service's audit chain head, published periodically and kept by the other services (safe_procurement.shared.kit.audit_chain)
AUDIT_ANCHORS = "audit.anchors"

ALL: tuple[str, ...] = (
    SUBMIT_PROCUREMENT,
    PROCUREMENT_SUBMITTED,
    REVERIFICATION_REQUESTED,
    LOAN_REQUESTED,
    PROCUREMENT_WITHDRAWN,
    ORIGIN_VERIFICATION_COMPLETED,
    COUNTRY_STATUS_CHANGED,
    PARTNER_AGREEMENT_RECORDED,
    REFERENCE_DATA_PUBLISHED,
    LOAN_APPROVED,
    LOAN_REJECTED,
    *OPERATOR_ACTION_RECORDED.values(),
)


def qualified(name: str, prefix: str = "") -> str:
    """The Redis key of a stream; a prefix isolates test runs and tenants sharing one Redis."""
    return f"{prefix}{name}"
