"""Local mode: `raylight up` runs the same manifests on one machine (local Ray, embedded Qdrant)."""
