"""Starts a Lifeguard job on the embedded MiniCluster in a child process, and stops it again.

Used by the demo, the benchmarks and the integration tests. The job reads its configuration from the
environment (``LIFEGUARD_*`` overrides), so each caller can give it its own topics and addresses.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from lifeguard import PROJECT_ROOT


def rest_get(port: int, path: str) -> dict | None:
    """A GET on the Flink REST API of the local MiniCluster; None while it does not answer."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        response = conn.getresponse()
        return json.loads(response.read()) if response.status == 200 else None
    except (OSError, ValueError):
        return None


def running_jobs(port: int) -> list[dict]:
    overview = rest_get(port, "/jobs/overview") or {}
    return [j for j in overview.get("jobs", []) if j.get("state") == "RUNNING"]


class JobProcess:
    def __init__(self, process: subprocess.Popen, log_path: Path, web_ui_port: int):
        self.process = process
        self.log_path = log_path
        self.web_ui_port = web_ui_port

    @property
    def web_ui(self) -> str:
        return f"http://127.0.0.1:{self.web_ui_port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def diagnosis(self) -> str:
        """What the REST API says of a job that does not answer: each running job's vertices with their
        state and record counts, and its root exception (Flink's own log goes to its log folder, not to
        this process's output, so a task that failed and restarts shows only here)."""
        lines = []
        for job in running_jobs(self.web_ui_port):
            details = rest_get(self.web_ui_port, f"/jobs/{job['jid']}") or {}
            for vertex in details.get("vertices", []):
                metrics = vertex.get("metrics", {})
                lines.append(f"{vertex.get('status')} {vertex.get('name')}: read {metrics.get('read-records')}, "
                             f"wrote {metrics.get('write-records')}")
            exceptions = rest_get(self.web_ui_port, f"/jobs/{job['jid']}/exceptions") or {}
            root = (exceptions.get("exceptionHistory", {}).get("entries") or [{}])[0].get("stacktrace")
            lines.append(f"root exception: {root.splitlines()[0] if root else None}")
        return "\n".join(lines) or "no running job"

    def screenshot(self, path: Path, browser: str = "chromium") -> Path:
        """The web UI's page of the running job (its operators by name, records in and out), as a PNG taken
        by a headless browser (Debian's chromium)."""
        jobs = running_jobs(self.web_ui_port)
        if not jobs or not shutil.which(browser):
            raise RuntimeError(f"no running job to show, or no {browser} on PATH (apt-get install chromium)")
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"{self.web_ui}/#/job/running/{jobs[0]['jid']}/overview"
        # A few seconds of virtual time draw the graph; the page polls the REST API for ever, so a long
        # budget never runs out.
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1600,1100", "--virtual-time-budget=4000", f"--screenshot={path}", url],
                       check=True, capture_output=True, timeout=120)
        return path

    def wait_running(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not running_jobs(self.web_ui_port):
            if not self.alive():
                raise RuntimeError(f"the job exited with code {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the job was not RUNNING after {timeout_s:.0f}s:\n{self.log_tail()}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@contextmanager
def running_job(script: str, env_overrides: Mapping[str, str], log_path: Path, web_ui_port: int,
                timeout_s: float = 120) -> Iterator[JobProcess]:
    """Runs ``jobs/<script>`` until the block ends; raises with the job's log if it fails to start."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **env_overrides, "LIFEGUARD_JOB__WEB_UI_PORT": str(web_ui_port)}
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "jobs" / script)], cwd=PROJECT_ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    job = JobProcess(process, log_path, web_ui_port)
    try:
        job.wait_running(timeout_s)
        yield job
    finally:
        job.stop()
