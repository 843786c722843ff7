# imss-milter: `make run` installs everything and runs the milter on its
# embedded defaults; `make test` installs everything and runs the tests.
# Both are meant for a fresh Debian machine and may be run as root.

# Debian's own Python when there is one: the service user must be able to read the interpreter
# (a pyenv Python under /root is not readable once the daemon drops privileges).
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := postfix libmilter-dev libmagic1 libmagic-mgc python3-venv python3-dev gcc make rbldnsd redis-server slapd clamav-daemon rspamd
PYTEST_ARGS ?=

.PHONY: all system-deps venv test run install-system bench clean

all: venv

# Debian packages, installed only when missing so repeated runs stay fast.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(BIN)/imss-milter: setup.cfg pyproject.toml
	$(MAKE) system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: system-deps $(BIN)/imss-milter

test: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Creates the service user and the directories of SPEC §2, copies the
# shipped rules into /etc on first install only.
install-system: venv
	getent passwd imss-milter >/dev/null || useradd --system --home-dir /var/lib/imss-milter --shell /usr/sbin/nologin imss-milter
	install -d -m 0755 /etc/imss-milter /etc/imss-milter/rules
	# 00-defaults.yaml is the shipped rule set (admins override it in later files): upgrades replace it
	install -m 0644 rules/00-defaults.yaml /etc/imss-milter/rules/00-defaults.yaml
	for f in rules/*.yaml; do test -e /etc/imss-milter/rules/$$(basename $$f) || install -m 0644 $$f /etc/imss-milter/rules/; done
	install -d -m 0750 -o imss-milter -g imss-milter /var/lib/imss-milter/patterns
	test ! -d /etc/systemd/system || install -m 0644 systemd/imss-milter.service systemd/imss-milter-update.service \
	  systemd/imss-milter-update.timer /etc/systemd/system/
	install -d -m 0750 -o imss-milter -g imss-milter /var/lib/imss-milter
	install -d -m 0755 -o imss-milter -g imss-milter /run/imss-milter

run: install-system
	$(BIN)/imss-milter run

bench: venv
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build dist *.egg-info
