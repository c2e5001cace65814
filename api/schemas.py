"""HTTP shapes, apart from the domain. `KeyWithSecret` is the only shape that carries a secret.

Request fields the domain checks (names, plans, limits, reasons, grace periods, scopes) are left
to the domain, which answers each refusal with its own problem type; their documented schema
(`WithJsonSchema`) states the same rules, so the OpenAPI document is as strict as the server.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from domain.addresses import canonical_address
from domain.application import AUDIT_TYPES
from domain.errors import InvalidInput
from domain.imports import MAX_SECRET_LENGTH, MIN_SECRET_LENGTH
from domain.keycredits import INTERVALS, MAX_CREDITS
from domain.keyinfo import MAX_META_BYTES, MAX_OWNER_ID_LENGTH
from domain.keys import DEFAULT_GRACE_SECONDS, MAX_GRACE_SECONDS, KeyState
from domain.plans import MAX_LIMIT, Plan
from domain.text import MAX_ENDPOINT_LENGTH, MAX_REASON_LENGTH, check_text
from domain.timefmt import check_time
from domain.verification import VerifyCode
from domain.workspace import (
    MAX_LIVE_KEYS,
    MAX_NAME_LENGTH,
    MAX_WEBHOOK_DESCRIPTION_LENGTH,
    MAX_WEBHOOK_URL_LENGTH,
    Webhook,
    Workspace,
)

V = TypeVar("V")


def _rule(check: Callable[[V], V]) -> AfterValidator:
    """A domain rule as a field validator: its InvalidInput becomes pydantic's 422 with the rule's message."""

    def validate(value: V) -> V:
        try:
            return check(value)
        except InvalidInput as error:
            raise ValueError(str(error)) from None

    return AfterValidator(validate)


# RFC 3339 section 5.6 `date-time`: an offset is required. Other text pydantic would read as a time
# (a bare date, a number of seconds since 1970) is refused, as the document says.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339(value: object) -> object:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 time with an offset, e.g. 2027-03-03T14:00:00Z")
    return value


def _json_integer(value: object) -> object:
    """A JSON Schema integer: a number without a fraction (`5.0` is one), never a boolean or a string."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


# What the domain accepts, as JSON Schema. Names: no control character, not blank (Python's
# `str.strip()` whitespace), at most 100 characters; reasons and endpoints: no NUL. Times: years
# 1970-9999 once in UTC; the pattern admits the years 1970-9999 as written, less the two days where
# an offset takes a time out of them (1970-01-01 east of UTC, 9999-12-31 west of it), and leaves out
# 1969-12-31 west of UTC, which an offset can bring in: a safe subset, stricter by a day.
_STRIPPED = "\\x00-\\x20\\x7f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
_NOT_ZERO_OFFSET = "(?:[0-9][1-9]|[1-9][0-9]):[0-9]{2}|00:(?:[0-9][1-9]|[1-9][0-9])"
NAME_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_NAME_LENGTH,
    "pattern": f"^[^\\x00-\\x1f\\x7f]*[^{_STRIPPED}][^\\x00-\\x1f\\x7f]*$",
}
TIME_SCHEMA: dict[str, Any] = {
    "type": "string",
    "format": "date-time",
    "pattern": (
        "^(?:19[7-9][0-9]|[2-9][0-9]{3})-[0-9]{2}-[0-9]{2}[Tt]"
        "[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})$"
    ),
    "not": {"pattern": f"^(?:1970-01-01[Tt].*\\+|9999-12-31[Tt].*-)(?:{_NOT_ZERO_OFFSET})$"},
    "description": "RFC 3339 with an offset, e.g. 2027-03-03T14:00:00Z; within years 1970-9999 in UTC",
}


def _text_schema(max_length: int) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, "pattern": "^[^\\x00]*$"}


