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
trap 'echo; echo "stopping the demo..."; stop' EXIT INT TERM

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

for dag in $(cd "$ROOT/dags" && ls hcp_etcd_*.py | sed 's/\.py$//'); do
  airflow dags reserialize >/dev/null 2>&1 || true
  airflow dags unpause "$dag" >/dev/null 2>&1 || true
done
airflow dags trigger hcp_etcd_backup >/dev/null && echo "== triggered a backup of both hosted clusters"
if [ -f "$ROOT/dags/hcp_etcd_restore_drill.py" ]; then
  airflow dags trigger hcp_etcd_restore_drill >/dev/null && echo "== triggered a restore drill"
fi

cat <<MSG

  Airflow UI:  http://127.0.0.1:$PORT   (demo mode: no login needed)
  kubectl:     kubectl --kubeconfig .demo/sandbox/kubeconfig get hostedclusters -n clusters
  Stop:        Ctrl-C here, or 'make demo-down' from another terminal

MSG
wait "$(cat "$DEMO/airflow.pid")"
