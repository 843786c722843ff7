"""`imss-milter run`: a supervising master and pre-forked worker processes sharing one milter socket.

Why processes: scanning is CPU work and Python threads share one core, so
the master opens the libmilter socket once, drops privileges and forks
`workers` children that each run libmilter's thread-per-connection loop on
the inherited socket (libmilter reuses an already-open listening socket).
The kernel spreads connections over the children.

Signals go to the master (libmilter inside a worker would treat SIGHUP as
"stop"): SIGHUP validates the rule files and, when they load, bumps a
shared generation counter that every worker watches and reloads on; an
invalid rule set is reported and the old one stays. SIGTERM/SIGINT make
the workers refuse new connections (421) and finish the messages in
flight before they leave libmilter's loop.
"""

from __future__ import annotations

import grp
import hashlib
import importlib
import json
import logging
import multiprocessing
import os
import pwd
import signal
import sysconfig
import threading
import time

import Milter
import milter as libmilter

from . import __version__
from . import metrics as metrics_module
from .engines import COMPONENT_MODULES
from .errors import ConfigError, ImssError
from .milter import ImssMilter, activity
from .policy import rules_dir_warnings
from .runtime import Runtime
from .store.retention import apply_log_retention, apply_retention
from .updates import current_links, installed_versions, update_config

log = logging.getLogger("imss_milter")

MILTER_NAME = "imss-milter"
RETENTION_INTERVAL = 3600.0
VACUUM_INTERVAL = 86400.0
WORKER_SIGNALS = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT}
LISTENER_EXIT_GRACE = 15        # libmilter polls its stop flag every 5 s
PATTERN_POLL_INTERVAL = 1.0     # how often the master looks for a switched patterns/current/<component>


def socket_path(spec: str) -> str | None:
    """The filesystem path of a unix:/local: socket spec, or None for inet sockets."""
    for prefix in ("unix:", "local:"):
        if spec.startswith(prefix):
            return spec[len(prefix):]
    if spec.startswith("/"):
        return spec
    return None


def resolve_user(settings):
    """(uid, gid) to run as, or None to stay as we are. Root without a user is refused."""
    user = settings.milter.user
    if os.geteuid() != 0:
        return None
    if not user:
        log.warning("running as root: set milter.user to drop privileges")
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"milter.user {user!r} does not exist: create it (make install-system) "
                          "or set milter.user", settings.source) from None
    gid = entry.pw_gid
    if settings.milter.group:
        try:
            gid = grp.getgrnam(settings.milter.group).gr_gid
        except KeyError:
            raise ConfigError(f"milter.group {settings.milter.group!r} does not exist", settings.source) from None
    return entry.pw_uid, gid, entry.pw_name


def ensure_dir(path: str, mode: int, owner) -> None:
    """Create a directory for the daemon; only a directory we create is given to the service user."""
    if os.path.isdir(path):
        return
    os.makedirs(path, mode=mode, exist_ok=True)
    if owner is not None and os.geteuid() == 0:
        os.chown(path, owner[0], owner[1])


def listening_sockets() -> set[tuple[int, int]]:
    """(descriptor, inode) of each listening socket this process has open (libmilter keeps the
    descriptor of the socket it opens to itself)."""
    import socket
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            copy = os.dup(int(name))
        except (ValueError, OSError):
            continue            # gone (the listing's own descriptor)
        try:
            probe = socket.socket(fileno=copy)
        except OSError:
            os.close(copy)      # not a socket
            continue
        try:
            if probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                found.add((int(name), os.fstat(copy).st_ino))
        except OSError:
            pass
        finally:
            probe.close()
    return found


