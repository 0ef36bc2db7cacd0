# Berth: the two commands of the README, and a few helpers.
#   make run    install what is missing, build, start Berth on its embedded database
#   make test   install what is missing, run the whole test suite

BERTH_DATA_DIR ?= ./.berth
BERTH_LISTEN ?= 127.0.0.1:8080
BERTH_ADMIN_EMAIL ?= admin@berth.localhost
export BERTH_DATA_DIR BERTH_LISTEN BERTH_ADMIN_EMAIL

.PHONY: run test deps build console openapi bench bench-clusters bench-events bench-registry bench-applications bench-console bench-routing fmt lint ci

deps:
	@scripts/install-deps.sh

build: deps console
	cargo build -p berth

# The web console (wasm), into target/console; `berth serve` serves it at /.
console: deps
	scripts/build-console.sh

# The admin password is generated on first run and kept in the data directory (mode 0600).
run: build
	@mkdir -p $(BERTH_DATA_DIR)
	@[ -s $(BERTH_DATA_DIR)/admin-password ] || (umask 077; head -c 18 /dev/urandom | base64 | tr '+/' '-_' > $(BERTH_DATA_DIR)/admin-password)
	@echo "Berth: http://$(BERTH_LISTEN)/  (API docs at /api/docs/)"
	@echo "Admin login: $(BERTH_ADMIN_EMAIL) / $$(cat $(BERTH_DATA_DIR)/admin-password)"
	BERTH_ADMIN_PASSWORD="$$(cat $(BERTH_DATA_DIR)/admin-password)" ./target/debug/berth serve

test: deps console
	cargo build --workspace --all-targets
	scripts/test-summary.sh

# Regenerates the committed OpenAPI document (a test fails while it is stale).
openapi:
	cargo run -q -p berth -- openapi > openapi/openapi.json

bench:
	@scripts/install-deps.sh bench
	scripts/bench.sh

bench-clusters:
	@scripts/install-deps.sh bench
	scripts/bench-clusters.sh

bench-events:
	@scripts/install-deps.sh bench
	scripts/bench-events.sh

bench-registry:
	@scripts/install-deps.sh bench
	scripts/bench-registry.sh

bench-applications:
	@scripts/install-deps.sh bench
	scripts/bench-applications.sh

bench-console:
	@scripts/install-deps.sh bench
	scripts/bench-console.sh

bench-routing:
	@scripts/install-deps.sh bench
	scripts/bench-routing.sh

fmt:
	cargo fmt --all

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

ci: lint test
