"""docs/limits.md and the code agree: every limit a refusal names is in the table, with the code's value."""

from __future__ import annotations

import re
from pathlib import Path

from raylight_pipelines.web import guard, limits, protocol

ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "limits.md").read_text()
ROWS = {m[1]: m[2] for m in re.finditer(r"^\| `([a-z_A-Z]+)`[^|]*\| ([^|]+) \|", DOC, re.MULTILINE)}


def test_every_limit_a_refusal_names_is_in_the_table() -> None:
    named: set[str] = set()
    for path in [*(ROOT / "pipelines").rglob("*.py"), *(ROOT / "agents").rglob("*.py"),
                 *(ROOT / "operator").rglob("*.py")]:
        named |= set(re.findall(r"\(limit ([a-z_]+)\)", path.read_text()))
    assert named >= {"max_inputs_per_request", "max_request_tokens", "max_response_bytes", "stream_max_seconds",
                     "stream_idle_seconds", "max_client_requests"}
    assert named <= set(ROWS), sorted(named - set(ROWS))


def test_the_table_gives_the_codes_values() -> None:
    expected = {
        "max_inputs_per_request": f"{limits.MAX_INPUTS:,}",
        "max_request_tokens": f"{limits.MAX_REQUEST_TOKENS:,}",
        "max_response_bytes": f"{limits.MAX_RESPONSE_BYTES // 2**20} MiB",
        "stream_max_seconds": f"{limits.STREAM_MAX_SECONDS:g} s",
        "stream_idle_seconds": f"{limits.STREAM_IDLE_SECONDS:g} s",
        "max_client_requests": f"{limits.MAX_CLIENT_REQUESTS}",
        "max_tokens": f"{limits.MAX_TOKENS:,}",
        "max_header_bytes": f"{guard.MAX_HEADER_BYTES // 1024} KiB",
        "max_json_depth": f"{guard.MAX_DEPTH} levels",
        "max_int_digits": f"{guard.MAX_INT_DIGITS} digits",
        "body_timeout_seconds": f"{guard.BODY_TIMEOUT_S:g} s",
        "max_request_bytes": f"{protocol.MODEL_MAX_REQUEST_BYTES // 2**20} MiB",
        "n": f"{protocol.MAX_CHOICES}",
    }
    for name, value in expected.items():
        assert ROWS[name].startswith(value), (name, ROWS[name], value)
    fit = (f"384 dimensions: {limits.embeddings_fit(384, 'float')} float, "
           f"{limits.embeddings_fit(384, 'base64'):,} base64")
    assert fit in DOC
