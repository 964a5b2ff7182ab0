# hactl — make demo (converge the local lab) and make test (the whole suite). Both set up what
# they need on a fresh Debian machine: Debian packages (as root), a .venv with hactl and its tools.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEB_PACKAGES := openssh-server openssh-client etcd-server etcd-client haproxy iproute2 \
                procps util-linux python3 python3-cryptography python3-yaml curl
SPEC ?= specs/lab.yaml

.PHONY: test demo setup deb venv lint typecheck unit lab docs clean demo-down

setup: deb venv

deb:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if ! command -v kubectl >/dev/null 2>&1; then missing="$$missing kubernetes-client"; fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root (or: sudo apt-get install -y$$missing)"; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(BIN)/hactl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/hactl

lint: venv
	$(BIN)/ruff check hactl tests bench

typecheck: venv
	$(BIN)/mypy hactl

unit: setup
	$(BIN)/python -m pytest tests -m "not lab" -q

lab: setup
	$(BIN)/python -m pytest tests -m lab -q

test: setup lint typecheck
	$(BIN)/python -m pytest tests -q -p no:cacheprovider

docs: venv
	$(BIN)/python -m hactl.spec.docgen > docs/spec.md

demo: setup
	@bash scripts/demo.sh $(SPEC)

demo-down: venv
	$(BIN)/hactl lab down -f $(SPEC)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache out
