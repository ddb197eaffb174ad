"""PyTorch runtimes (eager and torch.compile) behind the same Session surface as ORT."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import torch


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count for one call, restored after: opening or running a
    session never changes the process's setting for other code."""
    previous = torch.get_num_threads()
    if not threads or threads == previous:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class TorchSession:
    """Runs a tower's export wrapper in PyTorch: identical inputs and outputs to its graph."""

    def __init__(
        self,
        module: torch.nn.Module,
        input_names: tuple[str, ...],
        output_names: tuple[str, ...],
        compiled: bool = False,
        threads: int | None = None,
        bf16: bool = False,
    ):
        self.threads = threads
        self.bf16 = bf16
        self.module = torch.compile(module, dynamic=True) if compiled else module
        self.input_names = input_names
        self.output_names = output_names

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with (
            torch_threads(self.threads),
            torch.inference_mode(),
            torch.autocast("cpu", torch.bfloat16, enabled=self.bf16),
        ):
            outputs = self.module(*(torch.from_numpy(inputs[name]) for name in self.input_names))
        return {
            name: out.float().numpy() for name, out in zip(self.output_names, outputs, strict=True)
        }
