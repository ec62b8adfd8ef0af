"""Write schemas/<event>.json and schemas/cloudevent.json from the pydantic event models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lapverse_streams.events.catalog import EVENT_TYPES
from lapverse_streams.events.models import CloudEvent

SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "schemas"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ID_PREFIX = "https://lapverse.io/schemas/"
ENVELOPE = "cloudevent"


def schema_for(name: str, model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of a model as it is serialized on the wire, named after its file."""
    schema = model.model_json_schema(by_alias=True, mode="serialization")
    schema["$schema"] = SCHEMA_DIALECT
    schema["$id"] = f"{ID_PREFIX}{name}.json"
    schema["title"] = name
    return schema


def all_schemas() -> dict[str, dict[str, Any]]:
    """Every schema by file stem: one per event short name, plus the CloudEvent envelope."""
    schemas = {name: schema_for(name, model) for name, model in EVENT_TYPES.items()}
    schemas[ENVELOPE] = schema_for(ENVELOPE, CloudEvent)
    return schemas


def render(schema: dict[str, Any]) -> str:
    """Deterministic file text: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> None:
    """Write every schema file into schemas/."""
    SCHEMAS_DIR.mkdir(exist_ok=True)
    for name, schema in all_schemas().items():
        (SCHEMAS_DIR / f"{name}.json").write_text(render(schema), encoding="utf-8")
        print(f"wrote schemas/{name}.json")


if __name__ == "__main__":
    main()
