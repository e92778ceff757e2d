"""The node agent: one process beside each PostgreSQL member.

It holds its own ZooKeeper session and an ephemeral liveness znode carrying the member's local
facts, learns the cluster's decisions by watches, fences its member when it is a primary whose
lease it cannot confirm, and executes epoch-guarded instructions of the leading controller.

* :mod:`~orchestrator.agent.rules` the pure rules: fencing budget, fence decision, instruction verdict
* :mod:`~orchestrator.agent.facts` local facts: what the member is, read over its unix socket
* :mod:`~orchestrator.agent.fencing` the self-fence sequence (SQL, then signals by PID)
* :mod:`~orchestrator.agent.watchdog` the separate watchdog process the agent pets over a pipe
* :mod:`~orchestrator.agent.runtime` the agent's threads: heartbeat, watches, decide-and-fence loop
* :mod:`~orchestrator.agent.main` ``drctl agent run`` and the argv the lab starts agents with
* :mod:`~orchestrator.agent.faults` a TCP proxy tests cut silently to isolate an agent from ZooKeeper
"""
