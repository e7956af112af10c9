"""What the API handlers need from the daemon."""

from __future__ import annotations

from dataclasses import dataclass, field

from sagellmd.api.auth import TokenFile
from sagellmd.api.gateway_activity import GatewayActivity
from sagellmd.api.route_entries import RouteVersions
from sagellmd.api.status_document import StatusDocuments
from sagellmd.api.ui_sessions import UiSessions
from sagellmd.config import Settings
from sagellmd.events import EventHub
from sagellmd.instance import Instance
from sagellmd.reconcile.loop import Reconciler
from sagellmd.spec import GATEWAY_ENGINE_ID
from sagellmd.store.repository import Store


@dataclass
class ApiContext:
    settings: Settings
    store: Store
    hub: EventHub
    reconciler: Reconciler
    token: TokenFile
    started_at: float
    status_documents: StatusDocuments = field(default_factory=StatusDocuments)
    gateway_activity: GatewayActivity = field(default_factory=GatewayActivity)
    route_versions: RouteVersions = field(default_factory=RouteVersions)
    ui: UiSessions = field(default_factory=UiSessions)

    def engine_instances(self) -> dict[str, Instance]:
        """The instances of user engines: the gateway's own is shown apart (status.gateway)."""
        return {
            engine_id: instance
            for engine_id, instance in self.reconciler.world.instances.items()
            if engine_id != GATEWAY_ENGINE_ID
        }
