"""How a downstream probe starts: forked from the probe host where that is exact, else fresh.

A probe started fresh (`python -I downstream_probe.py`) spends about 2.5 s of its 4 s of imports
on the shared torch, the same files in every environment. The probe host (`probe_host.py`, one
process per process life, so a batch of many repos starts it once; started from the first
environment that has a record) imports them once and forks each probe from there. It imports only
modules that every environment it serves had imported before any model when its own probe last ran
fresh (the record `hubfuse-shared-modules.json`, kept beside the environment's build record), and it
refuses any environment that would not import the very same files (`probe_host.Host.differences`);
such an environment, one without a record while others have one, and a stand-in with its own
environment variables, start fresh. Where no environment has a record yet (a machine's first
matrix), the host runs `import torch` alone: the first import of every probe, whatever its release.
A fresh probe writes its environment's record, and so does one forked after `import torch` alone:
it then imported exactly what a fresh start does, in the same order.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hubfuse.check import envs
from hubfuse.check.env_commands import EnvError, run_command
from hubfuse.check.envs_root import atomic_write
from hubfuse.check.shared_torch import SHARED_TORCH_VAR
from hubfuse.childenv import without_hub_tokens
from hubfuse.log import log

PROBE = Path(__file__).resolve().parent / "downstream_probe.py"
HOST = Path(__file__).resolve().parent / "probe_host.py"
SHARED_MODULES_RECORD = "hubfuse-shared-modules.json"
HOST_READY_TIMEOUT_S = 300.0
FRESH = "a fresh interpreter"
ROOT_PRELOAD = ["torch"]
FORKED = "forked from the probe host"
FORKED_AFTER_ROOT = f"{FORKED} after `import torch` alone"


def shared_modules_record(env: envs.Env) -> list[str] | None:
    """The shared-torch modules this environment's last fresh probe held before any model."""
    try:
        names = json.loads((env.path / SHARED_MODULES_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    return names


def keep_shared_modules(env: envs.Env, document: dict[str, Any]) -> None:
    """Record what a fresh probe of `env` imported of the shared torch (its result document)."""
    names, started = document.get("shared_modules"), str(document.get("started", ""))
    exact = started == FRESH or started.startswith(FORKED_AFTER_ROOT)
    if exact and isinstance(names, list) and names != shared_modules_record(env):
        atomic_write(env.path / SHARED_MODULES_RECORD, json.dumps(names))


@dataclass(frozen=True)
class EnvStart:
    """What the environment's interpreter sets up when started with -I."""

    sys_path: list[str]
    prefix: str
    executable: str


def env_start(env: envs.Env, environ: dict[str, str]) -> EnvStart:
    code = "import json, sys; print(json.dumps([sys.path, sys.prefix, sys.executable]))"
    sys_path, prefix, executable = json.loads(
        run_command([str(env.python), "-I", "-c", code], "the environment's module path", env=environ)
    )
    return EnvStart(sys_path, prefix, executable)


def _common(records: list[list[str]]) -> list[str]:
    """The modules every record names, in the first record's order."""
    common = set(records[0]).intersection(*records[1:])
    return [name for name in records[0] if name in common]


class _Host:
    """The running probe host: jobs in on stdin, answers out on stdout, read by one thread."""

    def __init__(self, reference: envs.Env, preload: list[str], environ: dict[str, str]) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="hubfuse-probe-host-"))
        preload_file = self.work / "preload.json"
        preload_file.write_text(
            json.dumps({"shared_torch": environ.get(SHARED_TORCH_VAR, ""), "modules": preload}),
            encoding="utf-8",
        )
        self.log_file = self.work / "host.log"
        self.reference = reference
        self._answers: dict[str, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._jobs = 0
        self._ready: queue.Queue[dict[str, Any]] = queue.Queue()
        with open(self.log_file, "w") as log_handle:
            try:
                self.process = subprocess.Popen(
                    [str(reference.python), "-I", str(HOST), str(preload_file)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log_handle,
                    env=environ,
                    text=True,
                )
            except OSError as exc:
                raise EnvError(f"the probe host did not start: {exc}") from None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()
        try:
            self.loaded = int(self._ready.get(timeout=HOST_READY_TIMEOUT_S)["ready"])
        except (queue.Empty, KeyError, ValueError):
            self.close()
            tail = self.log_file.read_text(errors="replace").strip().splitlines()
            raise EnvError(f"the probe host did not start: {(tail or ['no output'])[-1][:300]}") from None

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            answer = json.loads(line)
            if "ready" in answer:
                self._ready.put(answer)
            else:
                with self._lock:
                    target = self._answers.get(answer["id"])
                if target is not None:
                    target.put(answer)
        self._ready.put({})
        with self._lock:
            for target in self._answers.values():
                target.put({"died": "the probe host ended"})

    def run(self, job: dict[str, Any], timeout: float) -> int | str | None:
        """The forked probe's exit code, why the host refused it (str), or None: timed out."""
        answers: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            self._jobs += 1
            job = {**job, "id": str(self._jobs)}
            self._answers[job["id"]] = answers
            if self.process.poll() is not None or self.process.stdin is None:
                return "the probe host ended"
            self.process.stdin.write(json.dumps(job) + "\n")
            self.process.stdin.flush()
        deadline, pid = time.monotonic() + timeout, None
        try:
            while True:
                try:
                    answer = answers.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    if pid is not None:
                        os.kill(pid, signal.SIGKILL)
                    return None
                if "pid" in answer:
                    pid = int(answer["pid"])
                elif "exit" in answer:
                    return int(answer["exit"])
                else:
                    return str(answer.get("refused") or answer.get("died"))
        finally:
            with self._lock:
                self._answers.pop(job["id"], None)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.work, ignore_errors=True)


# One host per (reference environment, preload, variables) for this process's life: a batch run
# of many repos starts it once. Each job is checked against the files the host holds, whenever it comes.
_hosts: dict[tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]], _Host] = {}
_hosts_lock = threading.Lock()


