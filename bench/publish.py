"""Benchmark `hubfuse publish` against the local Hub: a first run split by stage, then a rerun.

    python bench/publish.py [--out bench/results/publish.json] [--data DIR] [--no-large] [--size-gb 1.6]

For each model (the tiny demo Qwen3-VL, and unless `--no-large` a Qwen3-VL checkpoint of
`--size-gb` made by `hubfuse.synth.make_large_vision_checkpoint`), in a fresh local Hub (its own
server process, data under `--data`):

1. seed `bench/NAME` with `HfApi.upload_folder`, then clear the server's request log;
2. first run: `python -m hubfuse publish bench/NAME --variant --json` in a subprocess with a fresh
   HF_HOME and HUBFUSE_CACHE, so it downloads everything and verifies. Wall time until the CLI
   exits, and a split by stage taken from this very run: the server's request log (start time and
   duration of every request) cut at the pipeline's landmarks, which it reaches in a fixed order:

       startup   process start -> first request (interpreter, imports)
       resolve   whoami + repo_info of the default branch
       pull      snapshot_download: repo_info at the sha + every file GET, up to the last byte
       verify    from the last byte pulled to the next request (open_checkpoint, check, cache)
       config PR list hubfuse's PRs, look up the variant repo, the PR commit on the source repo
       variant   create the variant repo, upload its files (LFS), its commit
       exit      last response -> CLI exit (scratch cleanup, report, interpreter exit)

   plus the check's own per-stage `timings` from the JSON report and hubfuse's own timer of the
   pull (its `==> pull` log group). Requests and bytes per stage come from the same log.
3. second run: the same command, same HF_HOME and HUBFUSE_CACHE: wall time, every request, and
   the bytes of file downloads (`/resolve/` responses; target 0); then a third, the same again
   (what the second run downloaded is in the cache by then).

Writes `--out` (JSON) and the Markdown next to it (`.md`), and prints the Markdown. The large
checkpoint is reused from `--data` if a complete one is there (`large-qwen3_vl/`, bench/verify.py's
`qwen3_vl-bf16-<size>GB/`, or this script's `publish-large/`), else generated into
`publish-large/` and kept for the next run. The local Hubs and caches are deleted unless `--keep`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MODEL_TYPE = "qwen3_vl"  # the patch_embeddings fusion is safe for it on transformers 5.24
NAMESPACE = "bench"
USER = "bench-user"
PR_SET_CHILD_SUBREAPER = 36
STAGES = ["startup", "resolve", "pull", "verify", "config_pr", "variant", "exit"]
STAGE_HELP = {
    "startup": "process start -> first request (interpreter, imports)",
    "resolve": "whoami, repo_info of the default branch",
    "pull": "snapshot_download: repo_info at the sha, file GETs",
    "verify": "last byte pulled -> next request: open_checkpoint, the check, verdict cache",
    "config_pr": "list PRs, look up the variant repo, PR commit",
    "variant": "create repo, LFS upload, commit",
    "exit": "last response -> CLI exit: scratch cleanup, report, interpreter exit",
}


# --- sources -------------------------------------------------------------------------------------


def _safetensors_end(path: Path) -> int:
    """The size a complete safetensors file has, from its own header."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return 8 + length + max(ends, default=0)


def checkpoint_complete(folder: Path, size_gb: float) -> bool:
    """config.json, and every shard the index lists, each as long as its header says; about size_gb."""
    try:
        config = json.loads((folder / "config.json").read_text())
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        else:
            shards = ["model.safetensors"]
        files = [folder / name for name in shards]
        if not all(f.is_file() and f.stat().st_size == _safetensors_end(f) for f in files):
            return False
    except (OSError, ValueError, KeyError, struct.error):
        return False
    total = sum(f.stat().st_size for f in files)
    return config.get("model_type") == MODEL_TYPE and abs(total - size_gb * 1e9) <= 0.1 * size_gb * 1e9


