"""What every `raylight` command shares: one sentence on stderr for a failure (exit 1), progress on stderr
(a bar on a terminal, a line every 10 % otherwise), quiet library logging, and manifests checked as one set.
stdout carries only the command's result (`--json`: one JSON document)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raylight.api.manifests import Manifest, Problem, load
from raylight.api.validate import check_set
from raylight.settings import Settings


def fail(message: str) -> int:
    """Print one sentence for the user on stderr; the command's exit code 1."""
    print(message, file=sys.stderr)
    return 1


def quiet_logging() -> None:
    """Warnings and errors only, on stderr; no download or progress chatter from the model libraries."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def load_manifests(files: list[Path], extra: Callable[[list[Manifest]], list[Problem]] | None = None,
                   ) -> tuple[list[Manifest], int]:
    """Parse and check as one set (plus `extra` checks); each problem printed as
    `FILE: KIND/NAME: FIELD: message`. Returns the manifests and the exit code (1 on any problem or none)."""
    result = load(files)
    problems = result.problems + check_set(result.manifests, Settings.from_env().license_policy,
                                           unparsed=result.problems)
    if not problems and extra is not None:
        problems = extra(result.manifests)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems and not result.manifests:
        print(f"no manifests found in {', '.join(str(f) for f in files)}", file=sys.stderr)
        return [], 1
    return result.manifests, 1 if problems else 0


def print_counts(counts: dict[str, Any], name: str | None = None) -> None:
    """An ingestion run's counts: one line on stdout, each skip and failure with its reason on stderr."""
    keys = ("added", "updated", "unchanged", "deleted", "skipped", "failed")
    line = ", ".join(f"{counts[k]} {k}" for k in keys)
    print(f"{name + ': ' if name else ''}{line} ({counts['chunks_embedded']} chunks embedded, "
          f"{counts['points']} in the collection)")
    for s in counts.get("skips", []):
        print(f"  skipped {s['source']}: {s['reason']}", file=sys.stderr)
    for f in counts.get("failures", []):
        print(f"  failed {f['source']}: {f['reason']}", file=sys.stderr)
