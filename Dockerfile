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

# `hcp` (restores given render_options) is not in the image: no package registry serves it, and it
# must match the management cluster's HyperShift. It is provided at run time in /opt/hcp-etcd/bin,
# first on PATH: a mount in docker-compose.yaml (./hcp-bin), an init container copying it from the
# HyperShift operator's image in include/deploy/values-common.yaml. Building it in instead:
#   COPY --from=<your HyperShift operator image> /usr/bin/hcp /opt/hcp-etcd/bin/hcp
USER root
RUN install -d -o airflow -g root /opt/hcp-etcd/bin
USER airflow
ENV PATH=/opt/hcp-etcd/bin:${PATH}
