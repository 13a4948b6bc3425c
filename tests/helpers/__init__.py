"""Test helpers that drive real programs: the sipd daemon and third-party SIP clients.

Each helper starts its processes itself, bounds every wait, and ends each process by its PID.
"""