# One definition per field kind, shared by bodies and query parameters.
TimeText = Annotated[datetime, BeforeValidator(_rfc3339), WithJsonSchema(TIME_SCHEMA)]
UtcTime = Annotated[datetime, BeforeValidator(_rfc3339), _rule(check_time), WithJsonSchema(TIME_SCHEMA)]
Endpoint = Annotated[
    str,
    _rule(lambda value: check_text(value, "endpoint", MAX_ENDPOINT_LENGTH, controls=True)),
    WithJsonSchema(_text_schema(MAX_ENDPOINT_LENGTH)),
]
Name = Annotated[str, WithJsonSchema(NAME_SCHEMA)]
Reason = Annotated[str, WithJsonSchema(_text_schema(MAX_REASON_LENGTH))]
OwnerId = Annotated[
    str,
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": MAX_OWNER_ID_LENGTH, "pattern": "^[^\\x00-\\x1f\\x7f]*$"}
    ),
]
Meta = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "description": f"any JSON object of at most {MAX_META_BYTES} bytes serialised"}),
]
PlanName = Annotated[str, WithJsonSchema({"type": "string", "enum": [plan.value for plan in Plan]})]
JsonInt = Annotated[int, BeforeValidator(_json_integer)]
Limit = Annotated[JsonInt, WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT})]
# An event's type, as the audit log names it (its class name); text no database could compare is refused.
EventType = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=100)]
# `next_cursor` of an earlier page: a stream position (checked by the route).
Cursor = Annotated[str, WithJsonSchema({"type": "string", "pattern": "^[0-9]{1,18}$"})]
# A scope of the deployment's catalog: `api.openapi` points each one marked so at the component it
# defines from the running catalog.
SCOPE_MARKER = "x-keyledger-scope"
Scope = Annotated[str, WithJsonSchema({"type": "string", SCOPE_MARKER: True})]


def _ip(value: str) -> str:
    address = canonical_address(value) if len(value) <= 64 else None
    if address is None:
        raise ValueError("client_ip must be an IPv4 or IPv6 address")
    return address


ClientIp = Annotated[
    str,
    AfterValidator(_ip),
    WithJsonSchema(
        {
            "type": "string",
            "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
            "description": "the client's IPv4 or IPv6 address",
        }
    ),
]


class RequestBody(BaseModel):
    """A request body: an unknown field is refused (a mistyped `expires_at` must not be ignored)."""

    model_config = ConfigDict(extra="forbid")


# The limits go with the enterprise plan only, and both of them (`requests_per_minute` may not exceed
# `requests_per_day`, a rule JSON Schema cannot state).
_PLAN_LIMITS: dict[str, Any] = {
    "oneOf": [
        {
            "properties": {
                "plan": {"enum": [plan.value for plan in Plan if plan is not Plan.ENTERPRISE]},
                "requests_per_minute": {"type": "null"},
                "requests_per_day": {"type": "null"},
            }
        },
        {
            "properties": {
                "plan": {"const": Plan.ENTERPRISE.value},
                "requests_per_minute": {"type": "integer"},
                "requests_per_day": {"type": "integer"},
            },
            "required": ["requests_per_minute", "requests_per_day"],
        },
    ]
}


class PlanChange(RequestBody):
    model_config = ConfigDict(json_schema_extra=_PLAN_LIMITS)

    plan: PlanName
    requests_per_minute: Limit | None = Field(default=None, description="enterprise only: requests per key per minute")
    requests_per_day: Limit | None = Field(default=None, description="enterprise only: requests per key per day")


class WorkspaceCreate(PlanChange):
    name: Name


class WorkspacePublic(BaseModel):
    id: UUID
    name: str
    plan: str
    requests_per_minute: int
    requests_per_day: int
    live_keys: int
    max_live_keys: int = Field(default=MAX_LIVE_KEYS, description="live keys a workspace may hold")

    @classmethod
    def of(cls, workspace: Workspace) -> WorkspacePublic:
        return cls(
            id=workspace.id,
            name=workspace.name,
            plan=workspace.plan,
            requests_per_minute=workspace.requests_per_minute,
            requests_per_day=workspace.requests_per_day,
            live_keys=workspace.live_keys,
        )


