"""RFC 9457 problem details."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

PROBLEM_TYPE = "https://lapverse.io/problems/"
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(web.HTTPException):
    """An HTTP error rendered as application/problem+json."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.details: dict[str, Any] = {  # the body's members, for a batch item's answer
            "type": PROBLEM_TYPE + code,
            "title": TITLES.get(status, "Error"),
            "status": status,
            "detail": detail,
            **extra,
        }
        self.status_code = status
        super().__init__(
            headers=headers,
            body=orjson.dumps(self.details),
            content_type="application/problem+json",
        )


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """orjson-encoded application/json response."""
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )
