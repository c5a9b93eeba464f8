"""The benchmark harness behind ``bench/run.py`` (and the pieces ``cluster.py`` and
``workers.py`` share), one job per module, lowest first:

- ``common``: where things are, the servers' names, messages, short commands, start-up checks;
- ``params``: the scenarios and their parameters (full and ``--quick``);
- ``loadgen``: the Node load generator in ``bench/loadgen/`` (``npm ci`` on first use);
- ``machine``: cores and pinning, descriptors, how busy the machine is, what it is;
- ``servers``: starting, watching and stopping the servers under test;
- ``scenarios``: one loadgen run against a server, the five scenarios, a run's issues;
- ``figures``: a figure from a run, the median of runs, a number as printed;
- ``report``: the tables (every server, issue 13's comparison, every run);
- ``results``: what a run prints, and ``bench/results/latest.json`` / ``latest.md``;
- ``profiling``: py-spy attached to the gateway under one scenario's load;
- ``cli``: ``bench/run.py``'s options, the run, and the notes on how far to trust it.
"""
