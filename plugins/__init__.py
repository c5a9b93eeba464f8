"""First-party WebSocket handler plugins, mounted by ``config.toml``.

In a clone they import as ``plugins.NAME`` (relative to the config's folder); installed from
the wheel they are ``gateway_plugins.NAME`` (so they never clash with a project's own
``plugins`` package): ``use = "gateway_plugins.relay:Relay"``.
"""
