"""Run each model load in a fresh process.

transformers' fusion registry is process-global and sticky: after one fused load, every later
load in that process is affected. So every load that matters happens in its own child process,
forked from a forkserver that has imported torch and transformers but never fused anything:
each child starts clean without paying the imports again.

A child writes its stdout/stderr (transformers' warnings and load reports) to a log file and
sends back one JSON-able dict. A crash, a kill (out of memory) or a timeout becomes a
`WorkerFailure` with a one-line cause, never a hang or a traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import multiprocessing
import os
import signal
import sys
import threading
import traceback
import types
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

from hubfuse.childenv import drop_hub_tokens_here

# Probes are named, not passed as functions, so the parent never imports torch itself.
PROBES_MODULE = "hubfuse.fusion.probes"
# Modules every worker imports before its probe (comma-separated): plugins that register with
# transformers, e.g. an extra fusion family. Imported in the forkserver and again, to surface
# an import error, in each child.
PRELOAD_ENV = "HUBFUSE_WORKER_PRELOAD"
_PRELOAD = [PROBES_MODULE]
# Imported first by the forkserver: drops Hub tokens from its environment (the workers call no Hub).
HUB_FREE_MODULE = "hubfuse.fusion.hub_free"
_context: BaseContext | None = None
_start_lock = threading.Lock()


class WorkerFailure(Exception):
    """A probe did not return a result: it raised (`raised`), or it crashed or timed out."""

    def __init__(self, message: str, *, raised: bool) -> None:
        super().__init__(message)
        self.raised = raised


def preload(modules: list[str]) -> None:
    """Ask the forkserver to import `modules` too; only effective before the first probe runs."""
    for module in modules:
        if module not in _PRELOAD:
            _PRELOAD.append(module)


def _get_context() -> BaseContext:
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([HUB_FREE_MODULE, *_PRELOAD, *_env_preload()])
        _context = ctx
        atexit.register(_stop_forkserver)
    return _context


def _stop_forkserver() -> None:
    """Stop the forkserver with us.

    Left alone it lingers for seconds holding our stdout open; asked politely (closing its pipe)
    it spends ~1.2 s tearing down torch and transformers. Every worker has returned by now, so
    SIGTERM first: the stop then takes milliseconds.
    """
    from multiprocessing import forkserver

    server = forkserver._forkserver
    pid = getattr(server, "_forkserver_pid", None)
    with contextlib.suppress(Exception):
        if pid:
            os.kill(pid, signal.SIGTERM)
        stop = getattr(server, "_stop", None)
        if stop is not None:
            stop()


@contextlib.contextmanager
def _without_main_module() -> Iterator[None]:
    """Hide `__main__` while starting a process.

    multiprocessing re-imports the parent's main script in the forkserver and in every child
    (the `hubfuse` console script, a pytest runner, a user's script); none of them needs it and
    some must not run twice. An empty stand-in makes multiprocessing skip that step.
    """
    with _start_lock:
        real_main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = real_main


def _env_preload() -> list[str]:
    return [name.strip() for name in os.environ.get(PRELOAD_ENV, "").split(",") if name.strip()]


def _child_main(conn: Connection, module: str, probe: str, args: tuple[Any, ...], log_path: str) -> None:
    drop_hub_tokens_here()  # already so when the forkserver's preload ran; never rely on it
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    try:
        for plugin in _env_preload():  # the forkserver ignores a failed preload import; we do not
            importlib.import_module(plugin)
        func = getattr(importlib.import_module(module), probe)
        result: dict[str, Any] = {"ok": True, "value": func(*args)}
    except BaseException as exc:  # the parent turns any failure into a verdict
        traceback.print_exc()
        first_line = (str(exc).strip().splitlines() or [""])[0]
        result = {"ok": False, "error": f"{type(exc).__name__}: {first_line}".rstrip(": ")}
    conn.send(result)
    conn.close()


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "did not exit"
    if exitcode < 0:
        sig = signal.Signals(-exitcode)
        if sig == signal.SIGKILL:
            return "was killed (SIGKILL: most likely out of memory)"
        return f"died of signal {sig.name}"
    return f"exited with status {exitcode} without a result"


def run_isolated(
    probe: str,
    *args: Any,
    log_path: Path,
    timeout: float,
    module: str = PROBES_MODULE,
) -> dict[str, Any]:
    ctx = _get_context()
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child_main, args=(sender, module, probe, args, str(log_path)), daemon=True)
    with _without_main_module():
        process.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            process.kill()
            process.join()
            raise WorkerFailure(f"{probe} timed out after {timeout:.0f}s", raised=False)
        try:
            result = receiver.recv()
        except EOFError:
            process.join()
            raise WorkerFailure(
                f"the {probe} worker {_describe_exit(process.exitcode)}", raised=False
            ) from None
    finally:
        receiver.close()
    process.join()
    if not result["ok"]:
        raise WorkerFailure(result["error"], raised=True)
    return result["value"]
