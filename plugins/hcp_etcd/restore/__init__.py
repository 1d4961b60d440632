"""Restore and restore drills: the domain logic (pure functions, no I/O), one module per concern.

- :mod:`~hcp_etcd.restore.backups`: where the backup is (the ``source`` Param, the newest complete
  backup of a cluster at or before a time, the manifest's checks, the escrowed keys it names);
- :mod:`~hcp_etcd.restore.presign`: a presigned URL against HyperShift's ``restoreSnapshotURL`` rules;
- :mod:`~hcp_etcd.restore.plan`: the target and its manifests (rendered by ``hcp create cluster aws
  --render --render-sensitive``, or cloned from a live HostedCluster for a drill) edited into the
  objects of a restore;
- :mod:`~hcp_etcd.restore.verify`: the verification checks of a restored etcd;
- :mod:`~hcp_etcd.restore.report`: the drill report.

Bad input is :class:`hcp_etcd.errors.RestoreInputError`; the etcdctl commands the checks run are in
:mod:`hcp_etcd.etcd`. The operators in ``hcp_etcd.operators.restore`` do the I/O around these, and
``HostedClusterHook.create_objects`` creates a plan's objects (all or none).
"""
