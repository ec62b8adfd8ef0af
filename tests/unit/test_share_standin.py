"""The Share API stand-in honours `Idempotency-Key` like Stripe: a repeat is the first post."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from lapverse_streams.standins.share_api import Replies, Reply, create_app

KEY = "test-key"
BODY = {"platform": "twitter", "text": "Our champion won"}
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(api_key=KEY, remembered_keys=2))) as running:
        yield running


async def post(
    client: Client, body: dict[str, Any] = BODY, key: str | None = None
) -> tuple[int, dict[str, Any]]:
    """POST /v1/posts with the bearer key and, if given, the idempotency key."""
    headers = {"Authorization": f"Bearer {KEY}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    response = await client.post("/v1/posts", json=body, headers=headers)
    return response.status, await response.json()


async def test_the_same_key_twice_answers_the_first_post_with_200(client: Client) -> None:
    first_status, first = await post(client, key="round-1:twitter")
    again_status, again = await post(client, key="round-1:twitter")
    assert (first_status, again_status) == (201, 200)
    assert first["postId"].startswith("twitter-")
    assert again == first


@pytest.mark.parametrize(
    "changed", [{**BODY, "platform": "mastodon"}, {**BODY, "text": "Another text"}]
)
async def test_a_key_reused_with_another_body_is_refused(
    client: Client, changed: dict[str, Any]
) -> None:
    assert (await post(client, key="round-1:twitter"))[0] == 201
    status, answer = await post(client, changed, key="round-1:twitter")
    assert status == 422
    assert "round-1:twitter" in answer["error"]
    assert "already used" in answer["error"]


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_an_empty_or_too_long_key_is_a_bad_request(client: Client, key: str) -> None:
    status, answer = await post(client, key=key)
    assert status == 400
    assert "255" in answer["error"]


async def test_a_key_of_255_characters_is_accepted(client: Client) -> None:
    assert (await post(client, key="k" * 255))[0] == 201
    assert (await post(client, key="k" * 255))[0] == 200


async def test_without_a_key_every_request_is_a_new_post(client: Client) -> None:
    first_status, first = await post(client)
    second_status, second = await post(client)
    assert (first_status, second_status) == (201, 201)
    assert first["postId"] != second["postId"]


async def test_a_refused_body_does_not_use_up_the_key(client: Client) -> None:
    assert (await post(client, {**BODY, "text": ""}, key="round-1:twitter"))[0] == 422
    assert (await post(client, key="round-1:twitter"))[0] == 201


async def test_the_least_recently_used_key_is_forgotten(client: Client) -> None:
    _, first = await post(client, key="a")
    await post(client, key="b")
    assert await post(client, key="a") == (200, first)
    await post(client, key="c")
    assert await post(client, key="a") == (200, first)
    assert (await post(client, key="b"))[0] == 201


def test_replies_keep_at_most_capacity_keys() -> None:
    replies = Replies(capacity=2)
    for key in "abc":
        replies.put(key, Reply(key, {"postId": key}))
    assert len(replies) == 2
    assert replies.get("a") is None
    assert replies.get("c") == Reply("c", {"postId": "c"})
    with pytest.raises(ValueError, match="capacity"):
        Replies(capacity=0)
