"""A ``MemoryStore`` used in a forked child warns, once, that its limits are per process."""

from __future__ import annotations

import os
import warnings

import anyio
import pytest

from llmguard import LLMGuardError, MemoryStore, PerProcessStoreWarning, Window

HOUR = Window.fixed(3600)


def reserve_three_times(store: MemoryStore) -> None:
    async def main() -> None:
        for i in range(3):
            await store.reserve("k", f"r{i}-{os.getpid()}", 1, limit=10, window=HOUR, hold=60)
        await store.usage("k", window=HOUR)

    anyio.run(main)


def test_per_process_warning_is_a_user_warning() -> None:
    assert issubclass(PerProcessStoreWarning, UserWarning)
    assert issubclass(PerProcessStoreWarning, LLMGuardError)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_memory_store_used_after_fork_warns_once_per_process() -> None:
    store = MemoryStore()
    with warnings.catch_warnings(record=True) as parent:
        warnings.simplefilter("always")
        reserve_three_times(store)  # the process that made it: no warning
    assert not [w for w in parent if issubclass(w.category, PerProcessStoreWarning)]

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report how many warnings it saw, and where
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                reserve_three_times(store)
                store_warnings = [w for w in caught if w.category is PerProcessStoreWarning]
                where = {os.path.basename(w.filename) for w in store_warnings}
            os.write(write, f"{len(store_warnings)} {','.join(sorted(where))}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report = pipe.read().decode()
    os.waitpid(pid, 0)
    assert report == "1 test_memory_fork.py"  # once, pointing at the caller's line

    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        reserve_three_times(store)  # the parent is still the owner
    assert not [w for w in again if issubclass(w.category, PerProcessStoreWarning)]
