# The two commands: `make drill` and `make test`. Both run `setup` first (idempotent).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DRCTL := $(VENV)/bin/drctl
# Debian packages the lab needs; only missing ones are installed.
APT_PACKAGES := postgresql-15 postgresql-client-15 zookeeper default-jre-headless python3-venv \
	postgresql-15-auto-failover pg-auto-failover-cli pgbackrest haproxy chromium iproute2 nftables
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup test drill soak bench bench-overhead backup-bench backup-drills lint unit lab-up lab-down clean

setup: $(VENV)/.installed
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres

# The venv is built from the system interpreter: the postgres user must be able to run it.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || { /usr/bin/python3 -m venv $(VENV) 2>/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && /usr/bin/python3 -m venv $(VENV); }; }
	@$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	@$(PY) -m pip install -q -e '.[dev]' 2>&1 | grep -vE '^WARNING: Location|^\s*$$' || true
	@$(PY) -c "import orchestrator, kazoo, psycopg, ansible_runner, locust" && touch $@

lint: setup
	$(VENV)/bin/ruff check orchestrator tests loadtests
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/pytest -q -m "not lab"

test: setup lint
	$(VENV)/bin/pytest -q --durations=25

drill: setup
	$(DRCTL) lab up
	$(DRCTL) drill run primary-crash

# The randomized soak (orchestrator/drills/soak.py): 200 seeded rounds of the whole fault catalogue
# under continuous bank load; SOAK_ROUNDS / SOAK_SEED / SOAK_FAULTS override. Not part of `make test`.
SOAK_ROUNDS ?= 200
SOAK_SEED ?= 1
SOAK_FAULTS ?=
soak: setup
	$(DRCTL) lab up
	$(DRCTL) drill soak --rounds $(SOAK_ROUNDS) --seed $(SOAK_SEED) $(if $(SOAK_FAULTS),--faults $(SOAK_FAULTS))

bench: setup
	$(DRCTL) bench failover

lab-up: setup
	$(DRCTL) lab up

lab-down: setup
	$(DRCTL) lab down

clean:
	-$(DRCTL) lab down
	rm -rf reports .bench .pytest_cache .mypy_cache .ruff_cache

# What the drills' journal and analysis cost over plain Locust (orchestrator/bench/overhead.py); needs `make lab-up`.
bench-overhead: setup
	$(PY) -m orchestrator.bench.overhead --rounds 3 --seconds 60

# Archive lag under load, backup and restore at two database sizes (orchestrator/backup/bench.py).
backup-bench: setup
	$(PY) -m orchestrator.backup.bench --scales 10,60 --seconds 60

# The backup drills (archive-outage, then total-loss-restore after a fresh base backup) on a lab
# with a backup section, in .backup-lab (its own lab directory; the lab's ports), taken down after.
BACKUP_LAB := .backup-lab
backup-drills: setup
	$(DRCTL) lab up --topology topology/lab-backup.yaml --lab-dir $(BACKUP_LAB)
	status=0; \
	$(DRCTL) drill run archive-outage --lab-dir $(BACKUP_LAB) || status=1; \
	$(DRCTL) backup run payments --lab-dir $(BACKUP_LAB) || status=1; \
	$(DRCTL) drill run total-loss-restore --lab-dir $(BACKUP_LAB) || status=1; \
	$(DRCTL) lab down --lab-dir $(BACKUP_LAB); exit $$status