class KeyLimitsPublic(BaseModel):
    requests_per_minute: int
    requests_per_day: int
    source: Literal["plan", "key"] = Field(description="`key` while the key has limits of its own")


class RefillPublic(BaseModel):
    amount: int
    interval: Literal["day", "month"]


class CreditsPublic(BaseModel):
    remaining: int = Field(description="credits left in this period (each allowed answer spends one)")
    refill: RefillPublic | None = Field(description="what remains is reset to `amount` each UTC day or month")


class KeyPublic(BaseModel):
    id: UUID
    workspace_id: UUID
    name: str
    status: str
    scopes: list[str]
    effective_scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    rotated_at: datetime | None
    previous_secret_valid_until: datetime | None
    revoked_at: datetime | None
    rotation_due: bool
    suspended_at: datetime | None = None
    meta: dict[str, Any] | None = None
    owner_id: str | None = None
    limits: KeyLimitsPublic | None = None
    credits: CreditsPublic | None = Field(default=None, description="usage-limited keys only")
    imported: bool = Field(default=False, description="its first secret was imported (found by its digest)")

    @classmethod
    def of(cls, state: KeyState) -> KeyPublic:
        return cls.model_validate(state, from_attributes=True)


class WorkspaceRef(BaseModel):
    id: UUID
    name: str


class Me(BaseModel):
    """The presented key itself and the workspace it belongs to."""

    key: KeyPublic
    workspace: WorkspaceRef


class KeyWithSecret(BaseModel):
    key: KeyPublic
    secret: str = Field(description="the plaintext secret: shown in this answer only")


class WorkspaceCreated(BaseModel):
    workspace: WorkspacePublic
    admin_key: KeyWithSecret


class KeyIssue(RequestBody):
    name: Name
    scopes: list[Scope] = Field(default_factory=list, description="at most 10 distinct scopes")
    expires_at: TimeText | None = Field(default=None, description="in the future; none: the key never expires")
    meta: Meta | None = None
    owner_id: OwnerId | None = Field(default=None, description="the caller's own user or customer id")
    credits: CreditsBody | None = Field(default=None, description="makes the key usage-limited")


CreditCount = Annotated[JsonInt, WithJsonSchema({"type": "integer", "minimum": 0, "maximum": MAX_CREDITS})]


class RefillBody(RequestBody):
    amount: Annotated[JsonInt, WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_CREDITS})]
    interval: Annotated[str, WithJsonSchema({"type": "string", "enum": list(INTERVALS)})]


class CreditsBody(RequestBody):
    remaining: CreditCount = Field(description="credits the key may spend from now on (a fresh count)")
    refill: RefillBody | None = Field(default=None, description="reset what remains to `amount` each UTC day or month")

    def values(self) -> tuple[int, int | None, str | None]:
        return (
            (self.remaining, self.refill.amount, self.refill.interval) if self.refill else (self.remaining, None, None)
        )


_IMPORT_SECRET_SCHEMA = {
    "type": "string",
    "pattern": f"^(?!kl_)[\\x20-\\x7e]{{{MIN_SECRET_LENGTH},{MAX_SECRET_LENGTH}}}$",
    "description": "the secret as the other system issued it: printable ASCII, not starting with `kl_`",
}


