"""Spill files: usage lines that waited out a store outage, one file per process, replayed by any.

Every process appends to its own file (its pid in the name), so that no two processes ever write
or rename the same file. Whoever replays takes every spill file it finds, its own, its sibling
workers' and those of processes that died, in two steps under `fcntl` locks:

1. claim: lock a live file (writers hold the same lock for each append, microseconds), rename it
   to a `.replaying` name of its own and unlock. A writer that waited for the lock sees that its
   path now names another file (or none) and opens the new one, so no line goes into a claimed file.
2. replay: lock a `.replaying` file without waiting (a replayer that finds it locked leaves it to
   its holder), hand its lines to the store, and delete it while still holding the lock.

A replayer that dies between storing and deleting leaves the file to be replayed again; the store
drops records and settlements it already has by request id, so each is written once.

A configured path that exists and is not a regular file (/dev/null, a pipe) takes the lines
itself, unlocked and unsynced, and is never renamed, replayed or deleted: records thrown away on
purpose, or read by another program.
"""
from __future__ import annotations

import fcntl
import itertools
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

REPLAYING = ".replaying"


class SpillFiles:
    """The spill files of one configured path: `<stem>.<pid><suffix>` per process."""

    def __init__(self, path: str | os.PathLike) -> None:
        base = Path(path)
        self.base = base
        self.device = base.exists() and not base.is_file()
        self.own = base if self.device else base.with_name(f"{base.stem}.{os.getpid()}{base.suffix}")
        self._claims = itertools.count()

    def append(self, lines: list[bytes]) -> None:
        """Append lines to this process's file, durably (fsync) before returning."""
        data = b"\n".join(lines) + b"\n"
        if self.device:
            with open(self.own, "ab") as device:
                device.write(data)
            return
        while True:
            fd = os.open(self.own, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if _names(self.own, fd):
                    os.write(fd, data)
                    os.fsync(fd)
                    return
            finally:
                os.close(fd)  # closing drops the lock
            # Claimed by a replayer while this waited for the lock: write to the new file.

    def pending(self) -> bool:
        return bool(self._all())

    def count(self) -> int:
        """Lines waiting in every spill file (torn lines included)."""
        total = 0
        for path in self._all():
            try:
                with open(path, "rb") as spill:
                    total += sum(1 for line in spill if line.strip())
            except FileNotFoundError:
                pass  # replayed meanwhile
        return total

    async def replay(self, store: Callable[[bytes], Awaitable[bool | None]]) -> int:
        """Hand every spill file's content to `store`, deleting each file once stored. Returns the
        number of files replayed; a file another replayer holds is left to it. Whatever `store`
        raises propagates, and the file it was given waits for the next replay; when it returns
        False (it took the lines, but the store has no room for more) the replay stops after
        deleting that file."""
        for path in self._live():
            self._claim(path)
        replayed = 0
        for path in self._replaying():
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                if not _names(path, fd):
                    continue  # replayed and deleted by another while this opened it
                data = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))  # noqa: B023 (read before the await)
                more = await store(data)
                path.unlink(missing_ok=True)
                replayed += 1
                if more is False:
                    break
            finally:
                os.close(fd)
        return replayed

    def _claim(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _names(path, fd):
                os.replace(path, path.with_name(f"{path.name}.{os.getpid()}-{next(self._claims)}{REPLAYING}"))
        finally:
            os.close(fd)

    def _live(self) -> list[Path]:
        if self.device:
            return []
        found = sorted(self.base.parent.glob(f"{self.base.stem}.[0-9]*{self.base.suffix}"))
        if self.base.is_file():  # the single file of an earlier version
            found.append(self.base)
        return [p for p in found if not p.name.endswith(REPLAYING) and p.is_file()]

    def _replaying(self) -> list[Path]:
        if self.device:
            return []
        return [p for p in sorted(self.base.parent.glob(f"{self.base.stem}.*{REPLAYING}")) if p.is_file()]

    def _all(self) -> list[Path]:
        return self._live() + self._replaying()


def _names(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd` (a replayer may have claimed it)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
