"""The isolated lab's network: one Linux network namespace per data centre, and link faults between them.

:mod:`orchestrator.network.namespaces` builds and tears down a lab network (a ``core`` namespace
holding a bridge, a namespace per data centre and one for clients, a leg from the root namespace
for the test runner); :mod:`orchestrator.network.nftables` cuts and heals links between them with
silent drops in ``core``'s bridge.
"""
