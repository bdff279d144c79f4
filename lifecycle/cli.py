"""Command line for operators. Database-only commands never import torch."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from lifecycle.errors import BenchUnavailable, LifecycleError
from lifecycle.store.errors import LedgerError
from lifecycle.store.records import RequestStatus, Role

app = typer.Typer(help="lifecycle: continual learn/unlearn lifecycle manager.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
db_app = typer.Typer(help="Ledger schema management.", no_args_is_help=True)
app.add_typer(db_app, name="db")
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
cert_app = typer.Typer(help="Signed deletion certificates.", no_args_is_help=True)
app.add_typer(cert_app, name="certificate")
console = Console()


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"lifecycle {version('lifecycle')}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the version and exit.")):
    """lifecycle: continual learn/unlearn lifecycle manager."""

DB_HELP = "Ledger URL, e.g. sqlite:///ledger.db or postgresql+psycopg://user@host/db (env LIFECYCLE_DB)."
DbOpt = typer.Option(None, "--db", help=DB_HELP)
KeysOpt = typer.Option(None, "--keys", help="Folder of the artifacts' data keys; keep it out of their backups "
                                            "(default: beside the artifact folder; env LIFECYCLE_KEYS).")
ArtifactsOpt = typer.Option(None, "--artifacts", help="Artifact folder, or an object store URL such as "
                                                        "s3://bucket/prefix (then --keys is required; options in "
                                                        "env LIFECYCLE_ARTIFACTS_OPTIONS as JSON). Default: beside "
                                                        "a SQLite file; env LIFECYCLE_ARTIFACTS otherwise.")

RATE_HELP = ("Requests per second per API token, RATE or RATE/BURST (default $LIFECYCLE_HTTP_RATE, else 50/100); "
             "over it: 429.")
MAX_BODY_HELP = "Largest request body in MiB (default $LIFECYCLE_HTTP_MAX_BODY_MIB, else 256); over it: 413."


def _url(db: Optional[str]) -> str:
    from lifecycle.api import DEFAULT_URL
    from lifecycle.store.engine import ledger_url

    return ledger_url(db or os.environ.get("LIFECYCLE_DB", DEFAULT_URL))


def _connect(db, artifacts=None, keys=None):
    from lifecycle.api import connect

    return connect(_url(db), artifacts=artifacts, keys=keys, create=False)


def _fmt_time(value: Optional[dt.datetime]) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


@db_app.command("upgrade")
def db_upgrade(db: Optional[str] = DbOpt, revision: str = typer.Option("head", help="Target revision."),
               artifacts: Optional[str] = ArtifactsOpt, keys: Optional[str] = KeysOpt):
    """Create or upgrade the ledger schema; encrypt artifacts stored in clear by older versions."""
    from lifecycle.migrations import migrate
    from lifecycle.store.engine import reachable_engine

    engine = reachable_engine(_url(db))
    before = migrate.current_revision(engine)
    migrate.upgrade(engine, revision)
    console.print(f"ledger schema: {before or 'empty'} -> {migrate.current_revision(engine)}")
    if revision == "head" and before is not None:
        from lifecycle.reseal import reseal_legacy

        lc = _connect(db, artifacts, keys)
        resealed = reseal_legacy(lc.ledger, lc.vault, lc.ids)
        if resealed:
            console.print(f"encrypted {resealed} artifact(s) stored in clear by an older version")


CheckpointsOpt = typer.Option(None, "--checkpoints", help="Folder of signed chain checkpoints, kept apart from the "
                                                            "database.")


@audit_app.command("verify")
def audit_verify(db: Optional[str] = DbOpt, checkpoints: Optional[Path] = CheckpointsOpt,
                 public_key: Optional[Path] = typer.Option(None, "--public-key", help="PEM public key the "
                                                           "checkpoints are signed with (default: the signing key's).")):
    """Walk every model's event chain, replay it against every table, and name the first row that disagrees;
    with --checkpoints, also check that no chain was rewritten before a signed checkpoint."""
    lc = _connect(db)
    checked, problems = lc.ledger.audit_problems()
    if checkpoints is not None:
        from lifecycle import checkpoints as cp

        pem = public_key.read_bytes() if public_key is not None else lc.signer.public_pem()
        n, found = cp.check(lc.ledger, checkpoints, pem)
        problems = [*problems, *found]
    for p in problems:
        console.print(f"[red]BROKEN[/red] {p}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    console.print(f"audit intact: {checked} events checked, every table agrees with them"
                  + (f", {n} checkpoint(s) hold" if checkpoints is not None else ""), soft_wrap=True)


@audit_app.command("checkpoint")
def audit_checkpoint(checkpoints: Path = typer.Option(..., "--checkpoints", help="Folder for the signed "
                                                                                 "checkpoint, apart from the database."),
                     db: Optional[str] = DbOpt):
    """Sign the current head of every model's audit chain into a new checkpoint file."""
    from lifecycle.checkpoints import write_checkpoint

    lc = _connect(db)
    console.print(f"checkpoint written: {write_checkpoint(lc.ledger, lc.signer, checkpoints)}", highlight=False,
                  soft_wrap=True)


