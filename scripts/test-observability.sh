#!/usr/bin/env bash
# The gateway's exports against the real tools (issue 7's acceptance):
#  - InfluxDB 1.x (Debian's `influxdb` package) accepts the line-protocol push and answers
#    queries for the three measurements;
#  - `promtool check metrics` (Debian's `prometheus` package) accepts `/metrics`.
# Installs both with apt if missing, starts influxd on loopback with a throw-away config and
# data directory, runs the ignored test `gateway/tests/observability.rs`, stops influxd.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v influxd >/dev/null || need+=(influxdb)
command -v promtool >/dev/null || need+=(prometheus)
if ((${#need[@]})); then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "installing ${need[*]} from Debian"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

tmp="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
rpc_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat >"$tmp/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc_port"
[meta]
  dir = "$tmp/meta"
[data]
  dir = "$tmp/data"
  wal-dir = "$tmp/wal"
[http]
  enabled = true
  bind-address = "127.0.0.1:$port"
  auth-enabled = false
  log-enabled = false
CONF
influxd -config "$tmp/influxdb.conf" >"$tmp/influxd.log" 2>&1 &
influx_pid=$!
cleanup() {
    kill "$influx_pid" 2>/dev/null || true
    wait "$influx_pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

url="http://127.0.0.1:$port"
python3 - "$url" <<'PY'
import sys, time, urllib.request, urllib.parse
url = sys.argv[1]
for _ in range(300):
    try:
        urllib.request.urlopen(url + "/ping", timeout=1)
        break
    except Exception:
        time.sleep(0.1)
else:
    sys.exit("influxd did not start; see its log")
urllib.request.urlopen(url + "/query", data=urllib.parse.urlencode({"q": "CREATE DATABASE gpufn"}).encode(), timeout=5)
PY

GPUFN_INFLUX_URL="$url" GPUFN_PROMTOOL="$(command -v promtool)" \
    cargo test -p gpufn-gateway --test observability -- --ignored --nocapture
