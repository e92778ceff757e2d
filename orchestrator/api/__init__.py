"""The operator REST API served by every controller: routes (``app``), tokens and roles (``auth``),
the uvicorn thread (``server``), and the client ``drctl --api`` uses (``client``)."""
