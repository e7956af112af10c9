"""What the API handlers need from the daemon."""

from __future__ import annotations

from dataclasses import dataclass, field

from sagellmd.api.auth import TokenFile
from sagellmd.api.status_document import StatusDocuments
from sagellmd.config import Settings
from sagellmd.events import EventHub
from sagellmd.reconcile.loop import Reconciler
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