class KeyImport(RequestBody):
    """A key whose secret was issued elsewhere: its `secret` or the `sha256` (hex) of it, never both."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["secret"]}, {"required": ["sha256"]}]})

    name: Name
    scopes: list[Scope] = Field(default_factory=list, description="at most 10 distinct scopes")
    # Absent, never null: exactly one of the two is given (the domain checks it; the document's `oneOf` says it).
    secret: Annotated[str, WithJsonSchema(_IMPORT_SECRET_SCHEMA)] = Field(default=None)  # type: ignore[assignment]
    sha256: Annotated[str, WithJsonSchema({"type": "string", "pattern": "^[0-9a-fA-F]{64}$"})] = Field(
        default=None  # type: ignore[assignment]
    )
    expires_at: TimeText | None = Field(default=None, description="in the future; none: the key never expires")
    meta: Meta | None = None
    owner_id: OwnerId | None = Field(default=None, description="the caller's own user or customer id")


class KeyImported(BaseModel):
    key: KeyPublic


class KeyPatch(RequestBody):
    """The fields to change; a field left out stays as it is, `null` clears `meta` or `owner_id`."""

    name: Name = Field(default=None)  # type: ignore[assignment]  # absent: unchanged (null is refused)
    meta: Meta | None = None
    owner_id: OwnerId | None = None

    def changes(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in self.model_fields_set}


class KeyLimitsBody(RequestBody):
    """At least one; each at most the plan's (a number left out: the plan's for that window)."""

    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": ["requests_per_minute"]}, {"required": ["requests_per_day"]}]}
    )

    # Absent, never null: a window left out keeps the plan's.
    requests_per_minute: Limit = Field(default=None)  # type: ignore[assignment]
    requests_per_day: Limit = Field(default=None)  # type: ignore[assignment]


class ScopeGrant(RequestBody):
    scopes: list[Scope] = Field(description="the key may hold at most 10 distinct scopes")


class Rotate(RequestBody):
    grace_seconds: Annotated[
        JsonInt, WithJsonSchema({"type": "integer", "minimum": 0, "maximum": MAX_GRACE_SECONDS})
    ] = Field(default=DEFAULT_GRACE_SECONDS, description="how long the previous secret stays valid")


class Revoke(RequestBody):
    reason: Reason | None = None


class Suspend(RequestBody):
    reason: Reason | None = None


class KeyList(BaseModel):
    items: list[KeyPublic]


class VerifyRequest(RequestBody):
    key: str = Field(description="the presented secret")
    scope: Scope
    endpoint: Endpoint | None = None
    client_ip: ClientIp | None = Field(
        default=None, description="the address of the client that presented the key, recorded with usage (SPEC 8.2)"
    )
    record: StrictBool = Field(
        default=True,
        description="false: the answer is not recorded as usage, the caller reports it with the real status "
        "(`POST /v1/usage/report`, as the remote guard does); quota is consumed either way",
    )


MAX_REPORT_ITEMS = 1000


class UsageReportItem(RequestBody):
    key: str = Field(description="the secret the request presented (it names the key)")
    endpoint: Endpoint
    status: Annotated[JsonInt, WithJsonSchema({"type": "integer", "minimum": 100, "maximum": 599})] = Field(
        description="the status the service answered"
    )
    client_ip: ClientIp | None = Field(default=None, description="the address of the client that presented the key")
    scope: Scope | None = Field(
        default=None, description="the scope the request needed (as asked of /v1/verify), counted by insights"
    )

    @field_validator("status")
    @classmethod
    def _status(cls, value: int) -> int:
        if not 100 <= value <= 599:
            raise ValueError("status must be an HTTP status, 100-599")
        return value


class UsageReport(RequestBody):
    items: list[UsageReportItem] = Field(max_length=MAX_REPORT_ITEMS)


class UsageReportAccepted(BaseModel):
    accepted: int = Field(description="items received; those naming no key are dropped without saying which")


class RateLimitInfo(BaseModel):
    limit: int
    remaining: int
    reset: int


class VerifyCredits(BaseModel):
    remaining: int


class VerifyResponse(BaseModel):
    valid: bool
    code: str
    key_id: UUID | None
    workspace_id: UUID | None
    scopes: list[str] | None
    ratelimit: RateLimitInfo | None
    name: str | None = None
    owner_id: str | None = None
    meta: dict[str, Any] | None = None
    credits: VerifyCredits | None = Field(default=None, description="usage-limited keys only")


class EndpointCount(BaseModel):
    endpoint: str
    count: int


class ScopeCount(BaseModel):
    scope: str
    allowed: int = Field(description="answers that needed this scope and found it held (limited ones too)")
    refused: int = Field(description="answers refused because the key lacked it")
    last_seen: datetime | None = Field(description="the UTC minute of the last such answer")


class UsagePoint(BaseModel):
    start: datetime
    requests: int
    successes: int
    client_errors: int
    rate_limited: int


class KeyUsagePublic(BaseModel):
    key_id: UUID
    total: int
    successes: int
    success_rate: float | None
    client_errors: int
    rate_limited: int
    last_used: datetime | None
    top_endpoints: list[EndpointCount]
    scopes: list[ScopeCount] = Field(description="per scope the answers needed, over the UTC days of the window")
    per_minute: list[UsagePoint] = Field(description="per UTC minute with answers; empty when `bucket` is asked")
    per_day: list[UsagePoint]
    series: list[UsagePoint] | None = Field(
        default=None, description="with `bucket`: the minute counts summed per UTC minute, hour or day"
    )


class UsageList(BaseModel):
    bucket: str | None = None
    items: list[KeyUsagePublic]


class AuditEntryPublic(BaseModel):
    position: int
    occurred_at: datetime
    type: str
    key_id: UUID | None
    actor: str
    data: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEntryPublic]
    next_cursor: str | None


class KeyStateAtPublic(BaseModel):
    """A key as it stood at `at`, rebuilt from events; secrets by fingerprint only."""

    at: datetime
    key: KeyPublic
    version: int
    last_event_at: datetime
    current_secret: str
    previous_secret: str | None
    valid_secrets: list[str]


class KeyAccessPublic(BaseModel):
    key_id: UUID
    name: str
    granted_by: list[str]
    state: KeyStateAtPublic


class AccessList(BaseModel):
    scope: str
    at: datetime
    items: list[KeyAccessPublic]


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description="where: `body`, `query`, `path` or `header`, then the field")
    msg: str


class Problem(BaseModel):
    """An RFC 9457 problem: the body of every error answer, as `application/problem+json`."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="the kind of problem, e.g. `/problems/key-not-found`")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="what went wrong; never a secret, at most a short excerpt of the input")
    code: Annotated[str, WithJsonSchema({"type": "string", "enum": [c.value for c in VerifyCode]})] | None = Field(
        default=None, description="on answers about a presented key: the verify code"
    )
    scope: str | None = Field(default=None, description="on 403 (insufficient scope): the scope needed")
    errors: list[ValidationIssue] | None = Field(default=None, description="on invalid requests: each error")


