"""Kaggle pipeline: sync competition results as a dataset version, evaluate a notebook's score,
promote the champion as a model instance version. The real one drives the `kaggle` client."""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from lapverse_streams.clients.breaker import RequestRefused, ServiceFailure, status_is_failure

MERGE_THRESHOLD = 0.85
DEFAULT_TIMEOUT_S = 60.0
NO_CREDENTIALS = "no Kaggle credentials (set KAGGLE_USERNAME and KAGGLE_KEY)"
FINOPS_KEYS = ("application", "environment", "tenantId", "costCenter", "owner", "version")
RESULTS_FILE = "results.csv"
SCORE_FILE = "score.json"
RESULT_COLUMNS = (
    *("competition_id", "tenant", "family", "variant", "status"),
    *("score", "cost_micros", "duration_ms", "champion"),
)
METADATA_FILES = frozenset(
    {"dataset-metadata.json", "model-metadata.json", "model-instance-metadata.json"}
)
# values of KAGGLE_API_ENVIRONMENT; TEST is http://localhost:7777
ENVIRONMENTS = frozenset({"PROD", "TEST", "LOCALHOST", "STAGING", "ADMIN", "QA"})
Stage = Literal["sync", "evaluate", "promote"]
StageStatus = Literal["completed", "skipped", "failed"]
JsonFiles = dict[str, str | dict[str, Any]]


@dataclass(frozen=True)
class StageOutcome:
    """What a stage did: completed, skipped (with why) or failed (with why)."""

    stage: Stage
    status: StageStatus
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class KaggleUnavailable(ServiceFailure):
    """Kaggle did not answer (in time), answered 5xx/408/429, or an upload did not finish."""


class KaggleRefused(RequestRefused):
    """Kaggle answered but refused the request (4xx, or an error in its answer)."""


class KagglePipeline(Protocol):
    """The Kaggle stages; service trouble raises KaggleUnavailable or KaggleRefused."""

    async def sync(self, competition: Mapping[str, Any], tags: Mapping[str, str]) -> StageOutcome:
        """Store a competition.completed (wire form) as a new version of the tenant's dataset."""
        ...

    async def evaluate(self, kernel_ref: str) -> StageOutcome:
        """Read `score.json` of notebook `owner/slug`; merge when the score reaches 0.85."""
        ...

    async def promote(
        self,
        champion: str,
        *,
        tenant: str,
        family: str,
        tags: Mapping[str, str],
        evidence: Mapping[str, Any] | None = None,
    ) -> StageOutcome:
        """Publish the champion as a new version of the tenant's model instance."""
        ...


@dataclass(frozen=True)
class KaggleApiKey:
    """A Kaggle username and (legacy) API key."""

    username: str
    key: str = field(repr=False)

    @classmethod
    def parse(cls, username: str | None, key: str | None) -> KaggleApiKey | None:
        """The key, or None unless both parts are set."""
        return cls(username, key) if username and key else None


@dataclass(frozen=True)
class KaggleTargets:
    """Where the stages write: `owner/<prefix>-<tenant>` datasets, `owner/<model>` instances."""

    owner_slug: str
    dataset_slug_prefix: str = "lapverse-results"
    model_slug: str = "lapverse-champion"
    framework: str = "other"

    def dataset_ref(self, tenant: str) -> str:
        """`owner/<prefix>-<tenant>`, cut to Kaggle's 50 characters."""
        dataset = slug(f"{self.dataset_slug_prefix}-{tenant}")[:50].rstrip("-")
        if len(dataset) < 6:
            raise ValueError(f"dataset slug {dataset!r} is shorter than 6 characters")
        return f"{self.owner_slug}/{dataset}"

    def instance_ref(self, tenant: str, family: str) -> str:
        """`owner/model/framework/<tenant>-<family>`."""
        return f"{self.owner_slug}/{self.model_slug}/{self.framework}/{slug(f'{tenant}-{family}')}"


