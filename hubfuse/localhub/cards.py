"""README front matter: the `cardData` of repo info and the `/api/validate-yaml` check.

A README is anyone's input, parsed on anonymous requests, so the parsing is bounded: the front matter's
size, the expansion of YAML aliases ("billion laughs": a few hundred bytes that expand to gigabytes
once serialised), nesting, and the size of the `cardData` served.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from hubfuse.boundedyaml import CardTooLarge, load_metadata
from hubfuse.hub_licenses import OTHER, is_hub_license

CARD_DATA_MAX_BYTES = 1024 * 1024

# huggingface_hub's `repocard.REGEX_YAML_BLOCK`, which the Hub's own front-matter reading agrees with:
# the opening fence may follow whitespace and blank lines, so metadata there is metadata (validated on
# commit, served as `cardData`). The client strips a UTF-8 BOM before it looks (`utf-8-sig`).
FRONT_MATTER_RE = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")


def front_matter(text: str) -> str | None:
    """The YAML between the leading `---` fences, or None when the README has none."""
    match = FRONT_MATTER_RE.search(text.removeprefix("\ufeff"))
    return match.group(2) if match else None


def card_data(readme: bytes) -> dict[str, Any] | None:
    """The metadata as repo info serves it; None when absent, invalid or too large to serve."""
    try:
        raw = front_matter(readme.decode("utf-8"))
        if raw is None:
            return None
        data = load_metadata(raw)
        if not isinstance(data, dict):
            return None
        if len(json.dumps(data, default=str)) > CARD_DATA_MAX_BYTES:
            return None
    except (UnicodeDecodeError, yaml.YAMLError, CardTooLarge, ValueError, RecursionError):
        return None
    return data


def validate(content: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a README, like the Hub's metadata validation."""
    raw = front_matter(content)
    try:
        data = load_metadata(raw) if raw is not None else None
    except yaml.YAMLError as exc:
        return [f"Invalid YAML in README.md metadata: {' '.join(str(exc).split())}"], []
    except CardTooLarge as exc:
        return [f"Invalid README.md metadata: {exc}"], []
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
    for key in ("library_name", "pipeline_tag", "license_name", "license_link"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            errors.append(f'"{key}" must be a string')
    errors += _license_errors(data.get("license"))
    if "model-index" in data:
        errors += [f'"model-index": {problem}' for problem in model_index_errors(data["model-index"])]
    warnings = []
    if data.get("license") == OTHER and not data.get("license_name"):
        warnings.append(
            '"license" is "other": name the license in "license_name" (and link it in "license_link")'
        )
    return errors, warnings


def _license_errors(value: object) -> list[str]:
    if value is None:
        return []
    licenses = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) for item in licenses):
        return ['"license" must be a license id (a string) or a list of them']
    unknown = [item for item in licenses if not is_hub_license(item)]
    if unknown:
        return [
            f'"license" must be one of the Hub\'s license ids (https://hf.co/docs/hub/repositories-licenses), '
            f'not {", ".join(repr(item) for item in unknown)}; for another license use "license: other" '
            'with "license_name" and "license_link"'
        ]
    return []


def model_index_errors(model_index: object) -> list[str]:
    """What makes `model-index` unreadable, checked as the Hub's eval-results schema requires."""
    if not isinstance(model_index, list) or not model_index:
        return ["must be a non-empty list of models"]
    problems: list[str] = []
    for i, model in enumerate(model_index):
        where = f"[{i}]"
        if not isinstance(model, dict):
            problems.append(f"{where} must be a mapping")
            continue
        if not isinstance(model.get("name"), str):
            problems.append(f"{where}.name must be a string")
        results = model.get("results")
        if not isinstance(results, list):
            problems.append(f"{where}.results must be a list")
            continue
        for j, result in enumerate(results):
            problems += _result_errors(f"{where}.results[{j}]", result)
    return problems


def _result_errors(where: str, result: object) -> list[str]:
    if not isinstance(result, dict):
        return [f"{where} must be a mapping"]
    problems = []
    task, dataset, metrics = result.get("task"), result.get("dataset"), result.get("metrics")
    if not isinstance(task, dict) or not isinstance(task.get("type"), str):
        problems.append(f"{where}.task.type must be a string")
    if not isinstance(dataset, dict) or not all(isinstance(dataset.get(k), str) for k in ("type", "name")):
        problems.append(f"{where}.dataset needs string 'type' and 'name'")
    if not isinstance(metrics, list) or not metrics:
        problems.append(f"{where}.metrics must be a non-empty list")
    else:
        for k, metric in enumerate(metrics):
            if (
                not isinstance(metric, dict)
                or not isinstance(metric.get("type"), str)
                or "value" not in metric
            ):
                problems.append(f"{where}.metrics[{k}] needs a string 'type' and a 'value'")
    return problems


def body(text: str) -> str:
    """The README without its front matter."""
    text = text.removeprefix("\ufeff")
    match = FRONT_MATTER_RE.search(text)
    return text[match.end() :].lstrip("\r\n") if match else text


def yaml_text(value: Any) -> str:
    """A metadata value as the card's YAML would spell it."""
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=None).strip()
