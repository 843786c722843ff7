"""Where log lines go: stderr (foreground, systemd journal) or syslog (facility mail), like Postfix."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def setup_logging(target: str = "stderr", level: str = "info", facility: str = "mail") -> None:
    """Configure the 'imss_milter' logger once for the process."""
    logger = logging.getLogger("imss_milter")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    if target == "syslog":
        address = "/dev/log" if os.path.exists("/dev/log") else ("localhost", 514)
        handler = logging.handlers.SysLogHandler(
            address=address,
            facility=logging.handlers.SysLogHandler.facility_names.get(facility, logging.handlers.SysLogHandler.LOG_MAIL))
        handler.setFormatter(logging.Formatter("imss-milter[%(process)d]: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s imss-milter[%(process)d]: %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(LEVELS.get(level, logging.INFO))
    logger.propagate = False
