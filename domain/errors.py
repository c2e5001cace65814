"""Named domain errors.

Each error belongs to one of three families (invalid input, not found,
conflict) so that the HTTP layer can map them to problem responses in one
place without knowing every subclass.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every rule violation. The message is safe to show a caller."""

    title = "Domain rule violated"


class InvalidInput(DomainError):
    title = "Invalid input"


class NotFound(DomainError):
    title = "Not found"


class Conflict(DomainError):
    title = "Conflict"


# --- invalid input ---------------------------------------------------------


class MalformedScope(InvalidInput):
    title = "Malformed scope"


class UnknownResource(InvalidInput):
    title = "Unknown resource"


class TooManyScopes(InvalidInput):
    title = "Too many scopes"


class InvalidGracePeriod(InvalidInput):
    title = "Invalid grace period"


class InvalidPlan(InvalidInput):
    title = "Invalid plan"


class InvalidName(InvalidInput):
    title = "Invalid name"


class InvalidExpiry(InvalidInput):
    title = "Invalid expiry"


class InvalidReason(InvalidInput):
    title = "Invalid reason"


class InvalidMeta(InvalidInput):
    title = "Invalid meta"


class InvalidOwner(InvalidInput):
    title = "Invalid owner id"


class InvalidLimits(InvalidInput):
    title = "Invalid limits"


class InvalidCredits(InvalidInput):
    title = "Invalid credits"


class InvalidSecret(InvalidInput):
    """A secret or digest offered for import is refused (its text is never echoed)."""

    title = "Invalid secret"


class MalformedSecret(InvalidInput):
    """A presented secret failed the format or checksum check (no lookup made)."""

    title = "Malformed secret"


class InvalidWebhookTarget(InvalidInput):
    """A webhook URL that is not https, or names (or resolves to) an address the server must not call."""

    title = "Invalid webhook target"


# --- not found -------------------------------------------------------------


class WorkspaceNotFound(NotFound):
    title = "Workspace not found"


class KeyNotFound(NotFound):
    title = "Key not found"


class WebhookNotFound(NotFound):
    title = "Webhook not found"


class DeliveryNotFound(NotFound):
    title = "Delivery not found"


# --- conflicts -------------------------------------------------------------


class KeyLimitReached(Conflict):
    title = "Key limit reached"


class KeyAlreadyRevoked(Conflict):
    title = "Key revoked"


class SecretAlreadyImported(Conflict):
    title = "Secret already imported"


class LastAdminKey(Conflict):
    """The change would leave the workspace without an active admin key: nobody could manage it."""

    title = "Last admin key"


class ConcurrentModification(Conflict):
    """Retries were exhausted while other commands kept changing the same aggregate."""

    title = "Concurrent modification"


class WebhookLimitReached(Conflict):
    title = "Webhook limit reached"
