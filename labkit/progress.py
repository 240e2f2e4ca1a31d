"""One progress line that rewrites itself: a display updated in place in Jupyter, a stderr line elsewhere.

Every long wait in labkit (waiting for pods, chaos repeated over time, traffic runs, experiments, the tour's
cells) reports through :class:`Progress`, so they all look and behave the same.
"""

from __future__ import annotations

import html
import sys
import time
from typing import Any


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class Progress:
    """A single progress line that rewrites itself (stderr in a terminal or test, a widget in Jupyter)."""

    def __init__(self, enabled: bool, *, min_interval: float = 0.1) -> None:
        self.enabled = enabled
        self.min_interval = min_interval
        self._last = 0.0
        self._width = 0
        self._handle: Any = None
        if enabled and _in_notebook():
            # A display updated in place (not a widget): its last state stays in the saved notebook and in
            # pages exported from it, with no JavaScript needed.
            from IPython.display import HTML, display

            self._handle = display(HTML(""), display_id=True)

    def update(self, text: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        if self._handle is not None:
            from IPython.display import HTML

            self._handle.update(HTML(f"<code>{html.escape(text)}</code>"))
            return
        self._width = max(self._width, len(text))
        sys.stderr.write("\r" + text.ljust(self._width))
        sys.stderr.flush()

    def close(self, text: str | None = None) -> None:
        if not self.enabled:
            return
        if text is not None:
            self.update(text, force=True)
        if self._handle is None and self._width:
            sys.stderr.write("\n")
            sys.stderr.flush()
        self.enabled = False
