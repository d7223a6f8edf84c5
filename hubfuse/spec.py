"""Batch pipeline specs (`workflows/*.yml`): schema, validation with line numbers, typed result.

name: qwen-vl-family            # default: the file name
repos:                          # at least one of ids / author / search
  ids: [org/model-a]
  author: [Qwen, my-org]        # a name or a list
  search: VL
  include: ["*-VL-*"]           # fnmatch patterns on the repo id
  exclude: ["*-AWQ", "*-GGUF"]
  model_types: [qwen3_vl]       # from the repo's config.json
families: [patch_embeddings]    # default: every registered family hubfuse can verify
variant: {enabled: true, name_template: "{namespace}-{name}-fused", namespace: my-org}
                                # {name}, {namespace} / {org}: the source repo's (hubfuse.naming)
limits: {max_repos: 50, max_prs: 10, request_budget: 5000}
ledger: {repo: my-org/hubfuse-ledger}   # a dataset repo; default: a local file
downstream_versions: ">=5.21"   # as --downstream-versions; default: the full matrix; "none": off
mode: auto                      # as --mode: auto, full or targeted
dry_run: false

The keys that are settings (families, downstream_versions, mode, dry_run) take their types and
choices from `hubfuse.settings`. `hubfuse run --mode` and `--downstream-versions` win over the
spec's key; `--dry-run` or the key makes the run a dry run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hubfuse.errors import BadInputError
from hubfuse.naming import DEFAULT_TEMPLATE, check_name_template
from hubfuse.settings import SPEC_SETTINGS

_REPO_ID = r"^[A-Za-z0-9][\w.-]*/[\w.-]+$"
_NAME = r"^[A-Za-z0-9][\w.-]*$"
_STRINGS = {"type": "array", "items": {"type": "string", "minLength": 1}}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["repos"],
    "properties": {
        "name": {"type": "string", "pattern": _NAME},
        "repos": {
            "type": "object",
            "additionalProperties": False,
            "anyOf": [{"required": ["ids"]}, {"required": ["author"]}, {"required": ["search"]}],
            "properties": {
                "ids": {"type": "array", "items": {"type": "string", "pattern": _REPO_ID}},
                "author": {
                    "oneOf": [
                        {"type": "string", "pattern": _NAME},
                        {"type": "array", "items": {"type": "string", "pattern": _NAME}},
                    ]
                },
                "search": {"type": "string", "minLength": 1},
                "include": _STRINGS,
                "exclude": _STRINGS,
                "model_types": _STRINGS,
            },
        },
        "revision": {"type": "string", "minLength": 1},
        "variant": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "name_template": {"type": "string"},  # placeholders: hubfuse.naming
                "namespace": {"type": "string", "pattern": _NAME},
            },
        },
        "limits": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_repos": {"type": "integer", "minimum": 1},
                "max_prs": {"type": "integer", "minimum": 0},
                "request_budget": {"type": "integer", "minimum": 1},
            },
        },
        "ledger": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"repo": {"type": "string", "pattern": _REPO_ID}},
        },
        **{setting.name: setting.spec_schema() for setting in SPEC_SETTINGS},
    },
}


@dataclass(frozen=True)
class RepoSelection:
    ids: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    search: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    model_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class Limits:
    max_repos: int | None = None
    max_prs: int | None = None
    request_budget: int | None = None


@dataclass(frozen=True)
class Spec:
    name: str
    path: Path
    repos: RepoSelection
    families: tuple[str, ...] = ()
    revision: str | None = None
    variant: bool = False
    variant_name_template: str = DEFAULT_TEMPLATE
    variant_namespace: str | None = None
    limits: Limits = field(default_factory=Limits)
    ledger_repo: str | None = None
    dry_run: bool = False
    downstream_versions: str | None = None
    mode: str | None = None  # None: not in the spec


def _line_of(node: yaml.Node | None, path: list[Any]) -> int | None:
    """The 1-based line of the YAML node at `path` (the deepest one that exists)."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in path:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            match = node.value[key]
        else:
            match = None
        if match is None:
            break
        node, line = match, match.start_mark.line + 1
    return line


