"""hcp-etcd: back up and restore the etcd of OpenShift Hosted Control Planes with Airflow.

Domain logic lives in the top-level modules (pure, unit-tested); I/O lives in ``hooks``;
``operators`` glue the two for Airflow; ``triggers`` only wait.
"""