@cert_app.command("show")
def certificate_show(request_id: str = typer.Argument(..., help="An applied forget request."),
                     out: Optional[Path] = typer.Option(None, help="Also write the certificate to this file."),
                     db: Optional[str] = DbOpt):
    """Print the signed certificate of an applied forget request."""
    signed = _connect(db).certificate(request_id)
    text = json.dumps(signed, indent=2, sort_keys=True)
    if out is not None:
        out.write_text(text + "\n")
    print(text)


@cert_app.command("verify")
def certificate_verify(file: Path = typer.Argument(..., help="A certificate written by `certificate show`."),
                       public_key: Path = typer.Option(..., "--public-key", help="PEM public key of the signer."),
                       db: Optional[str] = typer.Option(None, "--db", help="Also check that the certificate's audit "
                                                                         "anchor is on this ledger's chain.")):
    """Check a certificate's signature offline (no ledger, no network); with --db, its anchor too."""
    from lifecycle.signing import InvalidCertificate, check_anchor, loads, verify

    signed = loads(file.read_bytes())  # an unreadable or malformed file is an error (exit 2), not a verdict
    try:
        body = verify(signed, public_key.read_bytes())
        if db is not None:
            check_anchor(body, _connect(db).ledger)
    except InvalidCertificate as exc:
        console.print(f"[red]INVALID[/red]: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"valid: forget {body['request']['id']} on model {body['model']!r}, v{body['version_before']} -> "
                  f"v{body['version_after']}, {body['removed']['count']} sample(s) removed, exactness "
                  f"{body['exactness']}", highlight=False, soft_wrap=True)


@cert_app.command("public-key")
def certificate_public_key(key: Optional[Path] = typer.Option(None, help="Private key file (default: "
                                                                          "$LIFECYCLE_SIGNING_KEY or ~/.config)."),
                           out: Optional[Path] = typer.Option(None, help="Write the PEM here.")):
    """Print the public key that verifies this installation's certificates."""
    from lifecycle.signing import Signer

    pem = Signer(key).public_pem(create=False)  # showing a key never makes one
    if out is not None:
        out.write_bytes(pem)
    print(pem.decode(), end="")


ExecutorOpt = typer.Option("local", help="Where the jobs inside one step run: local (this process) or ray "
                                          "(a Ray cluster, see --ray-address).")
RayAddressOpt = typer.Option(None, envvar="RAY_ADDRESS", help="With --executor ray: the cluster, as ray.init takes "
                                                              "it (host:port, auto, ray://host:port); none starts "
                                                              "a local Ray instance.")


