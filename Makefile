# The commands a developer and CI run. `make run` and `make test` need only
# the Rust toolchain; PostgreSQL tests run when LEDGERDESK_TEST_POSTGRES_URL is set.
CARGO ?= cargo

.PHONY: run build test fmt lint bench migrate verify clean-data

run: ## Build and start the server on the embedded default (SQLite under ./data/)
	$(CARGO) run -p ledgerdesk -- serve

build:
	$(CARGO) build --workspace --all-targets

test: ## Every test: unit, property, store/projection suites on both backends, HTTP
	$(CARGO) test --workspace --all-targets --no-fail-fast

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: ## Throughput figures (release build); not part of `make test`; audit search latency is `make bench-audit`
	$(CARGO) bench -p ledgerdesk-store --bench store
	scripts/bench-projections.sh

migrate:
	$(CARGO) run -p ledgerdesk -- migrate

verify:
	$(CARGO) run -p ledgerdesk -- verify

clean-data:
	rm -rf data

.PHONY: api-contract browser-test bench-http bench-scale bench-export bench-audit

api-contract: ## The server against its own OpenAPI document (schemathesis; installs it into a venv under ~/.cache)
	CARGO=$(CARGO) scripts/api-contract.sh

browser-test: ## The console in headless Chromium through Selenium (installs chromium, chromium-driver and a venv when missing)
	CARGO=$(CARGO) scripts/browser-test.sh

bench-http: ## HTTP load: add a message to many tickets from 64 connections for 10 s (release build, SQLite, wrk)
	CARGO=$(CARGO) scripts/bench-http.sh

bench-scale: ## Scale-out on PostgreSQL: the bench-http load over 1, then 3 serve processes on one database, projections in a separate process (release build, wrk, psql)
	CARGO=$(CARGO) scripts/bench-scale.sh

bench-export: ## Server memory while exporting a 1,000,000-event audit log as CSV and NDJSON (release build, SQLite)
	CARGO=$(CARGO) scripts/bench-export.sh

bench-audit: ## Audit search latency over 10,000,000 stored rows on each backend (release build; LEDGERDESK_BENCH_AUDIT_ROWS for a smaller run)
	CARGO=$(CARGO) scripts/bench-audit.sh
