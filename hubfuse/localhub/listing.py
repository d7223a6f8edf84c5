"""Repo listings as the Hub filters and shapes them: tags, `filter=`, `expand=`.

The Hub derives a repo's tags from its card and config (library, task, `license:...`, `dataset:...`,
languages, the model type) and `filter=` keeps the repos carrying every value asked for. `expand=`
returns exactly the properties asked for (and the ids); a property the Hub does not know is a 400.
The property names are huggingface_hub's `Expand*Property_T` (2.4.0).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hubfuse.localhub.apierror import ApiError

EXPAND_PROPERTIES: dict[str, frozenset[str]] = {
    "model": frozenset(
        {
            "author", "baseModels", "cardData", "childrenModelCount", "config", "createdAt", "disabled",
            "downloads", "downloadsAllTime", "evalResults", "gated", "gguf", "inference",
            "inferenceProviderMapping", "lastModified", "library_name", "likes", "mask_token",
            "model-index", "pipeline_tag", "private", "resourceGroup", "safetensors", "sha", "siblings",
            "spaces", "tags", "transformersInfo", "trendingScore", "usedStorage", "widgetData",
        }
    ),
    "dataset": frozenset(
        {
            "author", "cardData", "citation", "createdAt", "description", "disabled", "downloads",
            "downloadsAllTime", "gated", "lastModified", "likes", "mainSize", "paperswithcode_id",
            "private", "resourceGroup", "sha", "siblings", "tags", "trendingScore", "usedStorage",
        }
    ),
    "space": frozenset(
        {
            "author", "cardData", "createdAt", "datasets", "disabled", "lastModified", "likes", "models",
            "private", "region", "resourceGroup", "runtime", "sdk", "sha", "siblings", "subdomain", "tags",
            "trendingScore", "usedStorage",
        }
    ),
}  # fmt: skip
# Properties only the full repo info carries (a plain listing entry leaves them out).
FULL_PROPERTIES = frozenset({"siblings", "safetensors", "usedStorage", "spaces"})
# What the Hub lists for a model when neither `expand` nor `full` is asked for.
MODEL_LIST_FIELDS = (
    "_id", "id", "likes", "trendingScore", "private", "downloads", "tags", "pipeline_tag", "library_name",
    "createdAt", "modelId",
)  # fmt: skip
_COUNTERS = ("downloads", "downloadsAllTime", "likes", "trendingScore")
# Dataset card keys the Hub turns into `key:value` tags (what list_datasets' keyword filters ask for).
_DATASET_TAG_KEYS = (
    "language", "language_creators", "multilinguality", "size_categories", "task_categories", "task_ids",
    "license", "benchmark",
)  # fmt: skip


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def derived_tags(repo_type: str, card: dict[str, Any] | None, config: dict[str, Any] | None) -> list[str]:
    """The tags the Hub derives from a repo's card (and a model's config), card tags first."""
    card = card or {}
    tags = _strings(card.get("tags"))
    if repo_type == "model":
        tags += _strings(card.get("library_name")) + _strings(card.get("pipeline_tag"))
        if isinstance(config, dict):
            tags += _strings(config.get("model_type"))
        tags += _strings(card.get("language"))
        tags += [f"dataset:{name}" for name in _strings(card.get("datasets"))]
        tags += [f"base_model:{name}" for name in _strings(card.get("base_model"))]
        tags += [f"license:{name}" for name in _strings(card.get("license"))]
    elif repo_type == "dataset":
        for key in _DATASET_TAG_KEYS:
            tags += [f"{key}:{value}" for value in _strings(card.get(key))]
    else:
        tags += [f"license:{name}" for name in _strings(card.get("license"))]
    return list(dict.fromkeys(tags))


def checked_expand(repo_type: str, values: Iterable[str]) -> list[str]:
    """The `expand` values asked for; a 400 for one the Hub does not know for this repo type."""
    asked = list(dict.fromkeys(values))
    unknown = [value for value in asked if value not in EXPAND_PROPERTIES[repo_type]]
    if unknown:
        allowed = ", ".join(sorted(EXPAND_PROPERTIES[repo_type]))
        raise ApiError(
            400, f'Invalid "expand" value(s) {", ".join(map(repr, unknown))}: expected one of {allowed}'
        )
    return asked


def expanded(info: dict[str, Any], asked: list[str]) -> dict[str, Any]:
    """`info` cut down to the ids and the properties asked for (counters the local hub keeps at 0)."""
    shaped = {key: info[key] for key in ("_id", "id") if key in info}
    for key in asked:
        if key in info:
            shaped[key] = info[key]
        elif key in _COUNTERS:
            shaped[key] = 0
    return shaped


def matches(info: dict[str, Any], *, filters: list[str], gated: str | None, pipeline_tag: str | None) -> bool:
    """Whether a repo's info passes the listing's `filter` (every value a tag), `gated` and task."""
    tags = set(info.get("tags") or ())
    if not all(value in tags for value in filters):
        return False
    if pipeline_tag and info.get("pipeline_tag") != pipeline_tag:
        return False
    if gated is not None:
        is_gated = bool(info.get("gated"))
        if is_gated != (gated.lower() in ("1", "true")):
            return False
    return True
