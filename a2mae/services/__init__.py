"""Local services the pipeline runs against: a generic :class:`Service` and the S3 store.

Library code, importable without Prefect; ``infra/`` scripts and the tests start services from here.
"""

from __future__ import annotations

from a2mae.services.base import Service, ServiceError, free_port_pair, port_is_free
from a2mae.services.s3 import SeaweedFS, weed_binary

__all__ = ["SeaweedFS", "Service", "ServiceError", "free_port_pair", "port_is_free", "weed_binary"]
