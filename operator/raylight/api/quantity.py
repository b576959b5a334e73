"""Kubernetes resource quantities (https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/quantity/)
as the numbers Ray takes: bytes for memory, CPUs as a float."""

from __future__ import annotations

_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "m": 10**-3}


def quantity_bytes(quantity: str) -> int:
    """`4Gi` -> 4294967296, `500M` -> 500000000, `1500m` -> 1 (whole bytes, rounded down).
    Raises KeyError for a suffix that is not a Kubernetes quantity suffix."""
    number = quantity.rstrip("kKMGTPEim")
    return int(float(number) * _UNITS[quantity[len(number):]])
