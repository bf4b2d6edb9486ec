"""Spill files: one per process, all replayed by whoever finds them, each exactly once."""
from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time

import pytest

from gateway.spill import SpillFiles


def process(base, pid: int) -> SpillFiles:
    """The spill files as the process `pid` sees them."""
    files = SpillFiles(base)
    files.own = base.with_name(f"{base.stem}.{pid}{base.suffix}")
    return files


def replay_all(files: SpillFiles) -> list[bytes]:
    stored: list[bytes] = []

    async def store(data: bytes) -> None:
        stored.append(data)
    asyncio.run(files.replay(store))
    return stored


def test_every_processs_file_is_replayed_once_by_any_process(tmp_path):
    base = tmp_path / "spill.jsonl"
    process(base, 111).append([b'{"a":1}'])
    process(base, 222).append([b'{"b":2}', b'{"c":3}'])
    base.write_bytes(b'{"old":1}\n')  # the single file of an earlier version
    replayer = process(base, 333)
    assert replayer.count() == 4
    stored = replay_all(replayer)
    assert sorted(stored) == sorted([b'{"a":1}\n', b'{"b":2}\n{"c":3}\n', b'{"old":1}\n'])
    assert not replayer.pending() and list(tmp_path.iterdir()) == []
    assert replay_all(replayer) == []


def test_a_failed_replay_keeps_the_file_for_the_next(tmp_path):
    base = tmp_path / "spill.jsonl"
    writer = process(base, 111)
    writer.append([b'{"a":1}'])

    async def down(data: bytes) -> None:
        raise ConnectionError("store down")
    with pytest.raises(ConnectionError):
        asyncio.run(writer.replay(down))
    writer.append([b'{"b":2}'])  # lands in a new file: the claimed one is not appended to
    assert writer.count() == 2
    assert sorted(replay_all(writer)) == [b'{"a":1}\n', b'{"b":2}\n']
    assert not writer.pending()


def test_a_file_another_replayer_holds_is_left_to_it(tmp_path):
    base = tmp_path / "spill.jsonl"
    process(base, 111).append([b'{"a":1}'])
    held = base.with_name("spill.111.jsonl.999-0.replaying")
    os.replace(process(base, 111).own, held)
    fd = os.open(held, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert replay_all(process(base, 222)) == []
        assert held.exists()
    finally:
        os.close(fd)
    assert replay_all(process(base, 222)) == [b'{"a":1}\n']


def test_a_writer_that_waited_on_a_claim_writes_to_a_new_file(tmp_path):
    base = tmp_path / "spill.jsonl"
    writer = process(base, 111)
    writer.append([b'{"a":1}'])
    # A replayer holds the file's lock while it claims it; the writer opened it and waits.
    fd = os.open(writer.own, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    appending = threading.Thread(target=writer.append, args=([b'{"b":2}'],))
    appending.start()
    time.sleep(0.2)
    assert appending.is_alive(), "the writer waits for the lock"
    claimed = base.with_name("spill.111.jsonl.5-0.replaying")
    os.replace(writer.own, claimed)
    os.close(fd)
    appending.join(5)
    assert claimed.read_bytes() == b'{"a":1}\n'
    assert writer.own.read_bytes() == b'{"b":2}\n'


def test_a_store_without_room_stops_the_replay_after_the_file_it_took(tmp_path):
    base = tmp_path / "spill.jsonl"
    process(base, 111).append([b'{"a":1}'])
    process(base, 222).append([b'{"b":2}'])
    taken: list[bytes] = []

    async def full(data: bytes) -> bool:
        taken.append(data)
        return False  # took the lines (what it refused went back to a spill file), has no room for more
    assert asyncio.run(process(base, 333).replay(full)) == 1
    assert len(taken) == 1 and process(base, 333).count() == 1


def test_a_spill_path_that_is_not_a_regular_file_takes_lines_and_is_never_replayed(tmp_path):
    fifo = tmp_path / "spill.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        files = SpillFiles(fifo)
        files.append([b'{"a":1}'])
        assert os.read(reader, 100) == b'{"a":1}\n'
        assert not files.pending() and replay_all(files) == [] and fifo.is_fifo()
    finally:
        os.close(reader)
