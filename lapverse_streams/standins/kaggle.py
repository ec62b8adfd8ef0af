"""Kaggle API stand-in: the endpoints the real `kaggle` client (2.2.4) calls, kept in memory.

The client speaks RPC-style JSON, `POST <endpoint>/api/v1/<service>/<Method>`, with HTTP basic
auth (username, key). It PUTs file bytes to the `createUrl` StartBlobUpload returns and GETs
notebook output from the `url`s ListKernelSessionOutput returns, both without auth. Errors
answer `{"code": <status>, "message": ...}`, which the client raises as `HTTPError`.
`GET /control/state` shows what was stored; `PUT /control/kernels/<owner>/<slug>`
`{"status"?, "score"?, "failureMessage"?}` sets a notebook's last session.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import itertools
import random
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from lapverse_streams.standins.control import (
    FAULTS,
    Faults,
    Handler,
    add_control_routes,
    local_url,
    read_json_object,
    serve,
)

API = "/api/v1"
KERNEL_STATUSES = frozenset({"QUEUED", "RUNNING", "COMPLETE", "ERROR", "CANCEL_REQUESTED"})
JSON = dict[str, Any]
Rpc = Callable[[JSON, str], JSON]


class ApiError(Exception):
    """An error answer with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def api_error(status: int, message: str) -> web.Response:
    """The error body the Kaggle client understands."""
    return web.json_response({"code": status, "message": message}, status=status)


@dataclass
class Blob:
    """An upload started by StartBlobUpload and filled by PUTs."""

    name: str
    content_length: int
    data: bytearray = field(default_factory=bytearray)


@dataclass
class Version:
    """One version of a dataset or a model instance, with its files by name."""

    number: int
    notes: str
    files: dict[str, JSON]
    metadata: JSON = field(default_factory=dict)

    def to_json(self) -> JSON:
        """The version, each file with its size and (lossy UTF-8) text."""
        files = {
            name: {"size": len(f["data"]), "text": f["data"].decode("utf-8", "replace")}
            | _pick(f, "description", "columns")
            for name, f in self.files.items()
        }
        return {
            "number": self.number,
            "notes": self.notes,
            "metadata": self.metadata,
            "files": files,
        }


@dataclass
class Kernel:
    """A notebook's last session: its status and output files."""

    status: str = "COMPLETE"
    failure_message: str | None = None
    outputs: dict[str, bytes] = field(default_factory=dict)


def _pick(body: JSON, *keys: str) -> JSON:
    return {key: body[key] for key in keys if key in body}


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


def _framework_slug(framework: str) -> str:
    return framework.removeprefix("MODEL_FRAMEWORK_").lower()


