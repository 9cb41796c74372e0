"""Backend adapters, one folder per backend; each implements ports of ``chatcluster.ports``.

``embedded/``  SQLite files in the state directory: no server to install (the default).
``mongodb/``   Store on MongoDB (PyMongo's asyncio client); tested on FerretDB 1.24.
``kafka/``     Bus on Apache Kafka (aiokafka): the pipeline's five topics.
``redis/``     Fanout (pub/sub), Registry, and the Sequencer (Lua, fenced by MongoDB marks).
"""
