"""Typed errors: every failure a user can hit names the thing and the problem."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class DuchoFastError(Exception):
    """Base class for errors that the CLI reports as a clean message and a non-zero exit."""


class ConfigError(DuchoFastError):
    """A configuration, option or model reference is invalid; nothing has run."""


class ExtractionError(DuchoFastError):
    """A run ended without the features it was asked for (nothing extracted, or failures
    under --strict); what did run is written and failures.tsv says why."""


class OutputError(DuchoFastError, OSError):
    """An output or cache folder cannot take the run's files: not creatable, not writable,
    a file, under /proc, full, or in use by another run. Also an OSError, for callers that
    catch those."""


class InputError(DuchoFastError):
    """Inputs handed to a session do not fit it (shape, type or range): a bug upstream of
    the session, reported with the input's name and what the session accepts."""


class ModelLoadError(DuchoFastError):
    """A model reference could not be resolved or loaded."""


class ArtifactError(DuchoFastError):
    """An artifact folder is missing, incomplete, tampered with, or was never validated."""


class RuntimeUnavailableError(DuchoFastError):
    """A requested runtime, provider or device is not usable here (never a silent fallback)."""


@dataclass(frozen=True)
class OutputMismatch:
    """One output that failed the fidelity gate, with the numbers that decided it."""

    graph: str
    output: str
    case: str
    min_cosine: float
    max_abs: float
    cosine_gate: float
    max_abs_gate: float | None

    def describe(self) -> str:
        gate = f"cosine >= {self.cosine_gate}"
        if self.max_abs_gate is not None:
            gate += f", max-abs <= {self.max_abs_gate:.3g}"
        return (
            f"{self.graph}/{self.output} [{self.case}]: min cosine {self.min_cosine:.6f}, "
            f"max-abs {self.max_abs:.3g} (gate: {gate})"
        )


class ExportValidationError(DuchoFastError):
    """The exported graph does not compute what the eager model computes."""

    def __init__(self, precision: str, mismatches: Sequence[OutputMismatch]):
        self.precision = precision
        self.mismatches = tuple(mismatches)
        lines = [f"{precision} export failed validation against eager PyTorch:"]
        lines += [f"  - {m.describe()}" for m in self.mismatches]
        super().__init__("\n".join(lines))
