"""The committed JSON Schemas in schemas/ agree with the pydantic event models."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from lapverse_streams.events.catalog import EVENT_TYPES
from lapverse_streams.events.champion_models import (
    ChampionChanged,
    ChampionCommand,
    ChampionPromoted,
    KaggleOutcome,
    KaggleStage,
)
from lapverse_streams.events.models import (
    CloudEvent,
    CompetitionCompleted,
    CompetitionDecision,
    CompetitionJoined,
    CompetitionRequest,
    CompetitionRequested,
    Complexity,
    DecisionReason,
    FinOpsTags,
    FlagConfig,
    Priority,
    Requirements,
    TaskDecision,
    TaskRequest,
    TaskRequested,
    TaskResult,
    TaskStarted,
    TenantConfig,
    VariantResultEvent,
    VariantRun,
    VariantSummary,
    WorkerStatus,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS_DIR = ROOT / "schemas"
REGENERATE = "run `python scripts/gen_schemas.py` and commit schemas/"


def load_generator() -> ModuleType:
    """scripts/gen_schemas.py, imported by path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "gen_schemas", ROOT / "scripts" / "gen_schemas.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = load_generator()
MODELS: dict[str, type[BaseModel]] = {**EVENT_TYPES, GEN.ENVELOPE: CloudEvent}


def tags() -> FinOpsTags:
    """Tags as the gateway stamps them."""
    return FinOpsTags(
        environment="test", tenant_id="acme", cost_center="research", owner="data", version="1"
    )


def request() -> TaskRequest:
    """A task request with every field set."""
    return TaskRequest(
        type="ANALYSIS",
        priority=Priority.HIGH,
        description="summarize the lap times",
        tenant="acme",
        platforms=["web"],
        cost_center="research",
        requirements=Requirements(complexity=Complexity.ADVANCED),
    )


def decision() -> TaskDecision:
    """An accepted decision."""
    return TaskDecision(
        task_id="t-1",
        idempotency_key="key-1",
        status="accepted",
        reason=DecisionReason.ACCEPTED,
        http_status=202,
        detail="accepted",
        cost_estimate_micros=40_000,
        request=request(),
        tags=tags(),
        decided_at_ms=1_700_000_000_000,
    )


def result() -> TaskResult:
    """A completed task with a result."""
    return TaskResult(
        task_id="t-1",
        status="completed",
        type="ANALYSIS",
        cost_center="research",
        duration_ms=120,
        attempts=1,
        cost_micros=40_000,
        result={"summary": "fast"},
        tags=tags(),
        finished_at_ms=1_700_000_000_500,
    )


def envelope() -> CloudEvent:
    """A task.requested envelope."""
    data = TaskRequested(**request().model_dump(), tags=tags())
    return CloudEvent(
        id="key-1",
        source="/lapverse/gateway",
        type="io.lapverse.task.requested.v1",
        subject="acme",
        time="2024-01-01T00:00:00.000Z",
        data=data.model_dump(mode="json", by_alias=True, exclude_none=True),
    )


def round_request() -> CompetitionRequest:
    """A self-compete request with every field set."""
    return CompetitionRequest(
        tenant="acme",
        content="weekly demand",
        platforms=["twitter"],
        priority=Priority.HIGH,
        cost_center="research",
        competitors=["aggressive", "conservative"],
        family="forecast",
        input={"series": [1.0, 2.0, 3.0, 4.0], "horizon": 2},
    )


def round_decision() -> CompetitionDecision:
    """An accepted round."""
    return CompetitionDecision(
        competition_id="c-1",
        idempotency_key="key-2",
        status="accepted",
        reason=DecisionReason.ACCEPTED,
        http_status=202,
        detail="accepted",
        cost_estimate_micros=40_000,
        variant_cost_micros=20_000,
        competitors=["aggressive", "conservative"],
        deadline_ms=1_700_000_030_000,
        request=round_request(),
        tags=tags(),
        decided_at_ms=1_700_000_000_000,
    )


def variant_result() -> VariantResultEvent:
    """A scored variant run."""
    return VariantResultEvent(
        competition_id="c-1",
        tenant="acme",
        family="forecast",
        variant="conservative",
        competitors=["aggressive", "conservative"],
        deadline_ms=1_700_000_030_000,
        status="ok",
        score=0.95,
        cost_micros=20_000,
        duration_ms=3,
        output={"forecast": [5.0, 6.0]},
        tags=tags(),
        finished_at_ms=1_700_000_000_100,
    )


