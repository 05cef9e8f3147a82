#!/usr/bin/env bash
# The run command for a newcomer: installs what is missing, builds Ferry, starts
# a one-machine cluster (ferry-host + one ferry-runner) in the background, runs a
# first task and prints how to go on. Safe to run again: it restarts the daemons
# it started before and keeps their state in .ferry-quickstart/.
#
# Env: FERRY_QS_HOST_PORT (default 8000), FERRY_QS_RUNNER_PORT (default 8001),
#      FERRY_LOG (daemon log filter, default info).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
STATE=$ROOT/.ferry-quickstart
HOST_PORT=${FERRY_QS_HOST_PORT:-8000}
RUNNER_PORT=${FERRY_QS_RUNNER_PORT:-8001}
NODE=quickstart-node
HOST_URL=http://127.0.0.1:$HOST_PORT
WAIT_S=60

# ---------------------------------------------------------------------------
# AUTH: every curl to the host API below passes "${AUTH_HEADER[@]}"; it is
# filled in with an API token of the first administrator once the host is up.
AUTH_HEADER=()
# ---------------------------------------------------------------------------

say() { printf '[quickstart] %s\n' "$*"; }
die() { printf '[quickstart] ERROR: %s\n' "$*" >&2; exit 1; }

started=()   # daemons this run started, for liveness checks and log tails
on_exit() {
  local rc=$? d
  ((rc != 0)) || return 0
  for d in "${started[@]}"; do
    if [[ -f $STATE/$d.log ]]; then
      printf '\n----- last lines of %s -----\n' "$STATE/$d.log" >&2
      tail -n 30 "$STATE/$d.log" >&2
    fi
  done
  printf '\n[quickstart] failed (exit %d).' "$rc" >&2
  # shellcheck disable=SC2016 # the $(...) is for the user to paste
  ((${#started[@]} == 0)) || printf ' Stop the daemons with: kill $(cat %s/*.pid)' "$STATE" >&2
  printf '\n' >&2
}
trap on_exit EXIT

for p in "$HOST_PORT" "$RUNNER_PORT"; do
  [[ $p =~ ^[0-9]{1,5}$ ]] && ((10#$p > 0 && 10#$p < 65536)) && continue
  die "bad port '$p' (FERRY_QS_HOST_PORT / FERRY_QS_RUNNER_PORT)"
done
[[ $HOST_PORT != "$RUNNER_PORT" ]] || die "host and runner ports are both $HOST_PORT"

# --- 1. tools ---------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -f ${HOME:-/root}/.cargo/env ]]; then
  # shellcheck disable=SC1091
  . "${HOME:-/root}/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (https://rustup.rs) and run again"

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3) # JSON parsing below
if ((${#missing[@]})); then
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  say "installing ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

bash scripts/setup-docker.sh
bash scripts/build-test-image.sh

# --- 2. build ---------------------------------------------------------------
say "cargo build --release --bins (the first build takes several minutes)"
cargo build --release --bins
for b in ferry-host ferry-runner; do
  [[ -x target/release/$b ]] || die "target/release/$b was not built"
done

# --- 3. state dir and cluster secret ----------------------------------------
mkdir -p "$STATE/host" "$STATE/runner"
chmod 700 "$STATE"
if [[ ! -s $STATE/cluster-secret ]]; then
  say "generating cluster secret ($STATE/cluster-secret)"
  (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '/+=' >"$STATE/cluster-secret")
fi
chmod 600 "$STATE/cluster-secret"
secret=$(<"$STATE/cluster-secret")

# --- 4. stop what a previous quickstart started ------------------------------
# alive PID: running and not a zombie
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ $state != Z ]]
}

stop_previous() {
  local name=$1 pidf=$STATE/$1.pid pid cmd="" i
  [[ -f $pidf ]] || return 0
  pid=$(<"$pidf")
  # Only signal the pid if it still is our daemon (pids get reused): its
  # command line must name our data dir.
  if [[ $pid =~ ^[0-9]+$ ]]; then
    cmd=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null) || true
  fi
  if [[ $cmd == *$'\n'--data-dir$'\n'"$STATE/$name"* ]] && alive "$pid"; then
    say "stopping previous ferry-$name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      say "ferry-$name did not stop within 15s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidf"
}
stop_previous runner
stop_previous host

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_busy "$HOST_PORT" && die "port $HOST_PORT is in use; stop that process or set FERRY_QS_HOST_PORT"
port_busy "$RUNNER_PORT" && die "port $RUNNER_PORT is in use; stop that process or set FERRY_QS_RUNNER_PORT"

# --- 5. start the daemons ----------------------------------------------------
# setsid: the daemons get their own session, so closing this terminal or
# pressing Ctrl-C here does not stop them.
detach=()
command -v setsid >/dev/null 2>&1 && detach=(setsid)

start_daemon() {
  local name=$1 pid
  shift
  # Keep the previous run's log as <name>.log.1.
  [[ ! -f $STATE/$name.log ]] || mv -f "$STATE/$name.log" "$STATE/$name.log.1"
  FERRY_CLUSTER_SECRET=$secret FERRY_LOG=${FERRY_LOG:-info} \
    "${detach[@]}" nohup "$@" >"$STATE/$name.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$STATE/$name.pid"
  started+=("$name")
  say "started ferry-$name (pid $pid, log $STATE/$name.log)"
}

check_started_alive() {
  local d
  for d in "${started[@]}"; do
    alive "$(<"$STATE/$d.pid")" || die "ferry-$d exited during start-up (log: $STATE/$d.log)"
  done
}

# wait_for DESCRIPTION COMMAND...: poll COMMAND until it succeeds, up to WAIT_S.
wait_for() {
  local desc=$1 deadline=$((SECONDS + WAIT_S))
  shift
  say "waiting for $desc (up to ${WAIT_S}s)"
  until "$@"; do
    check_started_alive
    ((SECONDS < deadline)) || die "timed out after ${WAIT_S}s waiting for $desc"
    sleep 0.5
  done
}

host_ready() { curl -fs -o /dev/null --max-time 2 "${AUTH_HEADER[@]}" "$HOST_URL/ready"; }

node_online() {
  local body
  body=$(curl -fs --max-time 5 "${AUTH_HEADER[@]}" "$HOST_URL/api/nodes") || return 1
  python3 -c '
import json, sys
name = sys.argv[1]
nodes = json.load(sys.stdin)
if isinstance(nodes, dict):
    nodes = nodes.get("nodes", [])
ok = any(n.get("hostname", n.get("name")) == name and n.get("status") == "online" for n in nodes)
sys.exit(0 if ok else 1)
' "$NODE" <<<"$body" 2>/dev/null
}

start_daemon host target/release/ferry-host \
  --listen "127.0.0.1:$HOST_PORT" --data-dir "$STATE/host"
wait_for "ferry-host at $HOST_URL/ready" host_ready

# --- sign in: the host created 'admin' on first start (password in its data dir) ---
TOKEN_FILE="$STATE/api-token"
token_ok() { curl -fs -o /dev/null --max-time 5 -H "Authorization: Bearer $(<"$TOKEN_FILE")" "$HOST_URL/api/auth/me"; }
if [[ ! -s $TOKEN_FILE ]] || ! token_ok; then
  pw_file="$STATE/host/initial-admin-password"
  [[ -s $pw_file ]] || die "no $pw_file: this data dir's admin password is unknown; delete $STATE for a fresh cluster"
  jar=$(mktemp)
  login_body=$(python3 -c 'import json,sys; print(json.dumps({"username":"admin","password":sys.argv[1]}))' "$(head -n1 "$pw_file")")
  curl -fsS --max-time 10 -c "$jar" -o /dev/null -H 'content-type: application/json' \
    -d "$login_body" "$HOST_URL/api/auth/login" || { rm -f "$jar"; die "login as admin failed"; }
  token=$(curl -fsS --max-time 10 -b "$jar" -H 'content-type: application/json' \
    -d '{"name":"quickstart"}' "$HOST_URL/api/auth/tokens/create" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])') || { rm -f "$jar"; die "could not create an API token"; }
  rm -f "$jar"
  (umask 077; printf '%s\n' "$token" >"$TOKEN_FILE")
  say "signed in as admin; API token saved in $TOKEN_FILE"
fi
AUTH_HEADER=(-H "Authorization: Bearer $(<"$TOKEN_FILE")")

start_daemon runner target/release/ferry-runner \
  --listen "127.0.0.1:$RUNNER_PORT" --host-url "$HOST_URL" --name "$NODE" --data-dir "$STATE/runner"
wait_for "node $NODE to be online" node_online

# --- 6. first task -------------------------------------------------------------
say "submitting: echo 'hello from ferry'"
resp=$(curl -sS --max-time 30 -w '\n%{http_code}' "${AUTH_HEADER[@]}" -X POST "$HOST_URL/api/submit" \
  -H 'content-type: application/json' \
  -d '{"command":"echo","arguments":["hello from ferry"]}') || die "POST /api/submit failed"
code=${resp##*$'\n'}
body=${resp%$'\n'*}
[[ $code == 2?? ]] || die "POST /api/submit answered HTTP $code: $body"
task_id=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["task_ids"][0])' <<<"$body") ||
  die "no task id in the submit response: $body"
say "task $task_id submitted (HTTP $code)"

task_status() {
  curl -fsS --max-time 5 "${AUTH_HEADER[@]}" "$HOST_URL/api/status/$task_id" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["status"])'
}

deadline=$((SECONDS + WAIT_S))
last=""
while :; do
  status=$(task_status) || status=""
  if [[ -n $status && $status != "$last" ]]; then
    say "task $task_id: $status"
    last=$status
  fi
  case $status in
    completed | failed | killed | killed_oom | lost) break ;;
  esac
  check_started_alive
  ((SECONDS < deadline)) || die "task $task_id did not finish within ${WAIT_S}s (last status: ${status:-unknown})"
  sleep 0.5
