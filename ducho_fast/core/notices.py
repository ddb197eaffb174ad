"""One-line notices: what a run decided for the user that they should hear about (a key
ignored, a default taken, the CPU used instead of a GPU). Sent to the `ducho_fast` logger at
WARNING, so they print on stderr with no set-up and tests can capture them."""

from __future__ import annotations

import logging

LOGGER = logging.getLogger("ducho_fast")


def notice(message: str) -> None:
    LOGGER.warning(message)
