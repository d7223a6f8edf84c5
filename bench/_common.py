"""What the benchmark scripts share: process and CPU accounting, provenance, the local Hub, reports.

Imported as `_common` by the scripts in this folder (run as `python bench/NAME.py`, so this folder
is on `sys.path`, in their `_child` subprocesses too).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import resource
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# The large checkpoint of bench/verify.py, which bench/publish.py reuses: the patch_embeddings
# fusion is safe for Qwen3-VL's vision tower on transformers 5.24.
LARGE_MODEL_TYPE = "qwen3_vl"
LARGE_SHARD_SIZE = "500MB"

_PR_SET_CHILD_SUBREAPER = 36


# --- processes -----------------------------------------------------------------------------------


def become_subreaper() -> bool:
    """Make orphaned descendants (a CLI's forkserver, its workers) our children; whether it worked.

    Once reaped here, their CPU time and peak RSS reach this process's RUSAGE_CHILDREN.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _stat_fields(pid: int | str) -> list[str] | None:
    """/proc/PID/stat after the command name (field 3 onwards), or None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def child_pids(exclude: Iterable[int] = ()) -> list[int]:
    """The pids of this process's children (orphans adopted as a subreaper included)."""
    me, skip, found = os.getpid(), set(exclude), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        fields = _stat_fields(entry.name)
        if fields is not None and int(fields[1]) == me:
            found.append(int(entry.name))
    return found


def reap_orphans(exclude: Iterable[int] = (), timeout: float = 60.0) -> float:
    """Wait until our children but `exclude` (a hub server) have exited, reaping them; seconds it took."""
    skip = set(exclude)
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        pids = child_pids(skip)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    return time.perf_counter() - start


def memory_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes; those its status shows (none once exiting)."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def wait_sampling_peak_rss(proc: subprocess.Popen[Any], interval: float = 0.02) -> int | None:
    """Wait for `proc`; its own peak RSS (VmHWM), read every `interval` while it runs.

    Its rusage cannot tell it apart from the descendants it reaps (a forkserver, workers).
    """
    peak = None
    while proc.poll() is None:
        with contextlib.suppress(OSError, ValueError):  # exiting: the last reading stands
            peak = memory_status(proc.pid).get("VmHWM", peak)
        time.sleep(interval)
    return peak


# --- CPU time ------------------------------------------------------------------------------------


def machine_busy_cpu_s() -> float:
    """CPU seconds spent busy by the whole machine (all processes, all cores) since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def self_cpu_s() -> float:
    """CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reaped_children_cpu_s() -> float:
    """CPU seconds of every descendant this process has reaped (and those they reaped)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int | None) -> float:
    """CPU seconds of a running process so far; 0 for None or a process that is gone."""
    fields = _stat_fields(pid) if pid is not None else None
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def other_busy_cores(machine_busy_s: float, accounted_cpu_s: float, wall_s: float) -> float:
    """How many cores other processes kept busy on average: the machine's busy CPU time over a
    stretch of wall time, less what we account for (ourselves, our children, our hub server)."""
    return max(machine_busy_s - accounted_cpu_s, 0.0) / wall_s


# --- provenance ----------------------------------------------------------------------------------


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout


def hubfuse_commit(dirty_paths: Sequence[str] = ()) -> str:
    """The short HEAD commit, with `-dirty` when tracked files (under `dirty_paths`, if given) differ."""
    status = ["status", "--porcelain", "--untracked-files=no"]
    if dirty_paths:
        status += ["--", *dirty_paths]
    dirty = bool(_git(*status).strip())
    return _git("rev-parse", "--short", "HEAD").strip() + ("-dirty" if dirty else "")


def environment(packages: Sequence[str], dirty_paths: Sequence[str] = ()) -> dict[str, Any]:
    """Date, hubfuse commit, Python and `packages` versions, CPU count: the head of every report."""
    from importlib.metadata import version

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "hubfuse_commit": hubfuse_commit(dirty_paths),
        "python": platform.python_version(),
        **{package: version(package) for package in packages},
        "cpus": os.cpu_count(),
    }


# --- checkpoints ---------------------------------------------------------------------------------


def large_checkpoint_folder(data: Path, size_gb: float) -> Path:
    """Where bench/verify.py keeps its generated checkpoint of `size_gb`."""
    return data / f"{LARGE_MODEL_TYPE}-bf16-{size_gb:g}GB"


def safetensors_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def safetensors_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in safetensors_files(folder))


# --- the local Hub -------------------------------------------------------------------------------


def isolate_hub_client(hf_home: Path) -> None:
    """Before huggingface_hub is imported: classic LFS uploads, no progress bars, and no use of the
    user's own cache."""
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_HOME"] = str(hf_home)


def hub_server_pid(hub: Any) -> int | None:
    """The pid of a `LocalHub(..., subprocess=True)` server process, None if it runs in-process."""
    process = getattr(hub, "_process", None)
    return process.pid if process is not None else None


def seed_repo(api: Any, repo_id: str, folder: Path) -> None:
    """Create `repo_id` on the hub behind `api` and upload `folder` to it (hidden files left out)."""
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="seed", ignore_patterns=[".*"])


def is_download(entry: dict[str, Any]) -> bool:
    """A request-log entry for a file download (`/resolve/`)."""
    return "/resolve/" in entry["path"]


def bytes_sent(entries: Iterable[dict[str, Any]]) -> int:
    """Bytes the hub server sent for these request-log entries."""
    return sum(e["bytes_sent"] for e in entries)


def bytes_received(entries: Iterable[dict[str, Any]]) -> int:
    """Bytes the hub server received for these request-log entries."""
    return sum(e.get("bytes_received", 0) for e in entries)


# --- reports -------------------------------------------------------------------------------------


def human_bytes(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    if n >= 1e3:
        return f"{n / 1e3:.1f} kB"
    return f"{n} B"


def shown_path(path: Path) -> str:
    """`path` relative to the repository when it is inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def md_row(*cells: object) -> str:
    """One Markdown table row; an empty cell is written `| |`."""
    return "|" + "|".join(f" {cell} " if cell != "" else " " for cell in cells) + "|"


def md_rule(*aligns: str) -> str:
    """The row under a Markdown table's header: `---`, `---:` ... for each column."""
    return "|" + "|".join(aligns) + "|"


def write_report(out: Path, result: dict[str, Any], markdown: str) -> None:
    """`result` as JSON to `out`, the Markdown next to it (`.md`), and the Markdown to stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
