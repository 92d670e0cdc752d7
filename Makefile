# One command surface for people and CI (.ci/run calls `make test`).
.PHONY: bootstrap test lint demo dev-up dev-down dev-status

bootstrap:  ## install what is missing (Debian packages, .venv, Triton venv, Kafka jars)
	scripts/bootstrap.sh

test:  ## bootstrap, ruff, import contracts, mypy, then every test (integration tests start their own stack)
	scripts/test.sh

lint: bootstrap  ## ruff, the layer contracts (import-linter), the type check (mypy); see pyproject.toml
	.venv/bin/ruff check .
	.venv/bin/lint-imports
	.venv/bin/mypy

demo: bootstrap  ## start the local stack and run a synthetic site end to end
	.venv/bin/vigil demo

dev-up: bootstrap
	.venv/bin/vigil dev up

dev-down:
	.venv/bin/vigil dev down

dev-status:
	.venv/bin/vigil dev status
