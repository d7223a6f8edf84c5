"""Targeted vs full mode on huge repos served by the local hub.

Generates (once, cached under --data) two multi-shard bf16 checkpoints without materialising
them (`hubfuse.testing.unmaterialised`): the vision tower at its real width with seeded
random values, the text stack zero-filled (sparse on disk: only its headers matter there):

- `qwen3_vl`: Qwen3-VL's vision tower (width 1152, depth 27) and an 8B-width text stack, >= 8 GB;
- `qwen2_5_vl`: a Qwen2.5-VL-style twin saved under the legacy `visual.*` names (unsafe).

Both are uploaded to a local hub, then `hubfuse check ORG/MODEL` runs as a user runs it (a
subprocess, fresh HF_HOME) in targeted mode, and in full mode (unless --skip-full). Measured:
wall time, bytes the hub sent, the peak RSS (VmHWM) of every process of the run (the CLI, the
forkserver, each worker), and the verdicts.

    python bench/huge.py [--data /tmp/hubfuse-huge] [--skip-full] [--publish] [--transport xet|lfs]
                         [--out bench/results/huge.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    become_subreaper,
    bytes_sent,
    environment,
    hub_server_pid,
    human_bytes,
    isolate_hub_client,
    md_row,
    md_rule,
    memory_status,
    reap_orphans,
    safetensors_bytes,
    seed_repo,
    write_report,
)

QWEN3_TEXT_LAYERS = 8  # with the 8B text width: ~8.9 GB in bf16
QWEN25_TEXT_LAYERS = 2


def _prune_text_layers(text_config: Any, layers: int) -> None:
    text_config.num_hidden_layers = layers
    if getattr(text_config, "layer_types", None):
        text_config.layer_types = text_config.layer_types[:layers]


def _generate(data: Path) -> dict[str, Path]:
    import torch
    import transformers

    from hubfuse.testing import unmaterialised

    folders = {}
    qwen3 = data / "qwen3_vl-huge"
    if not (qwen3 / "config.json").is_file():
        config = transformers.AutoConfig.for_model("qwen3_vl")  # Qwen3-VL-8B's widths
        _prune_text_layers(config.text_config, QWEN3_TEXT_LAYERS)
        unmaterialised.write_unmaterialised_checkpoint(
            qwen3,
            config,
            transformers.Qwen3VLForConditionalGeneration,
            dtype=torch.bfloat16,
            random_prefixes=("model.visual.",),
        )
    folders["qwen3_vl"] = qwen3
    legacy = data / "qwen2_5_vl-huge"
    if not (legacy / "config.json").is_file():
        config = transformers.AutoConfig.for_model("qwen2_5_vl")
        vision = config.vision_config
        # Qwen2.5-VL-7B's tower: width 1280, 16 heads, depth 32, MLP 3420, merging into the text width.
        vision.hidden_size, vision.num_heads, vision.intermediate_size = 1280, 16, 3420
        text = config.text_config
        # Qwen2.5-VL-7B's text widths (the class default is wider), two layers.
        text.hidden_size, text.intermediate_size = 3584, 18944
        text.num_attention_heads, text.num_key_value_heads = 28, 4
        vision.out_hidden_size = text.hidden_size
        _prune_text_layers(config.text_config, QWEN25_TEXT_LAYERS)
        unmaterialised.write_unmaterialised_checkpoint(
            legacy,
            config,
            transformers.Qwen2_5_VLForConditionalGeneration,
            dtype=torch.bfloat16,
            random_prefixes=("visual.",),
        )
    folders["qwen2_5_vl"] = legacy
    return folders


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid]
        found += children
        frontier += children
    return found


def _run_sampled(args: list[str], env: dict[str, str], hub_pid: int | None) -> dict[str, Any]:
    """Run the CLI; the peak RSS of every process it starts (sampled VmHWM, by pid).

    We are a subreaper, so the CLI's forkserver and workers stay our descendants; the hub server's
    process tree is left out.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    peaks: dict[int, int] = {}
    hub_tree: set[int | None] = {hub_pid, *_descendants(hub_pid)} if hub_pid else set()
    stdout_chunks: list[str] = []
    while proc.poll() is None:
        for pid in set(_descendants(os.getpid())) - hub_tree:
            with contextlib.suppress(OSError, ValueError):
                hwm = memory_status(pid).get("VmHWM")
                if hwm:
                    peaks[pid] = max(peaks.get(pid, 0), hwm)
        time.sleep(0.05)
    out, err = proc.communicate()
    stdout_chunks.append(out)
    wall = time.perf_counter() - start
    reap_orphans(exclude=hub_tree - {None}, timeout=30)
    return {
        "wall_s": round(wall, 2),
        "rc": proc.returncode,
        "stdout": "".join(stdout_chunks),
        "stderr_tail": err[-3000:],
        "peak_rss_per_process": sorted(peaks.values(), reverse=True),
    }


