"""Who is asking: verified identities for a Pipeline with `agent.auth.oidc`.

`Verifier.verify(token) -> User` checks a JWT's signature against the issuer's keys, its `iss`, `aud`, `exp`
and `nbf` (30 s leeway), and reads the user id, tenant and groups from the configured claims. Any failure of
the token itself (unsigned, another key, expired, another audience or issuer, no user claim) raises a 401
`ApiError`; keys that cannot be had raise a 503. Verification is blocking (key fetches): call it in a thread.

Keys have a lifecycle (`KeySet`):
  - fetched from the issuer (`<issuer>/.well-known/openid-configuration` -> `jwks_uri`): kept for the JWKS
    response's `Cache-Control: max-age` (or `Expires`), at most `max_age_s` (the manifest's
    `jwksCacheSeconds`, default 300 s); after that the keys are fetched again and a key the issuer removed
    stops verifying. Expired keys are never used: an issuer that cannot be reached then gives 503, not a
    stale key;
  - a token whose `kid` is not in the set refetches the JWKS at once (at most once per
    `refetch_interval_s`, default 1 s, so random kids cannot flood the issuer): a newly published key works
    on its first token;
  - from a file (a mounted Secret, `OidcConnection.jwks_file`): the file is re-read whenever it changes
    (its inode, size or mtime; the kubelet swaps a Secret volume's files atomically), checked at most
    once per `refetch_interval_s`: a rotated Secret reaches running replicas without a restart, within
    the kubelet's sync period;
  - a token without a `kid` is tried against every key that suits its algorithm (the key's `kty`, its
    `alg` when given, `use` absent or `sig`); the first that verifies it wins.
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from raylight.api.connections import OidcConnection
from raylight.api.types import OidcClaims

from raylight_agents import errors
from raylight_agents.agent import User

LEEWAY_S = 30
MAX_AGE_S = 300.0  # the longest a fetched JWKS is used (a removed key's bound) unless configured otherwise
REFETCH_INTERVAL_S = 1.0  # unknown-kid refetches (and file change checks) at most this often
FETCH_TIMEOUT_S = 10.0
KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}  # algorithm prefix -> the JWK kty it needs


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


def parse_keys(document: Any) -> list[jwt.PyJWK]:
    """A JWKS document -> its usable signing keys (keys of unknown types or for encryption are left out);
    raises ValueError when it is not a JWKS."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS (an object with a 'keys' list)")
    keys = []
    for data in document["keys"]:
        if not isinstance(data, dict) or data.get("use", "sig") != "sig":
            continue
        try:
            keys.append(jwt.PyJWK(data))
        except (jwt.PyJWKError, jwt.InvalidKeyError):
            continue
    return keys


