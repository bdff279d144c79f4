"""Structured logs, Prometheus metrics and the health endpoint of `lifecycle serve`."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from lifecycle.migrations import migrate
from lifecycle.store.clock import utcnow
from lifecycle.store.ledger import Ledger
from lifecycle.store.records import RequestKind, RequestStatus

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra={"request_id": ...}`` fields come along."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic announces its migration context on every schema check (each /healthz): not news
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


class LedgerCollector:
    """Gauges read from the ledger at scrape time, so every replica reports the truth."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def collect(self):
        requests = GaugeMetricFamily("lifecycle_requests", "Requests in the ledger by kind and status",
                                     labels=["kind", "status"])
        depth = GaugeMetricFamily("lifecycle_queue_depth", "Queued and running requests by kind", labels=["kind"])
        open_by_kind: dict[str, int] = {RequestKind.LEARN: 0, RequestKind.FORGET: 0}
        for kind, status, n in self.ledger.request_counts():
            requests.add_metric([kind, status], n)
            if status in (RequestStatus.QUEUED, RequestStatus.RUNNING):
                open_by_kind[kind] = open_by_kind.get(kind, 0) + n
        for kind, n in open_by_kind.items():
            depth.add_metric([kind], n)
        yield requests
        yield depth

        now = utcnow()
        oldest = self.ledger.oldest_open_forget()
        age = GaugeMetricFamily("lifecycle_oldest_pending_forget_age_seconds",
                                "Age of the oldest open forget request (0 when none)")
        due = GaugeMetricFamily("lifecycle_oldest_pending_forget_due_in_seconds",
                                "Seconds until the oldest open forget is due; negative when overdue (0 when none)")
        age.add_metric([], (now - oldest[0]).total_seconds() if oldest else 0.0)
        due.add_metric([], (oldest[1] - now).total_seconds() if oldest else 0.0)
        yield age
        yield due
        overdue = GaugeMetricFamily("lifecycle_overdue_forgets", "Open forget requests past their due date")
        overdue.add_metric([], self.ledger.overdue_forgets(now))
        yield overdue
        findings = GaugeMetricFamily("lifecycle_relapse_findings", "Relapse findings recorded, by strategy",
                                     labels=["strategy"])
        for strategy, n in self.ledger.finding_counts():
            findings.add_metric([strategy], n)
        yield findings
        quarantined = GaugeMetricFamily("lifecycle_model_quarantined", "1 for a model whose stored state or data "
                                        "is unreadable (only repairs are applied to it), else 0", labels=["model"])
        for m in self.ledger.models():
            quarantined.add_metric([m.name], 1.0 if m.quarantine else 0.0)
        yield quarantined


class Telemetry:
    """Metrics registry of one service process, and its HTTP endpoint."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.registry = CollectorRegistry()
        self.registry.register(LedgerCollector(ledger))
        self.step_seconds = Histogram("lifecycle_step_duration_seconds", "Duration of applied steps",
                                      ["strategy", "kind"], registry=self.registry,
                                      buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800))
        self.heartbeat = Gauge("lifecycle_worker_last_heartbeat_timestamp_seconds",
                               "When this worker's loop last ran (Unix time)", registry=self.registry)
        self.server: ThreadingHTTPServer | None = None

    def observe_step(self, strategy: str, kind: str, seconds: float) -> None:
        self.step_seconds.labels(strategy, kind).observe(seconds)

    def beat(self) -> None:
        self.heartbeat.set(time.time())

    def health(self) -> tuple[bool, str]:
        try:
            migrate.check_at_head(self.ledger.engine, "URL")
        except Exception as exc:  # any failure to reach or read the database means not ready
            return False, f"not ready: {type(exc).__name__}: {exc}"
        return True, "ready"

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        telemetry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                if self.path == "/metrics":
                    body, code, ctype = generate_latest(telemetry.registry), 200, "text/plain; version=0.0.4"
                elif self.path == "/healthz":
                    ok, text = telemetry.health()
                    body, code, ctype = (text + "\n").encode(), 200 if ok else 503, "text/plain"
                else:
                    body, code, ctype = b"not found\n", 404, "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # scrapes every few seconds would flood the log
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True, name="metrics").start()
        return self.server.server_address[1]

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
