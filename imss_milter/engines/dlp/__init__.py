"""Data-loss prevention (SPEC §4b): identifiers, templates, document text extraction and masked incidents.

Public API:
    DlpEngine()                         the `dlp` condition's engine (Runtime.engines["dlp"])
    DlpEngine.for_rules(rules)          bound to a RuleSet's DLP configuration
    compile_dlp(sections, timeout, patterns=None)
                                        pattern files' then rule files' `dlp:` mappings -> DlpConfig
                                        (ConfigError with file:line)
    DlpSections(sections, config)       what the loader stores in RuleSet.dlp (a list that keeps the config)
    load_dlp_patterns(patterns_dir)     the DLP pattern files' mappings (installed set, else the shipped seed)
    dlp_patterns_dir(patterns_dir)      the directory they are read from
    extract_document(part, budget)      Extraction(text, kind, problem) of a document part, or None
    PREDEFINED_IDENTIFIERS, PREDEFINED_TEMPLATES
"""

from ...policy.context import register_text_extractor
from .config import PREDEFINED_TEMPLATES, DlpConfig, DlpSections, compile_dlp
from .engine import DlpEngine, config_of, predefined_config, scan_message
from .extract import Budget, Extraction, document_text, extract_document
from .identifiers import PREDEFINED_IDENTIFIERS
from .patterns import dlp_patterns_dir, load_dlp_patterns

# attachment.content conditions see the text of documents, not their zip or PDF bytes
register_text_extractor(document_text)

__all__ = ["Budget", "DlpConfig", "DlpEngine", "DlpSections", "Extraction", "PREDEFINED_IDENTIFIERS",
           "PREDEFINED_TEMPLATES", "compile_dlp", "config_of", "dlp_patterns_dir", "document_text",
           "extract_document", "load_dlp_patterns", "predefined_config", "scan_message"]