# --- the verifiable audit log (SPEC 8.4) -----------------------------------

Hash = Annotated[str, Field(pattern="^[0-9a-f]{64}$", description="a SHA-256 hash, lower-case hex")]


class PublicKeyPublic(BaseModel):
    algorithm: str = Field(description="always `Ed25519`")
    public_key: str = Field(description="base64 (RFC 4648 section 4, padded) of the 32 raw public key bytes")


class CheckpointPublic(BaseModel):
    """A signed tree head: the signature covers `"<origin>\\n<tree_size>\\n<base64 root>\\n<timestamp>\\n"`."""

    origin: str
    tree_size: int = Field(ge=0)
    root_hash: Hash
    timestamp: str = Field(description="RFC 3339 UTC, exactly the signed time line")
    signature: str = Field(description="base64 (padded) Ed25519 signature")


class InclusionProofPublic(BaseModel):
    """RFC 9162 section 2.1.3: the audit path of one event's leaf in the tree of `tree_size` leaves."""

    leaf_index: int = Field(ge=0)
    tree_size: int = Field(ge=1)
    leaf_hash: Hash
    hashes: list[Hash]


class ConsistencyProofPublic(BaseModel):
    """RFC 9162 section 2.1.4: proves the tree of `to` leaves extends the tree of `from` leaves."""

    hashes: list[Hash]


