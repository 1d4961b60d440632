"""The sandbox's controllers: what HyperShift, the kube controllers and the kubelet would do.

One room per actor, named after HyperShift's own (openshift/hypershift, read at commit 3ee9615567):

- :mod:`.hostedcluster`: the HyperShift operator's HostedCluster controller (provisioning, pause,
  HostedCluster status, teardown);
- :mod:`.hostedcontrolplane`: the control-plane operator's HostedControlPlane controller (its status);
- :mod:`.etcd`: the HostedControlPlane's etcd (StatefulSet, pods, members, etcd-init restore);
- :mod:`.apiservers`: the API-server Deployments, their pods, and kube-apiserver's writes into etcd;
- :mod:`.kubelet`: pod statuses;
- :mod:`.pausereconcile`: ``spec.pausedUntil`` as upstream's ``support/util`` reads it (both
  operators use it);
- :mod:`.cluster`: the state and helpers they share; :mod:`.manager`: the loop that runs them.
"""