@dataclass
class KaggleStore:
    """Uploads, datasets, notebooks, models and the request log; one method per RPC."""

    credentials: Mapping[str, str] | None = None
    api_key: str | None = None
    blobs: dict[str, Blob] = field(default_factory=dict)
    datasets: dict[str, JSON] = field(default_factory=dict)
    kernels: dict[str, Kernel] = field(default_factory=dict)
    models: dict[str, JSON] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def rpcs(self) -> dict[str, Rpc]:
        """`<service>/<Method>` -> the method answering it with `(body, origin)`."""
        return {
            "blobs.BlobApiService/StartBlobUpload": self.start_blob_upload,
            "datasets.DatasetApiService/GetDatasetStatus": self.get_dataset_status,
            "datasets.DatasetApiService/CreateDataset": self.create_dataset,
            "datasets.DatasetApiService/CreateDatasetVersion": self.create_dataset_version,
            "kernels.KernelsApiService/GetKernelSessionStatus": self.get_kernel_session_status,
            "kernels.KernelsApiService/ListKernelSessionOutput": self.list_kernel_session_output,
            "models.ModelApiService/GetModel": self.get_model,
            "models.ModelApiService/CreateModel": self.create_model,
            "models.ModelApiService/GetModelInstance": self.get_model_instance,
            "models.ModelApiService/CreateModelInstance": self.create_model_instance,
            "models.ModelApiService/CreateModelInstanceVersion": self.create_instance_version,
        }

    def check_auth(self, header: str | None) -> str | None:
        """Why `Authorization` (basic username:key, or bearer key) is refused, or None."""
        scheme, _, value = (header or "").partition(" ")
        if scheme == "Basic":
            try:
                username, _, key = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return "malformed basic credentials"
            known = self.credentials is None or _same(self.credentials.get(username, ""), key)
        elif scheme == "Bearer":
            username, key = "bearer", value
            known = self.credentials is None or key in self.credentials.values()
        else:
            return "missing credentials"
        if not username or not key:
            return "empty username or key"
        return None if known and (self.api_key is None or _same(self.api_key, key)) else "wrong key"

    def start_blob_upload(self, body: JSON, origin: str) -> JSON:
        """A token for a blob of `contentLength` bytes named `name`, and where to PUT it."""
        token = secrets.token_urlsafe(16)
        self.blobs[token] = Blob(str(body.get("name", "")), int(body.get("contentLength", 0)))
        return {"token": token, "createUrl": f"{origin}/upload/{token}"}

    def write_blob(self, token: str, data: bytes, content_range: str | None) -> bool:
        """Store (part of) a blob; True once every byte arrived. `bytes */N` only asks."""
        blob = self.blobs.get(token)
        if blob is None:
            raise ApiError(404, "unknown or expired upload")
        part = re.fullmatch(r"bytes (\d+)-\d+/\d+", content_range or "")
        if part:
            del blob.data[int(part[1]) :]
            blob.data += data
        elif not (content_range or "").startswith("bytes */"):
            blob.data = bytearray(data)
        return len(blob.data) >= blob.content_length

    def _files(self, specs: list[JSON]) -> dict[str, JSON]:
        """The files `[{token, description?, columns?}]` of a create request."""
        files = {}
        for spec in specs:
            blob = self.blobs.get(str(spec.get("token")))
            if blob is None or len(blob.data) != blob.content_length:
                raise ApiError(400, f"upload token {spec.get('token')!r} is unknown or incomplete")
            files[blob.name] = {"data": bytes(blob.data), **_pick(spec, "description", "columns")}
        return files

    def _dataset(self, owner: object, slug: object) -> JSON:
        found = self.datasets.get(f"{owner}/{slug}")
        if found is None:
            raise ApiError(404, f"dataset {owner}/{slug} not found")
        return found

    def get_dataset_status(self, body: JSON, origin: str) -> JSON:
        """READY for a known dataset, else 404."""
        self._dataset(body.get("ownerSlug"), body.get("datasetSlug"))
        return {"status": "READY"}

    def create_dataset(self, body: JSON, origin: str) -> JSON:
        """A new dataset with version 1."""
        ref = f"{body.get('ownerSlug')}/{body.get('slug')}"
        if ref in self.datasets:
            raise ApiError(409, f"dataset {ref} already exists")
        metadata = _pick(body, "title", "subtitle", "description", "categoryIds")
        self.datasets[ref] = {
            **_pick(body, "title", "licenseName", "isPrivate"),
            "versions": [
                Version(1, "Initial release", self._files(body.get("files", [])), metadata)
            ],
        }
        return {"ref": ref, "url": f"{origin}/datasets/{ref}", "status": "ok"}

    def create_dataset_version(self, request: JSON, origin: str) -> JSON:
        """A new version of an existing dataset."""
        owner, slug = request.get("ownerSlug"), request.get("datasetSlug")
        versions: list[Version] = self._dataset(owner, slug)["versions"]
        body = request.get("body") or {}
        files = self._files(body.get("files", []))
        metadata = _pick(body, "subtitle", "description", "categoryIds")
        versions.append(Version(len(versions) + 1, body.get("versionNotes", ""), files, metadata))
        return {
            "ref": f"{owner}/{slug}",
            "url": f"{origin}/datasets/{owner}/{slug}",
            "status": "ok",
        }

    def set_kernel(
        self,
        ref: str,
        *,
        status: str = "COMPLETE",
        score: float | None = None,
        failure_message: str | None = None,
    ) -> None:
        """Make notebook `owner/slug` report `status` and, given a score, output `score.json`."""
        if status not in KERNEL_STATUSES:
            raise ValueError(f"status must be one of {sorted(KERNEL_STATUSES)}")
        outputs = {} if score is None else {"score.json": orjson.dumps({"score": score})}
        self.kernels[ref] = Kernel(status, failure_message, outputs)

    def _kernel(self, body: JSON) -> tuple[str, Kernel]:
        ref = f"{body.get('userName')}/{body.get('kernelSlug')}"
        if ref not in self.kernels:
            raise ApiError(404, f"kernel {ref} not found")
        return ref, self.kernels[ref]

    def get_kernel_session_status(self, body: JSON, origin: str) -> JSON:
        """The notebook's status (and failure message)."""
        _, kernel = self._kernel(body)
        failure = {"failureMessage": kernel.failure_message} if kernel.failure_message else {}
        return {"status": kernel.status, **failure}

    def list_kernel_session_output(self, body: JSON, origin: str) -> JSON:
        """Where to download each output file; one page."""
        ref, kernel = self._kernel(body)
        return {
            "files": [
                {"fileName": name, "url": f"{origin}/kernel-output/{ref}/{name}"}
                for name in sorted(kernel.outputs)
            ]
        }

    def _model(self, owner: object, slug: object) -> JSON:
        found = self.models.get(f"{owner}/{slug}")
        if found is None:
            raise ApiError(404, f"model {owner}/{slug} not found")
        return found

    def get_model(self, body: JSON, origin: str) -> JSON:
        """The model without its instances."""
        model = self._model(body.get("ownerSlug"), body.get("modelSlug"))
        return {k: v for k, v in model.items() if k != "instances"}

    def create_model(self, body: JSON, origin: str) -> JSON:
        """A new model without instances."""
        ref = f"{body.get('ownerSlug')}/{body.get('slug')}"
        if ref in self.models:
            raise ApiError(409, f"model {ref} already exists")
        model_id = next(self._ids)
        fields = _pick(body, "slug", "title", "description", "isPrivate")
        self.models[ref] = {"id": model_id, "ref": ref, **fields, "instances": {}}
        return {"id": model_id, "ref": ref, "url": f"{origin}/models/{ref}"}

    def _instance(self, body: JSON) -> tuple[JSON, JSON]:
        model = self._model(body.get("ownerSlug"), body.get("modelSlug"))
        key = f"{body.get('framework')}/{body.get('instanceSlug')}"
        if key not in model["instances"]:
            raise ApiError(404, f"model instance {model['ref']}/{key} not found")
        return model, model["instances"][key]

    def get_model_instance(self, body: JSON, origin: str) -> JSON:
        """The instance and its latest version number."""
        _, instance = self._instance(body)
        fields = {k: v for k, v in instance.items() if k != "versions"}
        return {**fields, "versionNumber": len(instance["versions"])}

    def create_model_instance(self, request: JSON, origin: str) -> JSON:
        """A new instance of an existing model, with version 1."""
        model = self._model(request.get("ownerSlug"), request.get("modelSlug"))
        body = request.get("body") or {}
        framework, slug = str(body.get("framework")), str(body.get("instanceSlug"))
        if f"{framework}/{slug}" in model["instances"]:
            raise ApiError(409, f"model instance {framework}/{slug} already exists")
        instance_id = next(self._ids)
        model["instances"][f"{framework}/{slug}"] = {
            "id": instance_id,
            **_pick(body, "instanceSlug", "framework", "licenseName", "overview"),
            "versions": [Version(1, "Initial version", self._files(body.get("files", [])))],
        }
        ref = f"{model['ref']}/{_framework_slug(framework)}/{slug}/1"
        return {"id": instance_id, "ref": ref, "url": f"{origin}/models/{ref}"}

    def create_instance_version(self, request: JSON, origin: str) -> JSON:
        """A new version of an existing model instance."""
        model, instance = self._instance(request)
        body = request.get("body") or {}
        versions: list[Version] = instance["versions"]
        number = len(versions) + 1
        versions.append(
            Version(number, body.get("versionNotes", ""), self._files(body.get("files", [])))
        )
        slugs = f"{_framework_slug(instance['framework'])}/{instance['instanceSlug']}"
        ref = f"{model['ref']}/{slugs}/{number}"
        return {"id": next(self._ids), "ref": ref, "url": f"{origin}/models/{ref}"}

    def to_json(self) -> JSON:
        """The body of `GET /control/state`."""

        def with_versions(entity: JSON) -> JSON:
            return {**entity, "versions": [v.to_json() for v in entity["versions"]]}

        return {
            "requests": list(self.requests),
            "datasets": {ref: with_versions(d) for ref, d in self.datasets.items()},
            "kernels": {
                ref: {"status": k.status, "outputs": sorted(k.outputs)}
                for ref, k in self.kernels.items()
            },
            "models": {
                ref: m | {"instances": {k: with_versions(i) for k, i in m["instances"].items()}}
                for ref, m in self.models.items()
            },
        }


