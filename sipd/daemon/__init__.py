"""The composition root: builds sipd from its Config and runs it (see docs/architecture.md)."""
