"""Rule loading: file order, override by name, shipped fallback, warnings, and file:line on errors."""

import os

import pytest

from imss_milter.errors import ConfigError
from imss_milter.policy import load_rules, shipped_rules_dir
from tests.policy.builders import attachment, inbound, message, rules, write_rules

EXE_POLICY = """\
    policies:
      - name: block-exe
        route: {to: internal}
        when: {attachment.extension: [exe]}
        actions: [{quarantine: {area: default}}]
      - name: tag-all
        actions: [{add_header: {name: X-Seen, value: "1"}}]
    """


def load_error(tmp_path, *texts, **kwargs) -> tuple[ConfigError, list[str]]:
    rules_dir, paths = write_rules(tmp_path, *texts)
    with pytest.raises(ConfigError) as info:
        load_rules(rules_dir, **kwargs)
    return info.value, paths


def test_files_read_in_name_order_and_override_in_place(tmp_path):
    ruleset = rules(tmp_path, EXE_POLICY, """\
        policies:
          - name: block-exe
            route: {to: internal}
            when: {attachment.extension: [scr]}
            actions: [reject]
          - name: added-later
            actions: [deliver]
        """)
    assert [p.name for p in ruleset.policies] == ["block-exe", "tag-all", "added-later"]
    replaced = ruleset.policies[0]
    assert replaced.file.endswith("20-rules.yaml")
    exe_mail = message(parts=[attachment("a.exe")])
    assert ruleset.evaluate(inbound(), exe_mail).action == "deliver"        # the old condition is gone
    scr_mail = message(parts=[attachment("a.scr")])
    verdict = ruleset.evaluate(inbound(), scr_mail)
    assert verdict.action == "reject" and verdict.rules == ["block-exe", "tag-all", "added-later"]


def test_disable_by_name_needs_only_the_name(tmp_path):
    ruleset = rules(tmp_path, EXE_POLICY, "policies: [{name: block-exe, enabled: false}]\n")
    assert [p.enabled for p in ruleset.policies] == [False, True]
    verdict = ruleset.evaluate(inbound(), message(parts=[attachment("a.exe")]))
    assert verdict.action == "deliver" and verdict.rules == ["tag-all"]
    assert ruleset.summary()["enabled"] == 1 and ruleset.summary()["policies"] == 2


def test_groups_and_lists_redefined_by_later_files_and_usable_before_definition(tmp_path):
    ruleset = rules(tmp_path, """\
        address_groups: {vip: ["boss@example.com"]}
        lists: {words: {items: [alpha]}}
        policies:
          - name: vip-words
            route: {to: vip}
            when: {subject: {list: words}}
            actions: [delete]
        """, """\
        address_groups: {vip: ["ceo@example.com"]}
        lists: {words: {type: keywords, items: [beta]}}
        """)
    assert ruleset.evaluate(inbound(recipients=["ceo@example.com"]), message(subject="beta")).action == "delete"
    assert ruleset.evaluate(inbound(recipients=["boss@example.com"]), message(subject="beta")).action == "deliver"
    assert ruleset.evaluate(inbound(recipients=["ceo@example.com"]), message(subject="alpha")).action == "deliver"


def test_missing_rules_dir_falls_back_to_shipped_rules(tmp_path):
    ruleset = load_rules(str(tmp_path / "does-not-exist"), internal_domains=["example.com"])
    assert ruleset.files == [os.path.join(shipped_rules_dir(), "00-defaults.yaml")]
    assert "block-executables" in [p.name for p in ruleset.policies]


def test_shipped_rules_dir_holds_the_defaults():
    assert os.path.isfile(os.path.join(shipped_rules_dir(), "00-defaults.yaml"))


def test_empty_rules_dir_has_no_policies(tmp_path):
    (tmp_path / "rules").mkdir()
    ruleset = load_rules(str(tmp_path / "rules"))
    assert ruleset.policies == [] and ruleset.evaluate(inbound(), message()).action == "deliver"


def test_warnings_for_unconfigured_engines_and_empty_internal(tmp_path):
    text = """\
        policies:
          - name: av
            when: {virus: true}
            actions: [{quarantine: {area: virus}}]
          - name: inbound-spam
            route: {to: internal}
            when: {spam: {level: high}}
            actions: [{tag_subject: "[SPAM] "}]
        """
    ruleset = rules(tmp_path, text, internal_domains=())
    joined = "\n".join(ruleset.warnings)
    assert "policy 'av' uses 'virus' but no antivirus engine is configured" in joined
    assert "'spam' but no spam engine" in joined
    assert "group 'internal', which is empty" in joined
    assert ruleset.required_engines() == {"antivirus", "spam"}
    assert ruleset.summary()["warnings"] == ruleset.warnings
    configured = rules(tmp_path, text, engines=["antivirus", "spam"])
    assert configured.warnings == []


