"""CPU time of the safetensors header parser on a large real-shaped header and on hostile ones.

    python bench/headers.py [--out bench/results/headers.md]

Each case is `hubfuse.safetensors_header.parse_header` on an in-memory header (no disk), timed with
`time.process_time`, best of 3. "refused" is the one-line `CheckpointError` hubfuse exits 2 with;
anything else that escapes is reported by type (before the fix: RecursionError, ValueError).
Run it with another hubfuse on PYTHONPATH (from outside the repo) to compare versions.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path


def _dims_header(dims: list[str]) -> bytes:
    return ('{"a":{"dtype":"F32","shape":[' + ",".join(dims) + '],"data_offsets":[0,8]}}').encode()


def _real_shaped(tensors: int) -> bytes:
    entries = (
        f'"model.layers.{i}.weight":{{"dtype":"U8","shape":[1],"data_offsets":[{i},{i + 1}]}}'
        for i in range(tensors)
    )
    return ("{" + ",".join(entries) + "}").encode()


CASES: dict[str, tuple[Callable[[], bytes], int]] = {
    # name: (header, data bytes after it)
    "60,000 tensors (5.0 MB, valid)": (lambda: _real_shaped(60_000), 60_000),
    "1,120 dims of 4299 digits (4.8 MB)": (lambda: _dims_header(["9" * 4299] * 1120), 8),
    "20,000 dims of 2**63 (0.4 MB)": (lambda: _dims_header([str(2**63)] * 20_000), 8),
    "230,000 dims of 2**63 (4.6 MB)": (lambda: _dims_header([str(2**63)] * 230_000), 8),
    "nested 100,000 deep (0.2 MB)": (lambda: ('{"a":' + "[" * 100_000 + "]" * 100_000 + "}").encode(), 8),
}


def _run(header: bytes, data_bytes: int, timeout_s: float) -> tuple[str, float]:
    from hubfuse.errors import CheckpointError
    from hubfuse.safetensors_header import parse_header

    best = float("inf")
    outcome = "?"
    for _ in range(3):
        start = time.process_time()
        try:
            parse_header(header, path=Path("bench.safetensors"), file_size=8 + len(header) + data_bytes)
            outcome = "parsed"
        except CheckpointError:
            outcome = "refused (exit 2)"
        except Exception as exc:  # what the old parser let escape: exit 1
            outcome = f"{type(exc).__name__} (exit 1)"
        best = min(best, time.process_time() - start)
        if best > timeout_s:
            break
    return outcome, best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--skip-over", type=float, default=30.0, help="Run a case once if it takes longer.")
    args = parser.parse_args()
    import hubfuse

    lines = [
        f"hubfuse from {Path(hubfuse.__file__).parent}",
        "",
        "| header | outcome | CPU s (best of 3) |",
        "|---|---|---:|",
    ]
    for name, (make, data_bytes) in CASES.items():
        outcome, seconds = _run(make(), data_bytes, args.skip_over)
        lines.append(f"| {name} | {outcome} | {seconds:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
