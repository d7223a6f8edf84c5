"""Variant repo names: the `name_template` placeholders, checked before any run, expanded in one place.

A template names the variant from its source: `{name}` is the source repo's name, `{namespace}`
(or `{org}`) its namespace, so `{namespace}-{name}-fused` keeps `alice/dup` and `acme/dup` apart
in one variant namespace. Two sources that still map to one name are a conflict at publish time.
"""

from __future__ import annotations

import string

from hubfuse.errors import BadInputError

PLACEHOLDERS = ("name", "namespace", "org")
DEFAULT_TEMPLATE = "{name}-fused"
_SAMPLE_SOURCE = "some-org/Model.v1_x"


def check_name_template(template: str) -> None:
    """One line (BadInputError) for a template that cannot name every variant."""
    what = f"name_template {template!r}"
    try:
        fields = [(field, spec, conv) for _, field, spec, conv in string.Formatter().parse(template)]
    except ValueError as exc:
        raise BadInputError(f"{what}: {exc}") from None
    for field, spec, conversion in fields:
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            written = (
                "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            )
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise BadInputError(f"{what}: unknown placeholder {written} (known: {known})")
    if "name" not in {field for field, _, _ in fields}:
        raise BadInputError(f"{what}: must contain {{name}}, or every source maps to one variant")
    sample = expand_name(template, _SAMPLE_SOURCE)
    if not _valid_repo_name(sample):
        raise BadInputError(f"{what}: gives {sample!r}, not a valid repo name")


def expand_name(template: str, source_repo: str) -> str:
    namespace, _, name = source_repo.rpartition("/")
    return template.format(name=name, namespace=namespace, org=namespace)


def variant_repo_id(source_repo: str, template: str = DEFAULT_TEMPLATE, namespace: str | None = None) -> str:
    """The variant's repo id: the template's name under `namespace` (default: the source's)."""
    check_name_template(template)
    name = expand_name(template, source_repo)
    if not _valid_repo_name(name):
        raise BadInputError(f"the variant name {name!r} for {source_repo} is not a valid repo name")
    return f"{namespace or source_repo.rpartition('/')[0]}/{name}"


def _valid_repo_name(name: str) -> bool:
    """The Hub's own rule (huggingface_hub's), for the name part of a repo id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if "/" in name:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True
