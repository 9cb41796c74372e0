"""Backend adapters, one folder per backend; each implements ports of ``chatcluster.ports``.

``embedded/``  SQLite files in the state directory plus loopback fan-out: no server to install.
"""
