"""bench/bulk.py's pure parts: the batches it sends and how it counts the answers."""

from __future__ import annotations

from collections import Counter

import orjson

from bench.bulk import Batch, batch_body, outcomes_of, summarise


def test_a_batch_holds_distinct_keys_of_one_tenant() -> None:
    tasks = orjson.loads(batch_body("acme", "r1-00007", size=3))
    assert [t["idempotencyKey"] for t in tasks] == ["r1-00007-000", "r1-00007-001", "r1-00007-002"]
    assert {t["tenant"] for t in tasks} == {"acme"}


def test_answers_are_counted_task_by_task() -> None:
    results = [
        {"status": 202, "body": {"status": "accepted"}},
        {"status": 202, "body": {"status": "pending"}},
        {"status": 429, "body": {"status": 429}},
    ]
    body = orjson.dumps({"results": results})
    assert outcomes_of(207, body, 3) == Counter({"accepted": 1, "pending": 1, "rejected": 1})
    assert outcomes_of(503, b"{}", 3) == Counter({"error": 3})
    assert outcomes_of(207, body, 4) == Counter({"error": 4})  # a result missing
    assert outcomes_of(207, b"not json", 3) == Counter({"error": 3})


def test_the_rate_counts_tasks_answered_202() -> None:
    batches = [
        Batch("acme", "t1", 0.1, 207, Counter({"accepted": 90, "pending": 10})),
        Batch("acme", "t2", 0.3, None, Counter({"error": 100})),
    ]
    figures = summarise(batches, 2.0, 100)
    assert figures["tasks_per_s"] == 50.0
    assert figures["outcomes"] == {"accepted": 90, "pending": 10, "rejected": 0, "error": 100}
    assert figures["http_statuses"] == {"0": 1, "207": 1}
