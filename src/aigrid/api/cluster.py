"""GET /admin/cluster: the servers sharing this database, their epochs, leases and load."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from aigrid.api.openai import json_response
from aigrid.api.state import state_of

router = APIRouter(prefix="/admin")


@router.get("/cluster")
async def cluster_nodes(request: Request) -> Response:
    """List every node that has registered, live or not, as the database's clock sees them (admin key)."""
    state = state_of(request)
    state.keyring.require_admin(request)
    membership = state.membership
    nodes = await asyncio.to_thread(membership.store.nodes)
    me = membership.current()
    data = [
        {**node.to_json(), "self": me is not None and node.id == me.node_id and node.epoch == me.epoch}
        for node in nodes
    ]
    return json_response(
        {
            "object": "list",
            "data": data,
            "node": membership.name,
            "live": membership.live,
            "lease_s": membership.lease_s,
            "renew_s": membership.renew_s,
            "sync_s": state.config.cluster.sync_s,
        }
    )
