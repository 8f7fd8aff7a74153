"""Files given up on, listed once each, and warnings issued once per file across DataLoader workers and epochs.

Each DataLoader worker (and each epoch's fresh workers, and each DDP rank) holds its own copy of the reader, so
"once" cannot be a set in memory. Both records below are files next to each other, appended under an exclusive
``flock`` after checking what is already there: the first process to record a key wins, the others stay quiet.
Without a path the records live in this process's memory only.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

__all__ = ["QuarantineLog", "OnceLog"]


def _one_line(text: str) -> str:
    return " ".join(text.replace("\t", " ").split())[:500]


class OnceLog:
    """Keys recorded once: ``first(key)`` is True only for the first caller of any process sharing ``path``."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._seen: set[str] = set()

    def first(self, key: str) -> bool:
        """Record ``key``; True when nobody (no process sharing the file) recorded it before."""
        key = _one_line(key)
        if key in self._seen:
            return False
        self._seen.add(key)
        if self.path is None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            if any(line.rstrip("\n") == key for line in f):
                return False
            f.write(key + "\n")
            f.flush()
        return True


class QuarantineLog:
    """TSV of files that could not be read: one ``path<TAB>reason`` line per file, however many processes read it.

    Args:
        path: the TSV; None keeps the list in memory (``entries``).
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.entries: list[tuple[str, str]] = []  # what this process quarantined

    def add(self, video: str | Path, reason: str) -> bool:
        """Record ``video`` with a one-line ``reason`` unless the file lists it already; True when newly listed."""
        reason = _one_line(reason)
        if any(p == str(video) for p, _ in self.entries):
            return False
        self.entries.append((str(video), reason))
        if self.path is None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            if any(line.split("\t", 1)[0] == str(video) for line in f):
                return False
            f.write(f"{video}\t{reason}\n")
            f.flush()
        return True

    @staticmethod
    def read(path: str | Path) -> list[tuple[str, str]]:
        """The ``(path, reason)`` rows of a quarantine file."""
        with open(path, encoding="utf-8") as f:
            return [tuple(line.rstrip("\n").split("\t", 1)) for line in f if line.strip()]  # type: ignore[misc]
