"""The verifiable audit log (SPEC 8.4): the public key, signed checkpoints and RFC 9162 proofs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from adapters.auditchain.auditlog import NoCheckpoint
from adapters.auditchain.checkpoints import Checkpoint
from api.deps import OperatorDep, ServicesDep, require_admin_or_operator
from api.schemas import CheckpointPublic, ConsistencyProofPublic, InclusionProofPublic, PublicKeyPublic

router = APIRouter(prefix="/v1/audit", tags=["audit log"])

MAX_POSITION = 2**63 - 1  # a stored position is a signed 64-bit integer on both backends
AdminOrOperator = Annotated[str, Depends(require_admin_or_operator)]


def _checkpoint(checkpoint: Checkpoint) -> CheckpointPublic:
    return CheckpointPublic.model_validate(checkpoint.to_json())


@router.get("/public-key", response_model=PublicKeyPublic)
def public_key(services: ServicesDep) -> PublicKeyPublic:
    """The key checkpoints are signed with; needs no credentials."""
    signer = services.audit.signer
    if signer is None:  # unreachable: an API process always signs
        raise NoCheckpoint("this process has no audit signing key")
    return PublicKeyPublic(algorithm="Ed25519", public_key=signer.public_key_b64)


@router.get("/checkpoint", response_model=CheckpointPublic)
def latest_checkpoint(services: ServicesDep, caller: AdminOrOperator) -> CheckpointPublic:
    """The latest signed tree head (an admin key of any workspace, or the operator token)."""
    latest = services.audit.latest()
    if latest is None:
        raise NoCheckpoint("no checkpoint has been made yet (POST /v1/audit/checkpoint)")
    return _checkpoint(latest)


@router.post("/checkpoint", response_model=CheckpointPublic)
def make_checkpoint(services: ServicesDep, operator: OperatorDep) -> CheckpointPublic:
    """Sign the tree as it stands now and answer the checkpoint (operator token)."""
    return _checkpoint(services.audit.checkpoint())


@router.get("/proof/inclusion", response_model=InclusionProofPublic)
def inclusion_proof(
    services: ServicesDep,
    caller: AdminOrOperator,
    position: Annotated[int, Query(ge=1, le=MAX_POSITION, description="the event's stream position")],
    tree_size: Annotated[
        int | None,
        Query(ge=1, le=MAX_POSITION, description="size of the tree (default: the latest checkpoint's)"),
    ] = None,
) -> InclusionProofPublic:
    """The event's leaf and its audit path in the tree of `tree_size` leaves (at most the latest checkpoint's)."""
    proof = services.audit.inclusion(position, tree_size)
    return InclusionProofPublic(
        leaf_index=proof.leaf_index,
        tree_size=proof.tree_size,
        leaf_hash=proof.leaf_hash.hex(),
        hashes=[h.hex() for h in proof.hashes],
    )


@router.get("/proof/consistency", response_model=ConsistencyProofPublic)
def consistency_proof(
    services: ServicesDep,
    caller: AdminOrOperator,
    from_size: Annotated[int, Query(alias="from", ge=1, le=MAX_POSITION, description="the earlier tree's size")],
    to_size: Annotated[
        int,
        Query(alias="to", ge=1, le=MAX_POSITION, description="the later tree's size (at most the latest checkpoint's)"),
    ],
) -> ConsistencyProofPublic:
    """The RFC 9162 consistency proof between the trees of `from` and `to` leaves."""
    return ConsistencyProofPublic(hashes=[h.hex() for h in services.audit.consistency(from_size, to_size)])
