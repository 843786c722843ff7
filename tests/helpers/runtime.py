"""A Runtime over a throw-away config: rule files and extra main-config sections written under tmp_path."""

from __future__ import annotations

import textwrap

from imss_milter.runtime import Runtime
from imss_milter.settings import load_settings


def write_config(tmp_path, rules: dict[str, str], extra: str = "") -> str:
    """Write rules_dir/<name> for each rule file and imss-milter.yaml (extra: more YAML at the top
    level, dedented); returns the config's path."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir(parents=True, exist_ok=True)
    for name, text in rules.items():
        (rules_dir / name).write_text(text)
    config = tmp_path / "imss-milter.yaml"
    config.write_text(textwrap.dedent(f"""\
        milter: {{user: ""}}
        internal_domains: [example.com]
        rules_dir: {rules_dir}
        state_dir: {tmp_path / 'state'}
        """) + textwrap.dedent(extra))
    return str(config)


def runtime_for(tmp_path, rules: dict[str, str], extra: str = "", **runtime_options) -> Runtime:
    """A Runtime (store, sender filter and engines as configured) over write_config's files."""
    return Runtime(load_settings(write_config(tmp_path, rules, extra)), **runtime_options)
