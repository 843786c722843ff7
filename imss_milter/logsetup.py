"""Where log lines go: stderr (foreground, systemd journal) or syslog (facility mail), like Postfix."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class SecondCachedFormatter(logging.Formatter):
    """A Formatter that formats the date and time once per second: the daemon logs a line per
    message, and strftime for each was a visible share of what a message costs."""

    def __init__(self, fmt: str):
        super().__init__(fmt)
        self._second: int | None = None
        self._stamp = ""

    def formatTime(self, record, datefmt=None):   # noqa: N802 - logging's name
        second = int(record.created)
        if second != self._second:       # two threads may both refresh it: same value, no harm
            self._stamp = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return self.default_msec_format % (self._stamp, record.msecs)


def skip_unused_record_fields() -> None:
    """No formats here use the caller's file/line, the thread or the multiprocessing name: not
    collecting them saves a stack walk and lookups per line (logging's documented switches)."""
    logging._srcfile = None          # noqa: SLF001 - documented in the logging HOWTO, "Optimization"
    logging.logThreads = False
    logging.logMultiprocessing = False


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
        handler.setFormatter(SecondCachedFormatter("%(asctime)s imss-milter[%(process)d]: %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(LEVELS.get(level, logging.INFO))
    logger.propagate = False
    skip_unused_record_fields()