done

out=$(curl -fsS --max-time 10 "${AUTH_HEADER[@]}" "$HOST_URL/api/tasks/$task_id/stdout") ||
  die "could not read the stdout of task $task_id"
say "stdout of task $task_id:"
printf '%s\n' "$out"
if [[ $status != completed ]]; then
  curl -sS --max-time 10 "${AUTH_HEADER[@]}" "$HOST_URL/api/status/$task_id" >&2 || true
  die "task $task_id ended '$status', expected 'completed'"
fi

# --- 7. what next --------------------------------------------------------------
auth="-H \"Authorization: Bearer \$(cat $TOKEN_FILE)\" "
cat <<EOF

Ferry is running on this machine:
  host    $HOST_URL  (pid $(<"$STATE/host.pid"))
  runner  http://127.0.0.1:$RUNNER_PORT  (node $NODE, pid $(<"$STATE/runner.pid"))

With the ferry CLI (built into target/release):
  export PATH=\$PWD/target/release:\$PATH FERRY_HOST=$HOST_URL FERRY_TOKEN=\$(cat $TOKEN_FILE)
  ferry task submit --follow -- echo hi
  ferry task list
  ferry node list

Or over plain HTTP. Submit a task:
  curl -sS ${auth}-X POST $HOST_URL/api/submit -H 'content-type: application/json' \\
       -d '{"command":"echo","arguments":["hi"]}'
Its status and output (<id> from "task_ids" in the reply):
  curl -sS ${auth}$HOST_URL/api/status/<id>
  curl -sS ${auth}$HOST_URL/api/tasks/<id>/stdout
Nodes:
  curl -sS ${auth}$HOST_URL/api/nodes

Admin:  user 'admin', password in $STATE/host/initial-admin-password
Logs:   $STATE/host.log  $STATE/runner.log
State:  $STATE/  (delete it for a fresh cluster)
Stop:   kill \$(cat $STATE/*.pid)
EOF