def _weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def _need_disk(folder: Path, needed: float, what: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise SystemExit(
            f"not enough disk in {folder}: {free / 1e9:.1f} GB free, {what} needs about {needed / 1e9:.1f} GB"
        )


def large_source(data: Path, size_gb: float) -> tuple[Path, dict[str, Any]]:
    for folder in (data / f"large-{MODEL_TYPE}", data / f"{MODEL_TYPE}-bf16-{size_gb:g}GB"):
        if checkpoint_complete(folder, size_gb):
            return folder, {"origin": "reused"}
    own = data / "publish-large"
    if checkpoint_complete(own, size_gb):
        return own, {"origin": "reused"}
    _need_disk(data, size_gb * 1e9 * 1.2, "generating the checkpoint")
    partial = data / "publish-large.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(own, ignore_errors=True)
    print(f"generating {own} ({size_gb:g} GB) ...", file=sys.stderr)
    script = (
        "import sys, torch\n"
        "from hubfuse.synth import make_large_vision_checkpoint\n"
        "make_large_vision_checkpoint(sys.argv[1], target_bytes=float(sys.argv[2]) * 1e9,"
        f" dtype=torch.bfloat16, model_type={MODEL_TYPE!r}, max_shard_size='500MB')\n"
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", script, str(partial), str(size_gb)], check=True)
    partial.rename(own)
    return own, {"origin": "generated", "generate_s": round(time.perf_counter() - start, 2)}


def tiny_source(folder: Path) -> tuple[Path, dict[str, Any]]:
    script = (
        "import sys\nfrom hubfuse.synth import write_demo_checkpoint\nwrite_demo_checkpoint(sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", script, str(folder)], check=True)
    return folder, {"origin": "generated (write_demo_checkpoint)"}


# --- processes and CPU ---------------------------------------------------------------------------


def _become_subreaper() -> bool:
    """Orphans of the CLI (its forkserver) become our children, so we can wait for them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _children(exclude: set[int]) -> list[int]:
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            found.append(int(entry.name))
    return found


def _reap_orphans(exclude: set[int], timeout: float = 60.0) -> float:
    """Wait for the CLI's orphans (not for the hub server); seconds it took."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        pids = _children(exclude)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    return time.perf_counter() - start


def _cpu_busy_s() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- one CLI run ---------------------------------------------------------------------------------


def run_cli(repo_id: str, env: dict[str, str], logs: Path, server_pid: int | None) -> dict[str, Any]:
    logs.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "hubfuse", "publish", repo_id, "--variant", "--json"]
    stdout, stderr = logs / "stdout.json", logs / "stderr.log"
    busy0, children0, server0 = _cpu_busy_s(), _children_cpu_s(), _process_cpu_s(server_pid)
    with stdout.open("w") as out, stderr.open("w") as err:
        t_start = time.time()
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=REPO)
        exit_code = process.wait()
        wall = time.perf_counter() - start
        t_end = time.time()
    linger = _reap_orphans({server_pid} if server_pid else set())
    elapsed = time.perf_counter() - start
    cli_cpu = _children_cpu_s() - children0
    server_cpu = _process_cpu_s(server_pid) - server0
    text = stdout.read_text()
    try:
        report = json.loads(text)
    except ValueError:
        report = None
    if exit_code != 0 or report is None:
        tail = "\n".join(stderr.read_text().splitlines()[-20:])
        raise SystemExit(f"`{' '.join(command[1:])}` exited {exit_code}:\n{tail}")
    return {
        "command": "hubfuse " + " ".join(command[3:]),
        "exit_code": exit_code,
        "wall_s": round(wall, 3),
        "t_start": t_start,
        "t_end": t_end,
        "orphans_exit_after_s": round(linger, 3),
        "cli_cpu_s": round(cli_cpu, 2),
        "server_cpu_s": round(server_cpu, 2),
        "other_busy_cores": round(max(_cpu_busy_s() - busy0 - cli_cpu - server_cpu, 0.0) / elapsed, 2),
        "report": report,
        "pull_log_s": _pull_group_s(stderr.read_text()),
    }


