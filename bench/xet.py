"""Xet against classic LFS on the local hub: upload and download throughput of one large weight file.

    python bench/xet.py [--size-mb 200] [--out bench/results/xet.json]  (the Markdown beside it)

One generated file of bf16-like weights (random normals, truncated to bfloat16: what a checkpoint
holds), uploaded with `HfApi.upload_file` to a fresh repo of a fresh local hub (its own process),
then fetched with `hf_hub_download` into an empty cache; once per transport, each in its own
process (huggingface_hub reads `HF_HUB_DISABLE_XET` at import). Wall times include the server's
work: for Xet, verifying every xorb, rebuilding the file from them, hashing and re-chunking it; for
classic LFS, hashing the upload and computing its Xet hash. Bytes are what the server received and
sent for the file (request log).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, environment, human_bytes, md_row, md_rule, write_report

TRANSPORTS = ("xet", "classic-lfs")


def _weights(path: Path, size_mb: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    block = 8 * 1024 * 1024  # bf16 values per block
    with path.open("wb") as out:
        remaining = size_mb * 1024 * 1024
        while remaining > 0:
            values = (rng.standard_normal(block // 2, dtype=np.float32) * 0.02).view(np.uint32)
            data = (values >> 16).astype(np.uint16).tobytes()[:remaining]
            out.write(data)
            remaining -= len(data)


def _child(transport: str, file: Path, work: Path) -> dict[str, Any]:
    os.environ["HF_HOME"] = str(work / "hf-home")
    os.environ["HF_XET_CACHE"] = str(work / "hf-home" / "xet")
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if transport == "classic-lfs":
        os.environ["HF_HUB_DISABLE_XET"] = "1"
    else:
        os.environ.pop("HF_HUB_DISABLE_XET", None)
    from huggingface_hub import HfApi, hf_hub_download

    from hubfuse.localhub import LocalHub

    size = file.stat().st_size
    with LocalHub(work / "hub", subprocess=True) as hub:
        token = hub.add_token("bench", "write")
        api = HfApi(endpoint=hub.endpoint, token=token)
        api.create_repo("bench/weights")
        mark = len(hub.requests())
        start = time.perf_counter()
        api.upload_file(path_or_fileobj=str(file), path_in_repo="model.safetensors", repo_id="bench/weights")
        upload_s = time.perf_counter() - start
        uploaded = hub.requests()[mark:]
        mark += len(uploaded)
        start = time.perf_counter()
        local = hf_hub_download(
            "bench/weights", "model.safetensors", endpoint=hub.endpoint, token=token, cache_dir=work / "dl"
        )
        download_s = time.perf_counter() - start
        downloaded = hub.requests()[mark:]
    digest = hashlib.sha256()
    with open(local, "rb") as f:
        while piece := f.read(16 * 1024 * 1024):
            digest.update(piece)
    return {
        "transport": transport,
        "bytes": size,
        "upload_s": round(upload_s, 2),
        "download_s": round(download_s, 2),
        "upload_mb_s": round(size / 1e6 / upload_s, 1),
        "download_mb_s": round(size / 1e6 / download_s, 1),
        "server_received": sum(r.get("bytes_received", 0) for r in uploaded),
        "server_sent": sum(r["bytes_sent"] for r in downloaded),
        "sha256_ok": digest.hexdigest() == _sha256(file),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(16 * 1024 * 1024):
            digest.update(piece)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "xet.json")
    parser.add_argument("--child", choices=TRANSPORTS, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.file, args.work)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-xet-") as tmp:
        file = Path(tmp) / "weights.bin"
        _weights(file, args.size_mb)
        runs = []
        for transport in TRANSPORTS:
            work = Path(tmp) / transport
            done = subprocess.run(
                [sys.executable, __file__, "--child", transport, "--file", str(file), "--work", str(work)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise SystemExit(f"{transport} run failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    result = {"environment": environment(["huggingface_hub", "hf_xet"]), "runs": runs}
    lines = [
        f"# Xet and classic LFS on the local hub: one {human_bytes(runs[0]['bytes'])} bf16 file",
        "",
        f"{result['environment']['date']}, hubfuse {result['environment']['hubfuse_commit']}, "
        f"huggingface_hub {result['environment']['huggingface_hub']}, hf_xet {result['environment']['hf_xet']}, "
        f"{result['environment']['cpus']} CPUs (shared with other work: wall times are noisy).",
        "",
        md_row(
            "transport",
            "upload",
            "upload MB/s",
            "server received",
            "download",
            "download MB/s",
            "server sent",
            "bytes identical",
        ),
        md_rule("---", "---:", "---:", "---:", "---:", "---:", "---:", "---"),
    ]
    for run in runs:
        lines.append(
            md_row(
                run["transport"],
                f"{run['upload_s']} s",
                run["upload_mb_s"],
                human_bytes(run["server_received"]),
                f"{run['download_s']} s",
                run["download_mb_s"],
                human_bytes(run["server_sent"]),
                "yes" if run["sha256_ok"] else "NO",
            )
        )
    write_report(args.out, result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