def register_callbacks(socket_spec: str, timeout: int) -> None:
    """Wire pymilter's module-level callbacks to ImssMilter (what Milter.runmilter does, minus main())."""
    Milter.factory = ImssMilter
    libmilter.set_connect_callback(Milter.connect_callback)
    libmilter.set_helo_callback(lambda ctx, host: ctx.getpriv().hello(host))
    libmilter.set_envfrom_callback(lambda ctx, *b: ctx.getpriv().envfrom_bytes(*b))
    libmilter.set_envrcpt_callback(lambda ctx, *b: ctx.getpriv().envrcpt_bytes(*b))
    libmilter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header_bytes(f, v))
    libmilter.set_eoh_callback(lambda ctx: ctx.getpriv().eoh())
    libmilter.set_body_callback(lambda ctx, chunk: ctx.getpriv().body(chunk))
    libmilter.set_eom_callback(lambda ctx: ctx.getpriv().eom())
    libmilter.set_abort_callback(lambda ctx: ctx.getpriv().abort())
    libmilter.set_close_callback(Milter.close_callback)
    # An exception that escapes our guards (a bug in glue code) still tempfails, never accepts.
    libmilter.set_exception_policy(libmilter.TEMPFAIL)
    libmilter.set_flags(libmilter.ADDHDRS | libmilter.CHGHDRS | libmilter.ADDRCPT | libmilter.DELRCPT
                        | libmilter.CHGBODY | libmilter.CHGFROM | libmilter.QUARANTINE)
    libmilter.setconn(socket_spec)
    if timeout > 0:
        libmilter.settimeout(timeout)
    libmilter.register(MILTER_NAME,
                       data=lambda ctx: ctx.getpriv().data(),
                       unknown=lambda ctx, cmd: ctx.getpriv().unknown(cmd),
                       negotiate=Milter.negotiate_callback)


