"""Rule set evaluation: routes, boolean nesting, final, action precedence, modifications, default rules."""


from imss_milter.mime.model import FLAG_ARCHIVE_LIMIT, FLAG_MALFORMED
from imss_milter.policy import Modification, load_rules
from tests.policy.builders import attachment, inbound, message, rules

ROUTES = """\
    address_groups:
      finance: ["cfo@example.com", "ap-*@example.com"]
      partners: ["*@partner.test", "@*.partner.test"]
    policies:
      - name: to-finance
        route: {to: finance}
        actions: [{add_header: {name: X-Finance, value: "1"}}]
      - name: outbound
        route: {from: internal, to: "!internal"}
        actions: [{add_header: {name: X-Out, value: "1"}}]
      - name: inbound-not-partners
        route:
          from: any
          to: internal
          except: {from: partners, to: ["ceo@example.com"]}
        actions: [{add_header: {name: X-In, value: "1"}}]
      - name: listed
        route: {from: ["*@list.test", "alerts@"], to: ["example.com"]}
        actions: [{add_header: {name: X-Listed, value: "1"}}]
    """


def matched(ruleset, sender, recipients):
    return ruleset.evaluate(inbound(sender=sender, recipients=recipients), message()).rules


def test_routes_groups_negation_and_any_recipient(tmp_path):
    ruleset = rules(tmp_path, ROUTES)
    assert matched(ruleset, "x@outside.test", ["ap-north@example.com"]) == ["to-finance", "inbound-not-partners"]
    assert matched(ruleset, "x@outside.test", ["someone@else.test", "CFO@Example.com"])[0] == "to-finance"
    # internal includes subdomains; "!internal" holds when a recipient is outside
    assert matched(ruleset, "me@sales.example.com", ["you@outside.test"]) == ["outbound"]
    assert matched(ruleset, "me@example.com", ["you@example.com"]) == ["inbound-not-partners"]
    assert "outbound" in matched(ruleset, "me@example.com", ["you@example.com", "them@outside.test"])


def test_route_exceptions(tmp_path):
    ruleset = rules(tmp_path, ROUTES)
    assert "inbound-not-partners" not in matched(ruleset, "a@partner.test", ["u@example.com"])
    assert "inbound-not-partners" not in matched(ruleset, "a@mx.partner.test", ["u@example.com"])
    # the excepted recipient alone does not match; with another internal recipient it does
    assert "inbound-not-partners" not in matched(ruleset, "a@x.test", ["ceo@example.com"])
    assert "inbound-not-partners" in matched(ruleset, "a@x.test", ["ceo@example.com", "u@example.com"])


def test_route_inline_patterns_and_bare_domain(tmp_path):
    ruleset = rules(tmp_path, ROUTES)
    assert "listed" in matched(ruleset, "news@list.test", ["u@example.com"])
    assert "listed" in matched(ruleset, "alerts@monitoring.test", ["u@example.com"])
    assert "listed" not in matched(ruleset, "news@list.test", ["u@sub.example.com"])   # bare domain: exact


def test_null_sender_and_no_recipients(tmp_path):
    ruleset = rules(tmp_path, ROUTES)
    assert matched(ruleset, "", ["u@example.com"]) == ["inbound-not-partners"]
    assert matched(ruleset, "", []) == []


def test_internal_group_can_be_redefined(tmp_path):
    ruleset = rules(tmp_path, """\
        address_groups: {internal: ['*@corp.test']}
        policies:
          - name: in
            route: {to: internal}
            actions: [deliver]
        """)
    assert matched(ruleset, "a@x.test", ["u@corp.test"]) == ["in"]
    assert matched(ruleset, "a@x.test", ["u@example.com"]) == []


def test_boolean_nesting(tmp_path):
    ruleset = rules(tmp_path, """\
        policies:
          - name: nested
            when:
              all:
                - any:
                    - attachment.extension: [exe]
                    - subject: [invoice]
                - not: {sender.address: ["*@trusted.test"]}
                - not:
                    any:
                      - message.size: ">1MB"
                      - malformed: true
            actions: [delete]
          - name: implicit-all
            when:
              subject: [hello]
              body: [world]
            actions: [{add_header: {name: X-Both, value: "1"}}]
        """)

    def rules_for(model, sender="a@x.test"):
        return ruleset.evaluate(inbound(sender=sender), model).rules
    assert rules_for(message(subject="your invoice")) == ["nested"]
    assert rules_for(message(subject="x", parts=[attachment("a.exe")])) == ["nested"]
    assert rules_for(message(subject="your invoice"), sender="b@trusted.test") == []
    assert rules_for(message(subject="your invoice", size=2 * 1024 * 1024)) == []
    assert rules_for(message(subject="your invoice", flags=[FLAG_MALFORMED])) == []
    assert rules_for(message(subject="x")) == []
    assert rules_for(message(subject="hello", body="hello world")) == ["implicit-all"]
    assert rules_for(message(subject="hello", body="nobody")) == []


