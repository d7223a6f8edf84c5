"""hubfuse's signature in the texts it writes on the Hub: a hidden marker in the config PR and the
variant card (an HTML comment with a JSON object) recording hubfuse's version, the source commit and
the families. Later runs and batch checks read it to recognise hubfuse's own earlier work.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from hubfuse import strictjson

PR_MARKER = "hubfuse"
VARIANT_MARKER = "hubfuse-variant"
PR_TITLE_SUFFIX = "(hubfuse)"


@dataclass(frozen=True)
class Marker:
    source_sha: str
    families: tuple[str, ...]
    version: str
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "version": self.version,
            "source_sha": self.source_sha,
            "families": list(self.families),
        }
        if self.source:
            document["source"] = self.source
        return document

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> Marker | None:
        """None for anything that is not a well-formed marker."""
        try:
            return cls(
                source_sha=str(data["source_sha"]),
                families=tuple(data["families"]),
                version=str(data.get("version", "?")),
                source=data.get("source"),
            )
        except (KeyError, TypeError, AttributeError):
            return None


def find_marker(text: str | None, kind: str) -> Marker | None:
    if not text:
        return None
    match = re.search(rf"<!--\s*{re.escape(kind)}:\s*(\{{.*?\}})\s*-->", text, flags=re.DOTALL)
    if not match:
        return None
    try:
        return Marker.from_dict(strictjson.loads(match.group(1)))
    except ValueError:  # StrictJSONError included: PR text is anyone's input
        return None


def marker_from_card_data(card_data: Any) -> Marker | None:
    """The variant marker from a repo's card metadata (as repo_info returns it), if present."""
    data = card_data.to_dict() if hasattr(card_data, "to_dict") else card_data
    return Marker.from_dict(data.get("hubfuse")) if isinstance(data, dict) else None