class Master:
    """Supervises the workers: starts them, restarts dead ones, relays reload and stop."""

    def __init__(self, settings):
        self.settings = settings
        self.runtime: Runtime | None = None
        self.generation = multiprocessing.Value("L", 0, lock=False)   # shared memory, inherited by fork
        self.draining = multiprocessing.Value("b", 0, lock=False)     # 1: workers finish and exit
        self.workers: dict[int, float] = {}
        self.stopping = False
        self.reload_requested = False
        self.want = settings.milter.workers or os.cpu_count() or 1
        self.next_sweep = time.monotonic() + 60     # first retention sweep a minute after start
        self.metrics_server = None
        self.log_rows_removed = 0                    # since the last VACUUM
        self.next_vacuum = time.monotonic()
        self.rules_version = ""
        self.pattern_links = current_links(settings.patterns_dir)
        self.next_pattern_check = 0.0
        self.scheduler = None

    # -- start-up ------------------------------------------------------------

    def start(self) -> int:
        settings = self.settings
        owner = resolve_user(settings)
        spec = settings.milter.socket
        path = socket_path(spec)
        if path:
            ensure_dir(os.path.dirname(path) or ".", 0o755, owner)
        ensure_dir(settings.state_dir, 0o750, owner)
        pid_dir = os.path.dirname(settings.milter.pid_file)
        if pid_dir:
            ensure_dir(pid_dir, 0o755, owner)
        register_callbacks(spec, settings.milter.timeout)
        before = listening_sockets()
        try:
            libmilter.opensocket(True)
        except libmilter.error as exc:
            raise ImssError(f"cannot open milter socket {spec}: {exc}") from None
        for fd, _inode in listening_sockets() - before:
            # Every worker polls this one socket, and the kernel wakes them all for a connection:
            # libmilter then accept()s holding its listener lock, so the workers that lose the race
            # block in accept() until another connection comes, and smfi_stop() (which takes that
            # lock) with them. Non-blocking, accept() answers EAGAIN, which libmilter retries.
            os.set_blocking(fd, False)
        if path:
            os.chmod(path, settings.milter.socket_mode)
            if owner is not None:
                os.chown(path, owner[0], owner[1])
        self.write_pid_file()
        if owner is not None:
            give_tree(settings.state_dir, owner)
            preload_modules()
            uid, gid, name = owner
            os.setgroups(os.getgrouplist(name, gid))
            os.setgid(gid)
            os.setuid(uid)
            log.info("running as %s (uid %d)", name, uid)
            try:
                check_installation_readable(name)
            except ImssError:
                self.cleanup()
                raise
        for warning in rules_dir_warnings(settings.rules_dir):
            log.warning("%s", warning)
        try:
            # Built only now, as the service user: the store and sender state it opens are the user's.
            self.runtime = Runtime(settings)
        except ImssError:
            self.cleanup()
            raise
        try:
            self.start_metrics()
        except ImssError:
            self.cleanup()
            raise
        signal.signal(signal.SIGHUP, self.on_hup)
        signal.signal(signal.SIGTERM, self.on_stop)
        signal.signal(signal.SIGINT, self.on_stop)
        log.info("imss-milter listening on %s with %d worker(s), %d rule(s)", spec, self.want,
                 len(getattr(self.runtime.rules, "policies", []) or []))
        self.runtime.event("system", "start", {"socket": spec, "workers": self.want})
        for _ in range(self.want):
            self.spawn()
        self.start_update_schedule()
        return self.supervise()

    def start_update_schedule(self) -> None:
        """updates.schedule: the master runs `imss-milter update` itself (else the systemd timer does)."""
        schedule = update_config(self.settings).schedule
        if schedule is None:
            return
        from .updates.scheduler import UpdateScheduler, run_update_process
        source = self.settings.source
        self.scheduler = UpdateScheduler(schedule, lambda: run_update_process(source)).start()
        log.info("pattern updates every %gs plus up to %gs at random", schedule.interval, schedule.random_delay)

    def start_metrics(self) -> None:
        """Multiprocess metrics: every process writes under state_dir/metrics, the master serves them."""
        listen = self.settings.metrics_listen
        self.rules_version = sources_version(self.runtime.read_rules())
        if not listen:
            return
        directory = os.path.join(self.settings.state_dir, "metrics")
        self.runtime.metrics = metrics_module.build(self.settings, directory)
        registry = metrics_module.scrape_registry(directory, lambda: self.runtime.store, self.component_versions)
        from .updates.metrics import UpdateResultCollector
        registry.register(UpdateResultCollector(self.settings.patterns_dir))
        try:
            self.metrics_server = metrics_module.serve(listen, registry)
        except OSError as exc:
            raise ImssError(f"cannot serve metrics on {listen}: {exc.strerror or exc}") from None
        log.info("metrics on http://%s/metrics", listen)

    def component_versions(self) -> dict:
        """What imss_pattern_version_info shows: this program, the rule set, the installed patterns."""
        versions = {"imss-milter": __version__, "rules": self.rules_version}
        # a component no update installed runs on the seed shipped with this version of the program
        versions.update({component: f"seed-{__version__}" for component in COMPONENT_MODULES})
        versions.update(installed_versions(self.settings.patterns_dir))
        return versions

    def write_pid_file(self) -> None:
        pid_file = self.settings.milter.pid_file
        try:
            with open(pid_file + ".tmp", "w") as handle:
                handle.write(f"{os.getpid()}\n")
            os.replace(pid_file + ".tmp", pid_file)
        except OSError as exc:
            log.warning("cannot write pid file %s: %s", pid_file, exc.strerror)

    # -- signals ---------------------------------------------------------------

    def on_hup(self, signum, frame):
        self.reload_requested = True

    def on_stop(self, signum, frame):
        self.stopping = True

    # -- workers ---------------------------------------------------------------

    def spawn(self) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = worker_main(self.runtime, self.generation, self.draining, self.settings)
            except BaseException:   # noqa: BLE001 - a child must never return into the master loop
                log.exception("worker crashed")
            finally:
                logging.shutdown()
                os._exit(code)
        self.workers[pid] = time.monotonic()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            started = self.workers.pop(pid, None)
            if started is None:
                continue
            metrics_module.process_exited(pid)
            if not self.stopping:
                code = os.waitstatus_to_exitcode(status)
                log.error("worker %d exited (%s); starting another", pid, code)
                if time.monotonic() - started < 1.0:
                    time.sleep(1.0)      # a worker that dies at once must not spin the CPU
                self.spawn()

    def do_reload(self) -> None:
        """Validate the rule files once; workers then load exactly the text that was validated."""
        self.reload_requested = False
        try:
            sources = self.runtime.read_rules()
        except ImssError as exc:
            log.error("reload failed, keeping the previous rules: %s", exc)
            self.runtime.event("system", "reload-failed", {"error": str(exc)})
            return
        if not self.runtime.reload(sources):
            return
        self.rules_version = sources_version(sources)
        generation = self.generation.value + 1
        try:
            write_snapshot(self.settings.state_dir, generation, sources)
        except OSError as exc:
            log.error("reload: cannot write the rules snapshot for the workers: %s", exc)
            return
        self.generation.value = generation
        log.info("reload: workers switch to rule generation %d", generation)

    def check_patterns(self) -> None:
        """An update or rollback switched a current/<component> link: reload as on SIGHUP. The master
        loads rules and patterns first (a set that fails keeps the old one); workers then swap per
        connection, so messages in flight finish on the set they started with."""
        if time.monotonic() < self.next_pattern_check:
            return
        self.next_pattern_check = time.monotonic() + PATTERN_POLL_INTERVAL
        links = current_links(self.settings.patterns_dir)
        if links == self.pattern_links:
            return
        self.pattern_links = links
        versions = installed_versions(self.settings.patterns_dir)
        log.info("pattern set changed (%s): reloading",
                 ", ".join(f"{name} {version}" for name, version in sorted(versions.items())) or "seed set")
        self.runtime.event("system", "patterns-changed", {"versions": versions})
        self.do_reload()

    def sweep(self) -> None:
        """Hourly housekeeping in the master, off the mail path: quarantine/archive retention."""
        self.next_sweep = time.monotonic() + RETENTION_INTERVAL
        try:
            removed = apply_retention(self.runtime.store, self.settings)
        except Exception as exc:   # noqa: BLE001 - housekeeping must not stop the daemon
            log.warning("retention sweep failed: %s", exc)
            return
        if any(removed.values()):
            log.info("retention: expired %(quarantine)d quarantined and %(archive)d archived message(s)", removed)
        self.sweep_logs()

    def sweep_logs(self) -> None:
        """Log retention every sweep; VACUUM at most daily, and only after rows went."""
        store = self.runtime.store
        try:
            logs = apply_log_retention(store, self.settings)
            self.log_rows_removed += sum(logs.values())
            if any(logs.values()):
                log.info("retention: removed %(message_log)d tracking record(s) and %(event_log)d event(s) "
                         "older than %(days)d days", {**logs, "days": self.settings.log_retention_days})
            if self.log_rows_removed and time.monotonic() >= self.next_vacuum:
                store.vacuum()
                log.info("database vacuumed after removing %d log row(s)", self.log_rows_removed)
                self.log_rows_removed = 0
                self.next_vacuum = time.monotonic() + VACUUM_INTERVAL
        except Exception as exc:   # noqa: BLE001 - housekeeping must not stop the daemon
            log.warning("log retention failed: %s", exc)

    def supervise(self) -> int:
        while not self.stopping:
            if self.reload_requested:
                self.do_reload()
            self.check_patterns()
            self.reap()
            if time.monotonic() >= self.next_sweep:
                self.sweep()
            time.sleep(0.2)
        log.info("stopping: waiting for %d worker(s) to finish messages in flight", len(self.workers))
        if self.scheduler is not None:
            self.scheduler.stop()
        # New connections find no socket (the MTA tempfails them, per milter_default_action) or, if
        # already queued, get 421 from a draining worker; open sessions finish. A worker must not leave
        # libmilter's main loop before that: pymilter cannot run callbacks once main() has returned.
        path = socket_path(self.settings.milter.socket)
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.draining.value = 1
        deadline = time.monotonic() + self.settings.milter.timeout + 10
        while self.workers and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                if self.workers.pop(pid, None) is not None:
                    log.info("worker %d finished", pid)
            else:
                time.sleep(0.1)
        for pid in list(self.workers):
            log.warning("worker %d did not finish in time: killing it", pid)
            os.kill(pid, signal.SIGKILL)
        self.runtime.event("system", "stop", {})
        self.runtime.notifier.stop()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        self.cleanup()
        log.info("stopped")
        return 0

    def cleanup(self) -> None:
        """Remove the pid file and the socket."""
        paths = [self.settings.milter.pid_file, socket_path(self.settings.milter.socket)]
        for path in filter(None, paths):
            try:
                os.unlink(path)
            except OSError:
                pass