PRECEDENCE = """\
    policies:
      - name: tag
        when: {subject: [a]}
        actions: [{tag_subject: "[A] "}, {add_header: {name: X-A, value: "1"}}]
      - name: quarantine
        when: {subject: [q]}
        actions: [{quarantine: {area: suspicious}}, archive]
      - name: delete
        when: {subject: [d]}
        actions: [delete, {bcc: [audit@example.com]}]
      - name: tempfail
        when: {subject: [t]}
        actions: [tempfail]
      - name: reject
        when: {subject: [r]}
        actions: [{reject: {code: 554, xcode: "5.7.0", text: "Go away"}}]
      - name: reject-again
        when: {subject: [r2]}
        actions: [reject]
    """


def test_strongest_terminal_action_wins_and_modifications_are_kept(tmp_path):
    ruleset = rules(tmp_path, PRECEDENCE)
    verdict = ruleset.evaluate(inbound(), message(subject="a q d"))
    assert (verdict.action, verdict.deciding_rule) == ("delete", "delete")
    assert verdict.rules == ["tag", "quarantine", "delete"]
    assert verdict.modifications == [Modification("tag_subject", ("[A] ",)), Modification("add_header", ("X-A", "1")),
                                     Modification("archive", ("default",)),
                                     Modification("bcc", ("audit@example.com",))]
    verdict = ruleset.evaluate(inbound(), message(subject="q t"))
    assert (verdict.action, verdict.reply) == ("tempfail", ("451", "4.7.1", verdict.reply[2]))
    verdict = ruleset.evaluate(inbound(), message(subject="t r d"))
    assert (verdict.action, verdict.reply, verdict.deciding_rule) == ("reject", ("554", "5.7.0", "Go away"), "reject")
    verdict = ruleset.evaluate(inbound(), message(subject="r2 r"))
    assert verdict.deciding_rule == "reject"          # same strength: the first policy decides
    verdict = ruleset.evaluate(inbound(), message(subject="q"))
    assert (verdict.action, verdict.quarantine_area, verdict.reply) == ("quarantine", "suspicious", None)
    verdict = ruleset.evaluate(inbound(), message(subject="a"))
    assert (verdict.action, verdict.deciding_rule) == ("deliver", None)
    assert [m.to_json() for m in verdict.modifications] == [{"tag_subject": ["[A] "]}, {"add_header": ["X-A", "1"]}]


def test_reject_defaults(tmp_path):
    verdict = rules(tmp_path, PRECEDENCE).evaluate(inbound(), message(subject="r2"))
    assert verdict.reply == ("550", "5.7.1", "Message rejected by policy")


def test_final_stops_evaluation(tmp_path):
    ruleset = rules(tmp_path, """\
        policies:
          - name: first
            when: {subject: [stop]}
            actions: [deliver]
            final: true
          - name: second
            actions: [{reject: {}}]
        """)
    assert ruleset.evaluate(inbound(), message(subject="stop")).rules == ["first"]
    assert ruleset.evaluate(inbound(), message(subject="stop")).action == "deliver"
    verdict = ruleset.evaluate(inbound(), message(subject="go"))
    assert verdict.rules == ["second"] and verdict.action == "reject"


def test_later_actions_are_validated_and_recorded(tmp_path):
    ruleset = rules(tmp_path, """\
        policies:
          - name: everything
            when: {attachment.extension: [exe]}
            actions:
              - archive: {area: legal}
              - insert_stamp: {text: "Scanned by imss-milter"}
              - strip_attachments
              - bcc: ["Audit@Example.com"]
              - reroute: security@example.com
              - notify: {to: [admin, sender, "boss@example.com"], template: blocked}
        """)
    verdict = ruleset.evaluate(inbound(), message(parts=[attachment("ok.txt"), attachment("bad.exe")]))
    assert verdict.action == "deliver"
    assert verdict.modifications == [
        Modification("archive", ("legal",)),
        Modification("insert_stamp", ("Scanned by imss-milter",)),
        Modification("strip_attachments", ("bad.exe",)),
        Modification("bcc", ("audit@example.com",)),
        Modification("reroute", ("security@example.com",)),
        Modification("notify", (("admin", "sender", "boss@example.com"), "blocked")),
    ]


def test_findings_carry_rule_and_evidence(tmp_path):
    verdict = rules(tmp_path, PRECEDENCE).evaluate(inbound(), message(subject="q"))
    assert verdict.findings == [{"rule": "quarantine", "condition": "subject", "detail": "subject: matched 'q'"}]


# ---------------------------------------------------------------- the shipped default rules

def defaults():
    return load_rules("/nonexistent-rules-dir", internal_domains=["example.com"])


