"""Topic names of the public contract (spec section 3)."""

from typing import Final

TASKS: Final = "lapverse-tasks"
TASK_DECISIONS: Final = "lapverse-task-decisions"
TASK_RESULTS: Final = "lapverse-task-results"
SELF_COMPETE: Final = "lapverse-self-compete"
VARIANT_RUNS: Final = "lapverse-variant-runs"
VARIANT_RESULTS: Final = "lapverse-variant-results"
COMPETITION_RESULTS: Final = "lapverse-competition-results"
CHAMPIONS: Final = "lapverse-champions"
KAGGLE: Final = "lapverse-kaggle"
TENANTS: Final = "lapverse-tenants"
FLAGS: Final = "lapverse-flags"
DLQ: Final = "lapverse-dlq"
# Internal: joined rounds, keyed by tenant, so the governor that holds the tenant's ledger
# and evolution state settles them (variant results are keyed by competition id).
COMPETITION_JOINS: Final = "lapverse-competition-joins"
# Internal: task.started, keyed by tenant, when an executor takes a task (status `running`).
TASK_PROGRESS: Final = "lapverse-task-progress"
# Internal and compacted: each worker's latest heartbeat (breakers, lag) for /api/status.
WORKER_STATUS: Final = "lapverse-worker-status"
# Internal: champion commands (operator pin/unpin/rollback, Kaggle merges, rollout ticks),
# keyed by tenant, so the governor that owns the tenant's evolution decides them in order.
CHAMPION_COMMANDS: Final = "lapverse-champion-commands"

COMPACTED: Final = frozenset({TENANTS, FLAGS, WORKER_STATUS})
ALL: Final = (
    TASKS,
    TASK_DECISIONS,
    TASK_RESULTS,
    SELF_COMPETE,
    VARIANT_RUNS,
    VARIANT_RESULTS,
    COMPETITION_RESULTS,
    CHAMPIONS,
    KAGGLE,
    TENANTS,
    FLAGS,
    DLQ,
    COMPETITION_JOINS,
    TASK_PROGRESS,
    WORKER_STATUS,
    CHAMPION_COMMANDS,
)
