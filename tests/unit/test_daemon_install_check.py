"""The daemon refuses to run as a user who cannot read its own installation, and says what to do."""

import pytest

from imss_milter import daemon
from imss_milter.errors import ImssError


def test_unreadable_installation_is_refused_with_a_clear_message(monkeypatch):
    monkeypatch.setattr(daemon.os, "access", lambda path, mode: False)
    with pytest.raises(ImssError) as info:
        daemon.check_installation_readable("imss-milter")
    assert "milter.user 'imss-milter' cannot read" in str(info.value)
    assert "/usr/bin/python3" in str(info.value)


def test_readable_installation_passes():
    daemon.check_installation_readable("root")


def test_preload_imports_every_module_of_the_package():
    import sys
    daemon.preload_modules()
    for name in ("imss_milter.notify", "imss_milter.rewrite", "imss_milter.engines.dlp", "prometheus_client.exposition"):
        assert name in sys.modules
