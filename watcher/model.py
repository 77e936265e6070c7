"""Typed, frozen values passed between the stages: fetch → parse → classify → store → notify."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

SEVERITIES = ("info", "low", "medium", "high", "critical")
KINDS = (
    "account_deactivated",
    "deactivation_pending",
    "security_lock",
    "funds_held",
    "verification_required",
    "account_under_review",
    "appeal_update",
    "listing_removed",
    "policy_warning",
    "reinstated",
)
# The reason ids of domain.md §1 (a contract with classify and the corpus labels).
REASONS = (
    "related_account",
    "inaccurate_information",
    "identity_verification",
    "authenticity",
    "intellectual_property",
    "restricted_product",
    "listing_policy",
    "performance_metrics",
    "review_manipulation",
    "unauthorized_access",
    "unpaid_fees",
    "acceptable_use",
    "unknown",
)
AUTHENTICITY = ("verified", "unverified", "suspected_phishing")


def severity_rank(severity: str | None) -> int:
    """Return the position of ``severity`` in SEVERITIES (unknown → -1)."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message as fetched from a mailbox folder."""

    account: str
    folder: str
    uid: int
    uidvalidity: int
    content: bytes
    internal_date: datetime | None = None
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Link:
    """A link in the body: where it goes and the text the reader sees."""

    href: str
    text: str


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """The parts of a message the classifier reads, decoded to text."""

    message_id: str | None
    subject: str
    from_name: str
    from_address: str  # lower-case addr-spec, "" when missing
    to: tuple[str, ...]
    reply_to: tuple[str, ...]
    return_path: str | None
    date: datetime | None  # timezone-aware when the Date header parsed
    headers: tuple[tuple[str, str], ...]  # every header, in order, decoded
    text: str  # the readable body: text/plain, or HTML converted to text
    html: str
    links: tuple[Link, ...]
    attachments: tuple[str, ...]  # file names or content types
    defects: tuple[str, ...] = ()

    def header(self, name: str) -> list[str]:
        """Return every value of header ``name`` (case-insensitive), top first."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


@dataclass(frozen=True, slots=True)
class Evidence:
    """Why a field got its value: which rule fired on which signal."""

    field: str
    value: str
    rule: str
    signal: str


@dataclass(frozen=True, slots=True)
class Classification:
    """What a message means for the seller. ``relevant=False`` leaves the rest empty."""

    relevant: bool
    platform: str | None = None
    kind: str | None = None
    reason: str | None = None
    severity: str | None = None
    authenticity: str | None = None
    language: str | None = None
    reason_text: str | None = None
    deadline: date | None = None
    marketplace: str | None = None
    ids: tuple[str, ...] = ()
    # Secondary facts, e.g. ("funds_held", "true"), ("hold_days", "90"), ("appeal_channel", "…").
    facts: tuple[tuple[str, str], ...] = ()
    evidence: tuple[Evidence, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Guidance:
    """The next steps for one case, from the playbook data files."""

    title: str
    steps: tuple[str, ...]
    source: str  # which playbook entry matched, e.g. "amazon/account_deactivated/related_account"


@dataclass(frozen=True, slots=True)
class Event:
    """A stored event: one relevant message and what it means."""

    id: int
    account: str
    store: str
    folder: str
    uid: int
    uidvalidity: int
    message_id: str
    subject: str
    sender: str
    received_at: datetime | None
    detected_at: datetime
    classification: Classification
    status: str
    linked_event_id: int | None = None  # the earlier event this follow-up notice belongs to


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """The result of one delivery attempt, as recorded."""

    outcome: str  # success | failure | timeout | nomatch | error
    detail: str
    permanent: bool = False
