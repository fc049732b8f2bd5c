"""A function over tasks in worker processes, results in task order, a bounded number in flight.

Workers are started with "spawn" (no state inherited from the caller, no threads forked) and get a
context object once, in their initializer; each task then calls ``fn(context, task)``. With one
worker everything runs in the calling process. The tokenizers library's thread pool is turned off
(TOKENIZERS_PARALLELISM=false) and workers start with one BLAS/OpenMP thread each, so N workers
use N cores: on a 2-core machine, numpy's OpenBLAS threads in two workers made pass 2 slower than
one worker.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from bertkit.errors import BertkitError

__all__ = ["ordered_map", "single_threaded_tokenizers"]

T = TypeVar("T")
R = TypeVar("R")
_CONTEXT: Any = None
_ENV = {"TOKENIZERS_PARALLELISM": "false"}
_WORKER_ENV = {**_ENV, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _init(context: Any) -> None:
    global _CONTEXT
    _CONTEXT = context


def _call(fn: Callable[[Any, T], R], task: T) -> R:
    return fn(_CONTEXT, task)


@contextlib.contextmanager
def single_threaded_tokenizers(env: dict[str, str] = _ENV) -> Iterator[None]:
    """Set ``env`` inside the block: by default the tokenizers library's thread pool off (it reads the
    variable per call); processes started inside the block inherit it."""
    old = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
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
        with single_threaded_tokenizers(_WORKER_ENV), \
                ProcessPoolExecutor(workers, mp_context=spawn, initializer=_init, initargs=(context,)) as pool:
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
