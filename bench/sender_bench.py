"""Cost of sender filtering: the milter's CPU per message with it on and off, under Postfix.

Throughput on a shared 2-core machine moves by more than the 5% this has to
resolve, so this measures what sender filtering adds: CPU seconds of the
daemon's processes per message (from /proc), in alternating rounds of the
same load against two daemons that differ only in their sender_filtering
section (two DNSBL zones served by rbldnsd on loopback and cached, a
recipient directory, the IP Profiler). It also counts the DNS queries
rbldnsd saw: with the cache, one per zone for the whole run.

    python bench/sender_bench.py [--messages N] [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.run import cpu_seconds, make_message, pids_of, sender_filtering_config, smtp_source  # noqa: E402
from tests.helpers.daemon import MilterDaemon  # noqa: E402
from tests.helpers.postfix import PostfixInstance, SmtpSink  # noqa: E402
from tests.helpers.rbldnsd import Rbldnsd  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--sessions", type=int, default=4)
    args = parser.parse_args(argv)

    root = tempfile.mkdtemp(prefix="imss-sender-bench-")
    os.chmod(root, 0o755)
    message_file = os.path.join(root, "msg.eml")
    with open(message_file, "wb") as handle:
        handle.write(make_message(4096).replace(b"\r\n", b"\n"))
    recipients = os.path.join(root, "recipients.txt")
    with open(recipients, "w") as handle:
        handle.write("user@example.com\n")
    dns = Rbldnsd({"bl.bench.test": ("ip4set", "127.0.0.2 :127.0.0.2:listed\n"),
                   "dyn.bench.test": ("ip4set", "127.0.0.5 :127.0.0.10:dynamic\n")}).start()
    sink = SmtpSink(root).start(dump=False)
    postfix = PostfixInstance(root, relay_port=sink.port).start()
    daemons = {}
    for name, extra in (("off", ""), ("on", sender_filtering_config(dns.port, recipients))):
        directory = os.path.join(root, name)
        os.makedirs(directory)
        os.chmod(directory, 0o755)
        daemons[name] = MilterDaemon(directory, max_message_size="50MB", extra_config=extra).start()
    cost = {"off": [], "on": []}
    rate = {"off": [], "on": []}
    try:
        for round_number in range(args.rounds):
            order = ("off", "on") if round_number % 2 == 0 else ("on", "off")
            for name in order:
                daemon = daemons[name]
                postfix.set_milter(daemon.milter_spec)
                time.sleep(0.5)
                smtp_source(postfix.smtp_port, message_file, 10, args.sessions, 60)     # warm-up
                pids = pids_of(daemon.proc.pid)
                before = cpu_seconds(pids)
                wall = smtp_source(postfix.smtp_port, message_file, args.messages, args.sessions, 600)
                cost[name].append((cpu_seconds(pids) - before) / args.messages * 1000)
                rate[name].append(args.messages / wall)
        queries = dns.query_log()
    finally:
        postfix.stop()
        sink.stop()
        for daemon in daemons.values():
            daemon.stop()
        dns.stop()
        shutil.rmtree(root, ignore_errors=True)

    off, on = statistics.median(cost["off"]), statistics.median(cost["on"])
    print(f"Milter CPU per message, 4 KB, {args.sessions} sessions, median of {args.rounds} rounds "
          f"of {args.messages} messages (alternating):")
    print(f"  sender filtering off: {off:.2f} ms   ({statistics.median(rate['off']):.0f} msg/s)")
    print(f"  sender filtering on:  {on:.2f} ms   ({statistics.median(rate['on']):.0f} msg/s)")
    print(f"  added: {on - off:+.2f} ms per message = {(on - off) / off * 100:+.1f}% of the milter's CPU")
    print(f"  DNS queries rbldnsd answered for {args.rounds * (args.messages + 10)} connections: {len(queries)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
