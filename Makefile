# hactl — make demo (converge the local lab) and make test (the whole suite). Both set up what
# they need on a fresh Debian machine: Debian packages (as root), a .venv with hactl and its tools.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEB_PACKAGES := openssh-server openssh-client etcd-server etcd-client haproxy iproute2 \
                procps util-linux python3 python3-cryptography python3-yaml curl \
                containerd faketime conntrack iptables gnupg gpgv
# The lab's Debian mirror (hactl/lab/pkgrepo.py) serves these packages' .deb files from apt's cache.
MIRROR_DEBS := containerd runc socat
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
	fi; \
	debs=""; for p in $(MIRROR_DEBS); do ls /var/cache/apt/archives/$${p}_*.deb >/dev/null 2>&1 || debs="$$debs $$p"; done; \
	if [ -n "$$debs" ]; then \
	  echo "downloading into apt's cache for the lab's mirror:$$debs"; \
	  if [ "$$(id -u)" != 0 ]; then echo "run as root (or: sudo apt-get install --download-only --reinstall -y$$debs)"; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --download-only --reinstall --no-install-recommends $$debs >/dev/null; \
	fi

$(BIN)/hactl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/hactl

# ruff, then the import contracts of pyproject.toml [tool.importlinter] (docs/architecture.md, Layering)
lint: venv
	$(BIN)/ruff check hactl tests bench
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy hactl

unit: setup
	$(BIN)/python -m pytest tests -m "not lab" -q

lab: setup
	$(BIN)/python -m pytest tests -m lab -q

# The lab tests (most of the time: waiting on real sshd, etcd and HAProxy in the lab's nodes)
# and the other tests run side by side, one pytest each, the other tests at a lower CPU priority
# (the lab tests are the longer part; two lab processes side by side overloaded 2 cores: load
# 12, timing checks failed); the other tests' report is printed when both are done. Exit
# status: non-zero if either failed.
test: setup lint typecheck
	@mkdir -p out
	@nice -n 10 $(BIN)/python -m pytest tests -q -p no:cacheprovider -m "not lab" > out/test-not-lab.log 2>&1 & \
	pid=$$!; \
	$(BIN)/python -m pytest tests -q -p no:cacheprovider -m lab --durations=25; lab=$$?; \
	wait $$pid; rest=$$?; \
	echo "=== tests outside tests/lab (run alongside the lab tests; exit $$rest) ==="; \
	cat out/test-not-lab.log; \
	echo "=== lab tests: exit $$lab; other tests: exit $$rest ==="; \
	[ $$lab -eq 0 ] && [ $$rest -eq 0 ]

docs: venv
	$(BIN)/python -m hactl.spec.docgen > docs/spec.md

demo: setup
	@bash scripts/demo.sh $(SPEC)

demo-down: venv
	$(BIN)/hactl lab down -f $(SPEC)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache out
