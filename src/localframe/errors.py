"""One exception type for bad user input.

Every problem with a file, a structure or a setting that a user can fix is raised as an
:class:`InputError` whose message is a single line naming the source, the structure index
and the problem. The CLI prints that line and exits non-zero; it never shows a traceback
for these.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: one line naming the source, the structure and the problem."""

    def __init__(self, problem: str, source: str | None = None, index: int | None = None):
        self.problem = problem
        self.source = source
        self.index = index
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.source is not None:
            where.append(str(self.source))
        if self.index is not None:
            where.append(f"structure {self.index}")
        prefix = ": ".join(where)
        return f"{prefix}: {self.problem}" if prefix else self.problem

    def located(self, source: str | None = None, index: int | None = None) -> "InputError":
        """The same problem with the source and/or structure index filled in where missing."""
        return InputError(
            self.problem,
            self.source if self.source is not None else source,
            self.index if self.index is not None else index,
        )


def one_line(err: BaseException, limit: int | None = None) -> str:
    """The message of ``err`` on one line (whitespace collapsed), cut to ``limit`` characters with "..."."""
    text = " ".join(str(err).split())
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."
