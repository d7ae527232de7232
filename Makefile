# Entry points for developers and CI. `make help` lists them.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

# Build outputs live outside the repository, so a fresh clone (as in CI) reuses them.
ARTIFACT_OPERATOR_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/artifact-operator
CARGO_TARGET_DIR ?= $(ARTIFACT_OPERATOR_CACHE)/target
export ARTIFACT_OPERATOR_CACHE CARGO_TARGET_DIR

.PHONY: help
help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the operator binary (debug).
	cargo build --locked

.PHONY: crds
crds: ## Regenerate the CustomResourceDefinitions under crds/ from the Rust types.
	cargo run --locked --quiet -- crds --output-dir crds

.PHONY: lint
lint: ## Check formatting and run clippy with warnings as errors.
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

.PHONY: testenv-build
testenv-build: ## Install Debian packages, build the test components and fetch test JARs (cached).
	tests/env/install-packages.sh
	tests/env/build.sh
	tests/env/fetch-jars.sh

.PHONY: testenv
testenv: testenv-build ## Start the local control plane and registries.
	tests/env/up.sh

.PHONY: testenv-down
testenv-down: ## Stop the local control plane and registries.
	tests/env/down.sh

.PHONY: test
test: testenv-build lint ## Build, start the environment, run every test, stop it.
	cargo build --locked --all-targets
	tests/env/with-testenv.sh cargo test --locked --all-targets --no-fail-fast -- --test-threads 4

.PHONY: bench
bench: testenv-build ## Start an environment of its own, run bench/run.sh (release build), stop it.
	TESTENV_STATE="$(ARTIFACT_OPERATOR_CACHE)/run-bench" tests/env/with-testenv.sh bench/run.sh
