"""Process-wide runtime tuning shared by the worker and the gateway."""

from __future__ import annotations

import gc


def tune_gc(thresholds: tuple[int, int, int]) -> None:
    """Collect young objects less often, and stop scanning what startup built.

    Reference counting frees almost everything; the cyclic collector only finds cycles, but a
    full pass walks every tracked object, so its pauses grow with the tables. `gc.freeze`
    moves the objects alive now (modules, app, handlers) out of every future pass.
    """
    gc.set_threshold(*thresholds)
    gc.freeze()
