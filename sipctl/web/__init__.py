"""The control panel served by ``sipctl web``: server-rendered pages over ``sipctl/lib``.

A process of its own (never inside sipd's SIP loop). It reads and writes the database like sipctl
and talks to a running sipd over the management socket like sipctl; every page is a thin view over
the same ``sipctl/lib`` functions the CLI uses, so the panel has no SQL or management logic of its
own. Every asset ships in the package: the panel works with no internet access.
"""