def test_summary(tmp_path):
    summary = rules(tmp_path, EXE_POLICY, "address_groups: {x: ['a@b.c']}\nlists: {l: {items: [w]}}\n").summary()
    assert summary["policies"] == 2 and summary["enabled"] == 2
    assert summary["groups"] == ["internal", "x"] and summary["lists"] == ["l"]
    assert len(summary["files"]) == 2


def test_dlp_section_kept_raw_and_templates_checked(tmp_path):
    ruleset = rules(tmp_path, """\
        dlp:
          identifiers:
            project-code: {type: expression, pattern: "PRJ-\\\\d{6}"}
          templates:
            projects: {any: [{identifier: project-code}]}
        policies:
          - name: out-dlp
            route: {from: internal, to: "!internal"}
            when: {dlp: [projects, pci-dss]}
            actions: [{quarantine: {area: dlp}}]
        """, engines=["dlp"])
    assert ruleset.dlp[0]["identifiers"]["project-code"]["type"] == "expression"
    error, paths = load_error(tmp_path, "policies:\n  - name: x\n    when: {dlp: [nope]}\n    actions: [delete]\n")
    assert (error.file, error.line) == (paths[0], 3) and "unknown template 'nope'" in str(error)


# Each case: rule file text, the line the error must name, and words it must contain.
ERROR_CASES = [
    ("polices: []\n", 1, ["unknown key 'polices'", "policies"]),
    ("policies:\n  - name: a\n    actions: [deliver]\n    whne: {}\n", 4, ["unknown key 'whne' in policy 'a'"]),
    ("policies:\n  - name: a\n    when:\n      attachment.nam: ['*.exe']\n    actions: [deliver]\n", 4,
     ["unknown condition 'attachment.nam'", "attachment.name"]),
    ("policies:\n  - name: a\n    actions:\n      - deliver\n      - explode\n", 5, ["unknown action 'explode'"]),
    ("policies:\n  - name: a\n    actions: [deliver, {reject: {}}]\n", 3, ["only one terminal action"]),
    ("policies:\n  - name: a\n    actions:\n      - reject: {code: 450}\n", 4, ["reject.code", "5xx"]),
    ("policies:\n  - name: a\n    actions:\n      - reject: {xcode: '4.7.1'}\n", 4, ["reject.xcode"]),
    ("policies:\n  - name: a\n    actions:\n      - tempfail: {code: 550}\n", 4, ["tempfail.code", "4xx"]),
    ("policies:\n  - name: a\n    actions:\n      - add_header: {name: 'Bad Name', value: x}\n", 4,
     ["add_header.name", "header field name"]),
    ("policies:\n  - name: a\n    actions:\n      - add_header: {name: X-A, value: \"a\\nb\"}\n", 4,
     ["add_header.value", "one line"]),
    ("policies:\n  - name: a\n    actions:\n      - quarantine: {area: 'a b'}\n", 4, ["quarantine.area"]),
    ("policies:\n  - name: a\n    actions:\n      - bcc: [not-an-address]\n", 4, ["bcc", "email address"]),
    ("policies:\n  - name: a\n    actions:\n      - notify: {to: [boss]}\n", 4, ["notify.to", "admin"]),
    ("policies:\n  - name: a\n    actions:\n      - notify: {template: x}\n", 4, ["notify", "to:"]),
    ("policies:\n  - name: a\n    route:\n      to: finance\n    actions: [deliver]\n", 4,
     ["undefined address group 'finance'"]),
    ("policies:\n  - name: a\n    route:\n      from: '!finance'\n    actions: [deliver]\n", 4,
     ["'!' needs a defined address group"]),
    ("policies:\n  - name: a\n    route:\n      to: ['*@ok.test', 'bad pattern@x']\n    actions: [deliver]\n", 4,
     ["route.to", "address pattern"]),
    ("policies:\n  - name: a\n    route:\n      too: any\n    actions: [deliver]\n", 4, ["unknown key 'too' in route"]),
    ("policies:\n  - name: a\n    route:\n      except: {form: [x@y.z]}\n    actions: [deliver]\n", 4,
     ["unknown key 'form' in route.except"]),
    ("policies:\n  - name: a\n    when:\n      sender.ip: [192.0.2.0/24, 300.1.2.3]\n    actions: [deliver]\n", 4,
     ["sender.ip", "CIDR"]),
    ("policies:\n  - name: a\n    when:\n      subject:\n        expressions:\n          - ok\n          - '(unclosed'\n"
     "    actions: [deliver]\n", 7, ["bad regular expression", "(unclosed"]),
    ("policies:\n  - name: a\n    when:\n      body: {list: missing}\n    actions: [deliver]\n", 4,
     ["undefined list 'missing'"]),
    ("policies:\n  - name: a\n    when:\n      body: {keywords: [x], min_count: 0}\n    actions: [deliver]\n", 4,
     ["min_count"]),
    ("policies:\n  - name: a\n    when:\n      header: {matches: x}\n    actions: [deliver]\n", 4,
     ["header", "name"]),
    ("policies:\n  - name: a\n    when:\n      message.size: 10MB\n    actions: [deliver]\n", 4,
     ["message.size", "comparison", ">10MB"]),
    ("policies:\n  - name: a\n    when:\n      attachment.count: '>many'\n    actions: [deliver]\n", 4,
     ["attachment.count", "comparison"]),
    ("policies:\n  - name: a\n    when:\n      attachment.true_type: [executable, exe]\n    actions: [deliver]\n",
     4, ["unknown true type 'exe'"]),
    ("policies:\n  - name: a\n    when:\n      attachment.name: ['*.[ex']\n    actions: [deliver]\n", 4,
     ["unbalanced"]),
    ("policies:\n  - name: a\n    when:\n      malformed: yes please\n    actions: [deliver]\n", 4,
     ["malformed", "true or false"]),
    ("policies:\n  - name: a\n    when:\n      any: []\n    actions: [deliver]\n", 4, ["any", "non-empty list"]),
    ("policies:\n  - name: a\n    when:\n      any:\n        - subject: [x]\n        - bogus: 1\n    actions: [deliver]\n",
     6, ["unknown condition 'bogus'"]),
    ("policies:\n  - name: a\n    when:\n      spam: {level: extreme}\n    actions: [deliver]\n", 4, ["spam.level"]),
    ("policies:\n  - name: a\n    when:\n      virus: false\n    actions: [deliver]\n", 4, ["virus"]),
    ("policies:\n  - name: a\n    enabled: 'no'\n    actions: [deliver]\n", 3, ["enabled", "true or false"]),
    ("policies:\n  - name: a\n    when: {subject: [x]}\n", 2, ["expected actions"]),
    ("policies:\n  - name: a\n    actions: [deliver]\n  - name: a\n    actions: [delete]\n", 4,
     ["defined twice", "line 2"]),
    ("policies:\n  - actions: [deliver]\n", 2, ["policy name"]),
    ("lists:\n  l: {type: regex, items: [a]}\n", 2, ["type", "keywords or expressions"]),
    ("lists:\n  l:\n    type: expressions\n    items:\n      - '['\n", 5, ["list 'l'", "bad regular expression"]),
    ("address_groups:\n  g:\n    - ok@x.test\n    - two@@x.test\n", 4, ["address group 'g'"]),
    ("policies: {name: a}\n", 1, ["policies", "list"]),
    ("policies:\n  - name: a\n    actions: [deliver]\n  - name: [b\n", 5, ["YAML syntax error"]),
]


