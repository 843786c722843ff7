"""Main config loading: defaults, every value form, and file:line on every kind of error."""

import textwrap

import pytest

from imss_milter.errors import ConfigError
from imss_milter.mime.model import Limits
from imss_milter.settings import Settings, load_settings, parse_duration, parse_size


def write(tmp_path, text, name="imss-milter.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def config_error(tmp_path, text) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.file == path
    return info.value


@pytest.mark.parametrize("text,expected", [
    (1234, 1234), ("1234", 1234), ("10KB", 10240), ("10kb", 10240), ("10MB", 10 * 1024 ** 2),
    ("1GB", 1024 ** 3), ("1.5MB", int(1.5 * 1024 ** 2)), (" 2 MB ", 2 * 1024 ** 2), (0, 0),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["10XB", "", "MB", "-1", -5, True, None, [1], "1e3"])
def test_parse_size_refuses(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize("text,expected", [
    ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("7d", 604800.0), (12, 12.0), (0.5, 0.5),
    ("250ms", 0.25), ("10", 10.0),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["5x", "", "h", -1, False, None, "1 hour"])
def test_parse_duration_refuses(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_missing_default_file_gives_embedded_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr("imss_milter.settings.DEFAULT_CONFIG_PATH", str(tmp_path / "absent.yaml"))
    settings = load_settings()
    assert settings.source is None
    assert settings.milter.socket == "unix:/run/imss-milter/milter.sock"
    assert settings.milter.on_error == "tempfail"
    assert settings.milter.max_message_size == 50 * 1024 * 1024
    assert settings.milter.workers == 0
    assert settings.metrics_listen == "127.0.0.1:9899"
    assert settings.release_smtp == ("127.0.0.1", 10026)
    assert settings.quarantine_areas["default"].retention_days == 30
    assert settings.limits == Limits()


def test_default_path_used_when_present(monkeypatch, tmp_path):
    path = write(tmp_path, "internal_domains: [example.com]\n")
    monkeypatch.setattr("imss_milter.settings.DEFAULT_CONFIG_PATH", path)
    assert load_settings().internal_domains == ("example.com",)
    assert load_settings().source == path


def test_empty_file_is_defaults(tmp_path):
    settings = load_settings(write(tmp_path, "# nothing here\n"))
    assert settings == Settings(source=settings.source)


def test_full_config(tmp_path):
    settings = load_settings(write(tmp_path, """\
        milter:
          socket: inet:10025@127.0.0.1
          timeout: 5m
          on_error: accept
          max_message_size: 20MB
          spool_memory_limit: 256KB
          workers: 3
          user: mail
          group: mail
          pid_file: /tmp/imss.pid
        internal_domains: [Example.COM, "@sub.example.org"]
        rules_dir: /srv/rules
        patterns_dir: /srv/patterns
        state_dir: /srv/state
        metrics: {listen: "[::1]:9100"}
        quarantine: {areas: {default: {retention_days: 10}, dlp: {}}}
        archive: {areas: {legal: {retention_days: 3650}}}
        release: {smtp: "127.0.0.2:10027"}
        logging: {target: syslog, level: DEBUG, facility: local3}
        limits: {max_parts: 50, archive_max_expanded: 10MB, regex_timeout: 100ms}
        engines:
          antivirus: {backend: clamd, socket: unix:/run/clamav/clamd.ctl}
        sender_filtering: {blocked_hosts: ["198.51.100.7"]}
        dns: {nameservers: ["127.0.0.1"]}
        notifications: {from: postmaster@example.com}
        """))
    milter = settings.milter
    assert (milter.socket, milter.timeout, milter.on_error) == ("inet:10025@127.0.0.1", 300, "accept")
    assert milter.max_message_size == 20 * 1024 ** 2 and milter.spool_memory_limit == 256 * 1024
    assert (milter.workers, milter.user, milter.group, milter.pid_file) == (3, "mail", "mail", "/tmp/imss.pid")
    assert settings.internal_domains == ("example.com", "sub.example.org")
    assert (settings.rules_dir, settings.patterns_dir, settings.state_dir) == ("/srv/rules", "/srv/patterns",
                                                                                "/srv/state")
    assert settings.metrics_listen == "[::1]:9100"
    assert settings.quarantine_areas["default"].retention_days == 10
    assert settings.quarantine_areas["dlp"].retention_days == 30
    assert settings.quarantine_area("never-configured").retention_days == 30
    assert settings.archive_areas["legal"].retention_days == 3650
    assert settings.archive_area("other").retention_days == 365
    assert settings.release_smtp == ("127.0.0.2", 10027)
    assert (settings.logging.target, settings.logging.level, settings.logging.facility) == ("syslog", "debug",
                                                                                          "local3")
    assert settings.limits.max_parts == 50
    assert settings.limits.archive_max_expanded == 10 * 1024 ** 2
    assert settings.limits.regex_timeout == pytest.approx(0.1)
    assert settings.limits.max_mime_depth == Limits().max_mime_depth
    # sections owned by other components are kept raw, with their line numbers
    assert settings.raw["engines"]["antivirus"]["backend"] == "clamd"
    assert settings.raw["engines"].key_line("antivirus") == 22
    assert settings.raw["dns"]["nameservers"] == ["127.0.0.1"]
    assert set(settings.raw) == {"engines", "sender_filtering", "dns", "notifications"}


def test_settings_are_frozen(tmp_path):
    settings = load_settings(write(tmp_path, "internal_domains: [example.com]\n"))
    with pytest.raises(Exception):
        settings.rules_dir = "/elsewhere"
    with pytest.raises(Exception):
        settings.milter.workers = 9


def test_empty_user_means_stay_as_started(tmp_path):
    assert load_settings(write(tmp_path, "milter: {user: ''}\n")).milter.user == ""
    assert load_settings(write(tmp_path, "milter: {user: null}\n")).milter.user == ""


def test_metrics_can_be_switched_off(tmp_path):
    assert load_settings(write(tmp_path, "metrics: {listen: null}\n")).metrics_listen is None


@pytest.mark.parametrize("socket", ["unix:/run/x.sock", "local:/tmp/m", "inet:8891@localhost", "inet6:8891@[::1]",
                                    "inet:8891"])
def test_socket_forms_accepted(tmp_path, socket):
    assert load_settings(write(tmp_path, f"milter: {{socket: '{socket}'}}\n")).milter.socket == socket


@pytest.mark.parametrize("text,line,words", [
    ("bogus: 1\n", 1, ["unknown key 'bogus'", "expected one of", "milter"]),
    ("milter:\n  socket: unix:/x\n  sockett: unix:/y\n", 3, ["unknown key 'sockett' in milter", "socket"]),
    ("milter:\n  socket: /run/x.sock\n", 2, ["milter.socket", "unix:/path"]),
    ("milter:\n  socket: tcp:25@host\n", 2, ["milter.socket"]),
    ("milter:\n  on_error: reject\n", 2, ["on_error", "tempfail or accept"]),
    ("milter:\n  max_message_size: 10XB\n", 2, ["max_message_size", "10MB"]),
    ("milter:\n  timeout: forever\n", 2, ["timeout", "duration"]),
    ("milter:\n  workers: -1\n", 2, ["workers", "at least 0"]),
    ("milter:\n  workers: two\n", 2, ["workers", "whole number"]),
    ("milter:\n  user: 7\n", 2, ["milter.user", "string"]),
    ("milter:\n  pid_file: ''\n", 2, ["milter.pid_file", "got an empty string"]),
    ("milter: 5\n", 1, ["milter", "expected a mapping"]),
    ("internal_domains: [example.com, 'bad domain']\n", 1, ["internal_domains", "domain name"]),
    ("internal_domains:\n  - example.com\n  - 42\n", 3, ["internal_domains", "non-empty string"]),
    ("rules_dir: relative/rules\n", 1, ["rules_dir", "absolute path"]),
    ("metrics: {listen: nowhere}\n", 1, ["metrics.listen", "HOST:PORT"]),
    ("metrics: {port: 9000}\n", 1, ["unknown key 'port' in metrics"]),
    ("quarantine:\n  areas:\n    default: {retention_days: 0}\n", 3, ["retention_days", "at least 1"]),
    ("quarantine:\n  areas:\n    default: {keep: 3}\n", 3, ["unknown key 'keep'", "retention_days"]),
    ("quarantine:\n  areas:\n    'bad area': {}\n", 3, ["area name"]),
    ("release: {smtp: 'localhost'}\n", 1, ["release.smtp", "HOST:PORT"]),
    ("release:\n  smtp: '127.0.0.1:99999'\n", 2, ["release.smtp"]),
    ("logging:\n  target: file\n", 2, ["logging.target", "stderr, syslog"]),
    ("logging:\n  level: loud\n", 2, ["logging.level"]),
    ("limits:\n  max_parts: 0\n", 2, ["limits.max_parts", "at least 1"]),
    ("limits:\n  max_partz: 3\n", 2, ["unknown key 'max_partz' in limits"]),
    ("limits:\n  archive_max_expanded: huge\n", 2, ["archive_max_expanded"]),
    ("engines: [clamd]\n", 1, ["engines", "expected a mapping"]),
    ("- just\n- a list\n", 1, ["mapping of settings"]),
    ("milter:\n  socket: [unclosed\n", None, ["YAML syntax error"]),
    ("milter: {}\nmilter: {}\n", 2, ["duplicate key 'milter'"]),
])
def test_errors_name_file_line_and_expectation(tmp_path, text, line, words):
    error = config_error(tmp_path, text)
    if line is not None:
        assert error.line == line, str(error)
    for word in words:
        assert word in str(error), str(error)
    assert str(error).startswith(error.file)


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(str(tmp_path / "missing.yaml"))
    assert "cannot read" in str(info.value)


def test_socket_mode_is_a_quoted_octal_string():
    from imss_milter.settings import settings_from_mapping
    from imss_milter.yamlconf import loads_yaml
    assert settings_from_mapping(loads_yaml('milter: {socket_mode: "0666"}')).milter.socket_mode == 0o666
    assert settings_from_mapping(loads_yaml("{}")).milter.socket_mode == 0o660
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(loads_yaml("milter:\n  socket_mode: 0660\n", "m.yaml"))
    assert str(info.value).startswith("m.yaml:2: milter.socket_mode: expected an octal mode")
