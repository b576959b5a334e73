"""The webhook as the API server will meet it: Kopf's webhook server, configured from exactly the flags,
environment and mounted certificate the chart gives the operator, answers a TLS client that trusts only the
chart's caBundle and dials the Service name from the ValidatingWebhookConfiguration, on each path the
configuration names, and hands the request to the handler with that id."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import socket
import ssl
from pathlib import Path
from typing import Any

import kopf
import pytest
from helmtool import NAMESPACE, Render
from raylight.cli import build_parser
from raylight.operator.config import OperatorConfig


def _post(port: int, host: str, path: str, cadata: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST over TLS to 127.0.0.1:port, verifying the certificate for `host` against `cadata` only."""
    context = ssl.create_default_context(cadata=cadata)  # no system CAs: only what the chart gives the API server
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    # Verify against the Service DNS name the API server uses, while connecting to localhost.
    conn.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=host)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    result: dict[str, Any] = json.loads(response.read())
    conn.close()
    return result


async def test_webhook_answers_over_tls_with_the_charts_certificate(render: Render, tmp_path: Path) -> None:
    objects = render()
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    secret = next(o for o in objects if o["kind"] == "Secret")
    hooks = next(o for o in objects if o["kind"] == "ValidatingWebhookConfiguration")["webhooks"]

    # Materialise the Secret where the chart mounts it, re-rooted under tmp_path.
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "webhook-tls"]
    mount_dir = tmp_path / mount["mountPath"].lstrip("/")
    mount_dir.mkdir(parents=True)
    for key, value in secret["data"].items():
        (mount_dir / key).write_bytes(base64.b64decode(value))
    env = {e["name"]: e["value"].replace(mount["mountPath"], str(mount_dir)) for e in container["env"] if "value" in e}
    config = OperatorConfig.from_env(env).with_args(build_parser().parse_args(["operator", *container["args"]]))
    assert config.webhook_port and config.webhook_certfile and config.webhook_keyfile

    seen: list[str | None] = []

    async def answer(request: Any, *, webhook: str | None = None, headers: Any = None, sslpeer: Any = None) -> Any:
        seen.append(webhook)
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": request["request"]["uid"], "allowed": False,
                             "status": {"message": f"checked by {webhook}"}}}

    # The operator listens on config.webhook_port; here a free port, so parallel runs never collide.
    server = kopf.WebhookServer(addr="127.0.0.1", port=None, certfile=config.webhook_certfile,
                                pkeyfile=config.webhook_keyfile)
    served = server(answer)
    client_config = await anext(served)
    port = int(str(client_config.get("url")).rsplit(":", 1)[1].split("/")[0])
    try:
        for hook in hooks:
            svc = hook["clientConfig"]["service"]
            host = f"{svc['name']}.{svc['namespace']}.svc"
            assert svc["namespace"] == NAMESPACE
            ca = base64.b64decode(hook["clientConfig"]["caBundle"]).decode()
            review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                      "request": {"uid": "u-1", "operation": "CREATE"}}
            reply = await asyncio.to_thread(_post, port, host, svc["path"], ca, review)
            assert reply["response"]["status"]["message"] == f"checked by {svc['path'].lstrip('/')}"
        assert seen == [h["clientConfig"]["service"]["path"].lstrip("/") for h in hooks]
        with pytest.raises(ssl.SSLCertVerificationError):  # a name the certificate was not issued for
            await asyncio.to_thread(_post, port, "raylight.example.com", hooks[0]["clientConfig"]["service"]["path"],
                                    base64.b64decode(hooks[0]["clientConfig"]["caBundle"]).decode(), {})
    finally:
        await served.aclose()  # type: ignore[attr-defined]  # an async generator: stops the server
