"""Benchmark `hubfuse check` and its streaming tensor comparison on a large generated checkpoint.

    python bench/verify.py [--out bench/results/verify.json] [--data DIR] [--size-gb 1.6]
                           [--repeat 3] [--keep]

Generates (or reuses) a Qwen3-VL checkpoint with a vision tower at its real width and a tiny text
model (`hubfuse.testing.synth.make_large_vision_checkpoint`, bf16, 500 MB shards), then measures, each
model load or comparison in a fresh subprocess so that no run inherits another's memory or
transformers' sticky fusion registry:

1. `python -m hubfuse check SOURCE --json` end to end: wall time, per-stage timings, verdict, peak
   RSS of the CLI process (VmHWM, sampled) and the largest of its workers' (`ru_maxrss`, which
   reaches this benchmark through the forkserver; it is a subreaper in case that outlives the CLI);
2. where the time outside the stages goes: the parent's `open_checkpoint`, the forkserver start
   and its stop;
3. plain transformers `from_pretrained` + `save_pretrained` (its re-save is the comparison
   candidate), a fused load with both saves, and a plain reload of the fused layout: the
   transformers work that the check's stages wrap;
4. `hubfuse.checkpoint_compare.compare_checkpoints(source, resave)` alone against `cat FILES > /dev/null` over
   the same files, warm page cache, one warm-up run each, then the median of 3 interleaved runs;
   peak RSS of the comparing process (VmHWM), absolute and above its post-import baseline.

Writes the numbers as JSON (`--out`) and a Markdown summary (the same path with `.md`), and
prints the Markdown. The source checkpoint stays in `--data` for the next run; the re-saves are
deleted unless `--keep`. Steps 1-3 run `--repeat` times (default 3), interleaved; medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    LARGE_MODEL_TYPE,
    LARGE_SHARD_SIZE,
    REPO,
    become_subreaper,
    environment,
    large_checkpoint_folder,
    machine_busy_cpu_s,
    memory_status,
    other_busy_cores,
    reaped_children_cpu_s,
    safetensors_bytes,
    safetensors_files,
    self_cpu_s,
    shown_path,
    wait_sampling_peak_rss,
    write_report,
)

FAMILY = "patch_embeddings"
RESULT_MARK = "BENCH_RESULT "
ROUNDS = 3
CHILD_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}


# --- helpers shared by the parent and the children --------------------------------------------


def _emit(result: dict[str, Any]) -> None:
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


def _mb(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 1e6:.0f} MB"


def _gbps(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f} GB/s"


def _s(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f} s"


# --- children: each runs in a fresh interpreter ------------------------------------------------


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def child_generate(out: str, size_gb: str) -> None:
    import torch

    from hubfuse.testing.synth import make_large_vision_checkpoint

    _quiet_transformers()
    start = time.perf_counter()
    make_large_vision_checkpoint(
        out,
        target_bytes=float(size_gb) * 1e9,
        dtype=torch.bfloat16,
        model_type=LARGE_MODEL_TYPE,
        max_shard_size=LARGE_SHARD_SIZE,
    )
    _emit({"wall_s": time.perf_counter() - start, "peak_rss": memory_status()["VmHWM"]})


def _model_class(path: str) -> Any:
    """The checkpoint's model class, with everything imported that the check's workers preload.

    The forkserver imports hubfuse.check.probes (torch, transformers, fusion_mapping and the
    weight-loading machinery) and the model's modules before forking; from_pretrained in a bare
    process would otherwise import them lazily and count seconds of imports as load time.
    """
    import transformers

    import hubfuse.check.probes  # noqa: F401  (fuses nothing on import)

    config = transformers.AutoConfig.from_pretrained(path)
    return getattr(transformers, config.architectures[0])


def child_plain(source: str, out: str) -> None:
    """Plain from_pretrained + save_pretrained: the baseline the issue asks to compare against."""
    t0 = time.perf_counter()
    import transformers  # noqa: F401

    _quiet_transformers()
    cls = _model_class(source)
    t1 = time.perf_counter()
    model = cls.from_pretrained(source, dtype="auto")
    t2 = time.perf_counter()
    model.save_pretrained(out)
    t3 = time.perf_counter()
    _emit(
        {
            "import_s": t1 - t0,
            "load_s": t2 - t1,
            "save_s": t3 - t2,
            "peak_rss": memory_status()["VmHWM"],
        }
    )


def child_fused(source: str, out_original: str, out_fused: str) -> None:
    """What the check's fused_load probe does, minus hubfuse's reference comparison."""
    t0 = time.perf_counter()
    import transformers  # noqa: F401

    _quiet_transformers()
    cls = _model_class(source)
    t1 = time.perf_counter()
    model = cls.from_pretrained(source, dtype="auto", fusion_config={FAMILY: True})
    t2 = time.perf_counter()
    model.save_pretrained(out_original)
    t3 = time.perf_counter()
    model.save_pretrained(out_fused, save_original_format=False)
    t4 = time.perf_counter()
    _emit(
        {
            "import_s": t1 - t0,
            "load_s": t2 - t1,
            "save_original_s": t3 - t2,
            "save_fused_s": t4 - t3,
            "peak_rss": memory_status()["VmHWM"],
        }
    )


def child_reload(path: str) -> None:
    """A plain from_pretrained of a folder (the fused layout, whose config.json asks for fusion)."""
    t0 = time.perf_counter()
    import transformers  # noqa: F401

    _quiet_transformers()
    cls = _model_class(path)
    t1 = time.perf_counter()
    cls.from_pretrained(path, dtype="auto")
    t2 = time.perf_counter()
    _emit({"import_s": t1 - t0, "load_s": t2 - t1, "peak_rss": memory_status()["VmHWM"]})


def child_compare(source: str, candidate: str) -> None:
    from hubfuse.checkpoint_compare import compare_checkpoints

    baseline = memory_status()
    start = time.perf_counter()
    comparison = compare_checkpoints(source, candidate)
    wall = time.perf_counter() - start
    end = memory_status()
    _emit(
        {
            "wall_s": wall,
            "bit_exact": comparison.tensors_bit_exact,
            "tensors_compared": comparison.tensors_compared,
            "bytes_compared_per_side": comparison.bytes_compared,
            "baseline_rss": baseline["VmRSS"],
            "peak_rss": end["VmHWM"],
            "peak_rss_above_baseline": end["VmHWM"] - baseline["VmRSS"],
            "torch_imported": "torch" in sys.modules,
        }
    )


def child_startup(source: str) -> None:
    """The check's fixed costs outside its stages, in the order the CLI pays them."""
    t0 = time.perf_counter()
    import hubfuse.cli  # noqa: F401
    from hubfuse.check.verify import open_checked

    t1 = time.perf_counter()
    checkpoint = open_checked(source)
    t2 = time.perf_counter()
    torch_after_open = "torch" in sys.modules
    rss_after_open = memory_status()["VmRSS"]

    from hubfuse.check import worker
    from hubfuse.check.families import family_names
    from hubfuse.transformers_info import modeling_modules

    worker.preload(modeling_modules(checkpoint.model_type))  # what full mode preloads
    family_names()  # the first probe: starts the forkserver, which imports torch + transformers
    t3 = time.perf_counter()
    with tempfile.NamedTemporaryFile(suffix=".log") as log_file:
        worker.run_isolated("probe_family_names", log_path=Path(log_file.name), timeout=300)
    t4 = time.perf_counter()
    # Stopping the forkserver: at exit, by the CLI itself (hubfuse since 1b4c5c0) or by no one.
    from multiprocessing import forkserver

    stop = getattr(worker, "_stop_forkserver", None) or getattr(forkserver._forkserver, "_stop", None)
    if stop is not None:
        stop()
    t5 = time.perf_counter()
    _emit(
        {
            "import_cli_s": t1 - t0,
            "open_checkpoint_s": t2 - t1,
            "parent_imports_torch": torch_after_open,
            "parent_rss_after_open": rss_after_open,
            "forkserver_start_s": t3 - t2,
            "warm_probe_roundtrip_s": t4 - t3,
            "forkserver_stop_s": t5 - t4,  # waits for its interpreter shutdown (torch loaded)
        }
    )