# --- webhooks (SPEC 8.3) ---------------------------------------------------------

WebhookUrl = Annotated[
    str,
    WithJsonSchema(
        {
            "type": "string",
            "format": "uri",
            "maxLength": MAX_WEBHOOK_URL_LENGTH,
            "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^\\x00-\\x20]+$",
            "description": "https:// (http:// too where KEYLEDGER_WEBHOOK_ALLOW_PRIVATE=true); no credentials; "
            "no private, loopback, link-local or reserved address, by name or by what the name resolves to",
        }
    ),
]
Description = Annotated[str, WithJsonSchema(_text_schema(MAX_WEBHOOK_DESCRIPTION_LENGTH))]
AuditType = Annotated[str, WithJsonSchema({"type": "string", "enum": sorted(AUDIT_TYPES)})]


class WebhookCreate(RequestBody):
    url: WebhookUrl
    types: list[AuditType] | None = Field(
        default=None, min_length=1, max_length=50, description="the audit entry types to deliver (default: all)"
    )
    description: Description | None = None


class WebhookPublic(BaseModel):
    id: UUID
    url: str
    types: list[str] | None
    description: str | None
    created_at: datetime

    @classmethod
    def of(cls, webhook: Webhook) -> WebhookPublic:
        return cls(
            id=webhook.id,
            url=webhook.url,
            types=webhook.types,
            description=webhook.description,
            created_at=webhook.created_at,
        )


class WebhookWithSecret(BaseModel):
    """A new webhook and its signing secret (`whsec_...`): shown this once."""

    webhook: WebhookPublic
    secret: str


class WebhookList(BaseModel):
    items: list[WebhookPublic]


class DeliveryPublic(BaseModel):
    position: int
    type: str
    attempts: int
    status: Literal["pending", "delivered", "failed"]
    last_status_code: int | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None


class DeliveryList(BaseModel):
    items: list[DeliveryPublic] = Field(description="the webhook's latest 100 deliveries, newest first")


# --- insights and exposure (SPEC 8.2) ------------------------------------------------------


class FindingPublic(BaseModel):
    kind: Literal["unused_key", "unused_scope", "denied_scope", "rotation_due", "expiring_soon"]
    key_id: UUID
    key_name: str
    observed_days: int = Field(description="whole days the finding covers: the window or since the grant, if shorter")
    detail: dict[str, Any]
    suggestion: dict[str, Any] | None = Field(
        description="unused_scope: `{scopes}`, the smallest granted set covering every needed scope (apply it with "
        "PUT .../keys/{key}/scopes); unused_key: `{action: revoke}`; rotation_due: `{action: rotate}`"
    )


class InsightsReport(BaseModel):
    window_days: int
    generated_at: datetime
    findings: list[FindingPublic]


class SecretValidity(BaseModel):
    fingerprint: str
    valid_from: datetime
    valid_until: datetime | None = Field(description="null: still valid")


class ScopesFrom(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    start: datetime = Field(alias="from")
    scopes: list[str]


class ExposureRequests(BaseModel):
    total: int
    allowed: int = Field(description="2xx answers")
    refused: int
    first: datetime | None = Field(description="the UTC minute of the first answer")
    last: datetime | None


class ExposureEndpoint(BaseModel):
    endpoint: str
    count: int
    allowed: int


class ExposureSource(BaseModel):
    address: str
    count: int
    first: datetime
    last: datetime


class ExposureReport(BaseModel):
    key_id: UUID
    since: datetime
    until: datetime
    secrets: list[SecretValidity]
    scopes: list[ScopesFrom]
    requests: ExposureRequests
    endpoints: list[ExposureEndpoint] = Field(description="over whole UTC days from the day of `since`")
    sources: list[ExposureSource] = Field(
        description="client addresses (at most 100 per UTC day kept), over whole UTC days from the day of `since`"
    )
