# Shared by the scripts: free ports, waiting for a port (also scripts/broker), stopping what we
# started.
# shellcheck shell=bash

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() { # port seconds name
  local deadline=$((SECONDS + $2))
  until port_in_use "$1"; do
    if [ $SECONDS -ge $deadline ]; then echo "$3 did not listen on 127.0.0.1:$1 within $2 s" >&2; return 1; fi
    sleep 0.2
  done
}

started_pids=()

# start NAME LOGFILE CMD...: run CMD in the background, remembered for stop_started.
start() {
  local name="$1" log="$2"
  shift 2
  "$@" >"$log" 2>&1 &
  started_pids+=("$!")
  echo "started $name (pid $!, log $log)" >&2
}

stop_started() {
  local pid
  for pid in "${started_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${started_pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  started_pids=()
}
