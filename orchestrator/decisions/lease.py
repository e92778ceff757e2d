"""The lease rules: who may act, and when a calm leader hands over."""

from __future__ import annotations

from enum import StrEnum

# ---- the lease -------------------------------------------------------------------------------


class SessionState(StrEnum):
    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"


def may_act(session: SessionState, is_leader: bool, lease_epoch: int | None, current_epoch: int | None) -> bool:
    """Only a connected leader holding the newest epoch acts; in doubt, do nothing."""
    return (
        session is SessionState.CONNECTED
        and is_leader
        and lease_epoch is not None
        and lease_epoch == current_epoch
    )


def should_yield(my_datacenter: str, primary_datacenters: frozenset[str], contender_datacenters: list[str],
                 all_idle: bool) -> bool:
    """Should a calm leader hand over to a controller outside the primaries' data centres?

    A disaster that takes the primary's data centre must not take the decider with it:
    the survivors would first wait for the dead leader's ZooKeeper session to expire.
    """
    return (
        all_idle
        and my_datacenter in primary_datacenters
        and any(dc not in primary_datacenters for dc in contender_datacenters)
    )