def summaries() -> dict[str, VariantSummary]:
    """One scored and one failed variant."""
    return {
        "conservative": VariantSummary(status="ok", score=0.95, cost_micros=20_000),
        "aggressive": VariantSummary(status="failed", cost_micros=20_000, error="boom"),
    }


def joined() -> CompetitionJoined:
    """A joined round."""
    return CompetitionJoined(
        competition_id="c-1",
        tenant="acme",
        family="forecast",
        competitors=["aggressive", "conservative"],
        variants=summaries(),
        champion="conservative",
        champion_output={"forecast": [5.0, 6.0]},
        missing=["aggressive"],
        cost_micros=40_000,
        tags=tags(),
        joined_at_ms=1_700_000_000_200,
    )


def completed() -> CompetitionCompleted:
    """A completed round."""
    return CompetitionCompleted(
        competition_id="c-1",
        idempotency_key="key-2",
        tenant="acme",
        family="forecast",
        scores={"conservative": 0.95},
        variants=summaries(),
        champion="conservative",
        missing=["aggressive"],
        cost_micros=40_000,
        cost_estimate_micros=40_000,
        promotion={"decision": "kept", "promote": False},
        tags=tags(),
        completed_at_ms=1_700_000_000_300,
    )


def promoted() -> ChampionPromoted:
    """A promotion with its evidence."""
    return ChampionPromoted(
        tenant="acme",
        family="forecast",
        champion="conservative",
        baseline="balanced",
        sequence=1,
        competition_id="c-1",
        evidence={"test": {"name": "mixture SPRT"}},
        flag_key="champion.acme.forecast",
        rollout_percent=10,
        tags=tags(),
        promoted_at_ms=1_700_000_000_300,
    )


def rolled_back() -> ChampionChanged:
    """An automatic rollback."""
    return ChampionChanged(
        tenant="acme",
        family="forecast",
        champion="balanced",
        previous="conservative",
        sequence=3,
        promotion_sequence=1,
        state="rolled-back",
        rollout_percent=100,
        reason="burn rate 1.40 ≥ 1",
        cause="burn-rate",
        actor="governor",
        flag_key="champion.acme.forecast",
        tags=tags(),
        changed_at_ms=1_700_000_000_400,
    )


def test_old_snake_case_evidence_still_decodes_as_camel_case() -> None:
    old = promoted().model_dump(mode="json", by_alias=True)
    old["evidence"] = {
        "baseline_kind": "incumbent",
        "sample": {"min_rounds": 30, "challenger_wins": 20, "baseline_wins": 5},
        "win_rates": {"slow_variant": 0.7},
        "slo": {"burn_rate": 0.2, "max_burn_rate": 1.0},
    }
    evidence = ChampionPromoted.model_validate(old).evidence
    assert evidence == {
        "baselineKind": "incumbent",
        "sample": {"minRounds": 30, "challengerWins": 20, "baselineWins": 5},
        "winRates": {"slow_variant": 0.7},  # variant names are not keys to rename
        "slo": {"burnRate": 0.2, "maxBurnRate": 1.0},
    }


@pytest.mark.parametrize(
    ("model", "field"), [("KaggleStage", "evidence"), ("CompetitionCompleted", "promotion")]
)
def test_every_evidence_field_renames_old_keys(model: str, field: str) -> None:
    kind = {"KaggleStage": KaggleStage, "CompetitionCompleted": CompetitionCompleted}[model]
    old = SAMPLES[kind]().model_dump(mode="json", by_alias=True)
    old[field] = {"baseline_kind": "incumbent", "win_rates": {"slow_variant": 0.7}}
    renamed = getattr(kind.model_validate(old), field)
    assert renamed == {"baselineKind": "incumbent", "winRates": {"slow_variant": 0.7}}


