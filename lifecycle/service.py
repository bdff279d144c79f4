"""`lifecycle serve`: a long-running worker driven by APScheduler 3.

The ledger is the durable state; the scheduler only fires idempotent ticks
(drain the queue, re-queue expired leases, write the relapse summary and the
relapse reports), so an in-memory job store recreated at start is enough.
Jobs run in the scheduler's thread pool: a report being drawn never holds up
the drain.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from lifecycle.api import SWEEP_GRACE_SECONDS, Lifecycle
from lifecycle.callbacks import Deliverer, DeliveryPolicy, callback_hosts_from_env
from lifecycle.errors import InvalidConfig
from lifecycle.summary import relapse_summary
from lifecycle.telemetry import Telemetry
from lifecycle.store.errors import LeaseLost, StorageUnavailable
from lifecycle.strategies.executor import Executor, ExecutorLost

if TYPE_CHECKING:  # the HTTP stack is imported only when the service serves it
    from lifecycle.http.limits import HttpLimits

log = logging.getLogger("lifecycle.service")


class Service:
    def __init__(
        self,
        lc: Lifecycle,
        *,
        interval: float = 1.0,
        lease_seconds: float = 60.0,
        max_attempts: int = 5,
        summary_interval: float = 300.0,
        grace_seconds: float = 30.0,
        reports_dir: str | os.PathLike | None = None,
        owner: str | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        report_interval: float = 3600.0,
        report_cron: str | None = None,
        keep_reports: int = 10,
        claim_batch: int = 1,
        executor: Executor | None = None,
        sweep_interval: float = 600.0,
        sweep_grace_seconds: float = SWEEP_GRACE_SECONDS,
        checkpoints_dir: str | os.PathLike | None = None,
        checkpoint_interval: float = 300.0,
        http: str | None = None,
        http_ssl_certfile: str | None = None,
        http_ssl_keyfile: str | None = None,
        http_limits: HttpLimits | None = None,
        callback_hosts: Iterable[str] | None = None,
        callback_interval: float = 2.0,
        callback_first_retry: float = 5.0,
        callback_max_retry: float = 3600.0,
        callback_max_attempts: int = 15,
        callback_timeout: float = 10.0,
    ) -> None:
        if interval <= 0 or lease_seconds <= 0 or summary_interval <= 0 or grace_seconds < 0:
            raise InvalidConfig("interval, lease_seconds and summary_interval must be positive, grace_seconds >= 0")
        if report_interval <= 0 or keep_reports < 1:
            raise InvalidConfig(f"report_interval must be positive and keep_reports at least 1, "
                                f"not {report_interval} and {keep_reports}")
        if checkpoint_interval <= 0:
            raise InvalidConfig(f"checkpoint_interval must be positive, not {checkpoint_interval}")
        if sweep_interval <= 0 or sweep_grace_seconds < 0:
            raise InvalidConfig(f"sweep_interval must be positive and sweep_grace_seconds >= 0, not "
                                f"{sweep_interval} and {sweep_grace_seconds}")
        if isinstance(claim_batch, bool) or not isinstance(claim_batch, int) or claim_batch < 1:
            raise InvalidConfig(f"claim_batch must be a positive integer, not {claim_batch!r}")
        if callback_interval <= 0:
            raise InvalidConfig(f"callback_interval must be positive, not {callback_interval}")
        self.report_trigger = _report_trigger(report_interval, report_cron)
        self.sweep_interval = sweep_interval
        self.sweep_grace_seconds = sweep_grace_seconds
        self.keep_reports = keep_reports
        self.lc = lc
        self.interval = interval
        self.summary_interval = summary_interval
        self.grace_seconds = grace_seconds
        self.reports_dir = Path(reports_dir) if reports_dir else None
        self.worker = lc.worker(owner=owner, lease_seconds=lease_seconds, max_attempts=max_attempts,
                                 claim_batch=claim_batch, executor=executor)
        self.worker.purge_after_batch = False  # the purge job does it, beside the drain
        self.checkpoints_dir = Path(checkpoints_dir) if checkpoints_dir else None
        self.checkpoint_interval = checkpoint_interval
        self.worker.checkpoints = self.checkpoints_dir
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.telemetry: Telemetry | None = None
        self.scheduler = None
        # erasures' status callbacks: one allow-list for the HTTP API's submits and the deliveries
        hosts = callback_hosts_from_env() if callback_hosts is None else {h.lower() for h in callback_hosts}
        self.callback_interval = callback_interval
        self.deliverer = Deliverer(lc, hosts, DeliveryPolicy(
            first_retry=callback_first_retry, max_retry=callback_max_retry, max_attempts=callback_max_attempts,
            timeout=callback_timeout))
        # the HTTP API beside the scheduler (lifecycle.http), built now so a bad address fails before serving
        self.http = None
        if http is not None:
            from lifecycle.http.app import HttpServer

            self.http = HttpServer(lc, http, ssl_certfile=http_ssl_certfile, ssl_keyfile=http_ssl_keyfile,
                                   callback_hosts=hosts, limits=http_limits)

    # ---- jobs ----------------------------------------------------------------

    def tick(self) -> None:
        """Drain the queue (the scheduler never runs two ticks at once)."""
        if self.telemetry is not None:
            self.telemetry.beat()
        try:
            self.worker.drain()
        except (ExecutorLost, StorageUnavailable) as exc:  # the step went back to the queue; the next tick tries again
            log.warning("the drain stopped: %s", exc)

    def requeue(self) -> None:
        """Re-queue expired leases and finish purges a crash interrupted.

        Kept out of the drain tick: that one fires many times a second, and
        scanning every model there loads the database for nothing.
        """
        self.worker.maintain()

    def sweep(self) -> list[str]:
        """Erase stored files nothing references (a crash's leftovers)."""
        return self.lc.sweep(self.sweep_grace_seconds)

    def refresh_erasures(self) -> list:
        """Bring every open person-level erasure's status up to date from its forgets."""
        from lifecycle.erasure import refresh_all

        return refresh_all(self.lc)

    def deliver_callbacks(self) -> list:
        """Send the erasures' status callbacks that are due (stopping between two once the service stops)."""
        return self.deliverer.run(stopping=self.worker.stopping)

    def write_checkpoint(self) -> Path:
        """Sign every chain's head into the checkpoint folder."""
        from lifecycle.checkpoints import write_checkpoint

        path = write_checkpoint(self.lc.ledger, self.lc.signer, self.checkpoints_dir)
        log.info("audit checkpoint written to %s", path)
        return path

    def write_summary(self) -> dict:
        summary = relapse_summary(self.lc)
        for m in summary["models"]:
            relapsed = [t["task"] for t in m["forgotten_tasks"] if t["relapsed"]]
            log.info("relapse summary %s v%s: %d forgotten task(s), relapsed: %s", m["model"], m["latest_version"],
                     len(m["forgotten_tasks"]), ", ".join(relapsed) or "none")
        if self.reports_dir is not None:
            self.reports_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.reports_dir / ".relapse-summary.json.tmp"
            tmp.write_text(json.dumps(summary, indent=2))
            os.replace(tmp, self.reports_dir / "relapse-summary.json")
        return summary

    def write_reports(self) -> list:
        """Write every model's relapse report into ``<reports>/<model>/<time>/``,
        record it in the ledger, and keep only the latest ``keep_reports`` per model.

        A report that fails is logged and skipped: reports never stop the service.
        """
        from lifecycle.report import file_stem, write_report
        written = []
        stamp = self.lc.ledger.clock().strftime("%Y%m%dT%H%M%S.%fZ")
        for m in self.lc.ledger.models():
            try:
                latest = self.lc.ledger.latest_version(m.id)
                folder = self.reports_dir / file_stem(m.name) / stamp
                paths = write_report(self.lc, m.name, folder)
                written.append(self.lc.ledger.record_report(
                    m.id, latest.version if latest else 0, str(paths.html), _sha256(paths.html), _sha256(paths.json)))
                self._prune_reports(folder.parent)
                log.info("relapse report for %s written to %s", m.name, paths.html)
            except Exception:
                log.exception("could not write the relapse report of %s", m.name)
        return written

    def _prune_reports(self, model_folder: Path) -> None:
        runs = sorted(p for p in model_folder.iterdir() if p.is_dir())
        for old in runs[:-self.keep_reports]:
            shutil.rmtree(old, ignore_errors=True)

    def _start_telemetry(self) -> None:
        if self.metrics_port is None:
            return
        self.telemetry = Telemetry(self.lc.ledger)
        self.worker.on_step = self.telemetry.observe_step
        port = self.telemetry.serve(self.metrics_port, self.metrics_host)
        log.info("metrics on http://%s:%d/metrics, health on /healthz", self.metrics_host, port)

    def _schedule(self, scheduler) -> None:
        scheduler.add_job(self.tick, "interval", seconds=self.interval, id="drain", next_run_time=_now())
        scheduler.add_job(self.worker.purge_pending, "interval", seconds=self.interval, id="purge",
                          next_run_time=_now())
        scheduler.add_job(self.requeue, "interval", seconds=max(1.0, self.worker.lease_seconds / 4), id="requeue",
                          next_run_time=_now())
        scheduler.add_job(self.write_summary, "interval", seconds=self.summary_interval, id="relapse-summary")
        scheduler.add_job(self.sweep, "interval", seconds=self.sweep_interval, id="sweep")
        scheduler.add_job(self.refresh_erasures, "interval", seconds=max(self.interval, 5.0), id="erasures")
        scheduler.add_job(self.deliver_callbacks, "interval", seconds=self.callback_interval, id="callbacks",
                          next_run_time=_now())
        if self.checkpoints_dir is not None:
            scheduler.add_job(self.write_checkpoint, "interval", seconds=self.checkpoint_interval, id="checkpoint",
                              next_run_time=_now())
        if self.reports_dir is not None:
            scheduler.add_job(self.write_reports, self.report_trigger, id="relapse-reports")
        # a tick still running when the next is due is normal (a long step), not news
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
        # "Running job ..." / "executed successfully" twice per tick of every job drown what an operator needs
        logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)

    def _job_defaults(self) -> dict:
        return {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}

    # ---- running -------------------------------------------------------------

    def run(self) -> int:
        """Block until SIGTERM or SIGINT; then stop claiming, let the current step
        finish within the grace period (or hand it back to the queue) and return 0."""
        self.scheduler = BlockingScheduler(job_defaults=self._job_defaults())
        self._schedule(self.scheduler)
        self._start_telemetry()

        def on_signal(signum, _frame):
            log.info("received %s: no new claims; finishing the current step", signal.Signals(signum).name)
            self.worker.stopping.set()
            # From another thread: the handler runs in the scheduler's own
            # thread, possibly midway through its job bookkeeping, which a
            # shutdown from here would pull the jobs out from under.
            threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": False}, daemon=True).start()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        log.info("serving as worker %s", self.worker.owner)
        if self.http is not None:
            self.http.start()
        try:
            self.scheduler.start()
        finally:
            if self.http is not None:
                self.http.stop()
        self._finish_current_step()
        log.info("stopped")
        return 0

    def start(self) -> None:
        """Run in background threads (for embedding, e.g. the demo)."""
        self.scheduler = BackgroundScheduler(job_defaults=self._job_defaults())
        self._schedule(self.scheduler)
        self._start_telemetry()
        if self.http is not None:
            self.http.start()
        self.scheduler.start()

    def stop(self) -> None:
        self.worker.stopping.set()
        if self.http is not None:
            self.http.stop()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.telemetry is not None:
            self.telemetry.close()

    def _finish_current_step(self) -> None:
        """Wait up to the grace period for the batch in hand; hand back what is left of it."""
        deadline = time.monotonic() + self.grace_seconds
        while self.worker.current and time.monotonic() < deadline:
            time.sleep(0.05)
        claims = list(self.worker.current)
        if not claims:
            return
        for claim in claims:
            try:
                self.lc.ledger.queue.release(claim, "shutdown grace period ran out")
                log.warning("handed request %s back to the queue: the grace period ran out", claim.request.id)
            except LeaseLost:
                pass
        # the step's thread cannot be interrupted; its late commit would be fenced anyway
        logging.shutdown()
        os._exit(0)


def _report_trigger(interval: float, cron: str | None):
    if cron is None:
        return IntervalTrigger(seconds=interval)
    try:
        return CronTrigger.from_crontab(cron, timezone="UTC")
    except ValueError as exc:
        raise InvalidConfig(f"report_cron {cron!r} is not a crontab expression "
                            f"(minute hour day month weekday, e.g. '0 * * * *'): {exc}") from None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _now():
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc)
