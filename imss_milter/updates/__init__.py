"""Pattern updates: versioned components under <patterns_dir>, fetched from a directory or HTTP(S)
source, verified (SHA-256, size, Ed25519 signature, loadable) before they become current, with
rollback and a schedule. docs/updates.rst is the admin's and publisher's guide.
"""

from __future__ import annotations

from .config import Schedule, UpdateConfig, parse_update_config, update_config
from .layout import current_links, installed_versions
from .manifest import UpdateError
from .updater import Outcome, build_bundle, generate_key, last_update, rollback, run_update, status

__all__ = ["Outcome", "Schedule", "UpdateConfig", "UpdateError", "build_bundle", "current_links",
           "generate_key", "installed_versions", "last_update", "parse_update_config", "rollback",
           "run_update", "status", "update_config"]