def child_check(source: str) -> None:
    """`hubfuse check` end to end, as this process's child, with every descendant reaped here.

    The workers are forked by the CLI's forkserver, not by the CLI. Either the CLI stops and reaps
    the forkserver at exit (hubfuse since 681d323), or the forkserver outlives it and, this
    process being a subreaper, is reaped here; either way the forkserver has reaped the workers,
    so their peak RSS arrives in this process's RUSAGE_CHILDREN. The CLI's own peak is sampled.
    """
    subreaper = become_subreaper()
    # Files, not pipes: the forkserver inherits the CLI's stdout and stderr and outlives it
    # briefly, so reading pipes to EOF would time the forkserver's shutdown as well.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "hubfuse", "check", source, "--json"], stdout=out, stderr=err
        )
        cli_peak = wait_sampling_peak_rss(proc)
        returncode = proc.returncode
        wall = time.perf_counter() - start
        while True:  # an orphaned forkserver or resource tracker, now ours to reap
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        descendants_done = time.perf_counter() - start
        all_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if returncode not in (0, 3):
        sys.stderr.write(stderr)
        raise SystemExit(f"hubfuse check exited with {returncode}")
    _emit(
        {
            "wall_s": wall,
            "descendants_exit_s": descendants_done - wall,
            "exit_code": returncode,
            "report": json.loads(stdout),
            "cli_peak_rss": cli_peak,
            "workers_peak_rss": all_peak if subreaper else None,
        }
    )


