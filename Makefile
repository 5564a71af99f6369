# tokenbill: `make demo` runs the pipeline on embedded defaults, `make test` runs the suite.
# Both create .venv and install the project on first use; nothing needs installing by hand.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tokenbill-installed
SPARK_STAMP := $(VENV)/.tokenbill-spark-installed
MANIFEST := dbt_project/target/manifest.json

# Nothing phones home: dbt and Dagster telemetry off.
export DO_NOT_TRACK := 1
export DAGSTER_DISABLE_TELEMETRY := 1

.PHONY: install install-spark demo test test-fast ui lint format manifest clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,demo]'
	@touch $(STAMP)

# The Spark engine's extra (pyspark, dbt-spark; dbt_project/SPARK.md): make test builds the dbt
# project on Spark too (tests/test_spark_dbt.py), so it installs the extra; make install does not.
install-spark: $(SPARK_STAMP)

$(SPARK_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,demo,spark]'
	@touch $(SPARK_STAMP)

manifest: $(STAMP)
	cd dbt_project && ../$(BIN)/dbt parse --quiet --profiles-dir .

demo: $(STAMP) manifest
	$(BIN)/python -m orchestration.demo $(ARGS)

test: $(STAMP) $(SPARK_STAMP) manifest chromium java
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The inner loop: every test not marked `slow` (real services, whole periods, kills).
test-fast: $(STAMP) manifest chromium
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

ui: $(STAMP) manifest
	$(BIN)/python -m orchestration.demo --ui $(ARGS)

# Headless chromium for tests/test_ui.py's screenshot: Debian's package, installed (as root,
# as CI runs) only if /usr/bin/chromium is missing.
chromium:
	@test -x /usr/bin/chromium || bash scripts/install-chromium.sh
.PHONY: chromium

# Java for the Spark tests (tests/test_spark_dbt.py, tests/test_lake.py): the machine's, or
# Debian's openjdk-17-jre-headless, installed (as root, as CI runs) only if `java` is missing.
java:
	@command -v java >/dev/null || bash scripts/install-debian-package.sh java \
		openjdk-17-jre-headless "Java for pyspark, tests/test_spark_dbt.py"
.PHONY: java

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf .tokenbill dbt_project/target dbt_project/logs

# `make bench ARGS="--events 1000000"`: the end-to-end benchmark; appends to BENCHMARKS.md.
# Large runs (README "Large benchmarks"): ARGS="--events 100000000 --no-keep" (checks the
# work dir's free disk first), ARGS="--events 10000000 --hot-hours 3 --hot-hour-events 2000000".
bench: $(STAMP) manifest
	$(BIN)/python -m bench.run $(ARGS)
.PHONY: bench

# `make docs`: the dbt docs site (http://127.0.0.1:8080), built from the analysts' copy of
# the warehouse, so it works while runs write. ARGS="--port 8081" or ARGS="--no-serve".
docs: $(STAMP) manifest
	$(BIN)/python -m orchestration.docs $(ARGS)
.PHONY: docs
