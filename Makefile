# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PY

.PHONY: run test test-unit test-integration test-e2e test-ha test-pg bench soak chaos lint venv clean redis lock deps-check

# Installs exactly what requirements-dev.lock pins (hash-checked), then the project itself without deps.
$(VENV)/.installed: pyproject.toml setup.py requirements-dev.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(PY) -m pip install -q -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

venv: $(VENV)/.installed

run: venv  ## start Redis if needed, the four services, a live demo; Ctrl-C stops
	infra/scripts/run.sh

redis: venv
	infra/scripts/ensure-redis.sh

# Tests already parametrized over SQLite and PostgreSQL need no second pass.
BOTH_DB_TESTS := tests/integration/test_applications_service.py tests/integration/test_origin_verification_service.py \
	tests/integration/test_loan_disbursement_service.py

test: venv  ## the whole suite (unit, messaging, integration on real Redis + SQLite/PostgreSQL, e2e processes)
	@infra/scripts/ensure-redis.sh
	@infra/scripts/ensure-promtool.sh
	@infra/scripts/ensure-chromium.sh || true
	@if infra/scripts/ensure-postgres.sh; then \
	  export SAFE_REQUIRE_PG=1; \
	  $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) && \
	  echo "--- the database-backed layers again, on PostgreSQL (SAFE_TEST_DB=postgres) ---" && \
	  SAFE_TEST_DB=postgres $(PY) -m pytest -q -p no:cacheprovider tests/messaging tests/integration \
	    $(foreach t,$(BOTH_DB_TESTS),--deselect $(t)); \
	else \
	  $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); \
	fi

test-unit: venv
	$(PY) -m pytest -q tests/unit tests/service_layer tests/messaging

test-integration: venv
	@infra/scripts/ensure-redis.sh
	$(PY) -m pytest -q tests/integration

test-e2e: venv
	@infra/scripts/ensure-redis.sh
	$(PY) -m pytest -q tests/e2e

# Also part of `make test`: Redis Cluster (3+3) and Sentinel failovers, FLUSHALL and a restart without persistence,
# each on redis-servers the tests start on free loopback ports (never the shared Redis)
HA_TESTS := tests/e2e/test_redis_ha.py tests/e2e/test_redis_loss.py tests/integration/test_kit_cluster.py \
	tests/integration/test_kit_recovery.py

test-ha: venv  ## Redis failover and loss tests only; prints the time from each failure to every case final
	@infra/scripts/ensure-redis.sh
	$(PY) -m pytest -q -p no:cacheprovider -s $(HA_TESTS) $(PYTEST_ARGS)

bench: venv  ## throughput/latency figures against a raw redis-py baseline (writes bench-results/)
	@infra/scripts/ensure-redis.sh
	$(PY) -m tests.bench.run $(BENCH_ARGS)

SOAK_SECONDS ?= 600
soak: venv  ## half load for 10 minutes (SOAK_SECONDS), each service's RSS sampled: bench-results/soak.json, soak.png
	@infra/scripts/ensure-redis.sh
	$(PY) -m tests.bench.run --soak $(SOAK_SECONDS) --only baseline,platform $(SOAK_ARGS)

chaos: venv  ## kill -9 every service in turn under load; prints the figures
	@infra/scripts/ensure-redis.sh
	$(PY) -m tests.chaos.run $(CHAOS_ARGS)

UV_COMPILE = $(VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes -q

lock: venv  ## re-pin requirements.lock (runtime, used by the images) and requirements-dev.lock after a pyproject change
	$(UV_COMPILE) -o requirements.lock
	$(UV_COMPILE) --extra dev -o requirements-dev.lock

deps-check: venv  ## what the newest allowed versions would change: the version diff, then the unit layers on them
	infra/scripts/deps-check.sh

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf var bench-results .pytest_cache