def _pull_group_s(stderr: str) -> float | None:
    """hubfuse's own timer of the pull: the `done in Xs` line after `==> pull ...`."""
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("==> pull "):
            for later in lines[i + 1 :]:
                if later.strip().startswith("done in "):
                    return float(later.strip()[len("done in ") : -1])
    return None


# --- the request log ------------------------------------------------------------------------------


def _end(entry: dict[str, Any]) -> float:
    return entry["time"] + entry["duration_ms"] / 1000


def _is_download(entry: dict[str, Any]) -> bool:
    return "/resolve/" in entry["path"]


def _summary(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "requests": len(entries),
        "bytes_sent": sum(e["bytes_sent"] for e in entries),
        "bytes_received": sum(e["bytes_received"] for e in entries),
        "download_bytes": sum(e["bytes_sent"] for e in entries if _is_download(e)),
        "download_requests": sum(1 for e in entries if _is_download(e)),
    }


def _brief(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "method": entry["method"],
        "path": entry["path"] + (f"?{entry['query']}" if entry["query"] else ""),
        "status": entry["status"],
        "bytes_sent": entry["bytes_sent"],
        "bytes_received": entry["bytes_received"],
        "duration_ms": entry["duration_ms"],
    }


def split_first_run(run: dict[str, Any], log: list[dict[str, Any]], repo_id: str) -> dict[str, Any]:
    """Cut the first run at the pipeline's landmarks in the request log (see the module docstring)."""
    log = sorted(log, key=lambda e: e["seq"])
    source_info = {f"/api/models/{repo_id}", f"/api/models/{repo_id}/revision/main"}
    i_resolve = next(i for i, e in enumerate(log) if e["method"] == "GET" and e["path"] in source_info)
    i_pull = max(i for i, e in enumerate(log) if e["path"].startswith(f"/{repo_id}/resolve/"))
    i_config = max(
        i
        for i, e in enumerate(log)
        if e["method"] == "POST" and e["path"].startswith(f"/api/models/{repo_id}/commit/")
    )
    if not i_resolve < i_pull < i_config:
        raise SystemExit(f"unexpected request order: resolve {i_resolve}, pull {i_pull}, config {i_config}")
    bounds = {
        "startup": (run["t_start"], log[0]["time"]),
        "resolve": (log[0]["time"], _end(log[i_resolve])),
        "pull": (_end(log[i_resolve]), _end(log[i_pull])),
        "verify": (_end(log[i_pull]), log[i_pull + 1]["time"]),
        "config_pr": (log[i_pull + 1]["time"], _end(log[i_config])),
        "variant": (_end(log[i_config]), max(_end(e) for e in log)),
        "exit": (max(_end(e) for e in log), run["t_end"]),
    }
    groups = {
        "startup": [],
        "resolve": log[: i_resolve + 1],
        "pull": log[i_resolve + 1 : i_pull + 1],
        "verify": [],
        "config_pr": log[i_pull + 1 : i_config + 1],
        "variant": log[i_config + 1 :],
        "exit": [],
    }
    return {
        name: {"s": round(bounds[name][1] - bounds[name][0], 3), **_summary(groups[name])} for name in STAGES
    }


# --- one model -----------------------------------------------------------------------------------