def worker_main(runtime: Runtime, generation, draining, settings) -> int:
    """A worker: watch for reloads and the master, run libmilter until told to stop and drained."""
    # libmilter's signal thread sigwait()s for these; block them before any thread exists so no
    # other thread can take the default action (terminate) instead.
    signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
    for sig in WORKER_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    os.setpgid(0, 0)      # Ctrl-C in a terminal reaches the master only; it drains the workers
    runtime.reset_after_fork()
    runtime.start_log_writer()
    if getattr(runtime.metrics, "enabled", False):
        runtime.metrics.start_batching()
    try:
        runtime.notifier.resume()         # notifications a stopped worker left waiting for a retry
    except OSError as exc:
        log.error("cannot resume the notifications left in %s: %s", runtime.notifier.spool_dir, exc)
    ImssMilter.runtime = runtime
    master = os.getppid()
    seen = generation.value

    def sync_metrics():
        # the sender filter keeps plain counters (cheap on the SMTP path); copy their growth into metrics
        if runtime.sender_filter is not None:
            try:
                runtime.metrics.sync_sender_stats(runtime.sender_filter.stats())
            except Exception as exc:   # noqa: BLE001 - metrics must never stop a worker
                log.warning("metrics: cannot copy sender filtering counters: %s", exc)

    def flush_metrics():
        flush = getattr(runtime.metrics, "flush", None)
        if flush is not None:
            try:
                flush()
            except Exception as exc:   # noqa: BLE001 - metrics must never stop a worker
                log.warning("metrics: cannot write batched samples: %s", exc)

    def watch():
        nonlocal seen
        ticks = 0
        while True:
            time.sleep(0.2)
            ticks += 1
            flush_metrics()
            if ticks % 5 == 0:
                sync_metrics()
            if os.getppid() != master or draining.value:
                if os.getppid() != master:
                    log.error("master process is gone: stopping")
                activity.draining = True
                if activity.active:
                    log.info("worker %d: waiting for %d connection(s) in flight", os.getpid(), activity.active)
                if not activity.wait_idle(settings.milter.timeout):
                    log.warning("gave up waiting for %d connection(s) in flight", activity.active)
                runtime.stop_log_writer()        # every tracking record written before we exit
                runtime.notifier.stop()
                sync_metrics()
                flush_metrics()
                # smfi_stop() waits for libmilter's listener lock, which a listener stuck in a
                # system call keeps: asked from its own thread, it cannot hold up the exit below.
                threading.Thread(target=libmilter.stop, name="imss-milter-stop", daemon=True).start()
                # libmilter's listener notices the stop at its next poll (every 5 s). Everything is
                # written by now, so a listener that does not come back must not hold up the master.
                if not main_returned.wait(LISTENER_EXIT_GRACE):
                    log.warning("worker %d: milter loop did not return %d s after stop: exiting",
                                os.getpid(), LISTENER_EXIT_GRACE)
                    logging.shutdown()
                    os._exit(0)
                return
            if generation.value != seen:
                seen = generation.value
                sources = read_snapshot(settings.state_dir, seen)
                if sources is not None:
                    runtime.reload(sources)

    main_returned = threading.Event()
    threading.Thread(target=watch, name="imss-watch", daemon=True).start()
    try:
        libmilter.main()
    except libmilter.error as exc:
        log.error("milter loop failed: %s", exc)
        return 1
    finally:
        main_returned.set()
    return 0


