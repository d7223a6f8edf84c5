"""The local hub's memory on a large NDJSON commit of inline (regular) files.

A `LocalHub(subprocess=True)` server takes one `create_commit` of `--files` text files of
`--file-mib` MiB each (inline: under the 10 MiB regular limit, no NUL byte), sent by the real
client. Measured: the commit body's size, the wall time of the commit, and the server process's
peak RSS (VmHWM) before and after. The peak RSS growth is what the server held for the commit.

    python bench/commit_body.py                       # 8 files of 9.9 MiB: a 106 MiB body
    python bench/commit_body.py --files 7 --out /tmp/c.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    environment,
    hub_server_pid,
    human_bytes,
    isolate_hub_client,
    md_row,
    md_rule,
    memory_status,
    write_report,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--file-mib", type=float, default=9.9)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/commit_body.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="commit-body-") as tmp:
        isolate_hub_client(Path(tmp) / "hf-home")
        from huggingface_hub import CommitOperationAdd, HfApi

        from hubfuse.localhub import LocalHub

        size = int(args.file_mib * 1024 * 1024)
        with LocalHub(Path(tmp) / "hub", subprocess=True) as hub:
            pid = hub_server_pid(hub)
            assert pid is not None
            api = HfApi(endpoint=hub.endpoint, token=hub.add_token("bench", "write"))
            repo_id = api.create_repo("bench/commit-body").repo_id
            before = memory_status(pid)["VmHWM"]
            operations = [
                CommitOperationAdd(f"t/{i}.txt", bytes([65 + i % 26]) * size) for i in range(args.files)
            ]
            hub.clear_requests()
            start = time.perf_counter()
            api.create_commit(repo_id, operations, commit_message="large inline commit")
            wall_s = time.perf_counter() - start
            after = memory_status(pid)["VmHWM"]
            body = max(r["bytes_received"] for r in hub.requests() if r["path"].endswith("/commit/main"))
    result: dict[str, Any] = {
        "files": args.files,
        "file_bytes": size,
        "body_bytes": body,
        "commit_wall_s": round(wall_s, 2),
        "server_peak_rss_before": before,
        "server_peak_rss_after": after,
        "server_peak_rss_growth": after - before,
        "environment": environment(["huggingface_hub"], ["hubfuse/localhub"]),
    }
    markdown = "\n".join(
        [
            "# bench/commit_body.py: the local hub's memory on a large inline commit",
            "",
            md_row("files", "body", "commit wall", "server peak RSS before", "after", "growth"),
            md_rule("---:", "---:", "---:", "---:", "---:", "---:"),
            md_row(
                f"{args.files} x {human_bytes(size)}",
                human_bytes(body),
                f"{wall_s:.2f} s",
                human_bytes(before),
                human_bytes(after),
                human_bytes(after - before),
            ),
            "",
        ]
    )
    write_report(args.out, result, markdown)


if __name__ == "__main__":
    main()
