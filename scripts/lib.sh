# Shared by the scripts: free ports, waiting for a port or a readiness URL, stopping what we
# started, the dev stack start-up (scripts/dev, scripts/bench) and the Python venvs
# (scripts/python-env, scripts/deploy-check).
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

wait_for_ready() { # url seconds name log: until url answers 2xx; otherwise the end of log and a failure
  local deadline=$((SECONDS + $2))
  until curl -fsS "$1" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then tail -20 "$4" >&2; echo "$3 did not become ready" >&2; return 1; fi
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

# start_stack DIR BIN INSTANCE [NAME=VALUE...]: the whole stack, on the ports the caller set in
# kafka_port, registry_port, ingest_port, ingest_admin_port, processor_port and sink_port, with
# the binaries in BIN and state and logs in DIR: the dev broker, the schema registry, ingest
# (public URL http://127.0.0.1:$ingest_port, plus the NAME=VALUE settings: its secrets), waited
# for until ready, the processor (instance id INSTANCE; its console searches through the sink's
# calls API) and the sink (SQLite at DIR/switchboard.db). Exports SWITCHBOARD_KAFKA_BOOTSTRAP and SWITCHBOARD_SCHEMA_REGISTRY_URL;
# sets broker_pid, ingest_pid, processor_pid and sink_pid. stop_stack DIR stops it.
start_stack() {
  local dir="$1" bin="$2" instance="$3"
  shift 3
  "$root/scripts/broker" start "$kafka_port" "$dir/broker"
  broker_pid="$(cat "$dir/broker/broker.pid")"

  SWITCHBOARD_REGISTRY_LISTEN="127.0.0.1:$registry_port" SWITCHBOARD_REGISTRY_DATA="$dir/registry" \
    start registry "$dir/registry.log" "$bin/switchboard-registry"
  wait_for_port "$registry_port" 30 registry

  export SWITCHBOARD_KAFKA_BOOTSTRAP="127.0.0.1:$kafka_port"
  export SWITCHBOARD_SCHEMA_REGISTRY_URL="http://127.0.0.1:$registry_port"
  start ingest "$dir/ingest.log" env \
    SWITCHBOARD_LISTEN="127.0.0.1:$ingest_port" \
    SWITCHBOARD_ADMIN_LISTEN="127.0.0.1:$ingest_admin_port" \
    SWITCHBOARD_PUBLIC_URL="http://127.0.0.1:$ingest_port" \
    "$@" "$bin/switchboard-ingest"
  ingest_pid="${started_pids[-1]}"
  wait_for_port "$ingest_port" 60 ingest
  wait_for_ready "http://127.0.0.1:$ingest_admin_port/readyz" 30 ingest "$dir/ingest.log"

  # Tansu completes a consumer-group join after about half the session timeout: keep it short.
  SWITCHBOARD_ADMIN_LISTEN="127.0.0.1:$processor_port" \
  SWITCHBOARD_SINK_API_URL="http://127.0.0.1:$sink_port" \
  SWITCHBOARD_INSTANCE_ID="$instance" \
  SWITCHBOARD_STATE_DIR="${SWITCHBOARD_STATE_DIR:-$dir/state/$instance}" \
  SWITCHBOARD_SESSION_TIMEOUT="6s" \
    start processor "$dir/processor.log" "$bin/switchboard-processor"
  processor_pid="${started_pids[-1]}"
  wait_for_port "$processor_port" 60 processor

  SWITCHBOARD_ADMIN_LISTEN="127.0.0.1:$sink_port" \
  SWITCHBOARD_DATABASE_URL="sqlite://$dir/switchboard.db" \
  SWITCHBOARD_SESSION_TIMEOUT="6s" \
    start sink "$dir/sink.log" "$bin/switchboard-processor" sink
  sink_pid="${started_pids[-1]}"
  wait_for_port "$sink_port" 60 sink
}

stop_stack() { # dir: everything start_stack DIR started
  stop_started
  "$root/scripts/broker" stop "$1/broker"
}

# ensure_venv VENV REQUIREMENTS: a venv at VENV, made from python3, with REQUIREMENTS installed
# (exact pins, --no-deps, then pip check). Reinstalls only when the requirements file or the base
# interpreter changed; concurrent callers install once (flock). Progress goes to stderr.
ensure_venv() {
  local venv="$1" requirements="$2" name="scripts/${0##*/}" base wanted
  base="$(command -v python3 || true)"
  [ -n "$base" ] || { echo "$name: python3 is not installed (Debian: apt-get install python3 python3-venv)" >&2; return 1; }
  # What the installed venv must match: the requirements and the interpreter it was made from.
  wanted="$(sha256sum "$requirements" | cut -d' ' -f1) $("$base" -c 'import sys; print(sys.version.split()[0], sys.executable)')"
  venv_matches "$venv" "$wanted" && return 0

  mkdir -p "$(dirname "$venv")"
  # Test binaries of several crates may call this at once: install under a lock, then check again.
  exec 9>"$venv.lock"
  if command -v flock >/dev/null; then flock 9; fi
  if ! venv_matches "$venv" "$wanted"; then
    echo "$name: installing $requirements into $venv" >&2
    rm -rf "$venv"
    "$base" -m venv "$venv" >&2 || { echo "$name: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; return 1; }
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --no-deps \
      -r "$requirements" >&2 || { echo "$name: pip install -r $requirements failed" >&2; return 1; }
    "$venv/bin/python" -m pip check >&2 || { echo "$name: $requirements does not pin every dependency (pip check above)" >&2; return 1; }
    echo "$wanted" >"$venv/.switchboard-requirements"
  fi
  exec 9>&-
}

venv_matches() { # venv wanted
  [ -x "$1/bin/python" ] && [ -f "$1/.switchboard-requirements" ] && [ "$(cat "$1/.switchboard-requirements")" = "$2" ]
}
