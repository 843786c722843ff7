"""Policy rules: load rule files into a RuleSet and evaluate messages into a Verdict (SPEC §4)."""

from .context import register_text_extractor
from .loader import compile_rules, load_rules, read_rule_sources, rule_files, rules_dir_warnings, shipped_rules_dir
from .ruleset import Policy, RuleSet
from .types import Envelope, Modification, Verdict

__all__ = ["Envelope", "Modification", "Policy", "RuleSet", "Verdict", "compile_rules", "load_rules", "read_rule_sources", "rules_dir_warnings",
           "register_text_extractor", "rule_files", "shipped_rules_dir"]
