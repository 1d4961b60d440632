#!/usr/bin/env bash
# `make demo`: the sandbox management cluster + Airflow standalone on the project's DAGs.
# `make demo-down` (or Ctrl-C) stops every process this started. State lives in .demo/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DEMO=$ROOT/.demo
PORT=${HCP_ETCD_DEMO_PORT:-8080}
API=http://127.0.0.1:$PORT
export PYTHONPATH=$ROOT/include${PYTHONPATH:+:$PYTHONPATH}

stop() {
  if [ -f "$DEMO/airflow.pid" ]; then
    pid=$(cat "$DEMO/airflow.pid")
    # airflow standalone runs its components as children in its own process group.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$DEMO/airflow.pid"
  fi
  if [ -f "$DEMO/sandbox/sandbox.json" ]; then python -m hcp_sandbox down --dir "$DEMO/sandbox" || true; fi
}

if [ "${1:-}" = "down" ]; then stop; echo "demo stopped"; exit 0; fi

mkdir -p "$DEMO"
stop
# A new Airflow database, as the sandbox is new: runs of a previous demo would point at clusters
# that are gone (and, resumed, hold the backup DAG's single active run).
rm -rf "$DEMO/airflow"
# Ctrl-C (or a TERM) ends the script, and every ending stops what it started.
trap 'stop' EXIT
trap 'echo; echo "stopping the demo..."; exit 130' INT TERM

echo "== starting the sandbox management cluster (one HA and one SingleReplica hosted cluster)"
python -m hcp_sandbox up --dir "$DEMO/sandbox" --cluster demo-ha:3 --cluster demo-sno:1 --seed-mb 16

set -a
# shellcheck disable=SC1091
. "$DEMO/sandbox/airflow.env"
set +a
export AIRFLOW_HOME=$DEMO/airflow
export AIRFLOW__CORE__DAGS_FOLDER=$ROOT/dags
export AIRFLOW__CORE__PLUGINS_FOLDER=$ROOT/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR=LocalExecutor
export AIRFLOW__API__PORT=$PORT
# Loopback only: the UI has an admin login, and the demo is for this machine.
export AIRFLOW__API__HOST=127.0.0.1
# Two hosted clusters need a few task slots, not 32 idle worker processes.
export AIRFLOW__CORE__PARALLELISM=8
# Task processes report to the api-server's execution API: it must follow the port.
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=$API/execution/
# The simple auth manager with a login, as in a deployment: one admin whose password Airflow
# generates (into $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated) and the demo prints.
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=False
PASSWORDS=$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated

echo "== preparing Airflow in .demo/airflow"
airflow db migrate >"$DEMO/airflow-migrate.log" 2>&1
airflow pools set hcp_etcd_backup 4 "hcp-etcd: hosted clusters backed up at once" >/dev/null
# The DAGs in the database before the scheduler starts, so that they can be unpaused at once.
airflow dags reserialize >"$DEMO/airflow-reserialize.log" 2>&1

echo "== starting Airflow standalone (log: .demo/airflow.log)"
setsid airflow standalone >"$DEMO/airflow.log" 2>&1 &
echo $! >"$DEMO/airflow.pid"
for _ in $(seq 1 180); do
  curl -fsS "$API/api/v2/version" >/dev/null 2>&1 && [ -s "$PASSWORDS" ] && break
  sleep 1
done
curl -fsS "$API/api/v2/version" >/dev/null || { echo "Airflow did not start: see .demo/airflow.log" >&2; exit 1; }
PASSWORD=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' "$PASSWORDS")

# The REST API with the admin's token (the CLI would import Airflow for every call).
TOKEN=$(curl -fsS -X POST "$API/auth/token" -H 'Content-Type: application/json' \
  -d "$(python -c 'import json,sys; print(json.dumps({"username": "admin", "password": sys.argv[1]}))' "$PASSWORD")" \
  | python -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
api() { curl -fsS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
trigger() {  # trigger DAG $1 now; prints the run id
  api -X POST "$API/api/v2/dags/$1/dagRuns" -d '{"logical_date": null, "conf": {}}' \
    | python -c 'import json,sys; print(json.load(sys.stdin)["dag_run_id"])'
}
run_state() {  # state of run $2 of DAG $1
  api "$API/api/v2/dags/$1/dagRuns/$2" | python -c 'import json,sys; print(json.load(sys.stdin)["state"])'
}
wait_run() {  # wait (at most $3 s) for run $2 of DAG $1 to end; prints its state
  local state=queued deadline=$((SECONDS + $3))
  while [ "$SECONDS" -lt "$deadline" ]; do
    # Stopped from elsewhere (`make demo-down`): nothing left to wait for.
    [ -f "$DEMO/airflow.pid" ] && kill -0 "$(cat "$DEMO/airflow.pid")" 2>/dev/null || { echo stopped; return; }
    state=$(run_state "$1" "$2" 2>/dev/null || echo unknown)
    case "$state" in success | failed) break ;; esac
    sleep 5
  done
  echo "$state"
}
ended() {
  echo "== Airflow is no longer running: the demo is stopped"
  trap - EXIT
  stop >/dev/null 2>&1
  exit 0
}

# The DAGs have no start_date: unpausing waits for their next slot (no run starts now), so the
# runs below are the only ones. dags/hcp_etcd_backup.py also makes the online backup DAG.
for dag in $(cd "$ROOT/dags" && ls hcp_etcd_*.py | sed 's/\.py$//') hcp_etcd_backup_online; do
  api -X PATCH "$API/api/v2/dags/$dag" -d '{"is_paused": false}' >/dev/null
done

backup_run=$(trigger hcp_etcd_backup)
echo "== triggered a backup of both hosted clusters (run $backup_run)"
cat <<MSG

  Airflow UI:   $API   (login: admin / $PASSWORD)
  Status page:  $API/hcp-etcd/   (in the UI: Browse > etcd backups)
  kubectl:      kubectl --kubeconfig .demo/sandbox/kubeconfig get hostedclusters -n clusters
  Stop:         Ctrl-C here, or 'make demo-down' from another terminal

MSG
# A drill restores the newest backup at or before its date: wait for the backup to exist first.
state=$(wait_run hcp_etcd_backup "$backup_run" 900)
[ "$state" = stopped ] && ended
echo "== backup run $backup_run: $state"
drill_run=$(trigger hcp_etcd_restore_drill)
echo "== triggered a restore drill of both hosted clusters (run $drill_run)"
state=$(wait_run hcp_etcd_restore_drill "$drill_run" 1200)
[ "$state" = stopped ] && ended
echo "== restore drill run $drill_run: $state"
api "$API/hcp-etcd/api/status" | python -c '
import json, sys
for c in json.load(sys.stdin)["clusters"]:
    drill = {True: "passed", False: "FAILED", None: "none"}[c["last_drill_passed"]]
    recovery = c["drill_recovery_seconds"]
    print("   %-18s %-12s last backup %s, drill %s%s" % (c["ref"], c["state"], c["last_backup_at"], drill,
          "" if recovery is None else " (recovered in %.0f s)" % recovery))
' || true
echo "== the status page has them: $API/hcp-etcd/ (Ctrl-C or 'make demo-down' stops the demo)"
wait "$(cat "$DEMO/airflow.pid")" || true
ended
