"""Benchmark imss-milter under a real Postfix, side by side with no milter and a no-op milter.

Everything runs on loopback in one go, so the machine's noise hits every
configuration alike: a private Postfix relays to smtp-sink; smtp-source
pushes pre-formatted MIME messages (4 KB and 100 KB, with attachments) at
several concurrencies. Rounds alternate between the configurations (all
milters stay up; Postfix is switched between them), so a drift in the
machine's speed falls on each alike. For each configuration it prints
messages/second (median of the rounds), the ratio to the no-op milter on
the same socket type (median of each round's ratio to the no-op round
next to it), how busy the machine was, and the milter's CPU cores and
CPU milliseconds per message. A sequential
smtplib run measures per-message latency (p50/p99) for the added-latency
figure. Bounded: a fixed message count per round and a timeout per run.

    python bench/run.py [--quick] [--messages N] [--rounds R]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from email.message import EmailMessage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.helpers.daemon import MilterDaemon  # noqa: E402
from tests.helpers.net import free_port, wait_for_port, wait_for_unix_socket  # noqa: E402
from tests.helpers.postfix import PostfixInstance, SmtpSink  # noqa: E402
from tests.helpers.rbldnsd import Rbldnsd  # noqa: E402

SMTP_SOURCE = "/usr/sbin/smtp-source"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def make_message(size: int) -> bytes:
    """A MIME message of about size bytes: text, an HTML alternative, a PDF and a zip attachment."""
    msg = EmailMessage()
    msg["From"] = "Sender <sender@example.org>"
    msg["To"] = "user@example.com"
    msg["Subject"] = "Quarterly figures and the minutes of the meeting"
    text = ("Dear colleague, please find the figures attached. Regards.\n" * 40
            + "The full report: https://reports.example.net/q3/figures?id=42\n")
    msg.set_content(text)
    msg.add_alternative(f"<html><body><p>{text}</p><p><a href=\"https://www.example.net/minutes\">minutes</a>"
                        f" and <a href='http://portal.example.org/'>the portal</a></p></body></html>",
                        subtype="html")
    padding = max(0, size - 6000)
    pdf = b"%PDF-1.4\n" + (b"1 0 obj << /Length 100 >> stream\n" + b"0" * 64 + b"\nendstream endobj\n") * (
        padding // 2 // 110 + 1)
    msg.add_attachment(pdf[: padding // 2 + 200], maintype="application", subtype="pdf", filename="figures.pdf")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("minutes.txt", ("Minutes of the meeting. " * 20 + "\n") * (padding // 2 // 500 + 1))
        archive.writestr("notes/readme.txt", "notes\n")
    msg.add_attachment(buffer.getvalue(), maintype="application", subtype="zip", filename="minutes.zip")
    return msg.as_bytes()


def pids_of(root_pid: int) -> list[int]:
    """root_pid and its children (the daemon's workers)."""
    pids = [root_pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == root_pid:
                    pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return pids


def cpu_seconds(pids) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / CLK_TCK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all cores from /proc/stat: busy/total over a run says whether it was CPU-bound."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]            # idle + iowait
    total = sum(fields[:8])                 # guest time is already counted in user
    return total - idle, total


def smtp_source(port: int, message_file: str, count: int, sessions: int, timeout: float) -> float:
    """Send count messages over sessions parallel connections; returns the wall time."""
    started = time.perf_counter()
    result = subprocess.run(
        [SMTP_SOURCE, "-s", str(sessions), "-m", str(count), "-F", message_file,
         "-f", "sender@example.org", "-t", "user@example.com", "-M", "bench.example.org",
         f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {result.stdout}{result.stderr}")
    return elapsed


def latencies(port: int, raw: bytes, count: int) -> list[float]:
    """Per-message time for sequential sends over one connection (MAIL to end of DATA)."""
    times = []
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        for _ in range(count):
            started = time.perf_counter()
            client.sendmail("sender@example.org", ["user@example.com"], raw)
            times.append(time.perf_counter() - started)
    return times


def sender_filtering_config(dns_port: int, recipients_file: str) -> str:
    """Sender filtering as a site would run it: two DNSBL zones (cached), a directory, the IP Profiler."""
    return f"""\
dns: {{nameservers: ["127.0.0.1"], port: {dns_port}, timeout: 2s}}
sender_filtering:
  blocked_hosts: ["198.51.100.7"]
  blocked_senders: ["*@spam.test"]
  reputation:
    zones:
      - {{zone: bl.bench.test, codes: {{"127.0.0.2": spam-source}}, action: reject}}
      - {{zone: dyn.bench.test, codes: {{"127.0.0.10": dynamic}}, action: tag}}
  directory:
    files: [{recipients_file}]
  ip_profiler:
    dha: {{threshold: 10, window: 60s, block: 1h, action: tempfail}}
    bounce: {{threshold: 20, window: 60s, block: 30m, action: tempfail}}
"""


URL_RULES = """\
policies:
  - name: phishing-links
    route: {from: any, to: internal}
    when: {url.reputation: [phishing, malware]}
    actions: [{quarantine: {area: phishing}}]
"""


def engines_config(dns_port: int) -> str:
    """Every engine on: built-in antivirus and spam (with its score header) and URIBL lookups."""
    return f"""\
dns: {{nameservers: ["127.0.0.1"], port: {dns_port}, timeout: 2s}}
engines:
  antivirus: {{backend: builtin}}
  spam: {{backend: builtin, score_header: X-IMSS-Spam-Score}}
  url:
    zones:
      - {{zone: uribl.bench.test, type: domain, codes: {{"127.0.1.4": phishing}}}}
"""


def percentile(values, fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


class NoopMilter:
    def __init__(self, root: str, spec: str):
        self.spec = spec
        self.root = root
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, os.path.join(REPO, "bench", "noop_milter.py"), self.spec],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.spec.startswith("inet:"):
            port, _, host = self.spec[5:].partition("@")
            wait_for_port(int(port), host, proc=self.proc)
        else:
            path = self.spec[5:]
            wait_for_unix_socket(path, proc=self.proc)
            os.chmod(path, 0o666)
        return self

    @property
    def milter_spec(self):
        if self.spec.startswith("inet:"):
            port, _, host = self.spec[5:].partition("@")
            return f"inet:{host}:{port}"
        return self.spec

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=400, help="messages per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="4,16")
    parser.add_argument("--sizes", default="4096,102400")
    parser.add_argument("--latency-messages", type=int, default=150)
    parser.add_argument("--sockets", default="unix,inet")
    parser.add_argument("--quick", action="store_true", help="a short run for smoke testing")
    parser.add_argument("--sender-filtering", action="store_true",
                        help="also run imss-milter with sender filtering on (rbldnsd on loopback, cached)")
    parser.add_argument("--engines", action="store_true",
                        help="also run imss-milter with the URL engine (URIBL on rbldnsd) and a spam score "
                             "header beside the default antivirus and spam engines")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.rounds, args.latency_messages = 60, 1, 30
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    sockets = args.sockets.split(",")

    root = tempfile.mkdtemp(prefix="imss-bench-")
    os.chmod(root, 0o755)
    files = {}
    for size in sizes:
        raw = make_message(size)
        path = os.path.join(root, f"msg-{size}.eml")
        with open(path, "wb") as handle:
            handle.write(raw.replace(b"\r\n", b"\n"))
        files[size] = (path, raw)

    sink = SmtpSink(root).start(dump=False)
    postfix = PostfixInstance(root, relay_port=sink.port).start()
    configs = [("none", None)]
    for kind in sockets:
        configs.append((f"noop-{kind}", lambda k=kind: NoopMilter(
            root, f"unix:{root}/noop.sock" if k == "unix" else f"inet:{free_port()}@127.0.0.1").start()))
    for kind in sockets:
        configs.append((f"imss-{kind}", lambda k=kind: MilterDaemon(
            os.path.join(root, f"imss-{k}"), max_message_size="50MB",
            socket_spec=None if k == "unix" else f"inet:{free_port()}@127.0.0.1").start()))
    dns = None
    if args.sender_filtering or args.engines:
        dns = Rbldnsd({"bl.bench.test": ("ip4set", "127.0.0.2 :127.0.0.2:listed\n"),
                       "dyn.bench.test": ("ip4set", "127.0.0.5 :127.0.0.10:dynamic\n"),
                       "uribl.bench.test": ("dnset", "phish.test :127.0.1.4:listed\n")}).start()
    if args.engines:
        configs.append(("imss-eng-unix", lambda: MilterDaemon(
            os.path.join(root, "imss-eng-unix"), max_message_size="50MB",
            rules={"50-urls.yaml": URL_RULES}, extra_config=engines_config(dns.port)).start()))
    if args.sender_filtering:
        recipients = os.path.join(root, "recipients.txt")
        with open(recipients, "w") as handle:
            handle.write("user@example.com\n")
        configs.append(("imss-sf-unix", lambda: MilterDaemon(
            os.path.join(root, "imss-sf-unix"), max_message_size="50MB",
            extra_config=sender_filtering_config(dns.port, recipients)).start()))
    for name, _ in configs:
        if name.startswith("imss-"):
            os.makedirs(os.path.join(root, name), exist_ok=True)
            os.chmod(os.path.join(root, name), 0o755)

    results = {}      # (config, size, conc) -> median msgs/s
    cores = {}
    cpu_ms = {}       # (config, size, conc) -> median milter CPU ms per message (steadier than msg/s)
    machine = {}      # (config, size, conc) -> median share of all cores busy during the run
    paired = {}       # (config, size, conc) -> median of its per-round ratios to the no-op of that round
    lat = {}
    milters = {}
    try:
        # Every milter runs for the whole benchmark (idle while Postfix uses another) and the rounds
        # alternate between configurations: a shared machine's speed drifts over minutes, and a
        # configuration measured all at once would carry the drift of its minutes into the ratio.
        for name, starter in configs:
            milters[name] = starter() if starter else None

        def select(name):
            milter = milters[name]
            postfix.set_milter(milter.milter_spec if milter else None)
            time.sleep(1.0)
            smtp_source(postfix.smtp_port, files[sizes[0]][0], 20, 4, 120)      # warm-up
            return milter

        for size in sizes:
            for conc in concurrencies:
                rounds = {name: [] for name, _ in configs}      # (msg/s, cores, ms/msg, busy) per round
                for _ in range(args.rounds):
                    for name, _ in configs:
                        milter = select(name)
                        pids = pids_of(milter.proc.pid) if milter else []
                        cpu_before = cpu_seconds(pids)
                        machine_before = machine_cpu()
                        wall = smtp_source(postfix.smtp_port, files[size][0], args.messages, conc, 600)
                        machine_after = machine_cpu()
                        spent = cpu_seconds(pids) - cpu_before if milter else None
                        rounds[name].append((args.messages / wall, spent / wall if milter else None,
                                             spent / args.messages * 1000 if milter else None,
                                             (machine_after[0] - machine_before[0])
                                             / max(1, machine_after[1] - machine_before[1])))
                for name, _ in configs:
                    measured = rounds[name]
                    key = (name, size, conc)
                    results[key] = statistics.median(m[0] for m in measured)
                    cores[key] = statistics.median(m[1] for m in measured) if milters[name] else None
                    cpu_ms[key] = statistics.median(m[2] for m in measured) if milters[name] else None
                    machine[key] = statistics.median(m[3] for m in measured)
                    floor = f"noop-{name.split('-')[-1]}"
                    if name.startswith("imss-") and floor in rounds:
                        paired[key] = statistics.median(m[0] / f[0] for m, f in zip(measured, rounds[floor]))
                    print(f"  {name:10s} {size // 1024:4d} KB  x{conc:<3d} {results[key]:8.1f} msg/s"
                          f"  machine {machine[key]:4.0%} busy"
                          + (f"  cpu {cores[key]:.2f} cores, {cpu_ms[key]:.2f} ms/msg" if milters[name] else "")
                          + (f"  ratio to no-op {paired[key]:.2f}" if key in paired else ""), flush=True)
        for name, _ in configs:
            select(name)
            times = latencies(postfix.smtp_port, files[sizes[-1]][1], args.latency_messages)
            lat[name] = (percentile(times, 0.5), percentile(times, 0.99))
    finally:
        for milter in milters.values():
            if milter:
                milter.stop()
        postfix.stop()
        sink.stop()
        if dns is not None:
            dns.stop()
        shutil.rmtree(root, ignore_errors=True)

    print()
    print(f"Throughput (median of {args.rounds} alternating round(s) of {args.messages} messages; "
          "ratio = median of each round's imss / no-op on the same socket)")
    print(f"{'size':>7} {'conc':>5} {'none':>9} " + " ".join(f"{'noop-' + k:>11} {'imss-' + k:>11} {'ratio':>6} {'cores':>6}" for k in sockets))
    for size in sizes:
        for conc in concurrencies:
            row = f"{size // 1024:>5}KB {conc:>5} {results[('none', size, conc)]:>9.1f} "
            for kind in sockets:
                noop = results[(f"noop-{kind}", size, conc)]
                imss = results[(f"imss-{kind}", size, conc)]
                used = cores[(f"imss-{kind}", size, conc)]
                ratio = paired[(f"imss-{kind}", size, conc)]
                row += f"{noop:>11.1f} {imss:>11.1f} {ratio:>6.2f} {used:>6.2f} "
            print(row)
    print()
    print("Milter CPU per message in ms (median; /proc utime+stime of the milter's processes / messages)")
    print(f"{'size':>7} {'conc':>5} " + " ".join(f"{'noop-' + k:>11} {'imss-' + k:>11} {'added':>6}" for k in sockets))
    for size in sizes:
        for conc in concurrencies:
            row = f"{size // 1024:>5}KB {conc:>5} "
            for kind in sockets:
                noop, imss = cpu_ms[(f"noop-{kind}", size, conc)], cpu_ms[(f"imss-{kind}", size, conc)]
                row += f"{noop:>11.2f} {imss:>11.2f} {imss - noop:>+6.2f} "
            print(row)
    if args.engines:
        print()
        print("URL engine and spam score header on (imss-eng-unix) vs the default engines (imss-unix), same run:")
        for size in sizes:
            for conc in concurrencies:
                base, on = results[("imss-unix", size, conc)], results[("imss-eng-unix", size, conc)]
                print(f"  {size // 1024:>5}KB x{conc:<3d} default {base:8.1f}  all engines {on:8.1f}  "
                      f"ratio to no-op {paired[('imss-eng-unix', size, conc)]:5.2f}  cpu {cpu_ms[('imss-eng-unix', size, conc)]:.2f} ms/msg")
    if args.sender_filtering:
        print()
        print("Sender filtering on (imss-sf-unix) vs off (imss-unix), same run:")
        for size in sizes:
            for conc in concurrencies:
                off = results[("imss-unix", size, conc)]
                on = results[("imss-sf-unix", size, conc)]
                print(f"  {size // 1024:>5}KB x{conc:<3d} off {off:8.1f}  on {on:8.1f}  ratio {on / off:5.2f}")
    print()
    print(f"Latency per message, {sizes[-1] // 1024} KB, sequential ({args.latency_messages} messages): p50 / p99 in ms")
    for name, (p50, p99) in lat.items():
        line = f"  {name:10s} {p50 * 1000:7.1f} {p99 * 1000:7.1f}"
        if name.startswith("imss-"):
            kind = name.split("-", 1)[1]
            base = lat.get(f"noop-{kind}")
            if base:
                line += f"   added vs noop: p50 {(p50 - base[0]) * 1000:+.1f} ms, p99 {(p99 - base[1]) * 1000:+.1f} ms"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