def _shared_host(reference: envs.Env, preload: list[str], environ: dict[str, str]) -> _Host:
    key = (str(reference.path), tuple(preload), tuple(sorted(environ.items())))
    with _hosts_lock:
        host = _hosts.get(key)
        if host is None or host.process.poll() is not None:
            host = _hosts[key] = _Host(reference, preload, environ)
        return host


@atexit.register
def _close_hosts() -> None:
    with _hosts_lock:
        for host in _hosts.values():
            host.close()
        _hosts.clear()


class ProbeLauncher:
    """Starts the probes of one matrix run; `with` it (it says what it forked when the run ends)."""

    def __init__(self, candidates: list[envs.Env], environ: dict[str, str]) -> None:
        self.environ = without_hub_tokens(environ)
        records = {env.path: r for env in candidates if (r := shared_modules_record(env)) is not None}
        # The host runs in the first candidate that has a record; with none, in the first one probed.
        self._reference = next((env for env in candidates if env.path in records), None)
        self._root_only = not records
        self._served = set(records) if records else {env.path for env in candidates}
        self._preload = _common(list(records.values())) if records else list(ROOT_PRELOAD)
        self._host: _Host | None = None
        self._host_failed = False
        self._lock = threading.Lock()
        self.forked: list[str] = []
        self.refused: dict[str, str] = {}

    def __enter__(self) -> ProbeLauncher:
        return self

    def start_in_background(self) -> None:
        """Start the host now, while other work runs (run() waits for it)."""
        if self._reference is not None:
            started = threading.Event()

            def start() -> None:
                with self._lock:
                    started.set()
                    self._start_host()

            threading.Thread(target=start, daemon=True).start()
            started.wait()  # the thread holds the lock: a run() from now on waits for the host

    def __exit__(self, *exc: object) -> None:
        if self.forked or self.refused:
            what = (
                "`import torch` once (no environment had a record yet)"
                if self._root_only
                else f"shared torch imported once ({len(self._preload)} modules)"
            )
            log.info(
                f"  probe host: {what}, "
                f"{len(self.forked)} probe(s) forked from it"
                + "".join(f"; {name} started fresh: {why}" for name, why in self.refused.items())
            )

    def _start_host(self, first: envs.Env | None = None) -> _Host | None:
        """The host (started on first use, in the reference environment, else `first`); the caller holds the lock."""
        reference = self._reference or first
        if self._host is None and not self._host_failed and reference is not None:
            try:
                self._host = _shared_host(reference, self._preload, self.environ)
            except EnvError as exc:
                self._host_failed = True
                log.warning(f"  {exc}: every probe starts fresh")
        return self._host

    def run(
        self,
        env: envs.Env,
        request_file: Path,
        result_file: Path,
        log_file: Path,
        timeout: float,
        extra_environ: dict[str, str] | None = None,
    ) -> int | None:
        """The probe's exit code (None: it timed out); its result document is `result_file`."""
        environ = {**self.environ, **(extra_environ or {})}
        host = None
        if env.path in self._served and environ == self.environ:
            with self._lock:
                host = self._start_host(env)
        start = None
        if host is not None:
            try:
                start = env_start(env, environ)
            except EnvError as exc:
                self.refused[env.path.name] = str(exc)
        if host is not None and start is not None:
            job = {
                "sys_path": start.sys_path,
                "prefix": start.prefix,
                "executable": start.executable,
                "environ": environ,
                "request": str(request_file),
                "result": str(result_file),
                "log": str(log_file),
                "started": (FORKED_AFTER_ROOT if self._root_only else FORKED)
                + f" (started in {host.reference.path.name})",
            }
            outcome = host.run(job, timeout)
            if not isinstance(outcome, str):
                self.forked.append(env.path.name)
                return outcome
            self.refused[env.path.name] = outcome
        return self._fresh(env, request_file, result_file, log_file, timeout, environ)

    @staticmethod
    def _fresh(
        env: envs.Env,
        request_file: Path,
        result_file: Path,
        log_file: Path,
        timeout: float,
        environ: dict[str, str],
    ) -> int | None:
        with open(log_file, "w") as log_handle:
            try:
                completed = subprocess.run(
                    [str(env.python), "-I", str(PROBE), str(request_file), str(result_file)],
                    stdout=log_handle,
                    stderr=subprocess.STDOUT,
                    env=environ,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return None
        return completed.returncode
