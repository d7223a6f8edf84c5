"""The newest final transformers release on the package index that pyproject.toml allows.

newest_transformers.py                               print it
newest_transformers.py install VENV VERSION CONSTRAINTS
    install that release into VENV with every requirement the index can satisfy
    (hubfuse/check/envs.py with uv.py, the matrix's own installer); print those left out, one a line
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hubfuse.check.envs import install_leaving_out_unavailable
from hubfuse.check.releases import transformers_releases


def newest() -> str:
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    allowed = next(
        Requirement(text).specifier
        for text in project["project"]["dependencies"]
        if Requirement(text).name == "transformers"
    )
    return next(str(v) for v in transformers_releases(refresh=True) if allowed.contains(v))


def main() -> None:
    if sys.argv[1:2] == ["install"]:
        venv, version, constraints = sys.argv[2:5]
        python = Path(venv).resolve() / "bin" / "python"
        for requirement in install_leaving_out_unavailable(python, version, [Path(constraints)]):
            print(requirement)
    else:
        print(newest())


if __name__ == "__main__":
    main()