SAMPLES: dict[type[BaseModel], Callable[[], BaseModel]] = {
    ChampionChanged: rolled_back,
    ChampionCommand: lambda: ChampionCommand(
        command_id="cmd-1",
        tenant="acme",
        family="forecast",
        action="pin",
        variant="balanced",
        actor="ops@example.com",
        reason="incident 42",
        requested_at_ms=1_700_000_000_500,
    ),
    CompetitionRequested: lambda: CompetitionRequested(**round_request().model_dump(), tags=tags()),
    CompetitionDecision: round_decision,
    VariantRun: lambda: VariantRun(
        competition_id="c-1",
        tenant="acme",
        family="forecast",
        variant="conservative",
        competitors=["aggressive", "conservative"],
        input={"series": [1.0, 2.0, 3.0, 4.0], "horizon": 2},
        deadline_ms=1_700_000_030_000,
        cost_micros=20_000,
        tags=tags(),
    ),
    TaskStarted: lambda: TaskStarted(
        task_id="t-1",
        type="ANALYSIS",
        cost_center="research",
        tags=tags(),
        started_at_ms=1_700_000_000_100,
    ),
    VariantResultEvent: variant_result,
    CompetitionJoined: joined,
    CompetitionCompleted: completed,
    ChampionPromoted: promoted,
    KaggleStage: lambda: KaggleStage(
        competition_id="c-1",
        tenant="acme",
        family="forecast",
        champion="conservative",
        scores={"conservative": 0.95},
        burn_rate=0.2,
        flag_key="champion.acme.forecast",
        tags=tags(),
        requested_at_ms=1_700_000_000_300,
    ),
    WorkerStatus: lambda: WorkerStatus(
        worker_id="host:1",
        breakers={"news_ai": "closed"},
        consumer_lag={"lapverse-tasks": 3},
        table_keys={"dedup": 10},
        assigned_partitions=4,
        updated_at_ms=1_700_000_000_400,
    ),
    KaggleOutcome: lambda: KaggleOutcome(
        competition_id="c-1",
        tenant="acme",
        stage="sync",
        status="skipped",
        reason="no Kaggle credentials",
        tags=tags(),
        finished_at_ms=1_700_000_000_400,
    ),
    TaskRequested: lambda: TaskRequested(**request().model_dump(), tags=tags()),
    TaskDecision: decision,
    TaskResult: result,
    TenantConfig: lambda: TenantConfig(
        tenant_id="acme", mrr_micros=1_000_000_000, api_key_hashes=("a" * 64,), tags=tags()
    ),
    FlagConfig: lambda: FlagConfig(
        flag_key="task-type.ANALYSIS", definition={"variants": {"on": True}, "defaultVariant": "on"}
    ),
    CloudEvent: envelope,
}


def committed(name: str) -> dict[str, Any]:
    """The schema file as committed."""
    schema: dict[str, Any] = json.loads((SCHEMAS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return schema


def sample(name: str) -> dict[str, Any]:
    """A valid instance of the event's model, as it goes on the wire."""
    model = MODELS[name]
    assert model in SAMPLES, f"add a sample {model.__name__} to SAMPLES in {Path(__file__).name}"
    return SAMPLES[model]().model_dump(mode="json", by_alias=True, exclude_none=True)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_committed_schema_matches_model(name: str) -> None:
    path = SCHEMAS_DIR / f"{name}.json"
    assert path.is_file(), f"schemas/{name}.json is missing; {REGENERATE}"
    expected = GEN.render(GEN.schema_for(name, MODELS[name]))
    assert path.read_text(encoding="utf-8") == expected, (
        f"schemas/{name}.json is stale; {REGENERATE}"
    )


def test_no_stray_schema_files() -> None:
    on_disk = {path.stem for path in SCHEMAS_DIR.glob("*.json")}
    assert on_disk == set(GEN.all_schemas()), (
        f"schemas/ holds other files than the models; {REGENERATE}"
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_schema_is_valid_2020_12(name: str) -> None:
    Draft202012Validator.check_schema(committed(name))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_valid_instance_validates(name: str) -> None:
    errors = [e.message for e in Draft202012Validator(committed(name)).iter_errors(sample(name))]
    assert errors == []


@pytest.mark.parametrize("name", sorted(MODELS))
def test_instance_missing_a_required_field_is_rejected(name: str) -> None:
    schema = committed(name)
    validator = Draft202012Validator(schema)
    assert schema["required"], f"{name} has no required field to drop"
    for field in schema["required"]:
        instance = {k: v for k, v in sample(name).items() if k != field}
        assert not validator.is_valid(instance), f"{name} without {field!r} passed the schema"
        with pytest.raises(ValidationError):
            MODELS[name].model_validate(instance)
