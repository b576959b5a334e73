"""The admission webhook's serving certificate, renewed without a failed admission.

Kopf's own `WebhookServer` notices a changed certificate file by stopping its HTTPS site and starting a new
one: while it restarts the port refuses connections, and the API server (failurePolicy Fail) refuses the
writes it was asked to admit. It also loads the certificate and the key as two files, which a renewal may
replace between the two reads. `ReloadingWebhookServer` serves one TLS context for the whole run and loads
a renewed certificate into it in place: the listening socket never closes, connections already open carry
on, the next handshake presents the new certificate.

A renewal is taken when the files' bytes change (checked every `check_interval` seconds): the certificate
and key are read once, checked as a pair in a fresh context, and only then loaded into the serving one
(from memory: `memfd`, never a file on disk). A pair that does not match (a renewal caught half-written) is
logged and tried again on the next check; the current certificate keeps serving meanwhile.

The chart's cert-manager wiring keeps the CA stable across renewals (a CA Issuer whose own key never
rotates signs the serving certificate; cainjector puts that CA in the webhook's caBundle), so the API
server trusts the old and the new serving certificate alike: renewal needs no caBundle change.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 10.0


def _load(context: ssl.SSLContext, pem: bytes) -> None:
    """Load a certificate chain and its key (one PEM) into context, from memory."""
    fd = os.memfd_create("webhook-tls", os.MFD_CLOEXEC) if hasattr(os, "memfd_create") else None
    if fd is None:  # not Linux: a private temporary file, removed at once
        import tempfile

        with tempfile.NamedTemporaryFile() as fh:
            fh.write(pem)
            fh.flush()
            context.load_cert_chain(fh.name)
        return
    try:
        os.write(fd, pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


class ServingCertificate:
    """A server-side TLS context whose certificate follows the files `certfile`/`keyfile`."""

    def __init__(self, certfile: str, keyfile: str) -> None:
        self.certfile, self.keyfile = Path(certfile), Path(keyfile)
        self.context = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH)
        self.digest = ""
        self.reloads = 0
        if not self.reload():
            raise ValueError(f"the webhook certificate {certfile} and key {keyfile} cannot be loaded as a pair")

    def reload(self) -> bool:
        """Load the files if they changed since the last load; returns whether the serving context holds
        them now (False: they could not be read or do not match, and the previous certificate serves on)."""
        try:
            cert, key = self.certfile.read_bytes(), self.keyfile.read_bytes()
        except OSError as exc:
            log.warning("webhook certificate not read (%s); the current one keeps serving", exc)
            return False
        digest = hashlib.sha256(cert + b"\0" + key).hexdigest()
        if digest == self.digest:
            return True
        pem = cert.rstrip(b"\n") + b"\n" + key
        try:
            _load(ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH), pem)  # a pair? (else unchanged)
        except (ssl.SSLError, ValueError) as exc:
            log.warning("webhook certificate and key do not load as a pair yet (%s); the current one keeps "
                        "serving", exc)
            return False
        _load(self.context, pem)
        if self.digest:
            self.reloads += 1
            log.info("webhook serving certificate renewed in place (renewal %d)", self.reloads)
        self.digest = digest
        return True

    async def watch(self, interval: float = CHECK_INTERVAL_S) -> None:
        """Check the files every `interval` seconds, forever (in the serving event loop: a reload never
        runs while a handshake does)."""
        while True:
            await asyncio.sleep(interval)
            self.reload()


class ReloadingWebhookServer(kopf.WebhookServer):
    """Kopf's webhook server with the certificate renewed in place (see the module doc)."""

    def __init__(self, *, certfile: str, pkeyfile: str, check_interval: float = CHECK_INTERVAL_S,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)  # no certfile: Kopf neither generates one nor restarts on change
        self.serving = ServingCertificate(certfile, pkeyfile)
        self.check_interval = check_interval

    def _build_ssl(self) -> tuple[bytes | None, ssl.SSLContext | None]:
        return None, self.serving.context  # the chart (cainjector or its own CA) sets caBundle

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        watcher = asyncio.create_task(self.serving.watch(self.check_interval))
        try:
            async for client_config in super().__call__(fn):
                yield client_config
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
