"""Where independent per-arch work runs (``--executor``): ``local``, in this process one job after another (or in
``workers`` spawned processes that die with it, ``bench collect --workers``), or ``ray``, each job a Ray task with
declared resources, on a local Ray started here or on the cluster at ``--ray-address`` / ``RAY_ADDRESS``.

Both run a module-level function over a list of jobs and yield each result as its job finishes, so the caller
writes results atomically as they come and a killed driver resumes from what was written. A job seeds itself
(the functions given are seeded by their arguments alone), so its result depends on where it runs only through
torch's thread count: ``cpus_per_task`` threads in a Ray task, an equal share of the CPUs in a pool worker, the
process's own in-process. A Ray worker that dies is retried (``max_retries``);
an exception a job raises is not, and reaches the caller as itself. Ray is imported only when asked for.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Protocol, TypeVar

from . import lifeline
from .errors import NascoreError

T = TypeVar("T")
#: retries of a Ray task whose worker process died (a killed or crashed worker, a lost node)
MAX_RETRIES = 3
RAY_MISSING = ("note: --executor ray: Ray is not installed (pip install 'nascore[ray]'); the archs run in this "
               "process, one after another")


class Executor(Protocol):
    #: whether jobs run elsewhere, at the same time (a caller then submits everything it can at once)
    parallel: bool

    def run(self, fn: Callable[..., T], jobs: Sequence[tuple[Any, ...]], shared: Any = None
            ) -> Iterator[tuple[int, T]]:
        """``fn(shared, *job)`` for every job (``shared`` is sent once, not per job); yields (the job's position,
        its result) as each finishes. Jobs still running when the iterator is closed are cancelled."""
        ...


def _threaded(threads: int, fn: Callable[..., T], shared: Any, job: tuple[Any, ...]) -> T:
    import torch  # in the worker that runs the job: choosing an executor loads no torch

    torch.set_num_threads(threads)
    return fn(shared, *job)


class LocalExecutor:
    def __init__(self, workers: int = 1):
        self.workers = workers
        self.parallel = workers > 1

    def run(self, fn: Callable[..., T], jobs: Sequence[tuple[Any, ...]], shared: Any = None
            ) -> Iterator[tuple[int, T]]:
        if self.workers <= 1 or len(jobs) <= 1:
            for i, job in enumerate(jobs):
                yield i, fn(shared, *job)
            return
        threads = max(1, (os.cpu_count() or 1) // self.workers)  # an equal share of the CPU threads each
        # each worker dies with this process, however it dies (a SIGTERM'd or killed command leaves none training on)
        with ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=lifeline.die_with_parent, initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(_threaded, threads, fn, shared, job): i for i, job in enumerate(jobs)}
            try:
                for future in as_completed(futures):
                    yield futures[future], future.result()
            finally:
                for future in futures:
                    future.cancel()


class RayExecutor:
    parallel = True

    def __init__(self, address: str | None = None, cpus_per_task: int = 1, gpus_per_task: float = 0,
                 max_retries: int = MAX_RETRIES):
        self.address, self.cpus_per_task, self.gpus_per_task = address, cpus_per_task, gpus_per_task
        self.max_retries = max_retries

    def run(self, fn: Callable[..., T], jobs: Sequence[tuple[Any, ...]], shared: Any = None
            ) -> Iterator[tuple[int, T]]:
        import ray  # Ray: an optional extra, only for --executor ray

        if not ray.is_initialized():  # address None: RAY_ADDRESS, else a local Ray of this machine's CPUs/GPUs
            ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
        task = ray.remote(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task,
                          max_retries=self.max_retries)(_threaded)
        shared_ref = ray.put(shared)
        pending = {task.remote(self.cpus_per_task, fn, shared_ref, job): i for i, job in enumerate(jobs)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(done[0])
                try:
                    result = ray.get(done[0])
                except ray.exceptions.RayTaskError as exc:  # the job's own exception, e.g. a NascoreError
                    raise exc.cause from None
                except ray.exceptions.RayError as exc:  # its worker died more than max_retries times, a lost node
                    raise NascoreError(f"Ray could not run job {index} of {len(jobs)}: {exc}") from None
                yield index, result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)


def make_executor(name: str, address: str | None = None, cpus_per_task: int = 1, gpus_per_task: float = 0,
                  workers: int = 1, log: Callable[[str], None] = print) -> Executor:
    """The executor the command-line options ask for; ``ray`` without Ray installed runs locally, saying so once."""
    if cpus_per_task < 1:
        raise NascoreError(f"--cpus-per-task {cpus_per_task}: must be at least 1")
    if name == "local":
        if address is not None:
            raise NascoreError("--ray-address is for --executor ray")
        return LocalExecutor(workers)
    if name != "ray":
        raise NascoreError(f"--executor {name!r}: expected 'local' or 'ray'")
    if workers > 1:
        raise NascoreError("--workers is for --executor local; Ray runs as many archs at once as its CPUs allow "
                           "(--cpus-per-task each)")
    try:
        import ray  # noqa: F401
    except ImportError:
        log(RAY_MISSING)
        return LocalExecutor()
    return RayExecutor(address, cpus_per_task, gpus_per_task)