def _error_path(error: Any) -> list[Any]:
    """Where to point: an unknown key itself rather than the mapping that holds it."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        unknown = [key for key in error.instance if key not in known]
        if unknown:
            path.append(unknown[0])
    return path


def _describe(error: Any) -> str:
    location = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        return f"{location}: {error.message.replace('Additional properties are not allowed', 'unknown key')}"
    if error.validator == "anyOf" and list(error.absolute_path) == ["repos"]:
        return "repos: needs at least one of ids, author or search"
    if error.validator == "pattern" and error.schema.get("pattern") == _REPO_ID:
        return f"{location}: {error.instance!r} is not a repo id (namespace/name)"
    return f"{location}: {error.message}"


def load_spec(path: str | Path) -> Spec:
    import jsonschema

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read the spec ({exc.strerror})") from exc
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInputError(f"{path}{where}: invalid YAML: {problem}") from exc
    if data is None:
        raise BadInputError(f"{path}: the spec is empty")
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data))
    if errors:
        located = sorted(((_line_of(node, _error_path(e)) or 0), _describe(e)) for e in errors)
        line, message = located[0]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise BadInputError(f"{path}:{line}: {message}{more}")
    _check_families(path, node, data)
    _check_downstream_versions(path, node, data)
    _check_name_template(path, node, data)
    return _to_spec(path, data)


def _check_families(path: Path, node: yaml.Node | None, data: dict[str, Any]) -> None:
    from hubfuse.fusion.families import check_requested_families

    for position, family in enumerate(data.get("families") or ()):
        try:
            check_requested_families([family], where="families")
        except BadInputError as exc:
            raise BadInputError(f"{path}:{_line_of(node, ['families', position])}: {exc}") from None


def _check_downstream_versions(path: Path, node: yaml.Node | None, data: dict[str, Any]) -> None:
    """Its grammar, without asking the package index (the run resolves it into releases)."""
    from hubfuse.fusion.downstream import NONE, parse_spec

    text = data.get("downstream_versions")
    if text is None or text.strip().lower() == NONE:
        return
    try:
        parse_spec(text)
    except BadInputError as exc:
        message = str(exc).replace("--downstream-versions", "downstream_versions", 1)
        raise BadInputError(f"{path}:{_line_of(node, ['downstream_versions'])}: {message}") from None


def _check_name_template(path: Path, node: yaml.Node | None, data: dict[str, Any]) -> None:
    template = (data.get("variant") or {}).get("name_template")
    if template is None:
        return
    try:
        check_name_template(template)
    except BadInputError as exc:
        raise BadInputError(f"{path}:{_line_of(node, ['variant', 'name_template'])}: variant.{exc}") from None


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _to_spec(path: Path, data: dict[str, Any]) -> Spec:
    repos = data["repos"]
    variant = data.get("variant") or {}
    limits = data.get("limits") or {}
    return Spec(
        name=data.get("name") or path.stem,
        path=path,
        repos=RepoSelection(
            ids=_as_tuple(repos.get("ids")),
            authors=_as_tuple(repos.get("author")),
            search=repos.get("search"),
            include=_as_tuple(repos.get("include")),
            exclude=_as_tuple(repos.get("exclude")),
            model_types=_as_tuple(repos.get("model_types")),
        ),
        families=_as_tuple(data.get("families")),
        revision=data.get("revision"),
        variant=bool(variant.get("enabled", False)),
        variant_name_template=variant.get("name_template", DEFAULT_TEMPLATE),
        variant_namespace=variant.get("namespace"),
        limits=Limits(limits.get("max_repos"), limits.get("max_prs"), limits.get("request_budget")),
        ledger_repo=(data.get("ledger") or {}).get("repo"),
        dry_run=bool(data.get("dry_run", False)),
        downstream_versions=data.get("downstream_versions"),
        mode=data.get("mode"),
    )