def slug(text: str) -> str:
    """Lowercase letters, digits and single hyphens, as Kaggle slugs must be."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def should_merge(score: float, threshold: float = MERGE_THRESHOLD) -> bool:
    """Merge the feature flag when the notebook scores at least `threshold`."""
    return score >= threshold


def check_tags(tags: Mapping[str, str]) -> None:
    """Every FinOps tag must be set."""
    missing = [key for key in FINOPS_KEYS if not tags.get(key)]
    if missing:
        raise ValueError(f"FinOps tags missing: {', '.join(missing)}")


def finops_description(intro: str, tags: Mapping[str, str]) -> str:
    """`intro` and a `FinOps tags:` list: the description Kaggle keeps (markdown)."""
    return "\n".join([intro, "", "FinOps tags:", *(f"- {k}: {tags[k]}" for k in FINOPS_KEYS)])


def _get(data: Mapping[str, Any], camel: str, default: Any = None) -> Any:
    """`data[camel]`, or its snake_case twin."""
    return data.get(camel, data.get(re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower(), default))


def results_rows(competition: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per variant of the round."""
    variants: Mapping[str, Any] = _get(competition, "variants") or {}
    scores: Mapping[str, float] = _get(competition, "scores") or {}
    round_ = [_get(competition, key, "") for key in ("competitionId", "tenant", "family")]
    rows = []
    for name in sorted(set(variants) | set(scores)):
        summary: Mapping[str, Any] = variants.get(name) or {}
        score = scores.get(name, _get(summary, "score"))
        costs = [_get(summary, "costMicros"), _get(summary, "durationMs")]
        champion = name == _get(competition, "champion")
        values = [*round_, name, _get(summary, "status", "ok"), score, *costs, champion]
        rows.append(dict(zip(RESULT_COLUMNS, values, strict=True)))
    return rows


def results_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV with a header."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def dataset_files(ref: str, competition: Mapping[str, Any], tags: Mapping[str, str]) -> JsonFiles:
    """results.csv and dataset-metadata.json (tags in the description) for the dataset `ref`."""
    tenant = _get(competition, "tenant", "")
    intro = f"Competition results of tenant {tenant} from lapverse-streams."
    metadata = {
        "id": ref,
        "title": f"Lapverse results {tenant}"[:50],
        "licenses": [{"name": "CC0-1.0"}],
        "description": finops_description(intro, tags),
    }
    return {RESULTS_FILE: results_csv(results_rows(competition)), "dataset-metadata.json": metadata}


def model_files(instance_ref: str, champion: Mapping[str, Any]) -> JsonFiles:
    """champion.json and the model and instance metadata for `owner/model/framework/instance`."""
    owner, model, framework, instance = instance_ref.split("/")
    model_metadata = {
        "ownerSlug": owner,
        "slug": model,
        "title": "Lapverse champion",
        "isPrivate": True,
        "description": finops_description("Champions of lapverse-streams.", champion["tags"]),
    }
    instance_metadata = {
        "ownerSlug": owner,
        "modelSlug": model,
        "instanceSlug": instance,
        "framework": framework,
        "licenseName": "Apache 2.0",
        "overview": f"Champion {champion['champion']} of {champion['tenant']}/{champion['family']}",
    }
    return {
        "champion.json": dict(champion),
        "model-metadata.json": model_metadata,
        "model-instance-metadata.json": instance_metadata,
    }


def _write(folder: Path, files: JsonFiles) -> None:
    for name, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content, indent=2)
        (folder / name).write_text(text)


def parse_score(raw: bytes) -> float:
    """The `score` of a `{"score": <number>}` document; ValueError otherwise."""
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    score = document.get("score") if isinstance(document, dict) else None
    if not isinstance(score, int | float) or isinstance(score, bool):
        raise ValueError(f'{SCORE_FILE} is not {{"score": <number>}}: {raw[:100]!r}')
    return float(score)


def _http_status(exc: BaseException) -> int | None:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _classified(stage: Stage, exc: Exception) -> Exception:
    """requests' errors (OSError) and the client's refusals (ValueError) as ours."""
    status = _http_status(exc)
    message = f"kaggle {stage}:{f' HTTP {status}' if status else ''} {type(exc).__name__}: {exc}"
    if (status is None and isinstance(exc, OSError)) or (status and status_is_failure(status)):
        return KaggleUnavailable(message)
    return KaggleRefused(message)


def _exists(lookup: Callable[[], object]) -> bool:
    """False when `lookup` answers 404."""
    try:
        lookup()
    except OSError as exc:
        if _http_status(exc) == 404:
            return False
        raise
    return True


def _created(stage: Stage, response: Any) -> Any:
    if getattr(response, "error", None):
        raise KaggleRefused(f"kaggle {stage}: {response.error}")
    return response


