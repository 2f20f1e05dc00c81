"""The one JSON writer (issue 7): its own indenting walk writes the text ``json.dumps(indent=2,
default=str)`` writes, and leaves to ``json`` whatever is not a plain document."""

from __future__ import annotations

import enum
import json
from typing import Any

import numpy as np
import pytest

from corecensus.cli.output import json_text


class Kind(enum.Enum):
    A = "a"


class Level(enum.StrEnum):
    HIGH = "high"


PLAIN: list[Any] = [
    {},
    [],
    "",
    0,
    -0.0,
    1e-05,
    1e16,
    2.5e-07,
    5e-324,
    1.7976931348623157e308,
    123456789012345678901234567890,
    True,
    None,
    {"a": [], "b": {}, "c": [1, {"x": None, "y": [[], [{}]]}]},
    ("tuple", ["as", "a"], "list"),
    {"host [rack-7]": 'quote " back\\slash', "é\u2028\x00\x1f": "\ud800 lone surrogate"},
    [{"p_value": 3.3e-12, "crashes": 7, "evidence": ["line one", "two"]}] * 3,
]

NOT_PLAIN: list[Any] = [
    float("nan"),
    [1.0, float("inf")],
    {"x": -float("inf")},
    {1: "int key"},
    {None: 1, True: 2, 2.5: 3},
    Kind.A,
    {"level": Level.HIGH},
    np.float64(0.25),
    [np.int64(3), np.arange(3)],
    {"when": object},
]


@pytest.mark.parametrize("doc", PLAIN + NOT_PLAIN)
def test_json_text_is_json_dumps_indented(doc: Any) -> None:
    assert json_text(doc) == json.dumps(doc, indent=2, sort_keys=False, default=str)


def test_a_deep_document_from_the_analysis_contract_reads_back() -> None:
    doc = {
        "populations": [{"id": f"p{i}", "suspects": [{"cpu": i, "p": i / 7}]} for i in range(50)]
    }
    text = json_text(doc)
    assert json.loads(text) == doc
    assert text == json.dumps(doc, indent=2)
