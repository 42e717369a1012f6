"""The daemon freezes its start-up heap (main.freeze_startup_heap): out of the cyclic GC's
full collections, still freed by reference counting."""

from __future__ import annotations

import gc
import weakref

from xfrmctl.daemon.main import freeze_startup_heap


class _Thing:
    pass


def test_the_startup_heap_is_frozen_and_still_freed_by_refcount() -> None:
    thing = _Thing()
    gone = weakref.ref(thing)
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 0
        del thing
        assert gone() is None  # frozen, yet freed when its last reference goes
    finally:
        gc.unfreeze()
