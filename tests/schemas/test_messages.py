"""The committed JSON Schemas are current and describe real messages."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from schemas.export import DEFAULT_DIR, rendered
from schemas.messages import ALL

VALIDATORS = {name: jsonschema.Draft202012Validator(schema) for name, schema in ALL.items()}


def test_committed_schema_files_are_current() -> None:
    expected = rendered()
    on_disk = {p.name: p.read_text() for p in Path(DEFAULT_DIR).glob("*.json")}
    assert on_disk == expected, "schemas/json is stale: run `python -m schemas.export` and commit"


@pytest.mark.parametrize("name", sorted(ALL))
def test_schemas_are_valid_draft_2020_12(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(ALL[name])


def test_transaction_schema_accepts_and_refuses() -> None:
    v = VALIDATORS["Transaction"]
    good = {"tx_id": "tx1", "ts": 1522540800000, "customer_id": "c1", "terminal_id": "t1", "amount": 12.34}
    assert v.is_valid(good)
    assert v.is_valid({**good, "extra": {"nested": True}})
    for bad in ({**good, "amount": -1}, {**good, "ts": "x"}, {k: good[k] for k in ("tx_id", "ts")},
                {**good, "customer_id": ""}):
        assert not v.is_valid(bad), bad


def test_feature_vector_file_matches_code() -> None:
    from schemas.features import FEATURE_NAMES, FEATURE_VERSION

    doc = json.loads((Path(DEFAULT_DIR) / "FeatureVector.json").read_text())
    assert doc["names"] == list(FEATURE_NAMES) and doc["version"] == FEATURE_VERSION
    assert doc["dtype"] == "float32" and len(doc["names"]) == 19
