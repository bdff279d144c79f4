"""Run a strategy's independent jobs as Ray tasks (``lifecycle serve --executor ray``).

Ray is imported on first use only, so a worker with the default local
executor never imports it or starts a Ray process. ``address`` is handed to
``ray.init`` as Ray documents it: None starts a local Ray instance (or joins
the one ``RAY_ADDRESS`` names), ``"auto"`` joins the cluster started on this
machine with ``ray start``, ``"host:port"`` the cluster whose head listens
there, ``"ray://host:port"`` one through the Ray client. A process already
connected to Ray keeps that connection.

Every job is a task of one CPU running ``fn(item)`` with ``threads`` torch
and BLAS threads, so N workers on N cores do not oversubscribe them. Ray
retries a task whose worker process dies (``max_retries``); the job
functions are pure and seeded, so a retried job gives the same bits.

A lost cluster must fail the step, not the process: Ray ends a driver whose
cluster's head (GCS) stays unreachable for a minute. So while a map waits,
the executor checks that the head still accepts connections, and after
``lost_after`` seconds without it disconnects and raises ``ExecutorLost``
(the worker then hands the request back to the queue). An error that a job
itself raised is raised again as it was.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from lifecycle.errors import InvalidConfig
from lifecycle.strategies.executor import ExecutorLost, Item, Result

log = logging.getLogger("lifecycle.ray")


class RayExecutor:
    """An executor (see ``lifecycle.strategies.executor``) whose jobs are Ray tasks.

    address: as ``ray.init`` takes it (see above); num_cpus: the CPUs of a
    local instance it starts (None: Ray's count); threads: torch and BLAS
    threads per task; max_retries: Ray's retries of a task whose process
    died; lost_after: seconds without the cluster's head before a map gives
    up; poll_seconds: how often a waiting map checks the head.
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, threads: int = 1,
                 max_retries: int = 3, lost_after: float = 10.0, poll_seconds: float = 0.5) -> None:
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise InvalidConfig(f"the Ray address must be a non-empty string or None, not {address!r}")
        for name, value, low in (("threads", threads, 1), ("max_retries", max_retries, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidConfig(f"{name} must be an integer of at least {low}, not {value!r}")
        if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1):
            raise InvalidConfig(f"num_cpus must be a positive integer or None, not {num_cpus!r}")
        for name, value in (("lost_after", lost_after), ("poll_seconds", poll_seconds)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InvalidConfig(f"{name} must be a positive number of seconds, not {value!r}")
        self.address = address
        self.num_cpus = num_cpus
        self.threads = threads
        self.max_retries = max_retries
        self.lost_after = lost_after
        self.poll_seconds = poll_seconds
        self._task = None  # the remote function, made on connecting
        self._head: tuple[str, int] | None = None  # the GCS address, checked while maps wait

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r})"

    @property
    def workers(self) -> int:
        ray = self._connect()
        try:
            return max(1, int(ray.cluster_resources().get("CPU", 1)))
        except Exception as exc:
            raise self._lost(f"could not read the cluster's resources: {exc}") from exc

    def ready(self) -> bool:
        try:
            self._connect()
        except ExecutorLost as exc:
            log.warning("Ray is not available: %s", exc)
            return False
        return True

    def map(self, fn: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
        items = list(items)
        if not items:
            return []
        ray = self._connect()
        try:
            refs = [self._task.remote(fn, item, self.threads) for item in items]
            self._wait(ray, refs)
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            # the job's own error (bad input, a bug): raised as it would be locally
            if isinstance(exc.cause, Exception):
                raise exc.cause from None
            raise
        except ray.exceptions.RayError as exc:
            raise self._lost(f"{type(exc).__name__}: {exc}") from exc

    # ---- the connection ------------------------------------------------------

    def _connect(self):
        import ray

        if ray.is_initialized():
            if self._head is not None and not _answers(self._head):
                raise self._lost(f"the cluster's head at {_text(self._head)} does not answer")
            if self._task is None:
                self._start(ray)
            return ray
        plain = _host_port(self.address)
        if plain is not None and not _answers(plain):
            raise ExecutorLost(f"no Ray cluster answers at {self.address}")
        options: dict[str, Any] = {"address": self.address}
        if self.num_cpus is not None:
            options["num_cpus"] = self.num_cpus
        try:
            ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ExecutorLost(f"could not join Ray at {self.address or 'a local instance'}: {exc}") from exc
        self._start(ray)
        log.info("joined Ray (%s): %s CPUs", self.address or "a local instance",
                 ray.cluster_resources().get("CPU", 0))
        return ray

    def _start(self, ray) -> None:
        self._task = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(_run)
        try:
            self._head = _host_port(ray.get_runtime_context().gcs_address)
        except Exception:  # the Ray client does not say: its own connection errors tell instead
            self._head = None

    def _wait(self, ray, refs: list) -> None:
        """Return once every task is done; raise ExecutorLost once the head is gone for ``lost_after`` s."""
        pending, silent_since = refs, None
        while True:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=self.poll_seconds)
            if not pending:
                return
            if self._head is None or _answers(self._head):
                silent_since = None
                continue
            silent_since = silent_since or time.monotonic()
            if time.monotonic() - silent_since >= self.lost_after:
                raise self._lost(f"the cluster's head at {_text(self._head)} has not answered for "
                                 f"{self.lost_after:g} s")

    def _lost(self, why: str) -> ExecutorLost:
        """Disconnect (so this process outlives the cluster and joins it again later) and say why."""
        import ray

        self._task, self._head = None, None
        try:
            ray.shutdown()
        except Exception as exc:
            log.warning("could not shut the Ray connection down cleanly: %s", exc)
        return ExecutorLost(f"Ray was lost: {why}")


def _run(fn: Callable[[Item], Result], item: Item, threads: int) -> Result:
    """One job on a Ray worker, with ``threads`` torch and BLAS threads."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    with threadpool_limits(limits=threads):
        return fn(item)


def _host_port(address: str | None) -> tuple[str, int] | None:
    """(host, port) of a plain "host:port" address; None for None, "auto", "local" and "ray://..."."""
    if address is None or "://" in address:
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _answers(head: tuple[str, int]) -> bool:
    try:
        socket.create_connection(head, timeout=2.0).close()
    except OSError:
        return False
    return True


def _text(head: tuple[str, int]) -> str:
    return f"{head[0]}:{head[1]}"


EXECUTORS = ("local", "ray")


def executor_for(kind: str, ray_address: str | None = None) -> RayExecutor | None:
    """The executor a command line asks for: None (the local one) or a RayExecutor."""
    if kind not in EXECUTORS:
        raise InvalidConfig(f"the executor must be one of {', '.join(EXECUTORS)}, not {kind!r}")
    return RayExecutor(ray_address) if kind == "ray" else None
