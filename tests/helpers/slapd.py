"""Run a private OpenLDAP slapd (mdb backend, slapd.conf) on 127.0.0.1 with a few mail entries."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
import time

from .net import free_port, wait_for_port, stop_process

SUFFIX = "dc=example,dc=com"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "secret"


def mail_entries_ldif(addresses: list[str]) -> str:
    """The base, an ou=people and one inetOrgPerson per address (mail attribute)."""
    parts = [textwrap.dedent(f"""\
        dn: {SUFFIX}
        objectClass: dcObject
        objectClass: organization
        o: Example
        dc: example

        dn: ou=people,{SUFFIX}
        objectClass: organizationalUnit
        ou: people
        """)]
    for index, address in enumerate(addresses):
        uid = f"user{index}"
        parts.append(textwrap.dedent(f"""\
            dn: uid={uid},ou=people,{SUFFIX}
            objectClass: inetOrgPerson
            uid: {uid}
            cn: {uid}
            sn: {uid}
            mail: {address}
            """))
    return "\n".join(parts)


class Slapd:
    def __init__(self, addresses: list[str]):
        self.addresses = addresses
        self.host = "127.0.0.1"
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="imss-slapd-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    def _write_config(self) -> str:
        database = os.path.join(self.directory, "db")
        os.makedirs(database, exist_ok=True)
        config = os.path.join(self.directory, "slapd.conf")
        with open(config, "w") as handle:
            handle.write(textwrap.dedent(f"""\
                include /etc/ldap/schema/core.schema
                include /etc/ldap/schema/cosine.schema
                include /etc/ldap/schema/inetorgperson.schema
                modulepath /usr/lib/ldap
                moduleload back_mdb
                pidfile {self.directory}/slapd.pid
                argsfile {self.directory}/slapd.args
                database mdb
                maxsize 10485760
                suffix "{SUFFIX}"
                rootdn "{ROOT_DN}"
                rootpw {ROOT_PASSWORD}
                directory {database}
                index mail eq
                """))
        return config

    def start(self, timeout: float = 20.0) -> "Slapd":
        config = self._write_config()
        ldif = os.path.join(self.directory, "data.ldif")
        with open(ldif, "w") as handle:
            handle.write(mail_entries_ldif(self.addresses))
        slapadd = shutil.which("slapadd") or "/usr/sbin/slapadd"
        subprocess.run([slapadd, "-f", config, "-l", ldif], check=True, capture_output=True)
        slapd = shutil.which("slapd") or "/usr/sbin/slapd"
        # -d keeps slapd in the foreground so the test owns the process
        self.proc = subprocess.Popen([slapd, "-f", config, "-h", f"ldap://{self.host}:{self.port}/", "-d", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.host, timeout=timeout, proc=self.proc)
        self._wait_search(timeout)
        return self

    def _wait_search(self, timeout: float) -> None:
        import ldap3

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                connection = ldap3.Connection(ldap3.Server(self.url, connect_timeout=1), auto_bind=True)
                if connection.search(SUFFIX, "(objectClass=*)", size_limit=1):
                    connection.unbind()
                    return
                connection.unbind()
            except Exception:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"slapd on {self.url} did not answer a search")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