@functools.cache
def _kaggle_api_class() -> Any:
    # Importing `kaggle` authenticates from the environment once (and prints help if it finds
    # nothing), so it is imported only when a key exists and a stage runs.
    from kaggle.api.kaggle_api_extended import KaggleApi, KaggleClient, KaggleEnv

    class PipelineKaggleApi(KaggleApi):  # type: ignore[misc]  # kaggle is untyped
        """KaggleApi on our key and environment, without its own retries."""

        def __init__(self, api_key: KaggleApiKey, environment: str) -> None:
            super().__init__()
            self.config_values = {"username": api_key.username, "key": api_key.key}
            self._kaggle_env = KaggleEnv["LOCAL" if environment == "LOCALHOST" else environment]

        def build_kaggle_client(self) -> Any:
            # KaggleApi's own picks PROD unless "--local": it ignores KAGGLE_API_ENVIRONMENT=TEST.
            return KaggleClient(
                env=self._kaggle_env,
                username=self.config_values["username"],
                password=self.config_values["key"],
                response_processor=self.get_response_processor(),
            )

        def with_retry(self, func: Callable[..., Any], *_: Any, **__: Any) -> Callable[..., Any]:
            return func  # the caller's retries and breaker decide

        def upload_files(
            self, request: Any, resources: Any, folder: str, *args: Any, **kwargs: Any
        ) -> None:
            # The client leaves out a file whose upload failed and carries on without it.
            super().upload_files(request, resources, folder, *args, **kwargs)
            wanted = [name for name in os.listdir(folder) if name not in METADATA_FILES]
            if len(request.files or []) < len(wanted):
                raise KaggleUnavailable(f"kaggle: an upload of {', '.join(wanted)} did not finish")

    return PipelineKaggleApi


class KaggleApiPipeline:
    """The stages on the real `kaggle` client, each in a worker thread with a deadline.

    Without a key every stage is skipped without touching the network. A stage that misses
    its deadline raises KaggleUnavailable; its thread ends when the client's socket does
    (the client sets no HTTP timeouts).
    """

    def __init__(
        self,
        api_key: KaggleApiKey | None,
        targets: KaggleTargets,
        *,
        environment: str = "PROD",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        merge_threshold: float = MERGE_THRESHOLD,
    ) -> None:
        if environment not in ENVIRONMENTS:
            raise ValueError(f"unknown Kaggle environment {environment!r}")
        self._api_key = api_key
        self._targets = targets
        self._environment = environment
        self._timeout_s = timeout_s
        self._merge_threshold = merge_threshold
        self._api: Any = None
        self._api_lock = threading.Lock()

    async def sync(self, competition: Mapping[str, Any], tags: Mapping[str, str]) -> StageOutcome:
        """Create the tenant's dataset, or a new version of it, from results.csv."""
        return await self._run("sync", lambda api, dir_: self._sync(api, dir_, competition, tags))

    async def evaluate(self, kernel_ref: str) -> StageOutcome:
        """The notebook's status, then its `score.json`; merge at the threshold."""
        return await self._run("evaluate", lambda api, dir_: self._evaluate(api, dir_, kernel_ref))

    async def promote(
        self,
        champion: str,
        *,
        tenant: str,
        family: str,
        tags: Mapping[str, str],
        evidence: Mapping[str, Any] | None = None,
    ) -> StageOutcome:
        """champion.json as a new instance version (creating the model and instance first)."""
        document: dict[str, Any] = {"champion": champion, "tenant": tenant, "family": family}
        document |= {"tags": dict(tags), "evidence": dict(evidence or {})}
        ref = self._targets.instance_ref(tenant, family)
        return await self._run("promote", lambda api, dir_: self._promote(api, dir_, ref, document))

    async def _run(self, stage: Stage, work: Callable[[Any, Path], StageOutcome]) -> StageOutcome:
        if self._api_key is None:
            return StageOutcome(stage, "skipped", NO_CREDENTIALS)
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._in_thread, stage, work), self._timeout_s
            )
        except TimeoutError as exc:
            timeout = f"kaggle {stage}: no answer within {self._timeout_s} s"
            raise KaggleUnavailable(timeout) from exc

    def _in_thread(self, stage: Stage, work: Callable[[Any, Path], StageOutcome]) -> StageOutcome:
        with tempfile.TemporaryDirectory(prefix=f"lapverse-kaggle-{stage}-") as folder:
            try:
                return work(self._kaggle_api(), Path(folder))
            except (OSError, ValueError) as exc:
                raise _classified(stage, exc) from exc

    def _kaggle_api(self) -> Any:
        with self._api_lock:
            if self._api is None:
                self._api = _kaggle_api_class()(self._api_key, self._environment)
            return self._api

    def _sync(
        self, api: Any, folder: Path, competition: Mapping[str, Any], tags: Mapping[str, str]
    ) -> StageOutcome:
        check_tags(tags)
        ref = self._targets.dataset_ref(str(_get(competition, "tenant", "")))
        _write(folder, dataset_files(ref, competition, tags))
        competition_id, champion = _get(competition, "competitionId"), _get(competition, "champion")
        created = not _exists(lambda: api.dataset_status(ref))
        if created:
            response = api.dataset_create_new(str(folder), public=False, quiet=True)
        else:
            notes = f"competition {competition_id}: champion {champion}"
            response = api.dataset_create_version(str(folder), notes, quiet=True)
        detail = {"dataset": ref, "url": _created("sync", response).url, "created": created}
        return StageOutcome("sync", "completed", None, detail | {"tags": dict(tags)})

    def _evaluate(self, api: Any, folder: Path, kernel_ref: str) -> StageOutcome:
        session = api.kernels_status(kernel_ref)
        state = session.status.name.lower()
        detail: dict[str, Any] = {"kernel": kernel_ref, "kernelStatus": state}
        if state != "complete":
            why = f": {session.failure_message}" if session.failure_message else ""
            return StageOutcome("evaluate", "failed", f"notebook status is {state}{why}", detail)
        api.kernels_output(kernel_ref, str(folder), file_pattern=r"^score\.json$", quiet=True)
        if not (folder / SCORE_FILE).is_file():
            return StageOutcome("evaluate", "failed", f"no {SCORE_FILE} in the output", detail)
        try:
            score = parse_score((folder / SCORE_FILE).read_bytes())
        except ValueError as exc:
            return StageOutcome("evaluate", "failed", str(exc), detail)
        merge = should_merge(score, self._merge_threshold)
        detail |= {"score": score, "merge": merge, "threshold": self._merge_threshold}
        return StageOutcome("evaluate", "completed", None, detail)

    def _promote(
        self, api: Any, folder: Path, instance_ref: str, champion: Mapping[str, Any]
    ) -> StageOutcome:
        check_tags(champion["tags"])
        _write(folder, model_files(instance_ref, champion))
        owner, model = instance_ref.split("/")[:2]
        created = not _exists(lambda: api.model_instance_get(instance_ref))
        if created:
            if not _exists(lambda: api.model_get(f"{owner}/{model}")):
                _created("promote", api.model_create_new(str(folder)))
            response = api.model_instance_create(str(folder), quiet=True)
        else:
            notes = f"champion {champion['champion']}"
            response = api.model_instance_version_create(
                instance_ref, str(folder), notes, quiet=True
            )
        _created("promote", response)
        detail = {"instance": instance_ref, "version": response.ref, "url": response.url}
        return StageOutcome("promote", "completed", None, detail | {"created": created})


