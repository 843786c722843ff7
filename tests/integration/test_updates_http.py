"""Pattern updates from an HTTP source the test serves on 127.0.0.1: a signed happy path, and the
broken downloads (truncated mid-body, hash mismatch, missing files, server errors, oversized) that
must leave the current set untouched."""

from __future__ import annotations

import http.server
import os
import threading

import pytest

from imss_milter.updates import UpdateError, generate_key, run_update, status
from imss_milter.updates.layout import installed_versions
from tests.integration.updates_support import (PROJECT_GOOD, PROJECT_MATCHES_CLEAN_MAIL, PROJECT_RULE,
                                               PROJECT_UNLOADABLE, Events, make_bundle, make_settings)


class BundleServer:
    """Serves a directory over HTTP; `faults` maps a path suffix to how to break that response."""

    def __init__(self, directory: str):
        self.directory = directory
        self.faults: dict[str, str] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                fault = next((kind for suffix, kind in server.faults.items() if self.path.endswith(suffix)), None)
                path = os.path.join(server.directory, *self.path.lstrip("/").split("/"))
                if fault == "500":
                    self.send_error(500, "broken mirror")
                    return
                if not os.path.isfile(path):
                    self.send_error(404)
                    return
                data = open(path, "rb").read()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fault == "truncate":
                    # the connection drops half way: Content-Length promised more
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def gateway(tmp_path):
    root = str(tmp_path)
    key = os.path.join(root, "publisher.pem")
    _, public = generate_key(key)
    settings = make_settings(root, {"50-project.yaml": PROJECT_RULE},
                             updates=f"updates: {{public_key: \"{public}\", timeout: 10s}}\n")
    bundle = os.path.join(root, "www")
    make_bundle(root, "www", "1", PROJECT_GOOD, key=key, out=bundle)
    with BundleServer(bundle) as server:
        yield settings, root, key, server


def test_a_signed_bundle_over_http_is_installed(gateway):
    settings, root, key, server = gateway
    events = Events()
    [outcome] = run_update(settings, source=server.url, events=events)
    assert outcome.result == "installed" and outcome.version == "1"
    assert installed_versions(settings.patterns_dir) == {"dlp": "1"}
    assert "/manifest.json.sig" in server.requests and "/dlp/1/50-project.yaml" in server.requests
    [row] = [r for r in status(settings) if r["component"] == "dlp"]
    assert row["signed"] is True and row["source"] == server.url
    assert events.named("pattern-update")[0]["signed"] is True
    # the URL may also name the manifest itself
    make_bundle(root, "www", "2", PROJECT_GOOD, key=key, out=server.directory)
    [second] = run_update(settings, source=server.url + "manifest.json")
    assert second.result == "installed" and second.previous == "1"


def test_a_download_cut_short_is_refused(gateway):
    settings, root, key, server = gateway
    run_update(settings, source=server.url)
    make_bundle(root, "www", "2", PROJECT_MATCHES_CLEAN_MAIL, key=key, out=server.directory)
    server.faults["/dlp/2/00-identifiers.yaml"] = "truncate"
    events = Events()
    [outcome] = run_update(settings, source=server.url, events=events)
    assert outcome.result == "failed" and "00-identifiers.yaml" in outcome.reason
    assert installed_versions(settings.patterns_dir) == {"dlp": "1"}
    assert events.named("pattern-update-failed")[0]["version"] == "2"
    assert os.listdir(os.path.join(settings.patterns_dir, "staging")) == []


def test_a_file_changed_on_the_mirror_is_refused(gateway):
    settings, root, key, server = gateway
    path = os.path.join(server.directory, "dlp", "1", "50-project.yaml")
    data = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write(data.replace(b"PRJ", b"ABC"))
    [outcome] = run_update(settings, source=server.url)
    assert outcome.result == "failed" and "SHA-256 mismatch" in outcome.reason
    assert installed_versions(settings.patterns_dir) == {}


def test_a_forged_manifest_over_http_downloads_nothing_else(gateway):
    settings, root, key, server = gateway
    attacker = os.path.join(root, "attacker.pem")
    generate_key(attacker)
    make_bundle(root, "www", "2", PROJECT_MATCHES_CLEAN_MAIL, key=attacker, out=server.directory)
    with pytest.raises(UpdateError, match="bad signature"):
        run_update(settings, source=server.url)
    assert not any(path.startswith("/dlp/") for path in server.requests)
    assert installed_versions(settings.patterns_dir) == {}


def test_an_unloadable_component_over_http_is_refused(gateway):
    settings, root, key, server = gateway
    make_bundle(root, "www", "2", PROJECT_UNLOADABLE, key=key, out=server.directory, validate=False)
    [outcome] = run_update(settings, source=server.url)
    assert outcome.result == "failed" and "does not load" in outcome.reason
    assert installed_versions(settings.patterns_dir) == {}


def test_server_errors_and_missing_files_are_reported(gateway):
    settings, root, key, server = gateway
    server.faults["/manifest.json"] = "500"
    with pytest.raises(UpdateError, match="HTTP 500"):
        run_update(settings, source=server.url)
    server.faults.clear()
    os.unlink(os.path.join(server.directory, "dlp", "1", "50-project.yaml"))
    [outcome] = run_update(settings, source=server.url)
    assert outcome.result == "failed" and "not found" in outcome.reason
    with pytest.raises(UpdateError, match="not found"):
        run_update(settings, source=server.url + "elsewhere/")


def test_a_component_larger_than_allowed_is_not_downloaded(gateway):
    settings, root, key, server = gateway
    public = settings.raw["updates"]["public_key"]
    small = make_settings(root, updates=f"updates: {{public_key: \"{public}\", max_size: 1KB}}\n")
    [outcome] = run_update(small, source=server.url)
    assert outcome.result == "failed" and "max_size" in outcome.reason
    assert not any(path.startswith("/dlp/") for path in server.requests)
