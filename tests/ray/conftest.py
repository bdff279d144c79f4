"""A real Ray cluster on this machine for the tests that ask for one.

``ray start --head`` and a second ``ray start --address`` each run with
``--block`` in a session of their own, so every process they start (the
head's services, the raylets, the task workers) carries that session's id;
stopping the cluster ends exactly those processes, by pid. ``ray stop`` is
not used: it ends every Ray process of this user on the machine, other
people's clusters included.

Ray binds its services to the machine's own interface address, never to
loopback; so these tests run only in a network namespace whose one
interface is loopback (``make test`` runs them so, through
``scripts/private-network.sh``), and are skipped elsewhere (failed under
``CI=true``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lifecycle.testing.network import HOW, private_network
from tests.helpers import wait_for

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """Every live process of session ``sid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, pgrp, session, ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class RayCluster:
    """Ray nodes started with ``ray start --block``, one CPU each; ``address`` is the head's."""

    def __init__(self, nodes: int) -> None:
        self.nodes = nodes
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray-"))  # short: Ray's socket paths must stay short
        self.processes: list[subprocess.Popen] = []
        # Token authentication with a token of its own, so neither a token in the home folder
        # nor its absence changes how the cluster starts; its drivers need this environment.
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}

    def start(self) -> RayCluster:
        try:
            for i in range(self.nodes):
                where = ["--head", f"--port={self.port}", f"--ray-client-server-port={free_port()}",
                         "--include-dashboard=false"] if i == 0 else [f"--address={self.address}"]
                with open(self.temp_dir / f"node-{i}.log", "w") as log:
                    self.processes.append(subprocess.Popen(
                        [RAY, "start", *where, "--num-cpus=1", "--disable-usage-stats",
                         f"--temp-dir={self.temp_dir}", f"--dashboard-agent-listen-port={free_port()}",
                         "--min-worker-port=0", "--max-worker-port=0", "--block"],
                        stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True))
                wait_for(lambda i=i: self._node_up(i), 90, f"Ray node {i} to start", poll=0.2)
        except BaseException:
            self.stop()
            raise
        return self

    def _node_up(self, i: int) -> bool:
        if self.processes[i].poll() is not None:
            raise AssertionError(f"ray start exited: {(self.temp_dir / f'node-{i}.log').read_text()[-2000:]}")
        return "This command will now block forever" in (self.temp_dir / f"node-{i}.log").read_text()

    def pids(self) -> list[int]:
        return [pid for p in self.processes for pid in session_pids(p.pid)]

    def running(self, task: str) -> list[int]:
        """Pids of the cluster's worker processes running ``task`` now (Ray names them ``ray::<task>``)."""
        return [pid for pid in self.pids() if command_line(pid).startswith(f"ray::{task}")]

    def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # ray start --block stops the node's processes
        deadline = time.monotonic() + 5
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def kill(self) -> None:
        """Every process of the cluster at once, with SIGKILL: as if its machines went down."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.processes:
            p.wait(timeout=30)


@pytest.fixture(autouse=True)
def _private_network(request):
    if request.node.get_closest_marker("ray") and not private_network():
        message = f"the Ray tests must not reach this machine's own network address; {HOW}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def ray_cluster():
    """Two Ray nodes of one CPU each, shared by the session's tests."""
    cluster = RayCluster(nodes=2).start()
    try:
        yield cluster
    finally:
        cluster.stop()
