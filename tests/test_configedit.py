import json

import pytest

from hubfuse.configedit import set_top_level_key, unified_diff
from hubfuse.errors import BadInputError

SAVE_PRETRAINED_STYLE = (
    '{\n  "architectures": [\n    "X"\n  ],\n  "model_type": "qwen2_vl",\n  "vocab_size": 1.0\n}\n'
)


def test_insert_keeps_sorted_position_and_every_other_byte():
    edited = set_top_level_key(SAVE_PRETRAINED_STYLE, "fusion_config", {"patch_embeddings": True})
    assert edited == (
        '{\n  "architectures": [\n    "X"\n  ],\n'
        '  "fusion_config": {\n    "patch_embeddings": true\n  },\n'
        '  "model_type": "qwen2_vl",\n  "vocab_size": 1.0\n}\n'
    )
    diff = unified_diff(SAVE_PRETRAINED_STYLE, edited)
    removed = [line for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    assert removed == []  # additions only


def test_unsorted_file_appends_and_keeps_four_space_indent():
    text = '{\n    "z": 1,\n    "a": {"nested": [1, 2]}\n}'
    edited = set_top_level_key(text, "fusion_config", {"patch_embeddings": True})
    assert edited.startswith(text[: text.rindex("}") - 1].rstrip())
    assert '    "fusion_config": {\n        "patch_embeddings": true\n    }\n}' in edited
    assert list(json.loads(edited)) == ["z", "a", "fusion_config"]


def test_replace_existing_value_only():
    text = '{"a": 1, "fusion_config": {"old": false}, "b": 2}'
    assert (
        set_top_level_key(text, "fusion_config", {"new": True})
        == '{"a": 1, "fusion_config": {"new": true}, "b": 2}'
    )


def test_compact_and_empty_objects():
    assert set_top_level_key('{"b":1}', "a", True) in ('{"a": true, "b":1}', '{"b":1, "a": true}')
    assert json.loads(set_top_level_key("{}", "k", {"x": 1})) == {"k": {"x": 1}}


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", ""])
def test_refuses_non_objects(text):
    with pytest.raises(BadInputError):
        set_top_level_key(text, "fusion_config", {"patch_embeddings": True})
