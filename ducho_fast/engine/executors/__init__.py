"""The executor table: each way to run a pass is one module (see `base.Executor`)."""

from ducho_fast.engine.executors.base import (
    EXECUTORS,
    Executor,
    PreparedPass,
    get_executor,
    register_executor,
)
from ducho_fast.engine.executors.local import LocalExecutor

register_executor(LocalExecutor())

__all__ = ["EXECUTORS", "Executor", "PreparedPass", "get_executor", "register_executor"]
