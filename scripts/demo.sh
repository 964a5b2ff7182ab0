#!/usr/bin/env bash
# make demo: validate the example specs, bring up the local lab, converge it with hactl,
# prove it with `hactl check` and the machine's real kubectl through the load balancer.
# The lab stays up for you to explore; `make demo-down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
SPEC=${1:-specs/lab.yaml}
HACTL=.venv/bin/hactl
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Validate the example specs"
for spec in specs/*.yaml; do "$HACTL" validate -f "$spec"; done

step "Bring up the lab: every host of $SPEC becomes a node (netns + real sshd)"
"$HACTL" lab up -f "$SPEC"
"$HACTL" lab status -f "$SPEC"

step "Plan: what hactl would do to the live hosts"
"$HACTL" plan -f "$SPEC" || true   # exit 2 only with --detailed-exitcode; errors are shown

step "Apply: converge the lab"
"$HACTL" apply -f "$SPEC" --auto-approve

step "Check: health of the running cluster"
"$HACTL" check -f "$SPEC"

step "The real kubectl through the load balancer"
state=$(.venv/bin/python -c "import sys; from hactl.spec.load import load_cluster; c = load_cluster(sys.argv[1]); print(c.lab.state_dir or f'/var/lib/hactl-lab/{c.metadata.name}')" "$SPEC")
read -r master lb endpoint_host port < <(.venv/bin/python -c "import sys; from hactl.spec.load import load_cluster; c = load_cluster(sys.argv[1]); print(c.masters[0].address, c.load_balancer.hosts[0].address, c.endpoint_host, c.endpoint_port)" "$SPEC")
kubeconfig=$(mktemp)
trap 'rm -f "$kubeconfig"' EXIT
ssh -q -i "$state/id_ed25519" -o UserKnownHostsFile="$state/known_hosts" -o StrictHostKeyChecking=yes \
  -o BatchMode=yes "root@$master" cat /etc/kubernetes/admin.conf > "$kubeconfig"
chmod 600 "$kubeconfig"
kubectl --kubeconfig "$kubeconfig" --server "https://$lb:$port" --tls-server-name "$endpoint_host" \
  get nodes -o wide
step "Second plan: nothing left to do"
"$HACTL" plan -f "$SPEC" --detailed-exitcode
printf '\nThe lab is still up. Try: %s check -f %s, %s lab stop -f %s master01; remove it with: make demo-down\n' \
  "$HACTL" "$SPEC" "$HACTL" "$SPEC"
