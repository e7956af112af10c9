"""The gateway's API keys: a request's bearer key checked in constant time against them."""

from __future__ import annotations

import hmac


def authorized(keys: tuple[bytes, ...], headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request's `Authorization: Bearer` key is one of `keys`."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, key = value.partition(b" ")
            if scheme.lower() != b"bearer":
                return False
            # Every key is compared, so the time taken says nothing about which matched.
            matched = False
            for known in keys:
                matched |= hmac.compare_digest(key.strip(), known)
            return matched
    return False
