"""torch -> ONNX (-> TensorRT) export with validation against eager.

`ducho_fast.export` is both this sub-package and the export function: the package is made
callable so `ducho_fast.export(config)` works however it was imported first.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path


class _CallableModule(types.ModuleType):
    def __call__(self, config) -> Path:
        from ducho_fast.export.api import export

        return export(config)


sys.modules[__name__].__class__ = _CallableModule
