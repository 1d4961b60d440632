#!/usr/bin/env bash
# `make demo`: the sandbox management cluster + Airflow standalone on the project's DAGs.
# `make demo-down` (or Ctrl-C) stops every process this started. State lives in .demo/.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DEMO=$ROOT/.demo
PORT=${HCP_ETCD_DEMO_PORT:-8080}
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
# Task processes report to the api-server's execution API: it must follow the port.
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$PORT/execution/
# A local demo: every visitor of the UI is an admin, so no password has to be found.
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True

echo "== preparing Airflow in $AIRFLOW_HOME"
airflow db migrate >"$DEMO/airflow-migrate.log" 2>&1
airflow pools set hcp_etcd_backup 4 "hcp-etcd: hosted clusters backed up at once" >/dev/null

echo "== starting Airflow standalone (log: .demo/airflow.log)"
setsid airflow standalone >"$DEMO/airflow.log" 2>&1 &
echo $! >"$DEMO/airflow.pid"
for _ in $(seq 1 180); do
  curl -fsS "http://127.0.0.1:$PORT/api/v2/version" >/dev/null 2>&1 && break
  sleep 1
done
curl -fsS "http://127.0.0.1:$PORT/api/v2/version" >/dev/null || { echo "Airflow did not start: see .demo/airflow.log" >&2; exit 1; }

airflow dags reserialize >/dev/null 2>&1 || true
for dag in $(cd "$ROOT/dags" && ls hcp_etcd_*.py | sed 's/\.py$//'); do
  airflow dags unpause "$dag" >/dev/null 2>&1 || true
done

# The REST API, as the demo's all-admin user (the CLI would import Airflow for every call).
API=http://127.0.0.1:$PORT
TOKEN=$(curl -fsS "$API/auth/token" | python -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
api() { curl -fsS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
trigger() {  # trigger DAG $1 now; prints the run id
  api -X POST "$API/api/v2/dags/$1/dagRuns" -d '{"logical_date": null, "conf": {}}' \
    | python -c 'import json,sys; print(json.load(sys.stdin)["dag_run_id"])'
}
run_state() {  # state of run $2 of DAG $1
  api "$API/api/v2/dags/$1/dagRuns/$2" | python -c 'import json,sys; print(json.load(sys.stdin)["state"])'
}

backup_run=$(trigger hcp_etcd_backup)
echo "== triggered a backup of both hosted clusters (run $backup_run)"
cat <<MSG

  Airflow UI:   $API   (demo mode: every visitor is admin, no login)
  Status page:  $API/hcp-etcd/   (in the UI: Browse > etcd backups)
  kubectl:      kubectl --kubeconfig .demo/sandbox/kubeconfig get hostedclusters -n clusters
  Stop:         Ctrl-C here, or 'make demo-down' from another terminal

MSG
# A drill restores the newest backup at or before its date: wait for the backup to exist first.
if [ -f "$ROOT/dags/hcp_etcd_restore_drill.py" ]; then
  state=queued
  for _ in $(seq 1 180); do
    kill -0 "$(cat "$DEMO/airflow.pid" 2>/dev/null)" 2>/dev/null || { echo "Airflow stopped" >&2; exit 1; }
    state=$(run_state hcp_etcd_backup "$backup_run" 2>/dev/null || echo unknown)
    case "$state" in success|failed) break ;; esac
    sleep 5
  done
  echo "== backup run $backup_run: $state"
  drill_run=$(trigger hcp_etcd_restore_drill)
  echo "== triggered a restore drill (run $drill_run): its report shows on the status page when done"
fi
wait "$(cat "$DEMO/airflow.pid")"
