"""``python -m schemas.export [DIR]``: write the JSON Schema files (default ``schemas/json``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from schemas.bundle import feature_set
from schemas.messages import ALL, JsonSchema
from schemas.monitoring import MODEL_METRICS

DEFAULT_DIR = Path(__file__).with_name("json")


def rendered() -> dict[str, str]:
    files: dict[str, JsonSchema] = {f"{name}.schema.json": schema
                                    for name, schema in {**ALL, "ModelMetrics": MODEL_METRICS}.items()}
    files["FeatureVector.json"] = {"title": "FeatureVector",
                                   "description": "the model input: float32 row, names in this order",
                                   **feature_set()}
    return {name: json.dumps(doc, indent=2, sort_keys=True) + "\n" for name, doc in files.items()}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else DEFAULT_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (out / name).write_text(text)
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
