"""The controller's parts, each with a narrow contract and constructible with in-memory fakes.

    ports.py       what the parts need from ZooKeeper and PostgreSQL (typing.Protocol)
    term.py        the leadership term: lease, epoch, guard(); owns every thread it starts
"""
