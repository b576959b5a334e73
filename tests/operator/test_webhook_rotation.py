"""The admission webhook's serving certificate renewed under load without a failed admission: the real Kopf
operator serves the webhook over HTTPS with a certificate mounted the way the kubelet mounts a Secret
(`..data` swapped atomically); the certificate is renewed three times (a new key each time, the same CA, as
cert-manager's CA Issuer does) and once caught half-written (a new certificate beside the old key) while
admission reviews keep arriving, each on a new TLS connection. Every review is answered; each renewal is
served within the check interval; the half-written pair never is."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from operator_harness import Emulator, eventually, operator_config
from test_operator_runtime import _review, pipeline

CHECK_S = 0.2


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = _name("raylight-webhook-ca")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> tuple[bytes, bytes, int]:
    """A serving certificate for 127.0.0.1 with a fresh key: (cert PEM, key PEM, serial)."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    serial = x509.random_serial_number()
    cert = (x509.CertificateBuilder().subject_name(_name("raylight.raylight-system.svc"))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, serial


def kubelet_write(folder: Path, files: dict[str, bytes], generation: int) -> None:
    """A Secret volume update: a new timestamped folder, then `..data` swapped to it in one rename."""
    data = folder / f"..{generation}"
    data.mkdir()
    for name, content in files.items():
        (data / name).write_bytes(content)
    (folder / "..data_tmp").symlink_to(data.name)
    os.replace(folder / "..data_tmp", folder / "..data")
    for name in files:
        if not (folder / name).is_symlink():
            (folder / name).symlink_to(f"..data/{name}")


def served_serial(port: int, trust: ssl.SSLContext) -> int:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_renewing_the_serving_certificate_fails_no_admission(
        api: Emulator, start_operator: Callable[..., Any], tmp_path: Path) -> None:
    from support import free_port

    ca = make_ca()
    trust = ssl.create_default_context(cadata=ca[1].public_bytes(serialization.Encoding.PEM).decode())
    cert, key, first = issue(ca)
    kubelet_write(tmp_path, {"tls.crt": cert, "tls.key": key}, 0)
    port = free_port()
    config = operator_config(webhook_port=port, webhook_addr="127.0.0.1", webhook_certfile=str(tmp_path / "tls.crt"),
                             webhook_keyfile=str(tmp_path / "tls.key"), webhook_cert_check_seconds=CHECK_S)
    url = f"https://127.0.0.1:{port}/validate-pipelines"
    answered: list[bool] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def admit_forever() -> None:
        connector = aiohttp.TCPConnector(ssl=trust, force_close=True)  # a new handshake for every review
        async with aiohttp.ClientSession(connector=connector) as http:
            while not stop.is_set():
                try:
                    async with http.post(url, json=_review(pipeline(), "pipelines")) as resp:
                        body = await resp.json()
                        answered.append(resp.status == 200 and body["response"]["allowed"] is True)
                except (aiohttp.ClientError, OSError) as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.01)

    async with start_operator(config):
        await eventually(lambda: _listening(port, trust), timeout=15)
        assert served_serial(port, trust) == first
        load = asyncio.create_task(admit_forever())
        seen, waits = [first], []
        for generation in (1, 2, 3):
            cert, key, serial = issue(ca)
            if generation == 2:  # caught half-written: the new certificate beside the old key
                old_key = (tmp_path / "tls.key").read_bytes()
                kubelet_write(tmp_path, {"tls.crt": cert, "tls.key": old_key}, 20)
                await asyncio.sleep(CHECK_S * 4)
                assert served_serial(port, trust) == seen[-1], "a mismatched pair must never be served"
            kubelet_write(tmp_path, {"tls.crt": cert, "tls.key": key}, generation)
            started = time.monotonic()
            await eventually(lambda s=serial: served_serial(port, trust) == s, timeout=10, interval=0.02)
            waits.append(time.monotonic() - started)
            seen.append(serial)
            await asyncio.sleep(0.3)
        stop.set()
        await load
    assert failures == [], failures[:5]
    assert len(answered) > 50 and all(answered), (len(answered), answered.count(False))
    assert max(waits) < CHECK_S * 5, waits
    print(f"\nwebhook renewals: {len(answered)} admissions answered, 0 failed; served within "
          f"{', '.join(f'{w:.2f}' for w in waits)} s of each renewal (check every {CHECK_S} s)")


def _listening(port: int, trust: ssl.SSLContext) -> bool:
    try:
        served_serial(port, trust)
    except OSError:
        return False
    return True
