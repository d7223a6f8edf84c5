"""Which paths a repo's own `.gitattributes` sends to LFS (`filter=lfs`), as git reads the file.

gitattributes(5): each line is a pattern and attributes; the last line that matches a path and names
`filter` decides (`filter=lfs` sets it, `-filter`, `!filter` or another driver unset it). A pattern
without a slash matches the file name at any depth; one with a slash is anchored at the repo root,
`*` stays inside one folder and `**` spans folders. Only the root `.gitattributes` is read, as the
Hub's preupload does for the files of a commit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LFS_FILTER = "lfs"

# What the Hub puts in a new repo's `.gitattributes`.
DEFAULT_GITATTRIBUTES = """\
*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.ftz filter=lfs diff=lfs merge=lfs -text
*.gguf filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.joblib filter=lfs diff=lfs merge=lfs -text
*.lfs.* filter=lfs diff=lfs merge=lfs -text
*.mlmodel filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.ot filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pb filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.rar filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
saved_model/**/* filter=lfs diff=lfs merge=lfs -text
*.tar.* filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.tflite filter=lfs diff=lfs merge=lfs -text
*.tgz filter=lfs diff=lfs merge=lfs -text
*.wasm filter=lfs diff=lfs merge=lfs -text
*.xz filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
"""


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    basename: bool  # matched against the file name, not the whole path
    lfs: bool


def _translate(glob: str) -> str:
    """A gitattributes glob as a regex over a slash-separated path."""
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("/**", i) and i + 3 == len(glob):
            out.append("/.*")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        elif glob[i] == "[" and (end := glob.find("]", i + 2)) != -1:
            body = glob[i + 1 : end]
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            out.append(f"[{'^' if negate else ''}{re.escape(body).replace(chr(92) + '-', '-')}]")
            i = end + 1
        elif glob[i] == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 2
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return "".join(out)


def _filter_value(attributes: list[str]) -> bool | None:
    """True for `filter=lfs`, False where `filter` is unset or another driver, None if not named."""
    decided = None
    for attribute in attributes:
        if attribute.startswith("filter="):
            decided = attribute.removeprefix("filter=") == LFS_FILTER
        elif attribute in ("-filter", "!filter"):
            decided = False
    return decided


def _rules(text: str) -> list[_Rule]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("[attr]"):
            continue
        glob, *attributes = line.split()
        lfs = _filter_value(attributes)
        if lfs is None or glob.startswith("!"):  # negative patterns are ignored by git
            continue
        if glob.endswith("/"):  # a folder pattern never matches a file in gitattributes
            continue
        basename = "/" not in glob
        pattern = re.compile(_translate(glob.lstrip("/")) + r"\Z")
        rules.append(_Rule(pattern, basename, lfs))
    return rules


def is_lfs(path: str, gitattributes: str | None) -> bool:
    """Whether `.gitattributes` (its text; None when the repo has none) gives `path` the LFS filter."""
    if not gitattributes:
        return False
    name = path.rsplit("/", 1)[-1]
    decided = False
    for rule in _rules(gitattributes):
        if rule.pattern.match(name if rule.basename else path):
            decided = rule.lfs
    return decided
