"""ducho-fast's own log: progress lines on the console, third-party noise kept quiet, and a
run log file beside a run's outputs (Ducho writes one too).

The library logs to the `ducho_fast` logger; it never prints. `console()` gives that logger
a plain stderr handler (the CLI and long-running API calls use it) unless the user already
configured one. `quiet_third_party()` keeps ONNX Runtime's quantizer (`WARNING:root` lines),
transformers and Python warnings off the console; they still reach the run log.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOGGER = "ducho_fast"
RUN_LOG = "run.log"
_state = {"debug": False}


def get(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER}.{name}" if name else LOGGER)


def set_debug(on: bool) -> None:
    """--debug: tracebacks for errors and third-party logs on the console."""
    _state["debug"] = on


def debug() -> bool:
    return _state["debug"] or os.environ.get("DUCHO_FAST_DEBUG", "") not in ("", "0")


class ConsoleHandler(logging.StreamHandler):
    """Plain lines on stderr (looked up at each record, so test runners that swap sys.stderr
    see them)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler assigns it; we always read sys.stderr
        pass


def console(force: bool = False) -> None:
    """Show ducho-fast's progress lines on stderr, once, unless logging is already configured
    (then ours propagate to the user's handlers); the CLI forces it."""
    logger = get()
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.DEBUG if debug() else logging.INFO)
    if (logging.getLogger().handlers and not force) or any(
        isinstance(h, ConsoleHandler) for h in logger.handlers
    ):
        return
    logger.addHandler(ConsoleHandler())


def quiet_third_party() -> None:
    """Keep other libraries' warnings off the console unless --debug (the run log keeps them).

    ONNX Runtime's quantizer logs through the root logger, which would configure itself to
    print `WARNING:root:` lines; a root handler of our own prevents that.
    """
    if debug():
        logging.captureWarnings(True)
        logging.basicConfig(level=logging.WARNING)
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.captureWarnings(True)  # warnings.warn -> the `py.warnings` logger -> the run log
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    for name in ("transformers", "torch", "onnxruntime", "nncf", "openvino"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextmanager
def run_log(folder: Path, title: str) -> Iterator[Path]:
    """Append this run's log (ours at INFO, everyone's warnings) to `folder/run.log`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RUN_LOG
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    ours, root = get(), logging.getLogger()
    if ours.level == logging.NOTSET or ours.level > logging.INFO:
        ours.setLevel(logging.INFO)
    root.addHandler(handler)  # ours propagate to it; others' warnings reach it too
    file_only = logging.getLogger(f"{LOGGER}-run-log")  # start, end and tracebacks: file only
    file_only.propagate = False
    file_only.setLevel(logging.INFO)
    file_only.addHandler(handler)
    started = time.time()
    file_only.info("run started: %s", title)
    try:
        yield path
    except BaseException as exc:
        file_only.error("run failed: %s: %s", type(exc).__name__, exc, exc_info=True)
        raise
    finally:
        file_only.info("run ended after %.1f s", time.time() - started)
        file_only.removeHandler(handler)
        root.removeHandler(handler)
        handler.close()
