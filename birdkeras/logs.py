"""The `birdkeras` logger: library modules report through `logging.getLogger(__name__)`
(children of "birdkeras"); the command line, a notebook or a test decides what is shown.

    from birdkeras import logs
    logs.configure(verbosity=0)   # INFO and above to stderr (-v: DEBUG, -q: WARNING)
"""

from __future__ import annotations

import logging
import sys

LOGGER = "birdkeras"


def configure(verbosity: int = 0, stream=None) -> logging.Logger:
    """Shows birdkeras' messages on `stream` (stderr): INFO at verbosity 0, DEBUG above,
    WARNING below. Calling it again replaces the handler it added, not others."""
    logger = logging.getLogger(LOGGER)
    for handler in [h for h in logger.handlers if getattr(h, "_birdkeras", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._birdkeras = True
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbosity > 0 else logging.INFO if verbosity == 0
                    else logging.WARNING)
    return logger