CHILDREN = {
    "generate": child_generate,
    "plain": child_plain,
    "fused": child_fused,
    "reload": child_reload,
    "compare": child_compare,
    "startup": child_startup,
    "check": child_check,
}


# --- parent -------------------------------------------------------------------------------------


def run_child(mode: str, *args: str) -> tuple[dict[str, Any], float]:
    """Run one child in a fresh interpreter; its result and its wall time including startup."""
    os.sync()  # earlier saves' writeback must not land in this measurement
    env = {**os.environ, **CHILD_ENV}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "_child", mode, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    wall = time.perf_counter() - start
    results = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not results:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"benchmark step {mode!r} failed (exit {proc.returncode})")
    return json.loads(results[-1][len(RESULT_MARK) :]), wall


def time_cat(files: list[Path]) -> float:
    command = f"cat {shlex.join(str(f) for f in files)} > /dev/null"
    start = time.perf_counter()
    subprocess.run(command, shell=True, check=True)
    return time.perf_counter() - start


def ensure_source(data: Path, size_gb: float) -> tuple[Path, dict[str, Any] | None]:
    source = large_checkpoint_folder(data, size_gb)
    marker = source / ".complete"
    if marker.is_file():
        from hubfuse.checkpoint_compare import index_checkpoint

        index_checkpoint(source)  # a damaged cache fails here, not halfway through the benchmark
        return source, None
    shutil.rmtree(source, ignore_errors=True)
    _need_disk(data, size_gb * 1e9 * 4.5)
    print(f"generating {source} ...", file=sys.stderr)
    generated, _ = run_child("generate", str(source), str(size_gb))
    marker.write_text("")
    return source, generated