def measure_model(name: str, source: Path, origin: dict[str, Any], work: Path) -> dict[str, Any]:
    from huggingface_hub import HfApi

    from hubfuse.localhub import LocalHub

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    repo_id = f"{NAMESPACE}/{name}"
    result: dict[str, Any] = {
        "model": name,
        "repo_id": repo_id,
        "source": {
            "path": str(source),
            "files": sorted(p.name for p in source.iterdir() if p.is_file() and not p.name.startswith(".")),
            "weights_bytes": _weights_bytes(source),
            **origin,
        },
    }
    with LocalHub(work / "hub", subprocess=True) as server:
        process = getattr(server, "_process", None)
        server_pid = process.pid if process is not None else None
        token = server.add_token(USER, "write", orgs=[NAMESPACE])
        api = HfApi(endpoint=server.endpoint, token=token)
        start = time.perf_counter()
        api.create_repo(repo_id)
        api.upload_folder(
            repo_id=repo_id, folder_path=str(source), commit_message="seed", ignore_patterns=[".*"]
        )
        result["seed_s"] = round(time.perf_counter() - start, 2)

        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("HF_", "HUGGING_FACE_", "HUBFUSE_")) and k not in ("GITHUB_ACTIONS", "CI")
        }
        (work / "tmp").mkdir()
        env.update(
            HF_ENDPOINT=server.endpoint,
            HF_TOKEN=token,
            HF_HOME=str(work / "hf-home"),
            HUBFUSE_CACHE=str(work / "verdicts"),
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            TOKENIZERS_PARALLELISM="false",
            TMPDIR=str(work / "tmp"),
        )

        runs = []
        for label in ("first", "second", "third"):
            server.clear_requests()
            print(f"{name}: {label} run ...", file=sys.stderr)
            run = run_cli(repo_id, env, work / f"{label}-run", server_pid)
            run["log"] = server.requests()
            runs.append(run)
    first, second, third = runs

    report = first["report"]
    families = (report.get("check") or {}).get("families") or []
    result["first_run"] = {
        "wall_s": first["wall_s"],
        "exit_code": first["exit_code"],
        "verdict": report.get("verdict"),
        "verdict_from_cache": report.get("verdict_from_cache"),
        "actions": [f"{a['step']}: {a['status']}" for a in report.get("actions", [])],
        "stages": split_first_run(first, first["log"], repo_id),
        "check_timings": {f["name"]: f.get("timings", {}) for f in families},
        "pull_log_s": first["pull_log_s"],
        **_summary(first["log"]),
        "orphans_exit_after_s": first["orphans_exit_after_s"],
        "cli_cpu_s": first["cli_cpu_s"],
        "server_cpu_s": first["server_cpu_s"],
        "other_busy_cores": first["other_busy_cores"],
    }
    result["second_run"] = _rerun_summary(second)
    result["third_run"] = _rerun_summary(third)
    result["first_run"]["requests_list"] = [_brief(e) for e in sorted(first["log"], key=lambda e: e["seq"])]
    return result


def _rerun_summary(run: dict[str, Any]) -> dict[str, Any]:
    log = sorted(run["log"], key=lambda e: e["seq"])
    report = run["report"]
    return {
        "wall_s": run["wall_s"],
        "exit_code": run["exit_code"],
        "verdict": report.get("verdict"),
        "verdict_from_cache": report.get("verdict_from_cache"),
        "actions": [f"{a['step']}: {a['status']}" for a in report.get("actions", [])],
        **_summary(log),
        "startup_s": round(log[0]["time"] - run["t_start"], 3) if log else None,
        "requests_window_s": round(_end(log[-1]) - log[0]["time"], 3) if log else None,
        "requests_list": [_brief(e) for e in log],
        "orphans_exit_after_s": run["orphans_exit_after_s"],
        "other_busy_cores": run["other_busy_cores"],
    }


# --- report --------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    from importlib.metadata import version

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout

    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "hubfuse").strip())
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "hubfuse_commit": git("rev-parse", "--short", "HEAD").strip() + ("-dirty" if dirty else ""),
        "python": platform.python_version(),
        "torch": version("torch"),
        "transformers": version("transformers"),
        "huggingface_hub": version("huggingface_hub"),
        "cpus": os.cpu_count(),
    }


