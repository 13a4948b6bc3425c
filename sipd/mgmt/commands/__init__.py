"""Management commands, one module per area. Every module here is imported by
``registry.load_commands()``; each declares its commands with ``@command`` (helpers such as
``need`` live in ``registry`` too, so this package imports nothing back)."""