@pytest.mark.parametrize("text,line,words", ERROR_CASES)
def test_errors_name_file_line_and_expectation(tmp_path, text, line, words):
    error, paths = load_error(tmp_path, text)
    assert error.file == paths[0], str(error)
    assert error.line == line, str(error)
    for word in words:
        assert word in str(error), str(error)


def test_error_in_second_file_names_that_file(tmp_path):
    error, paths = load_error(tmp_path, EXE_POLICY, "policies:\n  - name: late\n    actions: [frobnicate]\n")
    assert (error.file, error.line) == (paths[1], 3)


def test_override_error_located_in_overriding_file(tmp_path):
    error, paths = load_error(tmp_path, EXE_POLICY, "policies:\n  - name: block-exe\n    when: {nope: 1}\n"
                                                   "    actions: [deliver]\n")
    assert (error.file, error.line) == (paths[1], 3)


def test_summary_names_the_files_of_sources_read_once(tmp_path):
    """check-config compiles the (path, text) pairs the daemon reads: the summary lists paths only."""
    from imss_milter.policy import compile_rules
    summary = compile_rules([("/etc/imss-milter/rules/00-a.yaml", EXE_POLICY)]).summary()
    assert summary["files"] == ["/etc/imss-milter/rules/00-a.yaml"]
