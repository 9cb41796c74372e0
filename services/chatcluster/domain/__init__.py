"""Pure domain rules: no I/O, no clock, no randomness passed implicitly.

``model``  the objects (apps, users, conversations, messages) as stored and as sent on the wire.
``rules``  every authorization rule and state transition, as functions of (state, actor, input).
``errors`` the exception hierarchy; each error carries its protocol code (see protocol.errors).
"""
