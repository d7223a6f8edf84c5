"""YAML from anyone (a repo's README front matter), parsed within bounds.

A few hundred bytes of aliases ("billion laughs") expand to millions of nodes once walked or
serialised, and PyYAML's safe loader expands them all. Here the document's size is bounded and
its composed node graph is measured before it is constructed: aliases may add at most
`ALIAS_EXPANSION_MAX_NODES` nodes. Dependency-free beyond PyYAML: the local hub and the variant
card share it.
"""

from __future__ import annotations

from typing import Any

import yaml

FRONT_MATTER_MAX_BYTES = 1024 * 1024
# Nodes that aliases may add beyond those written out: real cards use a handful of aliases, if any.
ALIAS_EXPANSION_MAX_NODES = 10_000

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class CardTooLarge(ValueError):
    pass


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand it by more than ALIAS_EXPANSION_MAX_NODES nodes.

    Sizes are computed bottom-up once per distinct node, so the check is linear in the document,
    whatever the expansion it measures.
    """
    expanded: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            expanded[key] = 1 + sum(expanded[id(child)] for child in _children(node))
            if expanded[key] > len(expanded) + ALIAS_EXPANSION_MAX_NODES:
                raise CardTooLarge(
                    f"YAML aliases expand the metadata beyond {ALIAS_EXPANSION_MAX_NODES} extra nodes"
                )
            continue
        if key in expanded:
            continue
        if key in on_path:
            raise CardTooLarge("YAML metadata refers to itself through an alias")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in expanded)


class BoundedLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """A safe loader that refuses alias expansion beyond a small limit."""

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node


def load_metadata(raw: str) -> Any:
    """The YAML front matter as data; `CardTooLarge` or `yaml.YAMLError` when it cannot be taken."""
    if len(raw.encode("utf-8")) > FRONT_MATTER_MAX_BYTES:
        raise CardTooLarge(f"README metadata is larger than {FRONT_MATTER_MAX_BYTES} bytes")
    try:
        return yaml.load(raw, Loader=BoundedLoader)
    except RecursionError:
        raise CardTooLarge("README metadata is nested too deeply") from None
