"""Session-wide test hygiene: the mail stacks' directories go when the session passes."""

from __future__ import annotations

import shutil

from tests.helpers.stack import created_roots


def pytest_sessionfinish(session, exitstatus):
    """A passing session leaves nothing in /tmp; a failing one keeps every stack directory (the
    daemon log, Postfix's maillog and queue, the sink's captures) and says where they are."""
    if not created_roots:
        return
    if exitstatus == 0:
        for root in created_roots:
            shutil.rmtree(root, ignore_errors=True)
    else:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("stack directories kept for inspection: " + " ".join(created_roots))
    created_roots.clear()
