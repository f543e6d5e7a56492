"""How far a long operator command has got: a bar on a terminal, plain lines otherwise.

A bar redrawn in place is what a person at a terminal wants; in a log file or a
CI job it would be a stream of carriage returns, so there the same progress is
written as a line now and then. Both go to stderr: stdout keeps only the
command's result (its ``--json`` document, say).
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import IO, Any, Self, TextIO

import click

__all__ = ["Progress"]


def _is_terminal(stream: IO[Any]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """Progress of a long operation, labelled ``label``; use as a context manager.

    ``update(done, total, line)`` reports that ``done`` of ``total`` steps are
    finished (the total may be learnt only once the work has started). On a
    terminal a bar moves; elsewhere ``line`` is printed each time ``done``
    crosses a multiple of ``every`` (and at the first update with
    ``first_line``), so a long run logs a bounded number of lines and a short
    one none.
    """

    def __init__(
        self,
        label: str,
        *,
        every: int = 1000,
        first_line: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self.label = label
        self.every = max(1, every)
        self._stream = sys.stderr if stream is None else stream
        self._terminal = _is_terminal(self._stream)
        self._bar: Any = None
        self._done = 0
        self._printed: int | None = None if first_line else 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(t, e, tb)
            self._bar = None

    @property
    def on_terminal(self) -> bool:
        """Whether progress is shown as a bar (else as lines)."""
        return self._terminal

    def update(self, done: int, total: int, line: str) -> None:
        """``done`` of ``total`` steps are finished; ``line`` says so in words."""
        if self._terminal:
            if self._bar is None:
                self._bar = click.progressbar(
                    length=total, label=self.label, file=self._stream, show_pos=True
                ).__enter__()
            if done > self._done:
                self._bar.update(done - self._done)
        elif self._printed is None or done // self.every > self._printed // self.every:
            click.echo(line, file=self._stream)
            self._printed = done
        self._done = max(self._done, done)
