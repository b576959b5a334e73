"""Who is asking: verified identities for a Pipeline with `agent.auth.oidc`.

`Verifier.verify(token) -> User` checks a JWT's signature against the issuer's keys (a JWKS given in the
environment variable `OidcConnection.jwks_env` names, for clusters without egress; else
fetched from `<issuer>/.well-known/openid-configuration` and cached), its `iss`, `aud`, `exp` and `nbf` (30 s
leeway), and reads the user id, tenant and groups from the configured claims. Any failure of the token
itself (unsigned, another key, expired, another audience or issuer, no user claim) raises a 401 `ApiError`;
an issuer whose keys cannot be fetched raises a 503. Verification is blocking (key fetches): call it in a
thread.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import httpx
import jwt
from raylight.api.connections import OidcConnection
from raylight.api.types import OidcClaims

from raylight_agents import errors
from raylight_agents.agent import User

LEEWAY_S = 30


def _claim(claims: dict[str, Any], path: str | None) -> Any:
    """The claim at a dotted path ("realm_access.roles"); None when absent or not configured."""
    if not path:
        return None
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _invalid(reason: str) -> errors.ApiError:
    return errors.ApiError(401, f"invalid identity token: {reason}", type="authentication_error",
                           code="invalid_token")


class Verifier:
    def __init__(self, issuer: str, audience: str, algorithms: list[str], claims: OidcClaims,
                 jwks: dict[str, Any] | None = None) -> None:
        self.issuer = issuer
        self.audience = audience
        self.algorithms = algorithms
        self.claims = claims
        self._keys = jwt.PyJWKSet.from_dict(jwks) if jwks is not None else None
        self._client: jwt.PyJWKClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_connection(cls, oidc: OidcConnection) -> Verifier:
        """From Connections.auth.oidc; a JWKS env var that is named but empty fails closed (ValueError)."""
        jwks = None
        if oidc.jwks_env:
            raw = os.environ.get(oidc.jwks_env)
            if not raw:
                raise ValueError(f"agent.auth.oidc.jwksSecret is set but ${oidc.jwks_env} is empty")
            jwks = json.loads(raw)
        return cls(oidc.issuer, oidc.audience, list(oidc.algorithms), oidc.claims, jwks)

    def _fetched_key(self, token: str) -> Any:
        with self._lock:
            if self._client is None:
                discovery = f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"
                try:
                    document = httpx.get(discovery, timeout=10).raise_for_status().json()
                    uri = str(document["jwks_uri"])
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    raise errors.unavailable("auth", f"cannot read the issuer's discovery document: "
                                             f"{type(exc).__name__}") from exc
                self._client = jwt.PyJWKClient(uri, cache_keys=True, lifespan=300, timeout=10)
        try:
            return self._client.get_signing_key_from_jwt(token).key
        except jwt.PyJWKClientConnectionError as exc:
            raise errors.unavailable("auth", "cannot fetch the issuer's signing keys") from exc
        except jwt.PyJWKClientError as exc:
            raise _invalid(str(exc)) from exc

    def _key(self, token: str) -> Any:
        if self._keys is None:
            return self._fetched_key(token)
        kid = jwt.get_unverified_header(token).get("kid")
        matches = [k for k in self._keys.keys if kid is None or k.key_id == kid]
        if not matches:
            raise _invalid(f"no key with kid {kid!r} in the configured JWKS")
        return matches[0].key

    def verify(self, token: str) -> User:
        """The verified caller; raises ApiError 401 (bad token) or 503 (keys unavailable)."""
        try:
            claims = jwt.decode(token, self._key(token), algorithms=self.algorithms, audience=self.audience,
                                issuer=self.issuer, leeway=LEEWAY_S, options={"require": ["exp", "iss", "aud"]})
        except jwt.PyJWTError as exc:
            raise _invalid(str(exc)) from exc
        user = _claim(claims, self.claims.user)
        if not isinstance(user, str | int) or not str(user):
            raise _invalid(f"no user id in claim {self.claims.user!r}")
        tenant = _claim(claims, self.claims.tenant)
        groups = _claim(claims, self.claims.groups)
        if isinstance(groups, str):
            groups = groups.split()
        return User(str(user), str(tenant) if tenant is not None else None,
                    tuple(str(g) for g in groups) if isinstance(groups, list) else ())
