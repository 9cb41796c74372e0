"""The ``chatcluster`` command: ``up`` runs a whole local cluster; ``gateway``, ``socket`` and
``consumers`` run one service each (what ``up`` starts, and what containers run)."""
