"""Where a model source is on this machine without importing or downloading anything: a package://
module's folder (found with `importlib.util.find_spec`, which does not run the package) and file:// paths.
Shared by the weights resolver of the data plane and by validation, which reads a base's config.json
where the weights are at hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from raylight.api.names import local_path


def package_dir(module: str) -> Path | None:
    """The folder holding the model files of an installed package (its root, or its `model/` folder when
    that holds a config.json); None when the package is not installed."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    nested = root / "model"
    return nested if (nested / "config.json").exists() else root


def at_hand(source: str) -> Path | None:
    """The local folder or file of a package:// or file:// source; None for sources that are elsewhere
    (hf://, s3://, and pvc://, which only the pods mount)."""
    scheme, _, rest = source.partition("://")
    if scheme == "package":
        return package_dir(rest)
    if scheme == "file":
        return Path(local_path(source) or rest)
    return None
