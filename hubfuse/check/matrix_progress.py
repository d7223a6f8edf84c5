"""What a long downstream matrix is doing: environments being made ready, cells done.

Through the one logger (stderr; stdout stays the `--json` document): in a terminal one progress
line redrawn in place, in a file or in GitHub Actions one line per step, inside the matrix's fold.
"""

from __future__ import annotations

import threading
import time

from hubfuse.log import Logger, log


class MatrixProgress:
    def __init__(self, environments: int, cells: int, logger: Logger = log) -> None:
        self.log = logger
        self.environments = environments  # to make ready (reused cells need none)
        self.cells = cells
        self._ready = 0
        self._done = 0
        self._lock = threading.Lock()
        self._start = time.monotonic()

    def environment(self, version: str, column: str, built_s: float | None, waited_s: float) -> None:
        with self._lock:
            self._ready += 1
            what = f"built in {built_s:.1f} s" if built_s is not None else f"cached ({waited_s:.1f} s)"
            self.log.progress(
                f"  matrix: environment {self._ready}/{self.environments} ready: "
                f"transformers {version} ({column}), {what}"
            )

    def cell(
        self, version: str, column: str, outcome: str, seconds: float, proven_on: str | None = None
    ) -> None:
        with self._lock:
            self._done += 1
            how = f"proven on {proven_on} (same case)" if proven_on else f"{seconds:.1f} s"
            self.log.progress(
                f"  matrix: cell {self._done}/{self.cells} done: transformers {version} ({column}): "
                f"{outcome}, {how}"
            )

    def finish(self) -> None:
        self.log.info(
            f"  matrix: {self._done}/{self.cells} cell(s), {self._ready} environment(s) in "
            f"{time.monotonic() - self._start:.1f} s"
        )
