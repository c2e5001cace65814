"""HTTP shapes, apart from the domain. `KeyWithSecret` is the only shape that carries a secret."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from domain.errors import InvalidInput
from domain.keys import DEFAULT_GRACE_SECONDS, KeyState
from domain.text import MAX_ENDPOINT_LENGTH, check_text
from domain.timefmt import check_time
from domain.workspace import MAX_LIVE_KEYS, Workspace

V = TypeVar("V")


def _rule(check: Callable[[V], V]) -> AfterValidator:
    """A domain rule as a field validator: its InvalidInput becomes pydantic's 422 with the rule's message."""

    def validate(value: V) -> V:
        try:
            return check(value)
        except InvalidInput as error:
            raise ValueError(str(error)) from None

    return AfterValidator(validate)


# One definition per field kind, shared by bodies and query parameters.
UtcTime = Annotated[datetime, _rule(check_time)]
Endpoint = Annotated[str, _rule(lambda value: check_text(value, "endpoint", MAX_ENDPOINT_LENGTH, controls=True))]


class RequestBody(BaseModel):
    """A request body: an unknown field is refused (a mistyped `expires_at` must not be ignored)."""

    model_config = ConfigDict(extra="forbid")


class WorkspaceCreate(RequestBody):
    name: str
    plan: str
    requests_per_minute: int | None = None
    requests_per_day: int | None = None


class PlanChange(RequestBody):
    plan: str
    requests_per_minute: int | None = None
    requests_per_day: int | None = None


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
    name: str
    scopes: list[str] = Field(default_factory=list)
    expires_at: datetime | None = None


class ScopeGrant(RequestBody):
    scopes: list[str]


class Rotate(RequestBody):
    grace_seconds: int = DEFAULT_GRACE_SECONDS


class Revoke(RequestBody):
    reason: str | None = None


class KeyList(BaseModel):
    items: list[KeyPublic]


class VerifyRequest(RequestBody):
    key: str = Field(description="the presented secret")
    scope: str
    endpoint: Endpoint | None = None


class RateLimitInfo(BaseModel):
    limit: int
    remaining: int
    reset: int


class VerifyResponse(BaseModel):
    valid: bool
    code: str
    key_id: UUID | None
    workspace_id: UUID | None
    scopes: list[str] | None
    ratelimit: RateLimitInfo | None


class EndpointCount(BaseModel):
    endpoint: str
    count: int


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
