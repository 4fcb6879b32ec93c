"""Behaviour that several services share but that is not a contract (contracts live in ``wire``).

Services (signaling, mediabridge, inference, training) import ``wire`` and ``runtime``, never each other.
"""
