"""One interface for embarrassingly parallel work: local processes or a Dask cluster.

Multi-start fits, profiles, bootstraps and virtual populations are lists of independent
tasks. :func:`get_executor` turns what the user passes into an object with
``map(function, items) -> list``:

* ``None`` or ``1``: run in this process;
* an integer ``n > 1``: ``n`` local worker processes (``concurrent.futures``);
* a ``dask.distributed.Client``, or a scheduler address such as ``"tcp://host:8786"``:
  the tasks go to that cluster (the ``dask`` extra).

The function and items must be picklable (models are).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from pkpd_cart.errors import InputError


class SerialExecutor:
    """Runs the tasks in this process, in order."""

    workers = 1

    def map(self, function: Callable, items: Iterable) -> list:
        return [function(item) for item in items]


_FORKED: tuple | None = None  # (function, items) inherited by forked workers


def _call_forked(index: int):
    function, items = _FORKED
    return _one_blas_thread(function, items[index])


def _one_blas_thread(function: Callable, item):
    """Run with one BLAS thread: the workers already use the cores; idle BLAS threads
    spinning in every worker made parallel profiles slower than serial ones."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return function(item)


class LocalExecutor:
    """Local worker processes.

    On Linux the workers are forked: the function and the items are inherited, not
    pickled (so lambdas and compiled models work); only results travel back. Elsewhere
    they are spawned and must be picklable.
    """

    def __init__(self, workers: int | None = None):
        self.workers = workers or os.cpu_count() or 1

    def map(self, function: Callable, items: Iterable) -> list:
        global _FORKED
        items = list(items)
        if "fork" in mp.get_all_start_methods():
            _FORKED = (function, items)
            try:
                with ProcessPoolExecutor(self.workers, mp_context=mp.get_context("fork")) as pool:
                    return list(pool.map(_call_forked, range(len(items))))
            finally:
                _FORKED = None
        with ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn")) as pool:
            return list(pool.map(function, items))


class DaskExecutor:
    """Tasks on a Dask distributed cluster (a ``Client`` or a scheduler address)."""

    def __init__(self, client: Any):
        try:
            from dask.distributed import Client
        except ImportError:
            raise InputError("Dask is not installed: pip install 'pkpd_cart[dask]'") from None
        self.client = client if isinstance(client, Client) else Client(client)
        self.workers = max(1, len(self.client.scheduler_info().get("workers", {})))

    def map(self, function: Callable, items: Iterable) -> list:
        futures = self.client.map(function, list(items), pure=False)
        return self.client.gather(futures)


def get_executor(executor: Any = None):
    """An executor from ``None``/int (local), a Dask ``Client`` or a scheduler address."""
    if executor is None:
        return SerialExecutor()
    if isinstance(executor, (SerialExecutor, LocalExecutor, DaskExecutor)):
        return executor
    if isinstance(executor, bool):
        raise InputError(
            "executor must be None, a number of processes, a Dask Client or a scheduler address"
        )
    if isinstance(executor, int):
        if executor < 1:
            raise InputError(f"number of processes must be >= 1, not {executor}")
        return SerialExecutor() if executor == 1 else LocalExecutor(executor)
    if isinstance(executor, str) or type(executor).__name__ == "Client":
        return DaskExecutor(executor)
    raise InputError(
        f"cannot run tasks on {type(executor).__name__!r}: give None, a number "
        "of processes, a Dask Client or a scheduler address"
    )


_WORKER_BATCH: Any = None  # the BatchRun inherited by the workers of a ForkedBatch


def _limit_blas() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def _run_chunk(task):
    import numpy as np

    P, chunk = task
    batch = _WORKER_BATCH
    OBS, _, status = batch.run(P, chunk)
    rows = np.concatenate([np.arange(batch.row_ptr[s], batch.row_ptr[s + 1]) for s in chunk])
    return rows, OBS[rows], status[chunk]


class ForkedBatch:
    """A :class:`~pkpd_cart.simulation.solver.BatchRun` split across ``workers`` local
    processes forked once (they inherit the compiled model and the packed records): each
    ``run(P, active)`` simulates a share of the ``active`` subjects in every worker, and
    returns what ``BatchRun.run`` returns (without sensitivities). Linux (fork) only;
    ``close()`` stops the workers."""

    def __init__(self, batch, workers: int):
        if "fork" not in mp.get_all_start_methods():
            raise InputError("parallel batch runs need the 'fork' start method (Linux)")
        if not isinstance(workers, int) or workers < 2:
            raise InputError(f"ForkedBatch needs workers >= 2 (got {workers!r})")
        global _WORKER_BATCH
        _WORKER_BATCH = batch
        self.batch, self.workers = batch, workers
        self.row_ptr, self.times = batch.row_ptr, batch.times
        self.pool = ProcessPoolExecutor(
            workers, mp_context=mp.get_context("fork"), initializer=_limit_blas
        )

    def run(self, P, active):
        import numpy as np

        active = np.asarray(active, dtype=np.int64)
        OBS = np.full((len(self.times), self.batch.n_obs), np.nan)
        status = np.zeros(self.batch.n_subjects, dtype=np.int64)
        chunks = [c for c in np.array_split(active, self.workers) if len(c)]
        for chunk, (rows, values, st) in zip(
            chunks, self.pool.map(_run_chunk, [(P, c) for c in chunks])
        ):
            OBS[rows] = values
            status[chunk] = st
        return OBS, None, status

    def close(self) -> None:
        self.pool.shutdown()
