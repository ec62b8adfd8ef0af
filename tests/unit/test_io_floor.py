"""bench/io_floor.py: per task, the three reads and five writes of the admission path."""

from __future__ import annotations

from bench.io_floor import Topics, outputs
from bench.observer import ACCEPTED, COMPLETED
from bench.workload import task_record


def test_a_request_becomes_three_reads_and_five_writes_on_the_workers_topics() -> None:
    topics = Topics("p.")
    request = task_record("tenant-a", "task-1").value
    decision_step = outputs(topics, topics.tasks, request, 1)
    assert [sink for sink, _ in decision_step] == [topics.decisions, topics.dedup]
    decision = decision_step[0][1]
    assert ACCEPTED in decision  # what the bench's observer counts as admitted
    run_step = outputs(topics, topics.decisions, decision, 2)
    assert [sink for sink, _ in run_step] == [topics.progress, topics.results]
    result = run_step[1][1]
    assert COMPLETED in result  # counted as a completion
    charge_step = outputs(topics, topics.results, result, 3)
    assert [sink for sink, _ in charge_step] == [topics.ledger, topics.dedup]
    assert topics.tasks == "p.lapverse-tasks"
    assert topics.results == "p.lapverse-task-results"
