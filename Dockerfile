# The Airflow image for docker-compose.yaml: the official image plus hcp-etcd's locked requirements.
FROM apache/airflow:3.3.2-python3.11

# The lock pins every transitive package, so the image resolves to what the tests ran with.
COPY --chown=airflow:root requirements.txt constraints.txt /opt/hcp-etcd/
RUN pip install --no-cache-dir -r /opt/hcp-etcd/requirements.txt -c /opt/hcp-etcd/constraints.txt

# DAGs, plugins and include/ are mounted by docker-compose.yaml; baking them in as well lets the
# same image run without the mounts (e.g. on Kubernetes).
COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root include/ /opt/airflow/include/
ENV PYTHONPATH=/opt/airflow/include
