"""The executor table: each way to run a pass is one module (see `base.Executor`)."""

from ducho_fast.engine.executors.base import (
    EXECUTORS,
    EngineOptions,
    Executor,
    PreparedPass,
    executor_scope,
    get_executor,
    register_executor,
)
from ducho_fast.engine.executors.gpus import GpusExecutor
from ducho_fast.engine.executors.local import LocalExecutor
from ducho_fast.engine.executors.ray_engine import RayExecutor  # imports ray only when run

register_executor(LocalExecutor())
register_executor(RayExecutor())
register_executor(GpusExecutor())

__all__ = [
    "EXECUTORS",
    "EngineOptions",
    "Executor",
    "PreparedPass",
    "executor_scope",
    "get_executor",
    "register_executor",
]
