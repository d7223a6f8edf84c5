"""README front matter: the `cardData` of repo info and the `/api/validate-yaml` check."""

from __future__ import annotations

import re
from typing import Any

import yaml

_FRONT_MATTER_RE = re.compile(r"\A\ufeff?---[ \t]*\r?\n(.*?)(?:\r?\n)?^---[ \t]*$", re.DOTALL | re.MULTILINE)


def front_matter(text: str) -> str | None:
    """The YAML between the leading `---` fences, or None when the README has none."""
    match = _FRONT_MATTER_RE.match(text)
    return match.group(1) if match else None


def card_data(readme: bytes) -> dict[str, Any] | None:
    try:
        raw = front_matter(readme.decode("utf-8"))
        if raw is None:
            return None
        data = yaml.safe_load(raw)
    except (UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def validate(content: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a README, like the Hub's metadata validation (syntax and shape only)."""
    raw = front_matter(content)
    try:
        data = yaml.safe_load(raw) if raw is not None else None
    except yaml.YAMLError as exc:
        return [f"Invalid YAML in README.md metadata: {' '.join(str(exc).split())}"], []
    if data is None:  # the Hub's wording, which huggingface_hub shows as a warning
        return [], ["empty or missing yaml metadata in repo card"]
    if not isinstance(data, dict):
        return [f'"metadata" must be a YAML mapping, got {type(data).__name__}'], []
    errors = []
    for key in ("tags", "datasets", "language", "base_model"):
        value = data.get(key)
        if value is not None and not isinstance(value, (str, list)):
            errors.append(f'"{key}" must be a string or a list of strings')
        elif isinstance(value, list) and not all(isinstance(item, str) for item in value):
            errors.append(f'"{key}" must be a list of strings')
    for key in ("license", "library_name", "pipeline_tag"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            errors.append(f'"{key}" must be a string')
    return errors, []


def body(text: str) -> str:
    """The README without its front matter."""
    match = _FRONT_MATTER_RE.match(text)
    return text[match.end() :].lstrip("\r\n") if match else text


def yaml_text(value: Any) -> str:
    """A metadata value as the card's YAML would spell it."""
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=None).strip()
