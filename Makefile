# djust_resumable — every target does its own set-up on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup sysdeps run test test-unit test-integration lint bench test-resume-loop clean

setup: sysdeps $(STAMP)

# Debian packages the tests and `make run` need, installed only when missing.
sysdeps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	( ldconfig -p 2>/dev/null | grep -q 'libmagic\.so\.1' ) || missing="$$missing libmagic1"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	{ command -v nginx || test -x /usr/sbin/nginx; } >/dev/null 2>&1 || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench,server]'
	@rm -f $(VENV)/.installed-*; touch $@

# Local Redis + local S3 API server (moto) + 2 ASGI workers; prints the URL and an upload command.
run: setup
	$(PY) example/run.py

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q -ra

test-unit: setup
	$(PY) -m pytest -q -ra tests/unit

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check . || true

# Long loop: SIGKILL and clean-drop resume tests, 20 times each.
test-resume-loop: setup
	DJR_LOOP=20 $(PY) -m pytest -q -ra tests/integration/test_resume.py -k 'sigkill or clean_drop'

bench: setup
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-output bench/out

# Production topology on this machine: redis-server, moto_server, 3 uvicorn workers behind
# nginx (deploy/nginx/djust_resumable.conf); pid files in .run/cluster/pids.
.PHONY: cluster cluster-stop faults
cluster: setup
	$(PY) deploy/local_cluster.py start

cluster-stop:
	$(PY) deploy/local_cluster.py stop

# Long fault matrix through nginx (tests/faults/): bigger files, 10 SIGKILL trials.
faults: setup
	DJR_FAULTS=long $(PY) -m pytest -q -ra -s tests/faults

# Side-by-side with djust 1.2.6's own upload path and tus-node-server 2.x (docs/benchmarks.md,
# "Peers"). The peers install into bench/peers/ only: node_modules from the committed
# package-lock.json, tuspy into bench/peers/.venv; neither is a project dependency.
.PHONY: bench-peers bench-peers-deps
PEERS_NODE := bench/peers/node
PEERS_VENV := bench/peers/.venv
PEERS_ARGS ?= --sizes 1G,4G

bench-peers: setup bench-peers-deps
	$(PY) bench/peers.py $(PEERS_ARGS)

bench-peers-deps: $(PEERS_NODE)/node_modules/.package-lock.json $(PEERS_VENV)/.installed

$(PEERS_NODE)/node_modules/.package-lock.json: $(PEERS_NODE)/package-lock.json
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm; }
	@node -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a<20||(a==20&&b<19)) { console.error("@tus/server 2.x needs Node.js >= 20.19, found "+process.versions.node); process.exit(1) }'
	cd $(PEERS_NODE) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(PEERS_VENV)/.installed: bench/peers/requirements.txt
	@test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q -r bench/peers/requirements.txt
	@touch $@

# Redis Cluster / Sentinel tests and the deploy/ recipe checks (both also run in `make test`).
.PHONY: test-cluster test-deploy
test-cluster: setup
	$(PY) -m pytest -q -ra tests/cluster

test-deploy: setup
	$(PY) -m pytest -q -ra tests/deploy

# 50 concurrent uploads of 50 MiB through nginx (bench/load.py; uses or starts `make cluster`).
.PHONY: bench-load
bench-load: setup
	$(PY) bench/load.py

# One 10 GiB upload through nginx, two SIGKILLs of the holder and a Redis restart on the way;
# sha256, worker RSS and phase times (tests/faults/big_upload.py; DJR_BIG_GIB=N to resize).
.PHONY: test-big
test-big: setup
	$(PY) -m pytest -q -ra -s tests/faults/big_upload.py