@app.command()
def serve(
    db: Optional[str] = DbOpt,
    artifacts: Optional[str] = ArtifactsOpt,
    keys: Optional[str] = KeysOpt,
    interval: float = typer.Option(1.0, help="Seconds between queue polls."),
    lease_seconds: float = typer.Option(60.0, help="Lease on a claimed request; renewed while it runs."),
    max_attempts: int = typer.Option(5, help="Lease expiries after which a request is failed."),
    claim_batch: int = typer.Option(1, min=1, help="Requests claimed at once (one per model), applied in turn "
                                                   "and committed together; raise it when steps are cheap."),
    executor: str = ExecutorOpt,
    ray_address: Optional[str] = RayAddressOpt,
    summary_interval: float = typer.Option(300.0, help="Seconds between relapse summaries."),
    grace_seconds: float = typer.Option(30.0, help="On SIGTERM, how long the current step may finish."),
    reports: Optional[str] = typer.Option(None, help="Folder for relapse-summary.json and the periodic "
                                                     "relapse reports (one subfolder per model)."),
    report_interval: float = typer.Option(3600.0, help="Seconds between relapse reports (with --reports)."),
    report_cron: Optional[str] = typer.Option(None, help="Crontab expression (UTC) for relapse reports, e.g. "
                                                         "'0 6 * * *'; overrides --report-interval."),
    keep_reports: int = typer.Option(10, help="Reports kept per model; older ones are deleted."),
    sweep_interval: float = typer.Option(600.0, help="Seconds between sweeps of stored files nothing "
                                                      "references (older than an hour)."),
    checkpoints: Optional[str] = typer.Option(None, help="Folder, apart from the database, for signed checkpoints "
                                                         "of every audit chain's head."),
    checkpoint_interval: float = typer.Option(300.0, help="Seconds between checkpoints (with --checkpoints)."),
    metrics_port: Optional[int] = typer.Option(None, help="Serve Prometheus /metrics and /healthz on this port."),
    metrics_host: str = typer.Option("127.0.0.1", help="Address for the metrics endpoint."),
    log_level: str = typer.Option("INFO", help="Logging level."),
    log_format: str = typer.Option("json", help="json (one object per line) or text."),
    http: Optional[str] = typer.Option(None, "--http", help="Also serve the HTTP API (OpenDSR erasures, /v1, "
                                                            "docs at /docs) on HOST:PORT."),
    ssl_certfile: Optional[str] = typer.Option(None, help="TLS certificate (PEM) for --http."),
    ssl_keyfile: Optional[str] = typer.Option(None, help="TLS private key (PEM) for --http."),
    http_rate: Optional[str] = typer.Option(None, help=RATE_HELP),
    http_max_body: Optional[float] = typer.Option(None, help=MAX_BODY_HELP),
    callback_interval: float = typer.Option(2.0, help="Seconds between sends of due erasure status callbacks "
                                                      "(to the hosts in $LIFECYCLE_CALLBACK_HOSTS)."),
    callback_retry: float = typer.Option(5.0, help="Seconds before a failed callback is tried again; doubled "
                                                   "after each failure."),
    callback_max_retry: float = typer.Option(3600.0, help="The most seconds between two tries of a callback."),
    callback_attempts: int = typer.Option(15, help="Tries after which a callback is given up."),
    callback_timeout: float = typer.Option(10.0, help="Seconds a callback's receiver has to connect and answer."),
):
    """Drain the request queue on a schedule until SIGTERM/SIGINT."""
    from lifecycle.ray_executor import executor_for
    from lifecycle.service import Service

    from lifecycle.telemetry import configure_logging

    configure_logging(log_level, log_format)
    limits = None
    if http is not None:
        from lifecycle.http.limits import HttpLimits

        limits = HttpLimits.from_env(http_rate, http_max_body)
    service = Service(_connect(db, artifacts, keys), interval=interval, lease_seconds=lease_seconds,
                      max_attempts=max_attempts, summary_interval=summary_interval, grace_seconds=grace_seconds,
                      reports_dir=reports, metrics_port=metrics_port, metrics_host=metrics_host,
                      report_interval=report_interval, report_cron=report_cron, keep_reports=keep_reports,
                      claim_batch=claim_batch, sweep_interval=sweep_interval, checkpoints_dir=checkpoints,
                      checkpoint_interval=checkpoint_interval, http=http, http_ssl_certfile=ssl_certfile,
                      http_ssl_keyfile=ssl_keyfile, http_limits=limits, callback_interval=callback_interval,
                      callback_first_retry=callback_retry, callback_max_retry=callback_max_retry,
                      callback_max_attempts=callback_attempts, callback_timeout=callback_timeout,
                      executor=executor_for(executor, ray_address))
    raise typer.Exit(service.run())


