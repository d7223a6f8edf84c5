"""The probe host: the shared torch imported once, then forked into each environment's probe.

Runs INSIDE one environment of the matrix (`python -I probe_host.py PRELOAD.json`) and is
standalone like `downstream_probe.py` (standard library only until it imports what PRELOAD.json
names). It imports those shared-torch modules: the part that the records of the environments it
serves have in common, each record being what that environment's own probe, started fresh, held
before any model (`downstream_probe.shared_modules`). It then reads one job per line on stdin and
answers on stdout, one line each:

  job     {"id", "sys_path", "prefix", "executable", "environ", "request", "result", "log"}
  answers {"id", "refused": why}   this environment would not import the same files: run it fresh
          {"id", "pid": N}         the probe is forked
          {"id", "exit": code}     the forked probe ended (its result file says the rest)

A job is forked only where a fresh start of that environment would import exactly what the host
holds (`differences`): its path is the host's but for its own site-packages, every module file the
host loaded is there the same file (one inode: uv hard-links one cache; or equal bytes) and is what
that path resolves the module to, no name the host looked up in vain exists there, its `.pth` files
are the host's, and its environment variables are those the host started with.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import os
import re
import select
import sys
from pathlib import Path
from typing import Any

PROBE = Path(__file__).resolve().parent / "downstream_probe.py"
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class _Misses:
    """A last meta-path finder: records each import no other finder could satisfy."""

    def __init__(self) -> None:
        self.lookups: list[tuple[str, list[str] | None]] = []

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        self.lookups.append((fullname, None if path is None else [str(p) for p in path]))
        return None


def preload(names: list[str], shared: str) -> _Misses:
    """Import the named shared-torch modules, in order, recording the lookups that found nothing."""
    misses = _Misses()
    sys.meta_path.append(misses)
    try:
        for name in names:
            top = name.split(".")[0]
            if not MODULE_NAME.match(name) or not (
                os.path.isdir(os.path.join(shared, top)) or os.path.isfile(os.path.join(shared, f"{top}.py"))
            ):
                raise SystemExit(f"probe host: {name!r} is not a module of the shared torch")
            try:
                importlib.import_module(name)
            except Exception as exc:  # each fresh probe recorded imported it: something differs here
                raise SystemExit(f"probe host: importing {name} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.meta_path.remove(misses)
    return misses


def _site_packages(prefix: str) -> str:
    return os.path.join(
        prefix, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages"
    )


def _same_file(mine: str, theirs: str) -> bool:
    try:
        if os.path.samefile(mine, theirs):
            return True
        if os.path.getsize(mine) != os.path.getsize(theirs):
            return False
        with open(mine, "rb") as a, open(theirs, "rb") as b:
            return a.read() == b.read()
    except OSError:
        return False


class Host:
    def __init__(self, misses: _Misses, environ: dict[str, str]) -> None:
        self.misses = misses
        self.environ = environ
        self.site = _site_packages(sys.prefix)
        self.pth = self._pth_files(self.site)
        # Modules found on the path; built-in and frozen ones are the interpreter's, the same for all.
        self.loaded = {
            name: os.path.abspath(spec.origin)
            for name, module in list(sys.modules.items())
            if name != "__main__"
            and (spec := getattr(module, "__spec__", None)) is not None
            and spec.has_location
            and isinstance(spec.origin, str)
        }

    @staticmethod
    def _pth_files(site: str) -> dict[str, bytes]:
        try:
            return {f: Path(site, f).read_bytes() for f in sorted(os.listdir(site)) if f.endswith(".pth")}
        except OSError:
            return {}

    def _mapped(self, path: str, job_site: str) -> str | None:
        """Where `path` (under one of the host's path entries) is in the job's environment."""
        for entry in sorted(sys.path, key=len, reverse=True):
            if entry and path.startswith(os.path.join(entry, "")):
                target = job_site if entry == self.site else entry
                return os.path.join(target, os.path.relpath(path, entry))
        return None

    def differences(self, job: dict[str, Any]) -> str | None:
        """Why the job's environment would not import what this host holds (None: it would)."""
        job_path, job_site = list(job["sys_path"]), _site_packages(job["prefix"])
        if job["environ"] != self.environ:
            changed = sorted(
                k for k in {*job["environ"], *self.environ} if job["environ"].get(k) != self.environ.get(k)
            )
            return f"its environment variables differ ({', '.join(changed[:3])})"
        expected = [job_site if entry == self.site else entry for entry in sys.path]
        if job_path != expected:
            return "its module path is not the host's"
        if self._pth_files(job_site) != self.pth:
            return "its .pth files are not the host's"
        for name, path in self.loaded.items():
            theirs = self._mapped(path, job_site)
            if theirs is None:
                return f"{name} was loaded from outside the module path"
            if not _same_file(path, theirs):
                return f"{name}: {theirs} is not the file the host loaded"
            if "." not in name:
                spec = importlib.machinery.PathFinder.find_spec(name, job_path)
                origin = getattr(spec, "origin", None)
                if origin is None or os.path.abspath(origin) != theirs:
                    return f"{name} resolves to {origin} there"
        for name, search in self.misses.lookups:
            where = job_path if search is None else [self._mapped(p, job_site) or p for p in search]
            if importlib.machinery.PathFinder.find_spec(name, where) is not None:
                return f"{name} exists there, and the host found no such module"
        return None


def _run_forked(job: dict[str, Any]) -> None:
    """In the child: become the job's environment, then run its probe (never returns)."""
    code = 1
    try:
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.path[:] = job["sys_path"]
        sys.prefix = sys.exec_prefix = job["prefix"]
        sys.executable = job["executable"]
        sys.path_importer_cache.clear()
        importlib.invalidate_caches()
        sys.argv = [str(PROBE), job["request"], job["result"]]
        spec = importlib.util.spec_from_file_location("_hubfuse_downstream_probe", PROBE)
        assert spec is not None and spec.loader is not None
        probe = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = probe
        spec.loader.exec_module(probe)
        probe.probe(Path(job["request"]), Path(job["result"]), started=job["started"])
        code = 0
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _answer(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def serve(host: Host) -> None:
    """Jobs from stdin until it closes, each forked from this one thread; children reaped between."""
    running: dict[int, str] = {}
    buffer, open_input = b"", True
    while open_input or running:
        if open_input:
            ready, _, _ = select.select([0], [], [], 0.05)
            if ready:
                chunk = os.read(0, 65536)
                open_input = bool(chunk)
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in filter(None, lines):
                    job = json.loads(line)
                    why = host.differences(job)
                    if why is not None:
                        _answer({"id": job["id"], "refused": why})
                        continue
                    pid = os.fork()
                    if pid == 0:
                        _run_forked(job)
                    running[pid] = job["id"]
                    _answer({"id": job["id"], "pid": pid})
        elif running:
            select.select([], [], [], 0.05)
        while running:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            if pid in running:
                _answer({"id": running.pop(pid), "exit": os.waitstatus_to_exitcode(status)})


def main() -> None:
    environ = dict(os.environ)
    preloaded = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    misses = preload(preloaded["modules"], os.path.abspath(preloaded["shared_torch"]))
    host = Host(misses, environ)
    _answer({"ready": len(host.loaded)})
    serve(host)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)