def _need_disk(folder: Path, needed: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    tmp_free = shutil.disk_usage(tempfile.gettempdir()).free
    if free < needed or tmp_free < needed / 2:
        raise SystemExit(
            f"not enough disk: {free / 1e9:.1f} GB free in {folder}, {tmp_free / 1e9:.1f} GB in "
            f"{tempfile.gettempdir()}; the benchmark needs about {needed / 1e9:.1f} GB "
            "(checkpoint, three re-saves, the check's scratch copies)"
        )


def _environment() -> dict[str, Any]:
    with open("/proc/meminfo") as f:
        mem_total = int(next(line for line in f if line.startswith("MemTotal")).split()[1]) * 1024
    return {**environment(("torch", "transformers")), "mem_total": mem_total, "kernel": platform.release()}


def _own_cpu_s() -> float:
    """CPU seconds of this process and every descendant it has reaped (the check's workers too)."""
    return self_cpu_s() + reaped_children_cpu_s()


def measure(data: Path, size_gb: float, keep: bool, repeat: int) -> dict[str, Any]:
    start = time.perf_counter()
    busy0, own0 = machine_busy_cpu_s(), _own_cpu_s()
    load_before = os.getloadavg()
    source, generated = ensure_source(data, size_gb)
    _need_disk(data, size_gb * 1e9 * 3.5)
    config = json.loads((source / "config.json").read_text())
    source_files = safetensors_files(source)
    result: dict[str, Any] = {
        "environment": _environment(),
        "checkpoint": {
            "path": shown_path(source),
            "model_type": config["model_type"],
            "dtype": config.get("dtype"),
            "vision_depth": config["vision_config"]["depth"],
            "vision_width": config["vision_config"]["hidden_size"],
            "text_width": config["text_config"]["hidden_size"],
            "files": len(source_files),
            "bytes": safetensors_bytes(source),
            "generated": generated,  # None: reused from an earlier run
        },
    }

    resave = data / "resave"
    fused_original, fused_layout = data / "fused-resave", data / "fused-layout"
    scratch = (resave, fused_original, fused_layout)
    runs: dict[str, list[dict[str, Any]]] = {
        "check": [],
        "startup": [],
        "plain": [],
        "fused": [],
        "reload_fused_layout": [],
    }
    try:
        # Repeated and interleaved: on a shared 2-core machine one run of anything is noise.
        for rep in range(1, repeat + 1):
            for folder in scratch:
                shutil.rmtree(folder, ignore_errors=True)
            print(f"[{rep}/{repeat}] hubfuse check end to end ...", file=sys.stderr)
            runs["check"].append(_check_run(source))
            print(f"[{rep}/{repeat}] fixed costs (open_checkpoint, forkserver) ...", file=sys.stderr)
            runs["startup"].append(run_child("startup", str(source))[0])
            print(f"[{rep}/{repeat}] transformers alone: plain, fused, reload ...", file=sys.stderr)
            runs["plain"].append(run_child("plain", str(source), str(resave))[0])
            runs["fused"].append(run_child("fused", str(source), str(fused_original), str(fused_layout))[0])
            runs["reload_fused_layout"].append(run_child("reload", str(fused_layout))[0])
            if rep < repeat or not keep:
                shutil.rmtree(fused_original, ignore_errors=True)
                shutil.rmtree(fused_layout, ignore_errors=True)

        print("compare vs cat ...", file=sys.stderr)
        result["compare"] = compare_vs_cat(source, resave)
    finally:
        if not keep:
            for folder in scratch:
                shutil.rmtree(folder, ignore_errors=True)
    result["repeat"] = repeat
    result["check"] = {**_summarize(runs["check"]), "runs": runs["check"]}
    result["startup"] = {**_summarize(runs["startup"]), "runs": runs["startup"]}
    result["transformers"] = {
        name: {**_summarize(runs[name]), "runs": runs[name]}
        for name in ("plain", "fused", "reload_fused_layout")
    }
    result["overhead"] = overhead(result)
    wall = time.perf_counter() - start
    result["benchmark_wall_s"] = wall
    # Other processes share this machine: how many cores they kept busy on average meanwhile.
    result["machine_load"] = {
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "foreign_cpu_cores": other_busy_cores(machine_busy_cpu_s() - busy0, _own_cpu_s() - own0, wall),
    }
    return result


def _check_run(source: Path) -> dict[str, Any]:
    check, _ = run_child("check", str(source))
    family = next(f for f in check["report"]["families"] if f["name"] == FAMILY)
    timings = family["timings"]
    staged = (
        timings.get("discover", 0)
        + timings.get("fused_load", 0)
        + timings.get("roundtrip", 0)
        + max(timings.get("downstream", 0), timings.get("fused_layout", 0))  # run concurrently
    )
    roundtrip = family.get("roundtrip") or {}
    return {
        "wall_s": check["wall_s"],
        "forkserver_exit_after_cli_s": check["descendants_exit_s"],
        "exit_code": check["exit_code"],
        "verdict": check["report"]["verdict"],
        "family_verdicts": {f["name"]: f["verdict"] for f in check["report"]["families"]},
        "reasons": family["reasons"],
        "timings": timings,
        "staged_wall_s": staged,
        "outside_stages_s": check["wall_s"] - staged,
        "roundtrip_bytes_compared_per_side": roundtrip.get("bytes_compared"),
        "roundtrip_bit_exact": roundtrip.get("tensors_bit_exact"),
        # both sides read; the stage also checks file identity (no reads when file names differ)
        "roundtrip_gbps": (
            2 * roundtrip["bytes_compared"] / timings["roundtrip"] / 1e9
            if roundtrip.get("bytes_compared") and timings.get("roundtrip")
            else None
        ),
        "cli_peak_rss": check["cli_peak_rss"],
        "workers_peak_rss": check["workers_peak_rss"],
    }


def _summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each number across runs (max for peak RSS); other values if the runs agree."""
    summary: dict[str, Any] = {}
    for key in runs[0]:
        values = [run.get(key) for run in runs]
        if all(isinstance(v, dict) for v in values) and key != "family_verdicts":
            summary[key] = _summarize(values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            summary[key] = max(values) if "rss" in key else statistics.median(values)
        elif all(v == values[0] for v in values):
            summary[key] = values[0]
        else:
            summary[key] = values  # the runs disagree (a verdict, an exit code): keep them all
    return summary


def compare_vs_cat(source: Path, resave: Path) -> dict[str, Any]:
    files = safetensors_files(source) + safetensors_files(resave)
    file_bytes = sum(f.stat().st_size for f in files)
    time_cat(files)  # warm-up: both checkpoints in the page cache
    run_child("compare", str(source), str(resave))
    cat_s, compare_runs = [], []
    for _ in range(ROUNDS):  # interleaved, so both see the same machine state
        cat_s.append(time_cat(files))
        compare_runs.append(run_child("compare", str(source), str(resave)))
    compare_s = [r["wall_s"] for r, _ in compare_runs]
    first = compare_runs[0][0]
    read_bytes = 2 * first["bytes_compared_per_side"]  # both sides; headers (KBs) left out
    cat_median, compare_median = statistics.median(cat_s), statistics.median(compare_s)
    cat_gbps = file_bytes / cat_median / 1e9
    compare_gbps = read_bytes / compare_median / 1e9
    return {
        "files": [shown_path(f) for f in files],
        "file_bytes": file_bytes,
        "bytes_compared_per_side": first["bytes_compared_per_side"],
        "tensors_compared": first["tensors_compared"],
        "bit_exact": all(r["bit_exact"] for r, _ in compare_runs),
        "cat_s": cat_s,
        "compare_s": compare_s,
        "compare_process_wall_s": [w for _, w in compare_runs],
        "cat_gbps": cat_gbps,
        "compare_gbps": compare_gbps,
        "throughput_ratio": compare_gbps / cat_gbps,
        "baseline_rss": max(r["baseline_rss"] for r, _ in compare_runs),
        "peak_rss": max(r["peak_rss"] for r, _ in compare_runs),
        "peak_rss_above_baseline": max(r["peak_rss_above_baseline"] for r, _ in compare_runs),
        "torch_imported": any(r["torch_imported"] for r, _ in compare_runs),
    }


_STAGE_WORK = {
    # stage: transformers work it wraps (run alone in a fresh process; the keys of `_alone`)
    "discover": "plain load",
    "fused_load": "fused load + original-format save + fused-layout save",
    "roundtrip": "none: hubfuse's tensor comparison",
    "downstream": "fused load (fusion_config in config.json)",
    "fused_layout": "load of the fused layout",
}


def _alone(plain: dict[str, Any], fused: dict[str, Any], reload: dict[str, Any]) -> dict[str, float]:
    return {
        "discover": plain["load_s"],
        "fused_load": fused["load_s"] + fused["save_original_s"] + fused["save_fused_s"],
        "roundtrip": 0.0,
        "downstream": fused["load_s"],
        "fused_layout": reload["load_s"],
    }


def _overhead_run(
    check: dict[str, Any], plain: dict[str, Any], fused: dict[str, Any], reload: dict[str, Any]
) -> dict[str, float]:
    alone = _alone(plain, fused, reload)
    # The transformers work a check cannot avoid: one import (the forkserver's), every load and
    # save; the two reloads run concurrently in the check, so only the longer one counts.
    floor = (
        plain["import_s"]
        + alone["discover"]
        + alone["fused_load"]
        + max(alone["downstream"], alone["fused_layout"])
    )
    wall = check["wall_s"]
    # In the stages: reference checks, the compare, process hand-offs, the two reloads sharing
    # 2 cores. Outside them, beyond the one import: open_checkpoint, CLI start, cleanup, report.
    in_stages = check["staged_wall_s"] - (floor - plain["import_s"])
    plain_load_save = plain["import_s"] + plain["load_s"] + plain["save_s"]
    return {
        "transformers_floor_s": floor,
        "check_wall_s": wall,
        "hubfuse_overhead_s": wall - floor,
        "hubfuse_overhead_share": (wall - floor) / wall,
        "overhead_in_stages_s": in_stages,
        "overhead_outside_stages_s": wall - floor - in_stages,
        "plain_load_save_s": plain_load_save,
        "check_over_plain_load_save": wall / plain_load_save,
        "compare_share_of_check": (check["timings"].get("roundtrip") or 0) / wall,
    }


def overhead(result: dict[str, Any]) -> dict[str, Any]:
    """Each check stage next to the transformers work it wraps, measured alone, rep by rep."""
    t = result["transformers"]
    reps = list(
        zip(
            result["check"]["runs"],
            t["plain"]["runs"],
            t["fused"]["runs"],
            t["reload_fused_layout"]["runs"],
            strict=True,
        )
    )
    stages = {}
    for name, work in _STAGE_WORK.items():
        in_check = [c["timings"].get(name) or 0.0 for c, *_ in reps]
        alone = [_alone(p, f, r)[name] for _, p, f, r in reps]
        stages[name] = {
            "check_s": statistics.median(in_check),
            "check_range_s": [min(in_check), max(in_check)],
            "transformers_alone_s": statistics.median(alone),
            "transformers_alone_range_s": [min(alone), max(alone)],
            "transformers_work": work,
        }
    per_rep = [_overhead_run(*rep) for rep in reps]
    return {"stages": stages, **_summarize(per_rep), "runs": per_rep}


def _range(values: list[float]) -> str:
    low, high = values
    return f"{low:.2f}-{high:.2f}"


def render(result: dict[str, Any]) -> str:
    env, ckpt, check = result["environment"], result["checkpoint"], result["check"]
    startup, comp, over = result["startup"], result["compare"], result["overhead"]
    t = result["transformers"]
    lines = [
        "# bench/verify.py",
        "",
        f"{env['date']}; hubfuse {env['hubfuse_commit']}, transformers {env['transformers']}, "
        f"torch {env['torch']}, Python {env['python']}; {env['cpus']} CPUs, "
        f"{env['mem_total'] / 2**30:.0f} GiB RAM.",
        "",
        f"Checkpoint: {ckpt['model_type']} {ckpt['dtype']}, vision tower width {ckpt['vision_width']} "
        f"x {ckpt['vision_depth']} layers, text width {ckpt['text_width']}; "
        f"{ckpt['bytes'] / 1e9:.2f} GB in {ckpt['files']} shards"
        + (
            f" (generated in {ckpt['generated']['wall_s']:.1f} s)."
            if ckpt["generated"]
            else " (reused from an earlier run)."
        ),
        "",
        "## hubfuse check, end to end",
        "",
        f"Verdict: **{check['verdict']}** ({', '.join(f'{k}: {v}' for k, v in check['family_verdicts'].items())}),"
        f" exit code {check['exit_code']}.",
        "",
        f"Median of {result['repeat']} runs (min-max in brackets); each run: the check, then the "
        "transformers work alone, each load in a fresh process.",
        "",
        "| stage | check | transformers alone | transformers work |",
        "|---|---:|---:|---|",
    ]
    for name, row in over["stages"].items():
        lines.append(
            f"| {name} | {_s(row['check_s'])} ({_range(row['check_range_s'])}) | "
            f"{_s(row['transformers_alone_s'])} ({_range(row['transformers_alone_range_s'])}) | "
            f"{row['transformers_work']} |"
        )
    lines += [
        f"| outside the stages | {_s(check['outside_stages_s'])} | {_s(t['plain']['import_s'])} | "
        f"import torch + transformers (check: forkserver start, {_s(startup['forkserver_start_s'])} "
        f"measured alone; open_checkpoint in the CLI process, {_s(startup['open_checkpoint_s'])}; "
        f"stopping the forkserver at exit, {_s(startup.get('forkserver_stop_s'))} measured alone; "
        "CLI start, scratch cleanup, report) |",
        f"| **total (wall)** | **{_s(check['wall_s'])}** | {_s(over['transformers_floor_s'])} | "
        "one import + every load and save (the two reloads overlap) |",
        "",
        "downstream and fused_layout run concurrently, so the stages sum to more than the wall time. "
        "Every number is its own median, so the rows need not add up.",
        "",
        "| | value |",
        "|---|---:|",
        f"| hubfuse overhead (check wall - transformers floor) | {_s(over['hubfuse_overhead_s'])} "
        f"({over['hubfuse_overhead_share']:.0%}) |",
        f"| of which in the stages / outside them | {_s(over['overhead_in_stages_s'])} / "
        f"{_s(over['overhead_outside_stages_s'])} |",
        f"| forkserver exit after the CLI's (a reader of its pipes waits for it) | "
        f"{_s(check['forkserver_exit_after_cli_s'])} |",
        f"| compare stage share of the check | {over['compare_share_of_check']:.1%} |",
        f"| plain transformers load + save (fresh process: import {_s(t['plain']['import_s'])}, "
        f"load {_s(t['plain']['load_s'])}, save {_s(t['plain']['save_s'])}) | "
        f"{_s(over['plain_load_save_s'])} |",
        f"| check wall / plain load + save | {over['check_over_plain_load_save']:.1f}x |",
        f"| peak RSS, CLI process (VmHWM sampled every 20 ms) | {_mb(check['cli_peak_rss'])} |",
        f"| peak RSS, largest of the check's processes (the workers) | {_mb(check['workers_peak_rss'])} |",
        f"| peak RSS, plain load + save alone | {_mb(t['plain']['peak_rss'])} |",
        f"| CLI process imports torch (open_checkpoint) | {startup['parent_imports_torch']} "
        f"(RSS {_mb(startup['parent_rss_after_open'])} after it) |",
        "",
        "## compare stage alone vs cat",
        "",
        f"`compare_checkpoints(source, resave)`, resave = plain `save_pretrained` (one file); "
        f"{comp['tensors_compared']} tensors, {comp['bytes_compared_per_side'] / 1e9:.3f} GB per side, "
        f"bit-exact: {comp['bit_exact']}. `cat` reads the same {len(comp['files'])} files "
        f"({comp['file_bytes'] / 1e9:.3f} GB). Warm page cache, median of {ROUNDS} interleaved runs.",
        "",
        "| | wall (median) | runs | throughput |",
        "|---|---:|---|---:|",
        f"| compare_checkpoints | {_s(statistics.median(comp['compare_s']))} | "
        f"{', '.join(f'{x:.2f}' for x in comp['compare_s'])} | {comp['compare_gbps']:.2f} GB/s |",
        f"| cat FILES > /dev/null | {_s(statistics.median(comp['cat_s']))} | "
        f"{', '.join(f'{x:.2f}' for x in comp['cat_s'])} | {comp['cat_gbps']:.2f} GB/s |",
        "",
        "| | value | target |",
        "|---|---:|---|",
        f"| throughput ratio compare / cat | {comp['throughput_ratio']:.2f} | >= 0.8 |",
        f"| compare process peak RSS (VmHWM) | {_mb(comp['peak_rss'])} | < 300 MB |",
        f"| of which above the post-import baseline | {_mb(comp['peak_rss_above_baseline'])} | |",
        f"| roundtrip stage inside the check (compare + file identity), throughput | "
        f"{_gbps(check['roundtrip_gbps'])} | |",
        "",
        f"Benchmark wall time: {result['benchmark_wall_s']:.0f} s. Other processes kept "
        f"{result['machine_load']['foreign_cpu_cores']:.2f} of {env['cpus']} cores busy on average "
        f"meanwhile (1-min load average {result['machine_load']['loadavg_before'][0]:.2f} before, "
        f"{result['machine_load']['loadavg_after'][0]:.2f} after).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        CHILDREN[argv[1]](*argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/verify.json")
    parser.add_argument("--data", type=Path, default=REPO / "bench/.data")
    parser.add_argument("--size-gb", type=float, default=1.6, help="checkpoint size (10^9 bytes)")
    parser.add_argument("--keep", action="store_true", help="keep the re-saves in --data")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of the check and of the transformers steps (median)"
    )
    args = parser.parse_args(argv)
    data = args.data.resolve()
    result = measure(data, args.size_gb, args.keep, max(1, args.repeat))
    markdown = render(result)
    write_report(args.out, result, markdown)


if __name__ == "__main__":
    main()
