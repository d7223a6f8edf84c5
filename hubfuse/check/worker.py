"""Run each model load in a fresh process.

transformers' fusion registry is process-global and sticky: after one fused load, every later
load in that process is affected. So every load that matters happens in its own child process,
forked from a forkserver that has imported torch and transformers but never fused anything:
each child starts clean without paying the imports again.

A child writes its stdout/stderr (transformers' warnings and load reports) to a log file and
sends back one JSON-able dict. A crash, a kill (out of memory) or a timeout becomes a
`WorkerFailure` with a one-line cause, never a hang or a traceback.

Each child's address space may grow by at most the machine's memory (RLIMIT_AS over what it had
when forked): a model no load here could hold (a config claiming 150,000 layers) ends in that
worker's MemoryError, reported as such, instead of swapping the machine or OOM-killing others.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import importlib
import multiprocessing
import os
import resource
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
from hubfuse.machine import total_memory_bytes

# Probes are named, not passed as functions, so the parent never imports torch itself.
PROBES_MODULE = "hubfuse.check.probes"
# Modules every worker imports before its probe (comma-separated): plugins that register with
# transformers, e.g. an extra fusion family. Imported in the forkserver and again, to surface
# an import error, in each child.
PRELOAD_ENV = "HUBFUSE_WORKER_PRELOAD"
_PRELOAD = [PROBES_MODULE]
# Imported first by the forkserver: drops Hub tokens from its environment (the workers call no Hub).
HUB_FREE_MODULE = "hubfuse.check.hub_free"
_context: BaseContext | None = None
_start_lock = threading.Lock()


class WorkerFailure(Exception):
    """A probe did not return a result: it raised (`raised`), or it crashed, timed out or ran out
    of its memory limit."""

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


def _address_space_bytes() -> int:
    """This process's virtual size (VmSize): a fork of the forkserver starts with torch mapped."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _limit_address_space(growth: int) -> None:
    """Let this process map at most `growth` more bytes than it has now (0: no limit)."""
    if growth <= 0:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space_bytes() + growth
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


_ENOMEM_TEXT = os.strerror(errno.ENOMEM)


def _memory_limit_words(growth: int) -> str:
    return f"its memory limit of {growth / 2**30:.2g} GiB beyond what it started with"


def _child_main(
    conn: Connection, module: str, probe: str, args: tuple[Any, ...], log_path: str, memory_limit: int
) -> None:
    drop_hub_tokens_here()  # already so when the forkserver's preload ran; never rely on it
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    try:
        _limit_address_space(memory_limit)
        for plugin in _env_preload():  # the forkserver ignores a failed preload import; we do not
            importlib.import_module(plugin)
        func = getattr(importlib.import_module(module), probe)
        result: dict[str, Any] = {"ok": True, "value": func(*args)}
    except BaseException as exc:  # the parent turns any failure into a verdict
        traceback.print_exc()
        first_line = (str(exc).strip().splitlines() or [""])[0]
        error = f"{type(exc).__name__}: {first_line}".rstrip(": ")
        # Python's MemoryError, or an allocator's ENOMEM (torch: "DefaultCPUAllocator: ... Error code 12"):
        # the machine's bound, not something the probed model raised.
        out_of_memory = memory_limit > 0 and (isinstance(exc, MemoryError) or _ENOMEM_TEXT in first_line)
        if out_of_memory:
            error = f"out of memory: the {probe} worker reached {_memory_limit_words(memory_limit)} ({error[:160]})"
        result = {"ok": False, "error": error, "raised": not out_of_memory}
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
    mapped_bytes: int = 0,
    memory_limit: int | None = None,
) -> dict[str, Any]:
    """`probe(*args)` in a fresh child whose address space may grow by `memory_limit` bytes (by
    default the machine's memory; 0: unlimited) plus `mapped_bytes`, the files the probe maps
    (safetensors maps the weights it loads: address space, not memory)."""
    memory = total_memory_bytes() if memory_limit is None else memory_limit
    growth = memory + mapped_bytes if memory > 0 else 0
    ctx = _get_context()
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_child_main, args=(sender, module, probe, args, str(log_path), growth), daemon=True
    )
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
            limited = f"; it ran under {_memory_limit_words(growth)}" if growth > 0 else ""
            raise WorkerFailure(
                f"the {probe} worker {_describe_exit(process.exitcode)}{limited}", raised=False
            ) from None
    finally:
        receiver.close()
    process.join()
    if not result["ok"]:
        raise WorkerFailure(result["error"], raised=result["raised"])
    return result["value"]
