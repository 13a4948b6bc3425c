"""sipd: a lean SIP registrar and stateful proxy for video-conferencing endpoints."""

__version__ = "0.1.0"