# The client's transport for the measured runs (seeding always goes through classic LFS: the hub
# serves every LFS object through Xet too). The downstream matrix is bench/matrix.py's subject:
# these runs measure the installed check and the variant, so it is off here.
TRANSPORT = {"xet": {}, "lfs": {"HF_HUB_DISABLE_XET": "1"}}


def _transport_env(transport: str) -> dict[str, str]:
    return {**TRANSPORT[transport], "HUBFUSE_DOWNSTREAM_VERSIONS": "none"}


def _check(hub: Any, token: str, repo_id: str, mode: str, home: Path, transport: str) -> dict[str, Any]:
    shutil.rmtree(home, ignore_errors=True)
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.endpoint,
        "HF_TOKEN": token,
        "HF_HOME": str(home / "hf-home"),
        "HUBFUSE_CACHE": str(home / "verdicts"),
        **_transport_env(transport),
    }
    before = len(hub.requests())
    run = _run_sampled(
        [sys.executable, "-m", "hubfuse", "check", repo_id, "--mode", mode, "--json"],
        env,
        hub_server_pid(hub),
    )
    entries = hub.requests()[before:]
    report = json.loads(run["stdout"]) if run["stdout"].strip() else {}
    peaks = run["peak_rss_per_process"]
    family = (report.get("families") or [{}])[0]
    result = {
        "mode": mode,
        "rc": run["rc"],
        "verdict": report.get("verdict"),
        "reasons": family.get("reasons"),
        "proofs": family.get("proofs"),
        "wall_s": run["wall_s"],
        "requests": len(entries),
        "bytes_downloaded": bytes_sent(entries),
        "peak_rss_max": max(peaks) if peaks else None,
        "peak_rss_per_process": peaks,
        "timings": family.get("timings"),
    }
    if run["rc"] not in (0, 3, 4):
        result["stderr_tail"] = run["stderr_tail"]
    shutil.rmtree(home, ignore_errors=True)
    return result


