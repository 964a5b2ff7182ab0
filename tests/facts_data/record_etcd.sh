#!/bin/sh
# Re-records tests/facts_data/etcd/*: a real 3-member etcd 3.4 cluster on 127.0.0.1 (random
# ports, plain http, a temp dir), plus a learner and an unstarted member, read with the real
# etcdctl -w json. Kills only the PIDs it started. Usage: sh tests/facts_data/record_etcd.sh
set -eu
out=$(cd "$(dirname "$0")" && pwd)/etcd
mkdir -p "$out"
tmp=$(mktemp -d)
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; for p in $pids; do wait "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
base=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom) % 20000 ))
c1=$base; p1=$((base+1)); c2=$((base+2)); p2=$((base+3)); c3=$((base+4)); p3=$((base+5)); c4=$((base+6)); p4=$((base+7))
cluster="etcd01=http://127.0.0.1:$p1,etcd02=http://127.0.0.1:$p2,etcd03=http://127.0.0.1:$p3"
start() { # name client peer state cluster
  etcd --name "$1" --data-dir "$tmp/$1" --listen-client-urls "http://127.0.0.1:$2" \
    --advertise-client-urls "http://127.0.0.1:$2" --listen-peer-urls "http://127.0.0.1:$3" \
    --initial-advertise-peer-urls "http://127.0.0.1:$3" --initial-cluster "$5" \
    --initial-cluster-state "$4" --initial-cluster-token rec >"$tmp/$1.log" 2>&1 &
  pids="$pids $!"
}
start etcd01 $c1 $p1 new "$cluster"; start etcd02 $c2 $p2 new "$cluster"; start etcd03 $c3 $p3 new "$cluster"
ctl() { ETCDCTL_API=3 etcdctl --endpoints="http://127.0.0.1:$c1" --dial-timeout=2s --command-timeout=5s "$@"; }
for i in $(seq 50); do ctl endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
ctl -w json member list > "$out/member_list_3.json"
ctl -w json endpoint status > "$out/endpoint_status.json"
ctl -w json endpoint health > "$out/endpoint_health.json"
ctl -w json get /registry --prefix --keys-only --limit 1 > "$out/registry_count_0.json"
ctl put /registry/namespaces/default x >/dev/null; ctl put /registry/pods/a y >/dev/null
ctl -w json get /registry --prefix --keys-only --limit 1 > "$out/registry_count_2.json"
# a learner added and started, and a member added but never started
retry() { for i in $(seq 40); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done; "$@"; }
retry ctl member add etcd04 --learner --peer-urls="http://127.0.0.1:$p4"
start etcd04 $c4 $p4 existing "$cluster,etcd04=http://127.0.0.1:$p4"
for i in $(seq 50); do ETCDCTL_API=3 etcdctl --endpoints="http://127.0.0.1:$c4" endpoint status >/dev/null 2>&1 && break; sleep 0.2; done
sleep 1
retry ctl member add etcd05 --peer-urls="http://127.0.0.1:$((base+9))"
ctl -w json member list > "$out/member_list_learner_unstarted.json"
ETCDCTL_API=3 etcdctl --endpoints="http://127.0.0.1:$c4" -w json endpoint status > "$out/endpoint_status_learner.json" || true
# quorum lost: stop etcd02 and etcd03 (5 voters now... 4 voters incl. unstarted etcd05) -> health false
set -- $pids
kill "$2" "$3"; wait "$2" "$3" 2>/dev/null || true
rc=0; ctl -w json --command-timeout=3s endpoint health > "$out/endpoint_health_no_quorum.json" 2> "$out/endpoint_health_no_quorum.stderr" || rc=$?
echo "$rc" > "$out/endpoint_health_no_quorum.rc"
# a member that is down: connection refused
rc=0; ETCDCTL_API=3 etcdctl --endpoints="http://127.0.0.1:$c2" --dial-timeout=1s -w json member list > "$out/member_list_refused.json" 2> "$out/member_list_refused.stderr" || rc=$?
echo "$rc" > "$out/member_list_refused.rc"
echo "base port $base; recorded into $out"
