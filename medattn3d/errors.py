"""The one error type users see for bad input: it names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input data: ``str(err)`` is ``"<path>: <problem>"``; ``err.path`` and ``err.problem`` hold the parts."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DatasetError(InputError):
    """A dataset that cannot be planned or trained on: ``err.problems`` lists every problem found, one line each
    (``"<file>: <problem>"``); ``str(err)`` names the datalist, the count, then the problems one per line."""

    def __init__(self, path: str | Path, problems: list[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        lines = "\n".join(self.problems)
        super().__init__(path, f"{count} problem{'s' if count != 1 else ''} found, nothing was written:\n{lines}")


def find_input_error(error: BaseException) -> InputError | None:
    """The ``InputError`` inside ``error``'s cause chain (MONAI wraps transform errors in RuntimeErrors), or None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, InputError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
