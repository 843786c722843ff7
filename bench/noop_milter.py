"""The benchmark's floor: a pymilter milter that receives every message and does nothing with it.

It subscribes to the same callbacks as imss-milter (headers and body with
no reply, as imss-milter does) and accepts at end of message, so the
difference to imss-milter is the cost of imss-milter's own work.
"""

from __future__ import annotations

import sys

import Milter


class NoopMilter(Milter.Base):
    @Milter.noreply
    def header(self, name, value):
        return Milter.CONTINUE

    @Milter.noreply
    def eoh(self):
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk):
        return Milter.CONTINUE

    def eom(self):
        return Milter.CONTINUE


def main() -> None:
    socket = sys.argv[1]
    Milter.factory = NoopMilter
    Milter.runmilter("noop-milter", socket, timeout=60)


if __name__ == "__main__":
    main()
