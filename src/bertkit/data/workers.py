"""A function over tasks in worker processes, results in task order, a bounded number in flight.

Workers are started with "spawn" (no state inherited from the caller, no threads forked) and get a
context object once, in their initializer; each task then calls ``fn(context, task)``. With one
worker everything runs in the calling process. In both cases the tokenizers library's own thread
pool is turned off (TOKENIZERS_PARALLELISM=false), so N workers use N cores.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from bertkit.errors import BertkitError

__all__ = ["ordered_map", "single_threaded_tokenizers"]

T = TypeVar("T")
R = TypeVar("R")
_CONTEXT: Any = None
_ENV = {"TOKENIZERS_PARALLELISM": "false"}


def _init(context: Any) -> None:
    global _CONTEXT
    os.environ.update(_ENV)
    _CONTEXT = context


def _call(fn: Callable[[Any, T], R], task: T) -> R:
    return fn(_CONTEXT, task)


@contextlib.contextmanager
def single_threaded_tokenizers() -> Iterator[None]:
    """Turn the tokenizers library's thread pool off inside the block (it reads the variable per call)."""
    old = {name: os.environ.get(name) for name in _ENV}
    os.environ.update(_ENV)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def ordered_map(fn: Callable[[Any, T], R], tasks: Iterable[T], context: Any, workers: int) -> Iterator[R]:
    """Yield ``fn(context, task)`` for each task, in task order, using ``workers`` processes.

    At most 2 x workers tasks are in flight, so results waiting for the caller stay few. ``fn`` must be
    a module-level function; ``context`` and the tasks must pickle. A worker that dies (killed, out
    of memory, or a script that starts work on import) raises BertkitError instead of hanging.
    """
    if workers <= 1:
        with single_threaded_tokenizers():
            for task in tasks:
                yield fn(context, task)
        return
    spawn = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_init, initargs=(context,)) as pool:
            pending: deque = deque()
            for task in tasks:
                pending.append(pool.submit(_call, fn, task))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
    except BrokenProcessPool:
        raise BertkitError("a worker process died (killed, out of memory, or a calling script that is not "
                           "guarded by `if __name__ == '__main__':`); run again with --workers 1 to see why") from None
