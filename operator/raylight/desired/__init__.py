"""Desired state, built by pure functions: no I/O and no kopf, kubernetes, ray, qdrant or langgraph here."""
