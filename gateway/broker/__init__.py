"""The Redis broker: broadcasts, groups, per-user sends and counts across gateway processes.

``envelope`` (the wire format) and ``subscriptions`` (which channels this process wants and
has) are pure; ``names`` builds every channel and key name; ``shell`` is the trio + coredis
side (two Redis connections per process).  See docs/design.md, "Scale-out: the broker".
"""
