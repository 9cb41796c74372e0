"""The chatcluster Kubernetes operator: ``chatcluster operator`` (docs/operator.md).

    spec.py       ClusterSpec: the ChatCluster spec as typed values, defaults as in the CRD
    render.py     render(): spec -> every child manifest (pure, no I/O, no randomness)
    observe.py    socket URLs from EndpointSlices, conditions from children (pure)
    reconcile.py  Reconciler: get, render, apply what differs, prune, write URLs and status
    queue.py      WorkQueue: one reconcile per cluster at a time, coalesced, with backoff
    leader.py     LeaderLease: a coordination.k8s.io Lease; only its holder reconciles
    runner.py     kopf wiring: watches feed the queue; the CLI's entry point

          kopf watches (ChatCluster, children, EndpointSlices)
                 │ key = namespace/name
                 ▼
            WorkQueue ──(leader only)──► Reconciler ──► render() ──► server-side apply
                                              │
                                              └─► <name>-socket-urls ConfigMap + status
"""

GROUP = "chatcluster.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ChatCluster"
PLURAL = "chatclusters"
MANAGER = "chatcluster-operator"
