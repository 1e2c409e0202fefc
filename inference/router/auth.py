"""API keys: compared as SHA-256 digests in constant time; per-key tenant, default class and limit."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from inference.router.config import RouterConfig, digest_key_id, strictest
from inference.router.errors import RouterError


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request. ``key_id`` is a name or digest prefix, never the key."""

    key_id: str
    tenant: str
    default_class: str
    rpm: int | None
    min_class: str | None = None  # the loosest class this key's requests may have


class Authenticator:
    def __init__(self, config: RouterConfig) -> None:
        policy_default = config.policy.default_class
        default_rpm = config.limits.rpm_per_key
        self.enabled = config.auth.enabled
        self._entries: list[tuple[bytes, Principal]] = []
        for digest in config.auth.keys_sha256:
            key_id = digest_key_id(digest)
            self._entries.append((bytes.fromhex(digest), Principal(key_id, key_id, policy_default, default_rpm)))
        for key in config.auth.keys:
            default_class: str = key.default_class or policy_default
            if key.min_class is not None:  # the policy default may be looser than the key's floor
                default_class = strictest(default_class, key.min_class)
            principal = Principal(
                key.id,
                key.tenant or key.id,
                default_class,
                key.rpm if key.rpm is not None else default_rpm,
                key.min_class,
            )
            self._entries.append((bytes.fromhex(key.sha256), principal))
        self.anonymous = Principal("anonymous", "anonymous", policy_default, default_rpm)

    def authenticate(self, authorization: bytes | None) -> Principal:
        """Return the principal for an ``Authorization`` header value, or raise a 401 RouterError."""
        if not self.enabled:
            return self.anonymous
        if not authorization:
            raise RouterError(401, "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key")
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            raise RouterError(401, "Malformed Authorization header: expected 'Bearer <key>'.", code="invalid_api_key")
        digest = hashlib.sha256(token).digest()
        found: Principal | None = None
        for known, principal in self._entries:  # no early exit: the time does not depend on which key
            if hmac.compare_digest(known, digest):
                found = principal
        if found is None:
            raise RouterError(401, "Incorrect API key provided.", code="invalid_api_key")
        return found
