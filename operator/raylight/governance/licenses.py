"""Licence policy: which model licences may be served, and which need explicit acceptance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LicenseClass = Literal["permissive", "copyleft", "restricted", "unknown"]

KNOWN_LICENSES: dict[str, LicenseClass] = {
    # permissive
    "apache-2.0": "permissive", "mit": "permissive", "bsd-2-clause": "permissive",
    "bsd-3-clause": "permissive", "cc-by-4.0": "permissive", "cc0-1.0": "permissive",
    "openrail": "permissive", "unlicense": "permissive",
    # copyleft
    "gpl-3.0": "copyleft", "agpl-3.0": "copyleft", "lgpl-3.0": "copyleft", "cc-by-sa-4.0": "copyleft",
    # restricted-use model licences: acceptable use policies, user caps, field-of-use limits
    "llama2": "restricted", "llama3": "restricted", "llama3.1": "restricted", "llama3.2": "restricted",
    "llama3.3": "restricted", "llama4": "restricted", "gemma": "restricted",
    "cc-by-nc-4.0": "restricted", "openrail++": "restricted", "deepseek": "restricted",
    "qwen": "restricted", "mistral-research": "restricted",
    "cc-by-nd-4.0": "restricted", "cc-by-nc-nd-4.0": "restricted",
}

# Licences that forbid derivative works: a model under one may be served but not fine-tuned.
NO_DERIVATIVES: frozenset[str] = frozenset({"cc-by-nd-4.0", "cc-by-nc-nd-4.0"})


@dataclass(frozen=True)
class LicensePolicy:
    """`deny` lists ids that may never be served; `allow_unknown` admits ids not in the table."""

    deny: frozenset[str] = field(default_factory=frozenset)
    allow_unknown: bool = False

    def check(self, license_id: str | None, accepted: bool, accept_field: str = "model.licenseAccepted",
              ) -> str | None:
        """None when the licence may be served, else the reason it may not; `accept_field` is where the manifest
        accepts a restricted licence (`licenseAccepted` for a preset, `model.licenseAccepted` otherwise)."""
        if license_id is None:
            return "no licence given: set model.license to an SPDX id or a known model licence id"
        lid = license_id.lower()
        if lid in self.deny:
            return f"licence {license_id} is denied by the cluster's licence policy"
        cls = KNOWN_LICENSES.get(lid, "unknown")
        if cls == "unknown" and not self.allow_unknown:
            return f"licence {license_id} is not a known licence id (policy: unknown licences are refused)"
        if cls == "restricted" and not accepted:
            return f"licence {license_id} restricts use: set {accept_field}: true after review"
        return None

    def check_derivative(self, license_id: str | None, accepted: bool) -> str | None:
        """None when a model under this licence may be fine-tuned (the derivative inherits the licence and
        its acceptance), else the reason it may not."""
        reason = self.check(license_id, accepted)
        if reason is None and license_id is not None and license_id.lower() in NO_DERIVATIVES:
            return f"licence {license_id} forbids derivative works: a model under it cannot be fine-tuned"
        return reason

    @classmethod
    def from_env(cls, deny: str = "", allow_unknown: str = "") -> LicensePolicy:
        return cls(
            deny=frozenset(x.strip().lower() for x in deny.split(",") if x.strip()),
            allow_unknown=allow_unknown.lower() in ("1", "true", "yes"),
        )
