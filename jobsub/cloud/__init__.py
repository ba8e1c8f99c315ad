"""The cloud kit: what every scheduler backend shares, written once.

``gateway``: one SDK door per provider (client, paced and retried calls, error mapping),
shared by storage and backends.  ``container``: the container keys, the code package and the
task's command; ``attached``: the attached debug run (``debug=True``); ``logs``: the log policy.  Backends compose these pieces; none is a base class
that forces one shape on them.
"""
