"""The reconciler fixtures of test_operator_reconcile (a fake Kubernetes API, an in-memory store, a settable
clock) for every operator unit test."""

from test_operator_reconcile import clock, kube, rec, store

__all__ = ["clock", "kube", "rec", "store"]
