# The two commands of the README: `make run` and `make test`. Both set everything up.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements-dev.lock | cksum | cut -d' ' -f1)
LOCALPG_DIR ?= .localpg
LOCALPG_PORT ?= 55432
PYTEST_ARGS ?=

.PHONY: run test unit lint bench demo e2e system-deps system-deps-topology kubernetes clean stop-localpg lock

# Exact versions with their hashes (requirements*.lock); pyproject.toml keeps the ranges.
$(STAMP): pyproject.toml requirements-dev.lock
	@test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -U pip
	$(VENV)/bin/pip install -q --disable-pip-version-check --require-hashes -r requirements-dev.lock
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-*; touch $@

# Re-resolve the lock files from pyproject.toml's ranges (after changing a dependency).
lock:
	@test -x $(VENV)/bin/pip-compile || $(VENV)/bin/pip install -q pip-tools
	for extra in "" dev; do \
	  $(VENV)/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe \
	    --no-emit-index-url --no-emit-find-links $${extra:+--extra $$extra} \
	    -o requirements$${extra:+-$$extra}.lock pyproject.toml; \
	done

system-deps:
	@scripts/system-deps.sh

# Serve on 127.0.0.1:8080 (RECEIVER_HOST/RECEIVER_PORT to change). Without DATABASE_URL a
# private PostgreSQL is started in $(LOCALPG_DIR) on port $(LOCALPG_PORT) (LOCALPG_PORT=...
# to change): passwords on TCP (in $(LOCALPG_DIR)/pgpass), migrate as its owner role, serve
# as its app role (least privilege). Without tokens, random ones are made in
# $(LOCALPG_DIR)/*_token (mode 0600) and printed.
run: $(STAMP) system-deps
	@set -euo pipefail; umask 077; \
	if [ -z "$${DATABASE_URL:-}" ]; then \
	  pg=$$($(PY) -m receiver.embedded_pg start --dir $(LOCALPG_DIR) --port $(LOCALPG_PORT)); \
	  eval "$$pg"; \
	  echo "local PostgreSQL: serve as $$DATABASE_URL, migrate as $$LOCALPG_OWNER_URL"; \
	  echo "  (passwords in $$PGPASSFILE; stop: make stop-localpg)"; \
	fi; \
	mkdir -p $(LOCALPG_DIR); \
	for t in webhook api; do \
	  var=RECEIVER_$${t^^}_TOKEN; f=$(LOCALPG_DIR)/$${t}_token; \
	  if [ -z "$${!var:-}" ] && [ -z "$$(printenv $${var}_FILE)" ]; then \
	    [ -s $$f ] || $(PY) -c 'import secrets; print(secrets.token_urlsafe(24))' > $$f; \
	    chmod 600 $$f; export $${var}_FILE=$$PWD/$$f; echo "$$t token: $$(cat $$f)  ($$f)"; \
	  fi; \
	done; \
	export RECEIVER_HOST=$${RECEIVER_HOST:-127.0.0.1}; \
	DATABASE_URL=$${LOCALPG_OWNER_URL:-$$DATABASE_URL} $(PY) -m receiver migrate && \
	  exec $(PY) -m receiver serve

stop-localpg:
	@$(PY) -m receiver.embedded_pg stop --dir $(LOCALPG_DIR)

# The whole suite against a real PostgreSQL (a private cluster per run), with promtool,
# amtool, the end-to-end test on real Prometheus and Alertmanager binaries and the
# topology tests on real Patroni, etcd and PgBouncer.
test: $(STAMP) system-deps-topology lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

system-deps-topology:
	@scripts/system-deps.sh --with-topology

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit -q

e2e: $(STAMP) system-deps
	$(VENV)/bin/pytest -m e2e -s -v

# Style, the architecture's import rules (pyproject [tool.importlinter]) and types (strict
# on domain/ and service/).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy receiver

# deploy/kubernetes/{prometheusrule,alertmanagerconfig}.yaml from alert_rules/ and
# deploy/alertmanager.yml (tests/rules/test_kubernetes.py checks they are current).
kubernetes: $(STAMP)
	$(PY) scripts/gen-kubernetes.py

bench: $(STAMP)
	@scripts/system-deps.sh --with-bench
	$(PY) -m bench

demo: $(STAMP) system-deps
	$(PY) -m demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
