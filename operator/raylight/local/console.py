"""What local mode prints while it works: status lines and progress on stderr (a bar on a terminal, a line
every 10 % otherwise). The CLI prints through these too; stdout stays the command's result."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

Progress = Callable[[int, int], None]


def say(message: str) -> None:
    """A progress or status line on stderr."""
    print(message, file=sys.stderr, flush=True)


def progress(label: str, unit: str = "chunk") -> tuple[Progress, Callable[[], None]]:
    """(update(done, total), close()): a tqdm bar on a terminal, else a line every 10 %."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar: dict[str, Any] = {}

        def update_bar(done: int, total: int) -> None:
            if "bar" not in bar:
                bar["bar"] = tqdm(total=total, desc=label, unit=unit, file=sys.stderr)
            bar["bar"].n = done
            bar["bar"].refresh()

        return update_bar, lambda: bar["bar"].close() if "bar" in bar else None

    last = {"step": -1}

    def update_line(done: int, total: int) -> None:
        step = 10 * done // max(total, 1)
        if step != last["step"]:
            last["step"] = step
            say(f"{label}: {done}/{total} {unit}s {'done' if unit == 'document' else 'embedded'}")

    return update_line, lambda: None