@app.command("submit-forget")
def submit_forget(
    model: str = typer.Option(..., help="Model name."),
    task: Optional[str] = typer.Option(None, help="Forget this whole task."),
    sample: Optional[list[str]] = typer.Option(None, help="Forget this sample id (repeatable)."),
    subject: Optional[str] = typer.Option(None, help="Forget every sample of this data subject."),
    reason: Optional[str] = typer.Option(None, help="Why (kept in the ledger; its keyed digest in the certificate)."),
    requested_by: Optional[str] = typer.Option(None, help="Who asked."),
    idempotency_key: Optional[str] = typer.Option(None, help="Resubmitting with the same key is a no-op."),
    due_in_days: Optional[float] = typer.Option(None, help="Deadline (default: the model's, 30 days)."),
    db: Optional[str] = DbOpt,
    artifacts: Optional[str] = ArtifactsOpt,
    keys: Optional[str] = KeysOpt,
):
    """Queue a forget request."""
    lc = _connect(db, artifacts, keys)
    from lifecycle.validation import days

    due = None
    if due_in_days is not None:
        due = dt.datetime.now(dt.timezone.utc) + days(due_in_days, "--due-in-days")
    req = lc.forget(model, task=task, samples=sample or None, subject=subject, reason=reason,
                    requested_by=requested_by, idempotency_key=idempotency_key, due_at=due)
    console.print(f"queued forget {req.id} (due {_fmt_time(req.due_at)} UTC)")
    print(req.id)


@app.command("extend-deadline")
def extend_deadline(request_id: str = typer.Argument(..., help="An open forget request."),
                    days: float = typer.Option(..., help="Days to add to the current due date."),
                    reason: str = typer.Option(..., help="Why (audited; tell the data subject)."),
                    requested_by: Optional[str] = typer.Option(None, help="Who decided."),
                    db: Optional[str] = DbOpt):
    """Postpone a forget's due date, with a reason (audited)."""
    from lifecycle import validation
    from lifecycle.errors import InvalidRequest

    lc = _connect(db)
    req = lc.status(request_id)
    if req.due_at is None:
        raise InvalidRequest(f"request {request_id} is a {req.kind} request; only forgets have deadlines")
    new = lc.extend_deadline(request_id, until=req.due_at + validation.days(days, "--days"), reason=reason,
                             requested_by=requested_by)
    console.print(f"{new.id}: due {_fmt_time(req.due_at)} -> {_fmt_time(new.due_at)} UTC")


@app.command()
def repair(model: str = typer.Argument(..., help="A model whose stored state, data or probe sets are unreadable."),
           requested_by: Optional[str] = typer.Option(None, help="Who asked (audited)."),
           db: Optional[str] = DbOpt, artifacts: Optional[str] = ArtifactsOpt, keys: Optional[str] = KeysOpt):
    """Check a model's stored files and queue the repair that brings it back (applied ahead of its queue)."""
    req = _connect(db, artifacts, keys).repair(model, requested_by=requested_by)
    console.print(f"queued repair {req.id}: {req.reason}; it runs ahead of the model's queue", highlight=False,
                  soft_wrap=True)


@app.command()
def redact(request_id: str = typer.Argument(..., help="A request (or with --erasure, an erasure) whose free "
                                                     "text must go."),
           field: list[str] = typer.Option(["reason"], help="reason and/or requested_by (repeatable)."),
           why: str = typer.Option(..., help="Why (audited)."),
           requested_by: Optional[str] = typer.Option(None, help="Who decided."),
           erasure: bool = typer.Option(False, "--erasure", help="The id is a person's erasure: redact it and the "
                                                                 "forgets it queued."),
           db: Optional[str] = DbOpt):
    """Erase free text from a request or an erasure (audited; the audit chain still verifies)."""
    lc = _connect(db)
    if erasure:
        done = lc.redact_erasure(request_id, fields=tuple(field), why=why, requested_by=requested_by)
    else:
        done = lc.redact(request_id, fields=tuple(field), why=why, requested_by=requested_by)
    console.print(f"{done.id}: {', '.join(sorted(set(field)))} redacted")


