#!/bin/sh
# Re-records tests/facts_data/haproxy/*: a real HAProxy on 127.0.0.1 (random ports, temp dir)
# with one backend holding an UP, a DOWN, a MAINT and an unchecked server; `show stat` read from
# its stats socket. Kills only the PID it started. Usage: sh tests/facts_data/record_haproxy.sh
set -eu
out=$(cd "$(dirname "$0")" && pwd)/haproxy
mkdir -p "$out"
tmp=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; [ -n "$pid" ] && wait "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
base=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom) % 20000 ))
cat > "$tmp/haproxy.cfg" <<CFG
global
    stats socket $tmp/admin.sock mode 600 level admin
defaults
    mode tcp
    timeout connect 1s
    timeout client 35s
    timeout server 35s
    timeout check 1s
frontend k8s-api
    bind 127.0.0.1:$base
    default_backend k8s-api-backend
backend k8s-api-backend
    default-server inter 200ms fall 1 rise 1
    server master01 127.0.0.1:$((base+1)) check
    server master02 127.0.0.1:$((base+2)) check
    server master03 127.0.0.1:$((base+3)) check disabled
    server master04 127.0.0.1:$((base+1))
listen alive
    bind 127.0.0.1:$((base+1))
    server none 127.0.0.1:$((base+4))
CFG
haproxy -f "$tmp/haproxy.cfg" -db >"$tmp/log" 2>&1 &
pid=$!
sleep 1.5
/usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"show stat\n")
data = b""
while chunk := s.recv(65536): data += chunk
sys.stdout.write(data.decode())' "$tmp/admin.sock" > "$out/show_stat.csv"
echo "recorded into $out"; cat "$out/show_stat.csv" | cut -d, -f1,2,18,37 
