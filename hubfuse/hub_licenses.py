"""The license ids the Hugging Face Hub accepts in a card's `license` field.

Vendored from the Hub's documentation, huggingface/hub-docs `docs/hub/repositories-licenses.md`
(the `region licenses` table, commit 008d54d08fd9d5d05ed2840bebb0b61111326a15), plus the Llama 3.x
ids that Meta's own Hub cards use (`license: llama3.2`). huggingface_hub does not ship this list.
The Hub may have added ids since: a card using one of those is refused by the local hub and gets
`license: other` in a hubfuse variant, which the Hub accepts too.
"""

from __future__ import annotations

OTHER = "other"

HUB_LICENSE_IDS: frozenset[str] = frozenset(
    {
        "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m",
        "bigscience-bloom-rail-1.0", "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd",
        "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0",
        "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0",
        "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0",
        "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "cdla-sharing-1.0",
        "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0",
        "etalab-2.0", "eupl-1.1", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1",
        "lgpl-3.0", "isc", "lppl-1.3c", "ms-pl", "mpl-2.0", "odc-by", "odbl", "openrail++", "osl-3.0",
        "postgresql", "ofl-1.1", "ncsa", "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license",
        "llama2", "gemma", "unknown", OTHER,
        "llama3", "llama3.1", "llama3.2", "llama3.3",
    }
)  # fmt: skip


def is_hub_license(value: object) -> bool:
    return isinstance(value, str) and value in HUB_LICENSE_IDS
