"""Two gateways, one Redis: a client blocked by the IP Profiler behind one MTA is refused by the other.

Two imss-milter daemons, each behind its own Postfix, share their IP
Profiler state in a real redis-server started by the test.
"""

from __future__ import annotations

import json
import os
import shutil
import smtplib
import time

import pytest

from tests.e2e.test_postfix_sender import assert_refused_at_connect, connect, make_message, send_from
from tests.helpers.daemon import MilterDaemon
from tests.helpers.postfix import PostfixInstance, SmtpSink
from tests.helpers.redis_server import RedisServer
from tests.helpers.stack import e2e_root

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]

HARVESTER_IP = "127.0.0.6"


def shared_config(redis_url: str, recipients_file: str) -> str:
    return f"""\
sender_filtering:
  directory:
    files: [{recipients_file}]
  ip_profiler:
    dha: {{threshold: 3, window: 10m, block: 1h, action: reject}}
  state: {{backend: redis, url: "{redis_url}"}}
"""


@pytest.fixture(scope="module")
def gateways():
    root = e2e_root("imss-e2e-shared-")
    redis = RedisServer().start()
    recipients = os.path.join(root, "recipients.txt")
    with open(recipients, "w") as handle:
        handle.write("bob@example.com\n")
    sink = SmtpSink(root).start()
    stacks = []
    for name in ("gw1", "gw2"):
        directory = os.path.join(root, name)
        os.makedirs(directory)
        os.chmod(directory, 0o755)
        postfix = PostfixInstance(directory, relay_port=sink.port)
        daemon = MilterDaemon(directory, release_port=postfix.reinject_port,
                              extra_config=shared_config(redis.url, recipients)).start()
        postfix.milter = daemon.milter_spec
        postfix.start()
        stacks.append((postfix, daemon))
    yield sink, stacks
    for postfix, daemon in stacks:
        postfix.stop()
        daemon.stop()
    sink.stop()
    redis.close()


def test_a_block_made_behind_one_mta_is_enforced_behind_the_other(gateways):
    sink, [(postfix1, daemon1), (postfix2, daemon2)] = gateways
    # harvest through gateway 1 until its IP Profiler blocks the client
    with connect(postfix1, HARVESTER_IP) as client:
        client.ehlo()
        client.mail("alice@example.org")
        for index in range(3):
            code, reply = client.rcpt(f"nobody{index}@example.com")
            assert code == 550 and b"5.1.1" in reply, reply
    blocked = json.loads(daemon2.cli("sender", "blocked", "--json", check=True).stdout)
    assert [entry["ip"] for entry in blocked] == [HARVESTER_IP], "gateway 2 sees the block in Redis"

    # gateway 2 refuses the client at connect (within the one-second "not blocked" memory)
    time.sleep(1.1)
    assert_refused_at_connect(postfix2, HARVESTER_IP, b"IP Profiler")

    # lifted through gateway 2, the client can send through gateway 1 again
    assert daemon2.cli("sender", "unblock", HARVESTER_IP).returncode == 0
    time.sleep(1.1)
    send_from(postfix1, HARVESTER_IP, make_message("after unblock e2e-shared"))
    assert sink.wait_for(1, subject_contains="e2e-shared")


def test_a_clean_client_is_unaffected_on_both_gateways(gateways):
    sink, stacks = gateways
    for index, (postfix, _) in enumerate(stacks):
        send_from(postfix, "127.0.0.1", make_message(f"clean e2e-shared-clean-{index}"))
        assert sink.wait_for(1, subject_contains=f"e2e-shared-clean-{index}")
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send_from(stacks[0][0], "127.0.0.1", make_message("unknown rcpt"), rcpts=("ghost@example.com",))
