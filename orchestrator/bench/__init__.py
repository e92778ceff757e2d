"""The failover benchmark: dr-orchestrator, Patroni and pg_auto_failover side by side.

Same machine, same PostgreSQL 15 binaries, same bank-transfer load, same fault (loss of the
primary node: kill -9 of its postgres and of that node's own agent). Each system is a
:class:`~orchestrator.bench.system.System`; :mod:`orchestrator.bench.runner` alternates
them round by round, each round on free ports and from nothing, and
:mod:`orchestrator.bench.report` writes the table and the plot.

Modules: ``system`` (the contract), ``suite`` (the five systems, ports), ``runner`` (rounds,
measurement, teardown checks), ``report``; ``ours``; ``patroni`` + ``patroni_config``;
``pgautofailover`` + ``pgautofailover_commands``; ``polling`` (kept-open connections of the
observation loops); ``procs`` (processes and ports through psutil). Apart from it, ``dr_lag``
measures the DR lag bound (alert against bounded mode) on a lab of its own.
"""