def run(settings) -> int:
    """Entry point of `imss-milter run`: fail fast on bad rules, then supervise the workers."""
    Runtime(settings, store=False, sender_filter=False)     # validate before touching anything
    update_config(settings)                                  # and the updates: section
    return Master(settings).start()


SNAPSHOT = "rules-snapshot.json"


def write_snapshot(state_dir: str, generation: int, sources) -> None:
    """The validated rule texts for the workers, replaced atomically."""
    path = os.path.join(state_dir, SNAPSHOT)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump({"generation": generation, "sources": sources}, handle)
    os.replace(path + ".tmp", path)


def read_snapshot(state_dir: str, generation: int):
    """The sources of that generation, or None (logged) if the snapshot is missing or newer."""
    try:
        with open(os.path.join(state_dir, SNAPSHOT), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        log.error("cannot read the rules snapshot: %s; keeping the current rules", exc)
        return None
    if data.get("generation") != generation:
        return None          # a newer reload already replaced it; its generation bump follows
    return [tuple(item) for item in data["sources"]]


def give_tree(path: str, owner) -> None:
    """state_dir is the daemon's own: hand anything in it that root created (e.g. by running the CLI
    as root) to the service user, or the dropped-privilege daemon could not write its store."""
    uid, gid = owner[0], owner[1]
    for directory, dirs, files in os.walk(path):
        for name in [directory] + [os.path.join(directory, f) for f in files]:
            try:
                info = os.lstat(name)
                if info.st_uid != uid:
                    os.lchown(name, uid, gid)
            except OSError as exc:
                log.warning("cannot give %s to the service user: %s", name, exc.strerror)


def preload_modules() -> None:
    """Import what Python would load lazily later: after dropping privileges the interpreter's own
    files may be unreadable (a venv built from a Python under /root), and a codec that fails to import
    in the middle of scanning would make that scan fail."""
    import encodings
    import pkgutil
    for module in pkgutil.iter_modules(encodings.__path__):
        try:
            importlib.import_module(f"encodings.{module.name}")
        except Exception:   # noqa: BLE001 - platform-specific codecs (mbcs, oem) do not exist here
            pass
    names = list(LAZY_MODULES)
    # every module of our own: several are imported only when a feature is first used
    package = importlib.import_module(__package__)
    names += [info.name for info in pkgutil.walk_packages(package.__path__, prefix=f"{__package__}.")]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:   # noqa: BLE001 - optional dependencies may be absent
            pass


# Modules imported lazily by us or our dependencies (stdlib and third party).
LAZY_MODULES = (
    "zipfile", "tarfile", "gzip", "bz2", "lzma", "zlib", "binascii", "quopri", "uu", "smtplib", "sqlite3",
    "json", "html", "html.parser", "email.parser", "email.policy", "email.headerregistry",
    "email.contentmanager", "email.mime.text", "email.mime.multipart", "uuid", "secrets", "hashlib",
    "ipaddress", "http.server", "socketserver", "wsgiref.simple_server", "urllib.parse", "csv",
    "xml.etree.ElementTree", "xml.dom.minidom", "concurrent.futures", "queue", "bisect", "string",
    "textwrap", "shlex", "ssl", "prometheus_client", "prometheus_client.multiprocess",
    "prometheus_client.exposition", "prometheus_client.values", "dns.resolver", "dns.reversename",
    "dns.rdtypes.IN.A", "dns.rdtypes.ANY.TXT", "redis", "ldap3", "pypdf", "magic", "regex", "yaml",
)


def check_installation_readable(user: str) -> None:
    """After dropping privileges: the interpreter's library and our package must still be readable,
    or later imports fail in the middle of mail. Say so now, with what to do."""
    for path in {sysconfig.get_paths()["stdlib"], os.path.dirname(os.path.abspath(__file__))}:
        if not os.access(path, os.R_OK | os.X_OK):
            raise ImssError(f"milter.user {user!r} cannot read {path}: install imss-milter (and its Python) "
                            "where that user can read it, e.g. a virtualenv made with /usr/bin/python3 "
                            "outside /root (the Makefile does this), or run as that user")


def send_reload(pid_file: str) -> int:
    """Signal a running daemon to reload (what `imss-milter reload` does after validating)."""
    try:
        with open(pid_file) as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError) as exc:
        raise ImssError(f"cannot read pid file {pid_file}: {getattr(exc, 'strerror', None) or exc}; "
                        "is imss-milter running?") from None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ImssError(f"no process {pid} (from {pid_file}); is imss-milter running?") from None
    except PermissionError:
        raise ImssError(f"not allowed to signal process {pid}; run as root or the milter user") from None
    return pid


def sources_version(sources) -> str:
    """A short digest of the rule files' names and texts: changes exactly when the rules do."""
    digest = hashlib.sha256()
    for path, text in sources:
        digest.update(os.path.basename(path).encode() + b"\0" + text.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()[:12]