@app.command()
def status(
    request_id: Optional[str] = typer.Argument(None, help="One request; omit to list requests."),
    model: Optional[str] = typer.Option(None, help="Only this model's requests."),
    open_only: bool = typer.Option(False, "--open", help="Only queued and running requests."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    db: Optional[str] = DbOpt,
):
    """Show one request, or the requests (overdue forgets first)."""
    from dataclasses import asdict

    lc = _connect(db)
    if request_id:
        reqs = [lc.status(request_id)]
    else:
        reqs = lc.requests(model, [RequestStatus.QUEUED, RequestStatus.RUNNING] if open_only else None)
    now = dt.datetime.now(dt.timezone.utc)

    def overdue(r):
        return r.due_at is not None and not r.done and r.due_at < now

    reqs = sorted(reqs, key=lambda r: (not overdue(r), r.seq))
    if as_json:
        print(json.dumps([asdict(r) | {"overdue": overdue(r)} for r in reqs], default=str, indent=2))
        return
    # Whole ids, even at 80 columns or in a pipe: they are what every other command takes. Below 140
    # columns one plain line per request (it greps, and nothing is cut); --json has every field.
    lines = []
    for r in reqs:
        target = r.describe_target()
        due = "" if r.due_at is None or r.done else f", due {r.due_at.strftime('%Y-%m-%d')}"
        lines.append([r.id, r.model, r.status + (" OVERDUE" if overdue(r) else ""), f"{r.kind} {target}{due}",
                      str(r.attempt), _fmt_time(r.received_at),
                      "" if r.result_version is None else str(r.result_version), (r.error or "")[:80]])
    if console.width < 140:
        for line in lines:
            print("  ".join(line[:4]) + (f"  v{line[6]}" if line[6] else "") + (f"  {line[7]}" if line[7] else ""))
        return
    table = Table("id", "model", "status", "request", "attempt", "received", "version", "error")
    for line in lines:
        table.add_row(*line)
    console.print(table)


@app.command()
def history(model: str = typer.Option(..., help="Model name."), db: Optional[str] = DbOpt):
    """Every request of a model with the accuracies of the version it produced."""
    lc = _connect(db)
    steps = lc.history(model)
    tasks = [t.name for t in lc.tasks(model)]
    table = Table("version", "kind", "target", "status", "step s", *tasks)
    for st in steps:
        accs = {e.task: e for e in st.evaluations}
        cells = []
        for t in tasks:
            e = accs.get(t)
            cells.append("" if e is None else f"{e.accuracy:.3f}" + (" (F)" if e.role == Role.FORGOTTEN else ""))
        target = st.request.describe_target()
        table.add_row("" if st.version is None else str(st.version), st.request.kind, target, st.request.status,
                      "" if st.request.step_seconds is None else f"{st.request.step_seconds:.3f}", *cells)
    console.print(table)
    console.print("(F) = forgotten task")


@app.command()
def relapse(model: Optional[str] = typer.Option(None, help="Only this model."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON."), db: Optional[str] = DbOpt):
    """Forgotten tasks, their accuracy now against the time of forgetting, and relapse findings."""
    from lifecycle.summary import relapse_summary

    summary = relapse_summary(_connect(db), model)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    if not any(m["forgotten_tasks"] for m in summary["models"]):
        console.print("no forgotten task to watch, so no relapse finding" + (f" in model {model!r}" if model else ""))
        return
    for m in summary["models"]:
        table = Table("task", "forgotten at", "acc then", "acc now", "chance", "peak since", "relapsed",
                      title=f"{m['model']} ({m['strategy']}, v{m['latest_version']}, threshold "
                            f"{m['relapse_threshold']:.2f})")
        for t in m["forgotten_tasks"]:
            table.add_row(t["task"], f"v{t['forgotten_at_version']}", f"{t['acc_at_forget']:.3f}",
                          "" if t["accuracy_now"] is None else f"{t['accuracy_now']:.3f}",
                          "" if t["chance"] is None else f"{t['chance']:.3f}",
                          f"{t['peak_since_forget']:.3f}", "YES" if t["relapsed"] else "no")
        console.print(table)


@app.command()
def report(model: str = typer.Option(..., help="Model name."),
           out: Path = typer.Option(Path("reports"), help="Folder for <model>.html and <model>.json."),
           db: Optional[str] = DbOpt, artifacts: Optional[str] = ArtifactsOpt, keys: Optional[str] = KeysOpt):
    """Write the relapse report of a model: a self-contained HTML page and the same numbers as JSON."""
    from lifecycle.report import write_report

    paths = write_report(_connect(db, artifacts, keys), model, out)
    console.print(f"report written: {paths.html} and {paths.json}", highlight=False, soft_wrap=True)


def _bench_harness():
    """``bench.harness`` from the checkout this package runs from (``bench/`` beside ``lifecycle/``)."""
    import importlib

    root = Path(__file__).resolve().parents[1]
    if not (root / "bench" / "harness.py").is_file():
        raise BenchUnavailable(f"`lifecycle bench` ships with the source checkout, not with the installed package "
                               f"(no bench/harness.py beside {Path(__file__).resolve().parent}): run it from a "
                               "clone installed with `pip install -e .`")
    if str(root) not in sys.path:
        sys.path.append(str(root))
    harness = importlib.import_module("bench.harness")
    if Path(harness.__file__).resolve().parent != root / "bench":
        raise BenchUnavailable(f"another `bench` package ({Path(harness.__file__).parent}) shadows the checkout's "
                               f"({root / 'bench'})")
    return harness


@app.command()
def bench(
    stream: str = typer.Option("split-digits", help="split-digits, permuted-mnist5k or split-mnist5k."),
    sequence: str = typer.Option("L0 L1 L2 U1 L3 U0 L4", help="Ln learns task n, Un forgets it."),
    strategies: str = typer.Option("all", help="Comma-separated registered strategies, or 'all'."),
    baselines: str = typer.Option("naive,ewc,replay,lwf", help="Comma-separated Avalanche baselines ('' for none)."),
    out: Path = typer.Option(Path("bench-out"), help="Folder for bench.md, bench.json and bench.png."),
    seeds: int = typer.Option(1, help="Seeds to average over."),
    quick: bool = typer.Option(False, help="Small settings (smoke runs and CI)."),
    threads: int = typer.Option(1, help="Torch/BLAS threads while the bench runs (0: leave as is)."),
    executor: str = typer.Option("local", help="Where the (strategy, seed) runs go: local (here, in turn) or ray "
                                               "(Ray tasks, see --ray-address)."),
    ray_address: Optional[str] = RayAddressOpt,
):
    """Run one request sequence through every strategy (real ledger and worker), the Avalanche
    baselines and a retrain-from-scratch reference; print and write the comparison."""
    from lifecycle.ray_executor import executor_for

    run_bench = _bench_harness().run_bench

    def names(text: str) -> list[str]:
        return [n.strip() for n in text.split(",") if n.strip()]

    try:
        result = run_bench(stream, sequence, "all" if strategies == "all" else names(strategies), out, seeds, quick,
                           baselines=names(baselines), threads=threads or None,
                           executor=executor_for(executor, ray_address))
    except (ValueError, KeyError) as exc:  # unknown stream, strategy or baseline, bad sequence: say which
        raise typer.BadParameter(str(exc)) from None
    console.print(f"written: {result.markdown_path}, {result.json_path}, {result.png_path}", highlight=False,
                  soft_wrap=True)


@app.command()
def demo(db: Optional[str] = typer.Option(None, "--db", help="Ledger URL (default: a fresh SQLite file in a "
                                                              "temporary folder)."),
         width: int = typer.Option(1024, help="Random features of the analytic strategy.")):
    """Run the split-digits demo against a fresh ledger with the service running."""
    from lifecycle.demo import run_demo

    run_demo(db, width=width, console=console)


token_app = typer.Typer(help="HTTP API tokens (kept in the ledger as SHA-256 hashes only).", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(name: str = typer.Argument(..., help="What the token is for, e.g. crm-erasures."),
                 scope: list[str] = typer.Option(..., "--scope", help="erasure:submit, learn:submit, read, predict "
                                                                      "or admin (repeatable)."),
                 created_by: Optional[str] = typer.Option(None, help="Who created it."),
                 db: Optional[str] = DbOpt):
    """Create a token; its secret is printed once (stdout) and never stored."""
    token, secret = _connect(db).create_token(name, scopes=scope, created_by=created_by)
    Console(stderr=True).print(f"token {token.id} ({name}): scopes {', '.join(token.scopes)}; the secret below is "
                               "shown once only")
    print(secret)


@token_app.command("revoke")
def token_revoke(token_id: str = typer.Argument(..., help="The token's id (see token list)."),
                 db: Optional[str] = DbOpt):
    """Revoke a token: requests bearing it are refused with 401 from then on."""
    token = _connect(db).revoke_token(token_id)
    console.print(f"token {token.id} revoked at {_fmt_time(token.revoked_at)} UTC")


@token_app.command("list")
def token_list(db: Optional[str] = DbOpt):
    """Tokens (ids, names, scopes, state); never their secrets."""
    table = Table("id", "name", "scopes", "created (UTC)", "by", "revoked (UTC)")
    for t in _connect(db).tokens():
        table.add_row(t.id, t.name, " ".join(t.scopes), _fmt_time(t.created_at), t.created_by or "",
                      _fmt_time(t.revoked_at))
    console.print(table)


@app.command()
def erase(subject: Optional[str] = typer.Option(None, help="The data subject to erase from every model."),
          reason: Optional[str] = typer.Option(None, help="Why (kept in the ledger; its keyed digest in the certificates)."),
          requested_by: Optional[str] = typer.Option(None, help="Who asked."),
          idempotency_key: Optional[str] = typer.Option(None, help="Resubmitting with the same key is a no-op."),
          due_in_days: float = typer.Option(30.0, help="Deadline of the erasure and its forgets."),
          status: Optional[str] = typer.Option(None, "--status", help="Show this erasure (id or prefix) instead "
                                                                     "of submitting one."),
          db: Optional[str] = DbOpt, artifacts: Optional[str] = ArtifactsOpt, keys: Optional[str] = KeysOpt):
    """Erase a person from every model (one forget per model holding their samples); prints the erasure id."""
    if not status and subject is None:
        raise typer.BadParameter("give --subject (or --status ID to show an erasure)")
    lc = _connect(db, artifacts, keys)
    e = lc.erasure(status) if status else lc.erase(subject=subject, reason=reason, requested_by=requested_by,
                                                   idempotency_key=idempotency_key, due_days=due_in_days)
    table = Table("model", "outcome", "request", "status", "certified")
    for p in e.parts:
        table.add_row(p.model, p.outcome, p.request_id or "", p.request_status or "", "yes" if p.certified else "")
    console.print(f"erasure {e.id}: {e.status} (received {_fmt_time(e.received_at)}, due {_fmt_time(e.due_at)} "
                  "UTC)")
    console.print(table)
    print(e.id)


@app.command()
def api(http: str = typer.Option("127.0.0.1:8080", "--http", help="HOST:PORT to serve the HTTP API on."),
        db: Optional[str] = DbOpt, artifacts: Optional[str] = ArtifactsOpt, keys: Optional[str] = KeysOpt,
        ssl_certfile: Optional[str] = typer.Option(None, help="TLS certificate (PEM) for HTTPS."),
        ssl_keyfile: Optional[str] = typer.Option(None, help="TLS private key (PEM) for HTTPS."),
        rate: Optional[str] = typer.Option(None, help=RATE_HELP),
        max_body: Optional[float] = typer.Option(None, help=MAX_BODY_HELP),
        log_level: str = typer.Option("INFO", help="Logging level.")):
    """Serve the HTTP API alone (OpenDSR erasures, /v1, the dashboard, docs at /docs), without the scheduler."""
    from lifecycle.http.app import serve_forever
    from lifecycle.http.limits import HttpLimits

    from lifecycle.telemetry import configure_logging

    configure_logging(log_level, "json")
    limits = HttpLimits.from_env(rate, max_body)
    raise typer.Exit(serve_forever(_connect(db, artifacts, keys), http, ssl_certfile=ssl_certfile,
                                   ssl_keyfile=ssl_keyfile, limits=limits))


def main() -> None:
    try:
        app()
    except (LifecycleError, LedgerError, OSError) as exc:
        # OSError: a file or folder that is missing or not writable, a port in use
        message = " ".join(str(exc).split())
        Console(stderr=True).print(f"[red]error[/red] ({type(exc).__name__}): {message}", markup=True,
                                   highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
