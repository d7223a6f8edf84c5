"""Benchmark `hubfuse publish` against the local Hub: a first run split by stage, then a rerun.

    python bench/publish.py [--out bench/results/publish.json] [--data DIR] [--no-large] [--size-gb 1.6]

For each model (the tiny demo Qwen3-VL, and unless `--no-large` a Qwen3-VL checkpoint of
`--size-gb` made by `hubfuse.testing.synth.make_large_vision_checkpoint`), in a fresh local Hub (its own
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
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    LARGE_MODEL_TYPE,
    LARGE_SHARD_SIZE,
    REPO,
    become_subreaper,
    bytes_received,
    bytes_sent,
    environment,
    hub_server_pid,
    human_bytes,
    is_download,
    isolate_hub_client,
    large_checkpoint_folder,
    machine_busy_cpu_s,
    md_row,
    md_rule,
    other_busy_cores,
    process_cpu_s,
    reap_orphans,
    reaped_children_cpu_s,
    safetensors_bytes,
    seed_repo,
    shown_path,
    write_report,
)

NAMESPACE = "bench"
USER = "bench-user"
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
    return config.get("model_type") == LARGE_MODEL_TYPE and abs(total - size_gb * 1e9) <= 0.1 * size_gb * 1e9


def _need_disk(folder: Path, needed: float, what: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise SystemExit(
            f"not enough disk in {folder}: {free / 1e9:.1f} GB free, {what} needs about {needed / 1e9:.1f} GB"
        )


def large_source(data: Path, size_gb: float) -> tuple[Path, dict[str, Any]]:
    for folder in (data / f"large-{LARGE_MODEL_TYPE}", large_checkpoint_folder(data, size_gb)):
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
        "from hubfuse.testing.synth import make_large_vision_checkpoint\n"
        "make_large_vision_checkpoint(sys.argv[1], target_bytes=float(sys.argv[2]) * 1e9,"
        f" dtype=torch.bfloat16, model_type={LARGE_MODEL_TYPE!r}, max_shard_size={LARGE_SHARD_SIZE!r})\n"
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", script, str(partial), str(size_gb)], check=True)
    partial.rename(own)
    return own, {"origin": "generated", "generate_s": round(time.perf_counter() - start, 2)}


def tiny_source(folder: Path) -> tuple[Path, dict[str, Any]]:
    script = "import sys\nfrom hubfuse.testing.synth import write_demo_checkpoint\nwrite_demo_checkpoint(sys.argv[1])\n"
    subprocess.run([sys.executable, "-c", script, str(folder)], check=True)
    return folder, {"origin": "generated (write_demo_checkpoint)"}


# --- one CLI run ---------------------------------------------------------------------------------


def run_cli(repo_id: str, env: dict[str, str], logs: Path, server_pid: int | None) -> dict[str, Any]:
    logs.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "hubfuse", "publish", repo_id, "--variant", "--json"]
    stdout, stderr = logs / "stdout.json", logs / "stderr.log"
    busy0, children0, server0 = machine_busy_cpu_s(), reaped_children_cpu_s(), process_cpu_s(server_pid)
    with stdout.open("w") as out, stderr.open("w") as err:
        t_start = time.time()
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=REPO)
        exit_code = process.wait()
        wall = time.perf_counter() - start
        t_end = time.time()
    linger = reap_orphans({server_pid} if server_pid else set())
    elapsed = time.perf_counter() - start
    cli_cpu = reaped_children_cpu_s() - children0
    server_cpu = process_cpu_s(server_pid) - server0
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
        "other_busy_cores": round(
            other_busy_cores(machine_busy_cpu_s() - busy0, cli_cpu + server_cpu, elapsed), 2
        ),
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


def _summary(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "requests": len(entries),
        "bytes_sent": bytes_sent(entries),
        "bytes_received": bytes_received(entries),
        "download_bytes": bytes_sent(e for e in entries if is_download(e)),
        "download_requests": sum(1 for e in entries if is_download(e)),
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
            "weights_bytes": safetensors_bytes(source),
            **origin,
        },
    }
    with LocalHub(work / "hub", subprocess=True) as server:
        server_pid = hub_server_pid(server)
        token = server.add_token(USER, "write", orgs=[NAMESPACE])
        api = HfApi(endpoint=server.endpoint, token=token)
        start = time.perf_counter()
        seed_repo(api, repo_id, source)
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


def _s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1000:.0f} ms" if x < 0.1 else f"{x:.2f} s"


def render(result: dict[str, Any]) -> str:
    env, models = result["environment"], result["models"]
    names = [m["model"] for m in models]

    def per_model(label: str, cell: Callable[[dict[str, Any]], str], *tail: str) -> str:
        return md_row(label, *(cell(m) for m in models), *tail)

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
            f"- `{m['model']}`: {human_bytes(src['weights_bytes'])} of safetensors, {len(src['files'])} files "
            f"({src['origin']}, `{shown_path(Path(src['path']))}/`"
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
        md_row("stage", *names, "what"),
        md_rule("---", *["---:"] * len(models), "---"),
    ]
    for stage in STAGES:
        cells = []
        for m in models:
            st = m["first_run"]["stages"][stage]
            extra = ""
            if st["requests"]:
                extra = f" ({st['requests']} req, {human_bytes(st['bytes_sent'])} down"
                extra += f", {human_bytes(st['bytes_received'])} up)" if st["bytes_received"] else ")"
            cells.append(_s(st["s"]) + extra)
        lines.append(md_row(stage, *cells, STAGE_HELP[stage]))
        if stage == "verify":
            stage_names: list[str] = []
            for m in models:
                for timings in m["first_run"]["check_timings"].values():
                    stage_names += [k for k in timings if k not in stage_names]
            for sub in stage_names:
                lines.append(
                    per_model(
                        f"&nbsp;&nbsp;check: {sub}",
                        lambda m, sub=sub: _s(
                            next(iter(m["first_run"]["check_timings"].values()), {}).get(sub)
                        ),
                        "report `timings`",
                    )
                )
    first = [m["first_run"] for m in models]
    second = [m["second_run"] for m in models]
    lines += [
        per_model("**total (wall)**", lambda m: f"**{_s(m['first_run']['wall_s'])}**", "Popen -> exit"),
        "",
        md_row("", *names),
        md_rule("---", *["---:"] * len(models)),
        per_model(
            "verdict / actions",
            lambda m: f"{m['first_run']['verdict']}; {', '.join(m['first_run']['actions'])}",
        ),
        md_row("HTTP requests", *(r["requests"] for r in first)),
        md_row(
            "bytes sent by the server (downloads + API responses)",
            *(human_bytes(r["bytes_sent"]) for r in first),
        ),
        md_row("of which file downloads (`/resolve/`)", *(human_bytes(r["download_bytes"]) for r in first)),
        md_row(
            "bytes received by the server (uploads, commits)",
            *(human_bytes(r["bytes_received"]) for r in first),
        ),
        md_row("pull, hubfuse's own timer (`==> pull`)", *(_s(r["pull_log_s"]) for r in first)),
        md_row(
            "CPU time: CLI + workers / hub server",
            *(f"{r['cli_cpu_s']:.1f} s / {r['server_cpu_s']:.1f} s" for r in first),
        ),
        md_row("forkserver exit after the CLI's", *(_s(r["orphans_exit_after_s"]) for r in first)),
        md_row("cores kept busy by other processes", *(f"{r['other_busy_cores']:.2f}" for r in first)),
        "",
        "## Second run: nothing to do",
        "",
        "The same command again, same HF_HOME and HUBFUSE_CACHE.",
        "",
        md_row("", *names, "target"),
        md_rule("---", *["---:"] * len(models), "---"),
        md_row("wall time", *(_s(r["wall_s"]) for r in second), ""),
        md_row("of which startup (to the first request)", *(_s(r["startup_s"]) for r in second), ""),
        md_row("HTTP requests", *(r["requests"] for r in second), "a handful"),
        md_row(
            "bytes of file downloads (`/resolve/` responses)",
            *(f"{human_bytes(r['download_bytes'])} ({r['download_requests']} req)" for r in second),
            "0",
        ),
        md_row("all bytes sent by the server", *(human_bytes(r["bytes_sent"]) for r in second), ""),
        md_row(
            "verdict from cache / actions",
            *(f"{r['verdict_from_cache']}; {', '.join(r['actions'])}" for r in second),
            "",
        ),
        md_row(
            "third run: wall time / requests / bytes of file downloads",
            *(
                f"{_s(r['wall_s'])} / {r['requests']} / {human_bytes(r['download_bytes'])}"
                for r in (m["third_run"] for m in models)
            ),
            "",
        ),
        "",
    ]
    for m in models:
        lines += [f"Requests of the second run, `{m['model']}`:", ""]
        lines += [
            md_row("#", "method", "path", "status", "bytes sent"),
            md_rule("---:", "---", "---", "---:", "---:"),
        ]
        for i, r in enumerate(m["second_run"]["requests_list"], 1):
            lines.append(md_row(i, r["method"], f"`{r['path']}`", r["status"], r["bytes_sent"]))
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

    isolate_hub_client(runs / "bench-hf-home")  # before huggingface_hub is imported
    os.environ["TMPDIR"] = str(runs)
    tempfile.tempdir = None  # recomputed from TMPDIR
    subreaper = become_subreaper()

    start = time.perf_counter()
    result: dict[str, Any] = {
        "environment": environment(("torch", "transformers", "huggingface_hub"), dirty_paths=("hubfuse",)),
        "subreaper": subreaper,
        "models": [],
    }
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
    write_report(args.out, result, markdown)


if __name__ == "__main__":
    main()