def test_defaults_quarantine_executables_inbound_by_type_name_and_double_extension():
    ruleset = defaults()
    for part in (attachment("invoice.pdf.exe"), attachment("a.js"), attachment("Report.PDF", true_type="executable"),
                 attachment("run.sh", true_type="script"), attachment("x.lnk")):
        verdict = ruleset.evaluate(inbound(), message(parts=[part]))
        assert (verdict.action, verdict.quarantine_area, verdict.deciding_rule) == \
            ("quarantine", "default", "block-executables"), part.names
        assert Modification("add_header", ("X-IMSS-Rule", "block-executables")) in verdict.modifications
    zipped = [attachment("a.zip", true_type="archive"), attachment("inner.scr", path=["a.zip", "inner.scr"])]
    assert defaults().evaluate(inbound(), message(parts=zipped)).action == "quarantine"
    # outbound mail is not touched by the inbound policy
    outbound = inbound(sender="me@example.com", recipients=["you@outside.test"])
    assert ruleset.evaluate(outbound, message(parts=[attachment("tool.exe")])).action == "deliver"
    assert ruleset.evaluate(inbound(), message(parts=[attachment("report.pdf", true_type="pdf")])).action == "deliver"


def test_defaults_size_limit_encrypted_archives_limits_and_malformed():
    ruleset = defaults()
    verdict = ruleset.evaluate(inbound(), message(size=41 * 1024 * 1024))
    assert (verdict.action, verdict.reply[:2]) == ("reject", ("552", "5.3.4"))
    encrypted = attachment("secret.zip", true_type="archive", encrypted=True)
    assert ruleset.evaluate(inbound(), message(parts=[encrypted])).deciding_rule == "quarantine-encrypted-archives"
    assert ruleset.evaluate(inbound(), message(flags=[FLAG_ARCHIVE_LIMIT])).action == "quarantine"
    verdict = ruleset.evaluate(inbound(sender="me@example.com", recipients=["x@y.test"]), message(flags=[FLAG_MALFORMED]))
    assert verdict.action == "deliver"
    assert Modification("add_header", ("X-IMSS-Malformed", "yes")) in verdict.modifications


def test_defaults_evaluate_a_100kb_message_of_clean_parts_to_deliver():
    # its cost is measured by bench/scan_bench.py, not asserted here
    ruleset = defaults()
    parts = [attachment(f"file{i}.pdf", payload=b"%PDF" + b"x" * 10_000, true_type="pdf") for i in range(8)]
    model = message(body="word " * 4000, parts=parts, headers=[("Received", "from x")] * 10)
    assert ruleset.evaluate(inbound(), model).action == "deliver"


SHARED_ROUTES = """\
    address_groups:
      partners: ["*@partner.test"]
    policies:
      - {name: a, route: {from: any, to: internal}, when: {subject: [zz]}, actions: [{add_header: {name: X-A, value: "1"}}]}
      - {name: b, route: {from: any, to: internal}, actions: [{add_header: {name: X-B, value: "1"}}]}
      - {name: c, route: {from: any, to: any}, actions: [{add_header: {name: X-C, value: "1"}}]}
      - {name: d, route: {from: partners, to: internal}, actions: [{add_header: {name: X-D, value: "1"}}]}
      - {name: e, route: {from: any, to: internal}, enabled: false, actions: [{add_header: {name: X-E, value: "1"}}]}
      - {name: f, route: {from: any, to: internal, except: {from: partners}}, actions: [{add_header: {name: X-F, value: "1"}}]}
      - {name: g, route: {from: partners, to: internal}, actions: [{add_header: {name: X-G, value: "1"}}]}
    """


def test_policies_that_share_a_route_match_it_once_with_the_same_verdicts(tmp_path, monkeypatch):
    from imss_milter.policy.ruleset import Route
    ruleset = rules(tmp_path, SHARED_ROUTES)
    envelopes = [("x@partner.test", ("u@example.com",)), ("x@outside.test", ("u@example.com",)),
                 ("x@outside.test", ("u@elsewhere.test",)), ("", ("u@sub.example.com", "v@elsewhere.test"))]
    # what each policy's own route says, policy by policy
    expected = {envelope: [p.name for p in ruleset.policies if p.enabled and p.route.matches(envelope[0], list(envelope[1]))]
                for envelope in envelopes}
    calls = []
    original = Route.matches
    monkeypatch.setattr(Route, "matches", lambda self, *args: calls.append(self) or original(self, *args))
    for sender, recipients in envelopes:
        calls.clear()
        env = inbound(sender=sender, recipients=list(recipients))
        routed = ruleset.routed(env)
        assert [p.name for p in routed] == expected[(sender, recipients)]
        assert len(calls) == 4      # any->internal, any->any, partners->internal, any->internal except partners
        assert ruleset.evaluate(env, message(), routed=routed).rules == ruleset.evaluate(env, message()).rules