def _faults_and_auth(store: KaggleStore, faults: Faults) -> Middleware:
    """Log, delay, maybe fail (503), check auth on the API, and answer ApiErrors."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/control") or request.path == "/healthz":
            return await handler(request)
        store.requests.append(f"{request.method} {request.path}")
        faults.requests += 1
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.should_fail():
            faults.failures += 1
            return api_error(503, "Kaggle stand-in: injected failure")
        if request.path.startswith(API):
            refused = store.check_auth(request.headers.get("Authorization"))
            if refused is not None:
                return api_error(401, refused)
        try:
            return await handler(request)
        except ApiError as exc:
            return api_error(exc.status, str(exc))

    return middleware


async def _body(request: web.Request) -> JSON:
    body = await read_json_object(request)
    if isinstance(body, web.Response):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _add_routes(app: web.Application, store: KaggleStore) -> None:
    rpcs = store.rpcs()

    async def rpc(request: web.Request) -> web.Response:
        method = rpcs.get(f"{request.match_info['service']}/{request.match_info['method']}")
        if method is None:
            raise ApiError(404, f"the stand-in does not implement {request.path}")
        # Proxied requests carry the URL the client meant (http://localhost:7777/...).
        return web.json_response(method(await _body(request), str(request.url.origin())))

    async def upload(request: web.Request) -> web.Response:
        data, content_range = await request.read(), request.headers.get("Content-Range")
        complete = store.write_blob(request.match_info["token"], data, content_range)
        return web.json_response({}, status=200 if complete else 308)

    async def kernel_file(request: web.Request) -> web.Response:
        info = request.match_info
        kernel = store.kernels.get(f"{info['owner']}/{info['slug']}")
        data = None if kernel is None else kernel.outputs.get(info["name"])
        if data is None:
            raise ApiError(404, "no such output file")
        return web.Response(body=data, content_type="application/octet-stream")

    async def state(_: web.Request) -> web.Response:
        return web.json_response(store.to_json())

    async def put_kernel(request: web.Request) -> web.Response:
        body = await read_json_object(request)
        if isinstance(body, web.Response):
            return body
        ref = f"{request.match_info['owner']}/{request.match_info['slug']}"
        try:
            store.set_kernel(
                ref,
                status=str(body.get("status", "COMPLETE")),
                score=body.get("score"),
                failure_message=body.get("failureMessage"),
            )
        except ValueError as exc:
            return api_error(400, str(exc))
        return web.json_response({"ref": ref})

    app.router.add_post(API + "/{service}/{method}", rpc)
    app.router.add_put("/upload/{token}", upload)
    app.router.add_get("/kernel-output/{owner}/{slug}/{name}", kernel_file)
    app.router.add_get("/control/state", state)
    app.router.add_put("/control/kernels/{owner}/{slug}", put_kernel)


STORE = web.AppKey("kaggle_store", KaggleStore)


def create_app(
    *,
    api_key: str | None = None,
    credentials: Mapping[str, str] | None = None,
    latency_ms: float = 0.0,
    failure_rate: float = 0.0,
    seed: int | None = None,
) -> web.Application:
    """The Kaggle stand-in; `app[STORE]` is what it keeps. It accepts any non-empty basic or
    bearer credentials, narrowed to `credentials` ({username: key}) and to `api_key` if given."""
    store = KaggleStore(credentials=credentials, api_key=api_key)
    faults = Faults(latency_ms, failure_rate, random.Random(seed))
    app = web.Application(middlewares=[_faults_and_auth(store, faults)])
    app[STORE] = store
    add_control_routes(app, faults)
    _add_routes(app, store)
    return app


@dataclass
class RunningKaggleStandin:
    """A started stand-in: where it listens and what it stored."""

    runner: web.AppRunner
    store: KaggleStore
    faults: Faults
    host: str
    port: int

    @property
    def base_url(self) -> str:
        """`http://host:port` of the stand-in."""
        return local_url(self.host, self.port)

    async def stop(self) -> None:
        """Stop listening; requests in flight are cut off."""
        await self.runner.cleanup()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()


async def start_kaggle_standin(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    credentials: Mapping[str, str] | None = None,
    latency_ms: float = 0.0,
    failure_rate: float = 0.0,
) -> RunningKaggleStandin:
    """Serve the stand-in on `host:port` (0: a free port) until `stop()`."""
    app = create_app(credentials=credentials, latency_ms=latency_ms, failure_rate=failure_rate)
    runner = await serve(app, host, port, access_log=None, shutdown_timeout=0.1)
    bound_port = int(runner.addresses[0][1])
    return RunningKaggleStandin(runner, app[STORE], app[FAULTS], host, bound_port)
