"""Texts hubfuse publishes on the Hub: the config pull request and the variant model card.

Both carry hubfuse's marker (`hubfuse.render.markers`), which is how later runs recognise
hubfuse's own earlier work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml
from packaging.version import Version

from hubfuse import __version__
from hubfuse.boundedyaml import load_metadata
from hubfuse.check.families import family_why
from hubfuse.check.verdict import CheckReport
from hubfuse.errors import BadInputError
from hubfuse.hub_licenses import OTHER, is_hub_license
from hubfuse.log import redact
from hubfuse.render.markers import PR_TITLE_SUFFIX, Marker
from hubfuse.render.tables import first_reasons, matrix_rows, release_story

# Package data (so an installed wheel renders cards); the repo's top-level model_cards/ links here.
TEMPLATES = Path(__file__).resolve().parent.parent / "model_cards"
MIN_TRANSFORMERS = "5.24"


def _environment() -> jinja2.Environment:
    if not TEMPLATES.is_dir():
        raise BadInputError(f"card templates not found in {TEMPLATES}")
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    # A bare `|` inside a Markdown table cell ends the cell ("max |output diff|" lost its value).
    environment.filters["cell"] = lambda text: str(text).replace("|", "\\|")
    return environment


def verification_rows(report: CheckReport) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for family in report.families:
        if family.verdict != "safe":
            continue
        roundtrip, downstream = family.roundtrip, family.downstream
        rows += [
            (f"`{family.name}`: modules fused", ", ".join(f"`{m}`" for m in family.fused_modules) or "none"),
            (
                "original-format re-save",
                f"{roundtrip.tensors_compared} tensors bit-exact"
                + (", files byte-identical" if roundtrip.files_byte_identical else ""),
            ),
            ("fused weights = converted source weights", "yes (byte comparison)"),
            (
                "plain `from_pretrained` with `fusion_config` in config.json",
                f"fused, weights exact, max |output diff| {_number(downstream.max_abs_output_diff)}"
                f" (tolerance {_number(downstream.output_tolerance)}, {report.dtype})",
            ),
            ("fused layout reload", "weights exact" if family.fused_layout.weights_match else "not checked"),
        ]
    return rows


@dataclass(frozen=True)
class MatrixTable:
    family: str
    header: list[str]
    rows: list[list[str]]
    reasons: list[str]


def downstream_context(report: CheckReport, *, variant: bool) -> dict[str, Any]:
    """What the PR text or the variant card says about other transformers releases."""
    from hubfuse.check.downstream import summarize

    tables, outside_breaks, correct, story = [], [], [], []
    selection = None
    matrix_families = [
        f for f in report.families if f.verdict == "safe" and f.downstream.versions is not None
    ]
    for family in report.families:
        if family not in matrix_families:
            selection = selection or family.downstream.selection
            continue
        selection = family.downstream.selection
        check = family.fused_layout if variant else family.downstream
        header, rows = matrix_rows(check)
        tables.append(MatrixTable(family.name, header, rows, first_reasons(check)))
        prefix = f"`{family.name}`: " if len(matrix_families) > 1 else ""
        story += [prefix + line for line in release_story(check)]
        outside_breaks += summarize(family.downstream.cells, gating=False)
        correct += [c.transformers for c in check.cells if c.outcome == "safe" and not c.stand_in]
    return {
        "selection": selection,
        "matrix_tables": tables,
        "outside_breaks": list(dict.fromkeys(outside_breaks)),
        "release_story": story,
        "loads_correctly": sorted(set(correct), key=Version),
    }


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}"


def _families_text(families: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in families)


def auto_class_for(pipeline_tag: str | None) -> str:
    return {
        "image-text-to-text": "AutoModelForImageTextToText",
        "video-classification": "AutoModelForVideoClassification",
        "text-generation": "AutoModelForCausalLM",
    }.get(pipeline_tag or "", "AutoModel")


def pr_title(families: list[str]) -> str:
    return f"Enable fusion_config: {', '.join(families)} {PR_TITLE_SUFFIX}"


def render_pr_description(
    *, repo_id: str, report: CheckReport, source_sha: str, config_diff: str, pipeline_tag: str | None
) -> str:
    families = report.safe_families
    text = (
        _environment()
        .get_template("config_pr.md.j2")
        .render(
            families=[{"name": f, "why": family_why(f)} for f in families],
            families_text=_families_text(families),
            config_diff=config_diff,
            min_transformers=MIN_TRANSFORMERS,
            auto_class=auto_class_for(pipeline_tag),
            repo_id=repo_id,
            hubfuse_version=__version__,
            source_sha=source_sha,
            transformers_version=report.transformers_version,
            torch_version=report.torch_version,
            verification=verification_rows(report),
            marker=Marker(source_sha, tuple(families), __version__).to_json(),
            **downstream_context(report, variant=False),
        )
    )
    return redact(text)


def _string(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _strings(value: object) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def inherited_license(source_repo: str, source_url: str, inherited: dict[str, Any]) -> dict[str, str | None]:
    """The source card's license in a form the Hub accepts for the variant.

    A Hub license id is kept; any other id becomes `license: other` naming it, with a link to the source
    (the Hub refuses unknown ids); a license that is not an id at all cannot be carried over honestly,
    so the variant is refused.
    """
    value = inherited.get("license")
    name, link = _string(inherited.get("license_name")), _string(inherited.get("license_link"))
    if value is None:
        return {"license": None, "license_name": None, "license_link": None}
    if not isinstance(value, str) or not value.strip():
        raise BadInputError(
            f"{source_repo}: the model card's license {value!r} is not a license id, so the variant cannot "
            "carry it over; fix the source card or publish without --variant"
        )
    if value == OTHER:
        return {"license": OTHER, "license_name": name, "license_link": link or source_url}
    if is_hub_license(value):
        return {"license": value, "license_name": None, "license_link": None}
    slug = re.sub(r"[^a-z0-9.]+", "-", value.lower()).strip("-") or "custom"
    return {"license": OTHER, "license_name": name or slug, "license_link": link or source_url}


def render_variant_card(
    *,
    source_repo: str,
    source_url: str,
    variant_repo: str,
    report: CheckReport,
    source_sha: str,
    upstream_card: str | None,
) -> str:
    """The variant's README.md: ModelCardData metadata, hubfuse's section, the upstream body."""
    from huggingface_hub import ModelCard, ModelCardData
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    # The upstream metadata is only read from: eval results (`model-index`) are not carried over, so a
    # malformed one must not stop the variant.
    try:
        # ModelCard parses with plain yaml.safe_load: the block it will find is bounded first.
        if upstream_card and (block := REGEX_YAML_BLOCK.search(upstream_card)) is not None:
            load_metadata(block.group(2))
        upstream = ModelCard(upstream_card, ignore_metadata_errors=True) if upstream_card else None
    except (ValueError, yaml.YAMLError) as exc:
        raise BadInputError(f"{source_repo}: the model card's metadata cannot be read: {exc}") from exc
    inherited = upstream.data.to_dict() if upstream else {}
    families = report.safe_families
    marker = Marker(source_sha, tuple(families), __version__, source=source_repo)
    tags = list(
        dict.fromkeys([*_strings(inherited.get("tags")), "hubfuse", *(f"fusion-{f}" for f in families)])
    )
    language = inherited.get("language")
    data = ModelCardData(
        base_model=source_repo,
        **inherited_license(source_repo, source_url, inherited),
        pipeline_tag=_string(inherited.get("pipeline_tag")),
        library_name=_string(inherited.get("library_name")) or "transformers",
        language=language if isinstance(language, str) else (_strings(language) or None),
        tags=tags,
        # The marker again, as metadata: repo_info returns it, so a later run need not download the card.
        hubfuse=marker.to_dict(),
    )
    fused = sorted(
        {m: c for f in report.families if f.verdict == "safe" for m, c in f.fused_modules.items()}.items()
    )
    text = (
        _environment()
        .get_template("variant.md.j2")
        .render(
            card_yaml=data.to_yaml(),
            variant_repo=variant_repo,
            source_repo=source_repo,
            source_url=source_url,
            families_text=_families_text(families),
            fused_modules=fused,
            auto_class=auto_class_for(data.pipeline_tag),
            min_transformers=MIN_TRANSFORMERS,
            verification=verification_rows(report),
            source_sha=source_sha,
            hubfuse_version=__version__,
            transformers_version=report.transformers_version,
            torch_version=report.torch_version,
            marker=marker.to_json(),
            upstream_body=(upstream.text.strip() if upstream else ""),
            **downstream_context(report, variant=True),
        )
    )
    return redact(text)