def _publish_variant(hub: Any, token: str, repo_id: str, home: Path, transport: str) -> dict[str, Any]:
    """`hubfuse publish --variant --mode targeted`: bytes up and down, peak RSS, the shard stats."""
    shutil.rmtree(home, ignore_errors=True)
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.endpoint,
        "HF_TOKEN": token,
        "HF_HOME": str(home / "hf-home"),
        "HUBFUSE_CACHE": str(home / "verdicts"),
        **_transport_env(transport),
        "TMPDIR": str(home),
    }
    home.mkdir(parents=True, exist_ok=True)
    before = len(hub.requests())
    args = [sys.executable, "-m", "hubfuse", "publish", repo_id, "--variant", "--mode", "targeted", "--json"]
    run = _run_sampled(args, env, hub_server_pid(hub))
    entries = hub.requests()[before:]
    report = json.loads(run["stdout"]) if run["stdout"].strip() else {}
    peaks = run["peak_rss_per_process"]
    result = {
        "rc": run["rc"],
        "verdict": report.get("verdict"),
        "actions": report.get("actions"),
        "variant_transfer": report.get("variant_transfer"),
        "wall_s": run["wall_s"],
        "requests": len(entries),
        "bytes_downloaded": bytes_sent(entries),
        "bytes_uploaded": sum(e.get("bytes_received", 0) for e in entries),
        "lfs_uploads": sum(1 for e in entries if e["method"] == "PUT"),
        "peak_rss_max": max(peaks) if peaks else None,
    }
    if run["rc"] != 0:
        result["stderr_tail"] = run["stderr_tail"]
    shutil.rmtree(home, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("/tmp/hubfuse-huge"))
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument(
        "--publish", action="store_true", help="also publish a targeted variant of the safe repo"
    )
    parser.add_argument("--only", choices=["qwen3_vl", "qwen2_5_vl"], action="append")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/huge.json")
    parser.add_argument(
        "--transport", choices=sorted(TRANSPORT), default="xet", help="the client's transport for the runs"
    )
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    isolate_hub_client(args.data / "bench-hf-home")
    become_subreaper()

    start = time.perf_counter()
    folders = _generate(args.data)
    generate_s = time.perf_counter() - start

    from huggingface_hub import HfApi

    from hubfuse.localhub import LocalHub

    results: dict[str, Any] = {"generate_s": round(generate_s, 1), "transport": args.transport, "repos": {}}
    with LocalHub(args.data / "hub", subprocess=True) as hub:
        token = hub.add_token("bench", "write", ["huge"])
        api = HfApi(endpoint=hub.endpoint, token=token)
        for model_type, folder in folders.items():
            if args.only and model_type not in args.only:
                continue
            repo_id = f"huge/{model_type}"
            seeded = time.perf_counter()
            if not api.repo_exists(repo_id):
                seed_repo(api, repo_id, folder)
            entry: dict[str, Any] = {
                "repo_bytes": safetensors_bytes(folder),
                "shards": len(list(folder.glob("*.safetensors"))),
                "seed_s": round(time.perf_counter() - seeded, 1),
            }
            home = args.data / "run-home"
            entry["targeted"] = _check(hub, token, repo_id, "targeted", home, args.transport)
            print(json.dumps({model_type: entry["targeted"]}, indent=1)[:3000], flush=True)
            if not args.skip_full:
                entry["full"] = _check(hub, token, repo_id, "full", home, args.transport)
                print(json.dumps({model_type: entry["full"]}, indent=1)[:3000], flush=True)
            if args.publish and entry["targeted"]["verdict"] == "safe":
                entry["publish_targeted"] = _publish_variant(hub, token, repo_id, home, args.transport)
                print(json.dumps({model_type: entry["publish_targeted"]}, indent=1)[:3000], flush=True)
            results["repos"][model_type] = entry
    results["environment"] = environment(["torch", "transformers", "huggingface_hub"])
    write_report(args.out, results, _markdown(results))


def _markdown(results: dict[str, Any]) -> str:
    lines = [
        "# bench/huge.py: targeted vs full mode (`hubfuse check ORG/MODEL` against the local hub)",
        "",
        f"Client transport: {results.get('transport', 'lfs')}; downstream matrix off (bench/matrix.py).",
        "",
        md_row(
            "repo", "size", "mode", "verdict", "wall", "downloaded", "share of repo", "peak RSS (max process)"
        ),
        md_rule("---", "---:", "---", "---", "---:", "---:", "---:", "---:"),
    ]
    notes = []
    for model_type, entry in results["repos"].items():
        size = entry["repo_bytes"]
        for mode in ("targeted", "full"):
            run = entry.get(mode)
            if run is None:
                continue
            lines.append(
                md_row(
                    model_type,
                    human_bytes(size),
                    mode,
                    run["verdict"],
                    f"{run['wall_s']:.1f} s",
                    human_bytes(run["bytes_downloaded"]),
                    f"{100 * run['bytes_downloaded'] / size:.3f}%",
                    human_bytes(run["peak_rss_max"] or 0),
                )
            )
        if "full" in entry and "targeted" in entry:
            ratio = entry["targeted"]["wall_s"] / entry["full"]["wall_s"]
            notes.append(f"- {model_type}: targeted wall = {100 * ratio:.1f}% of full mode.")
        published = entry.get("publish_targeted")
        if published:
            shards = published["variant_transfer"] or {}
            notes.append(
                f"- {model_type}: `publish --variant --mode targeted`: {published['wall_s']:.1f} s, "
                f"uploaded {human_bytes(published['bytes_uploaded'])} "
                f"({100 * published['bytes_uploaded'] / size:.2f}% of the repo), downloaded "
                f"{human_bytes(published['bytes_downloaded'])}, peak disk "
                f"{human_bytes(shards.get('peak_disk_bytes', 0))}; shards: {shards.get('rewritten')} rewritten, "
                f"{shards.get('files_copied')} copied server-side ({human_bytes(shards.get('bytes_copied', 0))}), "
                f"{shards.get('files_streamed')} streamed ({human_bytes(shards.get('bytes_streamed', 0))}); "
                f"peak RSS {human_bytes(published['peak_rss_max'] or 0)}."
            )
    return "\n".join([*lines, "", *notes]) + "\n"


if __name__ == "__main__":
    main()
