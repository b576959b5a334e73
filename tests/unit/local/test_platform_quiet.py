"""`raylight up` as a quiet Ray driver: what Ray prints for its raylet goes to the platform's log."""

from __future__ import annotations

import io

from raylight.local.platform import RayNotices


def test_raylet_notices_go_to_the_log_and_everything_else_to_the_terminal() -> None:
    terminal, log = io.StringIO(), io.StringIO()
    out = RayNotices(terminal, log)
    print("Raylight is up on http://127.0.0.1:8000", file=out)
    out.write("\x1b[33m(raylet)\x1b[0m WARNING: 10 PYTHON worker processes have been started on node: x ")
    out.write("which is 5x the maximum expected startup concurrency (2).\n  KIND  NAME\n")
    out.write("partial")
    assert terminal.getvalue() == "Raylight is up on http://127.0.0.1:8000\n  KIND  NAME\n"
    out.flush()
    assert terminal.getvalue().endswith("  KIND  NAME\npartial")
    assert log.getvalue().count("\n") == 1 and "PYTHON worker processes" in log.getvalue()
    assert "(raylet)" not in terminal.getvalue()
