"""Kubernetes API access for the gateway (and the operator).

    api.py          KubeApi: a small JSON client over aiohttp (kubeconfig or in-cluster
                    service account), get/list/watch/apply/patch/delete on plain dicts
    socket_urls.py  SocketUrlsWatch: the operator's list of ready socket URLs, read live from
                    a ConfigMap through a watch (PROTOCOL.md §4)
"""
