"""Shared by the update tests: DLP pattern sets (good, bad-but-loadable, unloadable), a settings
object over a temporary patterns_dir, and bundle building."""

from __future__ import annotations

import os
import textwrap

from imss_milter.settings import load_settings
from imss_milter.updates import build_bundle

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED_DLP = os.path.join(REPO, "patterns", "dlp", "00-identifiers.yaml")

# v1: project codes are "PRJ-" and six digits
PROJECT_GOOD = """\
identifiers:
  project-code: {type: expression, pattern: "PRJ-\\\\d{6}"}
templates:
  project-leak: {identifier: project-code}
"""
# loads fine, but matches every ordinary greeting: what a bad publisher push looks like
PROJECT_MATCHES_CLEAN_MAIL = """\
identifiers:
  project-code: {type: keywords, items: [hello]}
templates:
  project-leak: {identifier: project-code}
"""
# does not load: unknown identifier type
PROJECT_UNLOADABLE = """\
identifiers:
  project-code: {type: telepathy, pattern: "x"}
templates:
  project-leak: {identifier: project-code}
"""
# loads on its own but drops the template the rules use
PROJECT_WITHOUT_TEMPLATE = """\
identifiers:
  project-code: {type: expression, pattern: "PRJ-\\\\d{6}"}
"""

PROJECT_RULE = """\
policies:
  - name: project-leak
    route: {from: any, to: any}
    when: {dlp: [project-leak]}
    actions: [{quarantine: {area: dlp}}]
"""


def write_dlp_set(directory: str, project_text: str) -> str:
    """A complete DLP pattern set (the shipped seed plus the project file) under directory/dlp."""
    dlp = os.path.join(directory, "dlp")
    os.makedirs(dlp, exist_ok=True)
    with open(SEED_DLP, encoding="utf-8") as handle:
        seed = handle.read()
    with open(os.path.join(dlp, "00-identifiers.yaml"), "w", encoding="utf-8") as handle:
        handle.write(seed)
    with open(os.path.join(dlp, "50-project.yaml"), "w", encoding="utf-8") as handle:
        handle.write(project_text)
    return directory


def make_bundle(root: str, name: str, version: str, project_text: str, key: str | None = None,
                out: str | None = None, validate: bool = True) -> str:
    """Build bundle `out` (default root/name) holding dlp at `version`."""
    source = write_dlp_set(os.path.join(root, f"src-{name}-{version}"), project_text)
    out = out or os.path.join(root, name)
    build_bundle(source, out, version=version, key_path=key, validate=validate)
    return out


def make_settings(root: str, rules: dict[str, str] | None = None, updates: str = ""):
    """Settings over root/patterns, root/rules (only the given rule files) and root/state."""
    rules_dir = os.path.join(root, "rules")
    os.makedirs(rules_dir, exist_ok=True)
    os.makedirs(os.path.join(root, "state"), exist_ok=True)
    for name, text in (rules or {}).items():
        with open(os.path.join(rules_dir, name), "w", encoding="utf-8") as handle:
            handle.write(text)
    config = os.path.join(root, "imss-milter.yaml")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(textwrap.dedent(f"""\
            rules_dir: {rules_dir}
            patterns_dir: {root}/patterns
            state_dir: {root}/state
            milter: {{user: ""}}
            """) + updates)
    return load_settings(config)


class Events:
    """Collects the system events an update or rollback records."""

    def __init__(self):
        self.seen: list[tuple[str, str, dict]] = []

    def __call__(self, category: str, event: str, detail: dict) -> None:
        self.seen.append((category, event, detail))

    def named(self, event: str) -> list[dict]:
        return [detail for _, name, detail in self.seen if name == event]
