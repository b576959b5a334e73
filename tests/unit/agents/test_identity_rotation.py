"""Signing keys with a lifecycle: a real JWKS server on 127.0.0.1 rotates its keys and each transition is
timed. A key removed from the JWKS stops verifying within the cache lifetime (Cache-Control max-age, capped
by jwksCacheSeconds); a new key verifies on its first token (an unknown kid refetches, rate-limited); an
issuer that cannot be reached once the keys expire gives 503, never a stale key; kid-less tokens are tried
against every suitable key; a JWKS Secret mounted as a file is re-read when the kubelet swaps it."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from raylight.api.connections import OIDC_JWKS_FILE, OIDC_JWKS_MOUNT
from raylight.api.types import OidcClaims, Pipeline
from raylight.desired.kubernetes import get_agent_rayservice
from raylight.desired.pipeline import get_auth_connection
from raylight.settings import Settings
from raylight_agents.identity import Verifier, cache_lifetime
from raylight_pipelines.web.errors import ApiError

AUDIENCE = "raylight-handbook"
K1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
K2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
K3 = ec.generate_private_key(ec.SECP256R1())
FOREIGN = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: Any, kid: str | None, alg: str = "RS256") -> dict[str, Any]:
    algo = jwt.algorithms.RSAAlgorithm if alg.startswith("RS") else jwt.algorithms.ECAlgorithm
    data = json.loads(algo.to_jwk(key.public_key()))
    return {**data, "use": "sig", "alg": alg, **({"kid": kid} if kid else {})}


def sign(key: Any, kid: str | None, issuer: str, alg: str = "RS256") -> str:
    now = int(time.time())
    return jwt.encode({"iss": issuer, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300}, key,
                      algorithm=alg, headers={"kid": kid} if kid else None)


class Issuer:
    """A loopback OIDC issuer whose JWKS, Cache-Control and availability the test changes."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.cache_control = "max-age=1"
        self.up = True
        self.fetches = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                base = f"http://127.0.0.1:{self.server.server_address[1]}"
                if not issuer.up:
                    self.send_response(503)
                    self.end_headers()
                    return
                if self.path == "/keys":
                    issuer.fetches += 1
                    body: Any = {"keys": list(issuer.keys)}
                elif self.path == "/.well-known/openid-configuration":
                    body = {"issuer": base, "jwks_uri": f"{base}/keys"}
                else:
                    body = None
                self.send_response(200 if body else 404)
                if self.path == "/keys":
                    self.send_header("Cache-Control", issuer.cache_control)
                self.end_headers()
                self.wfile.write(json.dumps(body or {}).encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    server = Issuer()
    yield server
    server.close()


def verifier(issuer: Issuer, max_age_s: float = 30, refetch_interval_s: float = 0.3) -> Verifier:
    return Verifier(issuer.url, AUDIENCE, ["RS256", "ES256"], OidcClaims(), max_age_s=max_age_s,
                    refetch_interval_s=refetch_interval_s)


def accepted(v: Verifier, token: str) -> bool:
    try:
        return v.verify(token).id == "alice"
    except ApiError as exc:
        assert exc.status == 401, exc.body()
        return False


def seconds_until_refused(v: Verifier, token: str, limit_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if not accepted(v, token):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"still accepted after {limit_s} s")


def test_a_removed_key_stops_verifying_within_the_jwks_max_age_and_a_new_key_verifies_at_once(
        issuer: Issuer) -> None:
    issuer.keys = [jwk(K1, "k1")]
    issuer.cache_control = "public, max-age=1"
    v = verifier(issuer)
    old, new = sign(K1, "k1", issuer.url), sign(K2, "k2", issuer.url)
    assert accepted(v, old) and not accepted(v, new)  # k2 is not published yet
    issuer.keys = [jwk(K1, "k1"), jwk(K2, "k2")]  # publish k2
    time.sleep(0.35)  # past the refetch rate limit
    published = time.monotonic()
    assert accepted(v, new), "a newly published key must verify on its first token"
    assert time.monotonic() - published < 0.5
    issuer.keys = [jwk(K2, "k2")]  # remove k1
    removed = time.monotonic()
    refused_after = seconds_until_refused(v, old, limit_s=5)
    assert refused_after <= 1.0 + 0.3, f"k1 verified {refused_after:.2f} s after removal (max-age 1 s)"
    assert time.monotonic() - removed < 1.5 and accepted(v, new)


def test_the_configured_cap_bounds_a_long_max_age(issuer: Issuer) -> None:
    issuer.keys = [jwk(K1, "k1"), jwk(K2, "k2")]
    issuer.cache_control = "max-age=86400"
    v = verifier(issuer, max_age_s=1.0)
    old = sign(K1, "k1", issuer.url)
    assert accepted(v, old)
    issuer.keys = [jwk(K2, "k2")]
    assert seconds_until_refused(v, old, limit_s=5) <= 1.0 + 0.3


def test_unknown_kids_refetch_at_most_once_per_interval(issuer: Issuer) -> None:
    issuer.keys = [jwk(K1, "k1")]
    issuer.cache_control = "max-age=60"
    v = verifier(issuer, refetch_interval_s=0.5)
    assert accepted(v, sign(K1, "k1", issuer.url))
    before = issuer.fetches
    start = time.monotonic()
    for i in range(200):  # a flood of random kids
        assert not accepted(v, sign(FOREIGN, f"random-{i}", issuer.url))
    elapsed = time.monotonic() - start
    assert issuer.fetches - before <= elapsed / 0.5 + 1


def test_expired_keys_are_never_used_when_the_issuer_is_down(issuer: Issuer) -> None:
    issuer.keys = [jwk(K1, "k1")]
    issuer.cache_control = "max-age=1"
    v = verifier(issuer)
    token = sign(K1, "k1", issuer.url)
    assert accepted(v, token)
    issuer.up = False
    time.sleep(1.1)
    with pytest.raises(ApiError) as info:
        v.verify(token)
    assert (info.value.status, info.value.code) == (503, "auth_unavailable")
    issuer.up = True
    time.sleep(0.35)
    assert accepted(v, token)


def test_kid_less_tokens_are_tried_against_every_suitable_key(issuer: Issuer) -> None:
    issuer.keys = [jwk(K3, None, "ES256"), jwk(K1, None), jwk(K2, None)]
    v = verifier(issuer)
    assert accepted(v, sign(K2, None, issuer.url))  # the third key, the second RSA one
    assert accepted(v, sign(K3, None, issuer.url, "ES256"))
    assert not accepted(v, sign(FOREIGN, None, issuer.url))
    with pytest.raises(ApiError) as info:  # an EC key never verifies an RS256 token and vice versa
        Verifier(issuer.url, AUDIENCE, ["RS256"], OidcClaims(),
                 {"keys": [jwk(K3, None, "ES256")]}).verify(sign(K1, None, issuer.url))
    assert info.value.status == 401 and "no key for RS256" in info.value.message


def test_cache_lifetime_reads_max_age_expires_and_no_store() -> None:
    import httpx

    assert cache_lifetime(httpx.Headers({"Cache-Control": "public, max-age=120"}), 300) == 120
    assert cache_lifetime(httpx.Headers({"Cache-Control": "max-age=9999"}), 300) == 300
    assert cache_lifetime(httpx.Headers({"Cache-Control": "no-store"}), 300) == 0
    assert cache_lifetime(httpx.Headers({}), 300) == 300
    assert cache_lifetime(httpx.Headers({"Expires": "Thu, 01 Jan 1970 00:00:00 GMT"}), 300) == 0
    assert cache_lifetime(httpx.Headers({"Expires": "garbage"}), 300) == 0


def _kubelet_write(folder: Path, document: dict[str, Any], generation: int) -> None:
    """What the kubelet does to a Secret volume: a new timestamped folder, then an atomic `..data` swap."""
    data = folder / f"..{generation}"
    data.mkdir()
    (data / "jwks.json").write_text(json.dumps(document))
    (folder / "..data_tmp").symlink_to(data.name)
    os.replace(folder / "..data_tmp", folder / "..data")
    if not (folder / "jwks.json").is_symlink():
        (folder / "jwks.json").symlink_to("..data/jwks.json")


def test_a_rotated_jwks_secret_file_reaches_a_running_verifier(tmp_path: Path) -> None:
    issuer = "https://id.example.test/realms/acme"
    _kubelet_write(tmp_path, {"keys": [jwk(K1, "k1")]}, 1)
    v = Verifier(issuer, AUDIENCE, ["RS256"], OidcClaims(), jwks_file=str(tmp_path / "jwks.json"),
                 refetch_interval_s=0.2)
    old, new = sign(K1, "k1", issuer), sign(K2, "k2", issuer)
    assert accepted(v, old) and not accepted(v, new)
    _kubelet_write(tmp_path, {"keys": [jwk(K2, "k2")]}, 2)
    assert seconds_until_refused(v, old, limit_s=3) <= 0.2 + 0.3
    assert accepted(v, new)
    (tmp_path / "..2" / "jwks.json").write_text("not json")  # a broken Secret fails closed
    time.sleep(0.25)
    with pytest.raises(ApiError) as info:
        v.verify(new)
    assert info.value.status == 503


def test_the_agent_pods_mount_the_jwks_secret_as_a_file_not_an_env_var() -> None:
    pipeline = Pipeline.model_validate({
        "apiVersion": "raylight.io/v1alpha1", "kind": "Pipeline", "metadata": {"name": "handbook"},
        "spec": {"embedder": {"modelDeployment": "minilm"}, "llm": {"modelDeployment": "smollm"},
                 "agent": {"replicas": {"min": 1, "max": 2}, "auth": {"oidc": {
                     "issuer": "https://id.example.test", "audience": AUDIENCE, "jwksCacheSeconds": 60,
                     "jwksSecret": {"name": "idp-keys", "key": "jwks.json"}}}}}})
    conn = get_auth_connection(pipeline.spec)
    assert conn is not None and conn.oidc is not None
    assert (conn.oidc.jwks_file, conn.oidc.jwks_env, conn.oidc.jwks_cache_seconds) == (OIDC_JWKS_FILE, None, 60)
    rs = get_agent_rayservice(pipeline, "default", Settings())
    cluster = rs["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        assert {"name": "oidc-jwks", "secret": {"secretName": "idp-keys", "optional": False,
                                                "items": [{"key": "jwks.json", "path": "jwks.json"}]}} \
            in pod["volumes"]
        for container in pod["containers"]:
            assert {"name": "oidc-jwks", "mountPath": OIDC_JWKS_MOUNT, "readOnly": True} in container["volumeMounts"]
            assert not any("JWKS" in e["name"] for e in container.get("env", []))