@dataclass
class InMemoryKagglePipeline:
    """The stages in memory, notebook scores from `scores`; `available=False` is Kaggle down."""

    scores: dict[str, float] = field(default_factory=dict)
    has_credentials: bool = True
    available: bool = True
    merge_threshold: float = MERGE_THRESHOLD
    synced: list[tuple[dict[str, Any], dict[str, str]]] = field(default_factory=list)
    promoted: list[dict[str, Any]] = field(default_factory=list)

    def _gate(self, stage: Stage) -> StageOutcome | None:
        if not self.has_credentials:
            return StageOutcome(stage, "skipped", NO_CREDENTIALS)
        if not self.available:
            raise KaggleUnavailable(f"kaggle {stage}: unavailable")
        return None

    async def sync(self, competition: Mapping[str, Any], tags: Mapping[str, str]) -> StageOutcome:
        """Record the round and its tags."""
        if skipped := self._gate("sync"):
            return skipped
        check_tags(tags)
        self.synced.append((dict(competition), dict(tags)))
        return StageOutcome("sync", "completed", None, {"version": len(self.synced)})

    async def evaluate(self, kernel_ref: str) -> StageOutcome:
        """The configured score of `kernel_ref`; unknown notebooks are refused (404)."""
        if skipped := self._gate("evaluate"):
            return skipped
        if kernel_ref not in self.scores:
            raise KaggleRefused(f"kaggle evaluate: HTTP 404 kernel {kernel_ref} not found")
        score = self.scores[kernel_ref]
        detail = {"kernel": kernel_ref, "score": score}
        detail |= {"merge": should_merge(score, self.merge_threshold)}
        return StageOutcome("evaluate", "completed", None, detail)

    async def promote(
        self,
        champion: str,
        *,
        tenant: str,
        family: str,
        tags: Mapping[str, str],
        evidence: Mapping[str, Any] | None = None,
    ) -> StageOutcome:
        """Record the champion."""
        if skipped := self._gate("promote"):
            return skipped
        check_tags(tags)
        self.promoted.append({"champion": champion, "tenant": tenant, "family": family})
        return StageOutcome("promote", "completed", None, {"version": len(self.promoted)})
