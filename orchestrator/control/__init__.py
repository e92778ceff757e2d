"""The controller's parts, each with a narrow contract and constructible with in-memory fakes.

    ports.py       what the parts need from ZooKeeper and PostgreSQL (typing.Protocol)
    term.py        the leadership term: lease, epoch, guard(); owns every thread it starts
    store.py       the leader's copy of each cluster's state; every write epoch-checked
    context.py     what a part needs to act on one cluster during one term
    cycle.py       one cluster's round: probe -> snapshot -> decide -> dispatch -> publish
    operations.py  the failover/switchover step machine
    executors.py   one small function per decision kind (fence stray, re-point, quorum)
    rejoin.py      rejoin jobs, threads of the term, cancelled with it
    requests.py    operator requests (switchover, failover)
    publisher.py   member health for ``drctl status``
    database.py    the real PostgreSQL adapter of one cluster (psycopg, via ``postgres.py``)

``orchestrator/controller.py`` is the process shell that campaigns and runs the terms.
"""