def _s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1000:.0f} ms" if x < 0.1 else f"{x:.2f} s"


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def _bytes(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    if n >= 1e3:
        return f"{n / 1e3:.1f} kB"
    return f"{n} B"


def render(result: dict[str, Any]) -> str:
    env, models = result["environment"], result["models"]
    names = [m["model"] for m in models]
    head = "| | " + " | ".join(names) + " |"
    rule = "|---|" + "---:|" * len(models)
    lines = [
        "# bench/publish.py",
        "",
        f"{env['date']}; hubfuse {env['hubfuse_commit']}, transformers {env['transformers']}, torch "
        f"{env['torch']}, huggingface_hub {env['huggingface_hub']}, Python {env['python']}; "
        f"{env['cpus']} CPUs. Local Hub in its own process on loopback.",
        "",
    ]
    for m in models:
        src = m["source"]
        lines.append(
            f"- `{m['model']}`: {_bytes(src['weights_bytes'])} of safetensors, {len(src['files'])} files "
            f"({src['origin']}, `{_shown(Path(src['path']))}/`"
            f"{' in ' + _s(src['generate_s']) if 'generate_s' in src else ''}); "
            f"seeded into the hub in {_s(m['seed_s'])}."
        )
    lines += [
        "",
        "## First run: fresh HF_HOME and verdict cache",
        "",
        "`hubfuse publish bench/NAME --variant --json`, wall time until the CLI exits. The split is "
        "taken from the same run: the server's request log cut at the pipeline's landmarks "
        "(time, requests, bytes the server sent / received per stage).",
        "",
        "| stage | " + " | ".join(names) + " | what |",
        "|---|" + "---:|" * len(models) + "---|",
    ]
    for stage in STAGES:
        cells = []
        for m in models:
            st = m["first_run"]["stages"][stage]
            extra = ""
            if st["requests"]:
                extra = f" ({st['requests']} req, {_bytes(st['bytes_sent'])} down"
                extra += f", {_bytes(st['bytes_received'])} up)" if st["bytes_received"] else ")"
            cells.append(_s(st["s"]) + extra)
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {STAGE_HELP[stage]} |")
        if stage == "verify":
            stage_names: list[str] = []
            for m in models:
                for timings in m["first_run"]["check_timings"].values():
                    stage_names += [k for k in timings if k not in stage_names]
            for sub in stage_names:
                cells = [
                    _s(next(iter(m["first_run"]["check_timings"].values()), {}).get(sub)) for m in models
                ]
                lines.append(f"| &nbsp;&nbsp;check: {sub} | " + " | ".join(cells) + " | report `timings` |")
    lines += [
        "| **total (wall)** | "
        + " | ".join(f"**{_s(m['first_run']['wall_s'])}**" for m in models)
        + " | Popen -> exit |",
        "",
        head,
        rule,
        "| verdict / actions | "
        + " | ".join(f"{m['first_run']['verdict']}; {', '.join(m['first_run']['actions'])}" for m in models)
        + " |",
        "| HTTP requests | " + " | ".join(str(m["first_run"]["requests"]) for m in models) + " |",
        "| bytes sent by the server (downloads + API responses) | "
        + " | ".join(_bytes(m["first_run"]["bytes_sent"]) for m in models)
        + " |",
        "| of which file downloads (`/resolve/`) | "
        + " | ".join(_bytes(m["first_run"]["download_bytes"]) for m in models)
        + " |",
        "| bytes received by the server (uploads, commits) | "
        + " | ".join(_bytes(m["first_run"]["bytes_received"]) for m in models)
        + " |",
        "| pull, hubfuse's own timer (`==> pull`) | "
        + " | ".join(_s(m["first_run"]["pull_log_s"]) for m in models)
        + " |",
        "| CPU time: CLI + workers / hub server | "
        + " | ".join(
            f"{m['first_run']['cli_cpu_s']:.1f} s / {m['first_run']['server_cpu_s']:.1f} s" for m in models
        )
        + " |",
        "| forkserver exit after the CLI's | "
        + " | ".join(_s(m["first_run"]["orphans_exit_after_s"]) for m in models)
        + " |",
        "| cores kept busy by other processes | "
        + " | ".join(f"{m['first_run']['other_busy_cores']:.2f}" for m in models)
        + " |",
        "",
        "## Second run: nothing to do",
        "",
        "The same command again, same HF_HOME and HUBFUSE_CACHE.",
        "",
        "| | " + " | ".join(names) + " | target |",
        "|---|" + "---:|" * len(models) + "---|",
        "| wall time | " + " | ".join(_s(m["second_run"]["wall_s"]) for m in models) + " | |",
        "| of which startup (to the first request) | "
        + " | ".join(_s(m["second_run"]["startup_s"]) for m in models)
        + " | |",
        "| HTTP requests | "
        + " | ".join(str(m["second_run"]["requests"]) for m in models)
        + " | a handful |",
        "| bytes of file downloads (`/resolve/` responses) | "
        + " | ".join(
            f"{_bytes(m['second_run']['download_bytes'])} ({m['second_run']['download_requests']} req)"
            for m in models
        )
        + " | 0 |",
        "| all bytes sent by the server | "
        + " | ".join(_bytes(m["second_run"]["bytes_sent"]) for m in models)
        + " | |",
        "| verdict from cache / actions | "
        + " | ".join(
            f"{m['second_run']['verdict_from_cache']}; {', '.join(m['second_run']['actions'])}"
            for m in models
        )
        + " | |",
        "| third run: wall time / requests / bytes of file downloads | "
        + " | ".join(
            f"{_s(m['third_run']['wall_s'])} / {m['third_run']['requests']} / "
            f"{_bytes(m['third_run']['download_bytes'])}"
            for m in models
        )
        + " | |",
        "",
    ]
    for m in models:
        lines += [f"Requests of the second run, `{m['model']}`:", ""]
        lines += ["| # | method | path | status | bytes sent |", "|---:|---|---|---:|---:|"]
        for i, r in enumerate(m["second_run"]["requests_list"], 1):
            lines.append(f"| {i} | {r['method']} | `{r['path']}` | {r['status']} | {r['bytes_sent']} |")
        lines.append("")
    lines.append(f"Benchmark wall time: {result['benchmark_wall_s']:.0f} s.")
    lines.append("")
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/publish.json")
    parser.add_argument("--data", type=Path, default=REPO / "bench/.data")
    parser.add_argument("--large", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--size-gb", type=float, default=1.6, help="large checkpoint size (10^9 bytes)")
    parser.add_argument("--keep", action="store_true", help="keep the local hubs and caches in --data")
    args = parser.parse_args(argv)
    data = args.data.resolve()
    runs = data / "publish-runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)

    # Before huggingface_hub is imported: classic LFS uploads, and no use of the user's own cache.
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_HOME"] = str(runs / "bench-hf-home")
    os.environ["TMPDIR"] = str(runs)
    tempfile.tempdir = None  # recomputed from TMPDIR
    subreaper = _become_subreaper()

    start = time.perf_counter()
    result: dict[str, Any] = {"environment": environment(), "subreaper": subreaper, "models": []}
    try:
        _need_disk(data, 1e9, "the tiny run")
        tiny, origin = tiny_source(runs / "tiny-source")
        result["models"].append(measure_model("tiny-qwen3-vl", tiny, origin, runs / "tiny"))
        if not args.keep:
            shutil.rmtree(runs / "tiny", ignore_errors=True)
        if args.large:
            source, origin = large_source(data, args.size_gb)
            # hub copy, HF cache copy, the check's re-saves, the variant in the hub.
            _need_disk(data, args.size_gb * 1e9 * 6, "the large run")
            name = f"qwen3-vl-{args.size_gb:g}gb"
            result["models"].append(measure_model(name, source, origin, runs / "large"))
    finally:
        if not args.keep:
            shutil.rmtree(runs, ignore_errors=True)
    result["benchmark_wall_s"] = round(time.perf_counter() - start, 1)
    markdown = render(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
