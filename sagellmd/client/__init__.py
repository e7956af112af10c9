"""The Python client of sagellm for applications: `from sagellmd.client import Client`.

Inference goes through the gateway, management through the daemon's API; every failure is a
ClientError carrying the server's message. It imports nothing of the daemon (docs/python.md).
"""

from sagellmd.client.core import Client
from sagellmd.client.errors import ClientError

__all__ = ["Client", "ClientError"]
