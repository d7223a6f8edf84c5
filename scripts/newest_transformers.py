"""Print the newest final transformers release on the package index that pyproject.toml allows."""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hubfuse.fusion.envs import transformers_releases


def main() -> None:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    allowed = next(
        Requirement(text).specifier
        for text in project["project"]["dependencies"]
        if Requirement(text).name == "transformers"
    )
    print(next(str(v) for v in transformers_releases(refresh=True) if allowed.contains(v)))


if __name__ == "__main__":
    main()