def cache_lifetime(headers: httpx.Headers, cap_s: float, now: float | None = None) -> float:
    """Seconds a JWKS response may be used: `Cache-Control: max-age` (or `Expires`), 0 for `no-store` /
    `no-cache`, the cap when the response says nothing; never more than cap_s."""
    control = headers.get("cache-control", "").lower()
    if "no-store" in control or "no-cache" in control:
        return 0.0
    if m := re.search(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", control):
        return min(float(m.group(1)), cap_s)
    if expires := headers.get("expires"):
        try:
            at = email.utils.parsedate_to_datetime(expires).timestamp()
        except (TypeError, ValueError):
            return 0.0  # an invalid Expires means already expired (RFC 9111 5.3)
        return max(0.0, min(at - (time.time() if now is None else now), cap_s))
    return cap_s


@dataclass
class _Snapshot:
    keys: list[jwt.PyJWK]
    expires: float  # monotonic time after which the keys are not used
    stamp: tuple[int, int, int] | None = None  # a file's (inode, size, mtime ns)


class KeySet:
    """The issuer's current signing keys, from a fetch function (an HTTP JWKS) or a file, with the lifecycle
    in the module doc. Thread-safe. `clock` is monotonic seconds (tests may pass their own)."""

    def __init__(self, *, uri: Callable[[], str] | None = None, file: str | None = None,
                 static: dict[str, Any] | None = None, max_age_s: float = MAX_AGE_S,
                 refetch_interval_s: float = REFETCH_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if sum(x is not None for x in (uri, file, static)) != 1:
            raise ValueError("a KeySet reads exactly one of uri, file or static")
        self._uri, self._file = uri, file
        self.max_age_s, self.refetch_interval_s = max_age_s, refetch_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._last_attempt = -float("inf")
        if static is not None:
            self._snapshot = _Snapshot(parse_keys(static), float("inf"))

    def _load(self) -> _Snapshot:
        """Fetch or read the JWKS now; raises ApiError 503 when it cannot be had."""
        now = self._clock()
        self._last_attempt = now
        if self._file is not None:
            try:
                st = os.stat(self._file)
                document = json.loads(Path(self._file).read_bytes())
                keys = parse_keys(document)
            except (OSError, ValueError) as exc:
                raise errors.unavailable("auth", f"cannot read the issuer's keys (the JWKS file): "
                                         f"{type(exc).__name__}") from exc
            return _Snapshot(keys, float("inf"), (st.st_ino, st.st_size, st.st_mtime_ns))
        assert self._uri is not None
        try:
            response = httpx.get(self._uri(), timeout=FETCH_TIMEOUT_S).raise_for_status()
            keys = parse_keys(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise errors.unavailable("auth", f"cannot fetch the issuer's signing keys: "
                                     f"{type(exc).__name__}") from exc
        # at least refetch_interval_s, so `no-store` cannot make every request a fetch
        lifetime = max(cache_lifetime(response.headers, self.max_age_s), self.refetch_interval_s)
        return _Snapshot(keys, now + lifetime)

    def _file_changed(self, snapshot: _Snapshot) -> bool:
        try:
            st = os.stat(self._file)  # type: ignore[arg-type]
        except OSError:
            return True
        return (st.st_ino, st.st_size, st.st_mtime_ns) != snapshot.stamp

    def keys(self, kid: str | None) -> list[jwt.PyJWK]:
        """The current keys (refreshed when expired, changed on disk, or when `kid` is given and unknown and
        no refetch happened in the last `refetch_interval_s`); raises ApiError 503 when expired keys cannot
        be refreshed."""
        with self._lock:
            snap = self._snapshot
            now = self._clock()
            recent = now - self._last_attempt < self.refetch_interval_s
            stale = snap is None or now >= snap.expires
            if self._file is not None and snap is not None and not recent:
                self._last_attempt = now
                stale = stale or self._file_changed(snap)
            unknown = kid is not None and snap is not None and all(k.key_id != kid for k in snap.keys)
            if stale or (unknown and not recent and self._uri is not None):
                try:
                    self._snapshot = snap = self._load()
                except errors.ApiError:
                    self._snapshot = None  # never fall back to keys past their lifetime
                    raise
            assert snap is not None
            return snap.keys


def _suits(key: jwt.PyJWK, alg: str) -> bool:
    kty = next((t for prefix, t in KEY_TYPES.items() if alg.startswith(prefix)), None)
    return key.key_type == kty and (key.algorithm_name in (None, alg) or not key.algorithm_name)


class Verifier:
    def __init__(self, issuer: str, audience: str, algorithms: list[str], claims: OidcClaims,
                 jwks: dict[str, Any] | None = None, *, jwks_file: str | None = None,
                 max_age_s: float = MAX_AGE_S, refetch_interval_s: float = REFETCH_INTERVAL_S) -> None:
        self.issuer = issuer
        self.audience = audience
        self.algorithms = algorithms
        self.claims = claims
        self._discovered: str | None = None
        self._keys = KeySet(static=jwks, max_age_s=max_age_s, refetch_interval_s=refetch_interval_s) \
            if jwks is not None else KeySet(file=jwks_file, max_age_s=max_age_s,
                                            refetch_interval_s=refetch_interval_s) \
            if jwks_file is not None else KeySet(uri=self._jwks_uri, max_age_s=max_age_s,
                                                 refetch_interval_s=refetch_interval_s)

    @classmethod
    def from_connection(cls, oidc: OidcConnection) -> Verifier:
        """From Connections.auth.oidc: keys from a mounted file (re-read on change), else an env var (read
        once; a named but empty one fails closed with ValueError), else the issuer's discovery document."""
        jwks = None
        if oidc.jwks_env and not oidc.jwks_file:
            raw = os.environ.get(oidc.jwks_env)
            if not raw:
                raise ValueError(f"agent.auth.oidc.jwksSecret is set but ${oidc.jwks_env} is empty")
            jwks = json.loads(raw)
        return cls(oidc.issuer, oidc.audience, list(oidc.algorithms), oidc.claims, jwks,
                   jwks_file=oidc.jwks_file, max_age_s=float(oidc.jwks_cache_seconds))

    def _jwks_uri(self) -> str:
        """The issuer's `jwks_uri` (discovered once; again after a failure)."""
        if self._discovered is None:
            discovery = f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"
            try:
                document = httpx.get(discovery, timeout=FETCH_TIMEOUT_S).raise_for_status().json()
                self._discovered = str(document["jwks_uri"])
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                raise httpx.HTTPError(f"cannot read the issuer's discovery document: "
                                      f"{type(exc).__name__}") from exc
        return self._discovered

    def _candidates(self, token: str) -> list[Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _invalid(str(exc)) from exc
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise _invalid(f"algorithm {alg!r} is not allowed")
        if kid is not None and not isinstance(kid, str):
            raise _invalid("kid must be a string")
        try:
            keys = self._keys.keys(kid)
        except errors.ApiError:
            self._discovered = None  # the issuer may have moved its keys
            raise
        suitable = [k.key for k in keys if _suits(k, alg) and (kid is None or k.key_id == kid)]
        if not suitable:
            raise _invalid(f"no key with kid {kid!r} for {alg} in the issuer's JWKS" if kid is not None
                           else f"no key for {alg} in the issuer's JWKS")
        return suitable

    def verify(self, token: str) -> User:
        """The verified caller; raises ApiError 401 (bad token) or 503 (keys unavailable)."""
        claims: dict[str, Any] | None = None
        failure: jwt.PyJWTError | None = None
        for key in self._candidates(token):
            try:
                claims = jwt.decode(token, key, algorithms=self.algorithms, audience=self.audience,
                                    issuer=self.issuer, leeway=LEEWAY_S,
                                    options={"require": ["exp", "iss", "aud"]})
                break
            except jwt.InvalidSignatureError as exc:
                failure = exc  # another key may have signed it (a kid-less token)
            except jwt.PyJWTError as exc:
                raise _invalid(str(exc)) from exc
        if claims is None:
            raise _invalid(str(failure) if failure else "no key verifies it")
        user = _claim(claims, self.claims.user)
        if not isinstance(user, str | int) or not str(user):
            raise _invalid(f"no user id in claim {self.claims.user!r}")
        tenant = _claim(claims, self.claims.tenant)
        groups = _claim(claims, self.claims.groups)
        if isinstance(groups, str):
            groups = groups.split()
        return User(str(user), str(tenant) if tenant is not None else None,
                    tuple(str(g) for g in groups) if isinstance(groups, list) else ())
