"""The socket protocol (PROTOCOL.md §2) as types, decoded and validated once.

``ops``     one ``msgspec.Struct`` per request op; limits as ``Meta`` constraints.
``frames``  the envelope: bytes in -> ``Request`` or a ``bad_request``/``too_large`` error;
            responses and event frames out, encoded once per fan-out.
``errors``  the single table from error types to protocol codes, HTTP statuses and close codes.

No asyncio here: the socket service feeds bytes in and writes bytes out.
"""
