"""A tiny peer for the network tests, run inside a lab namespace.

``listen ADDRESS PORT LOG``: accept TCP connections on ADDRESS:PORT, and write every UDP
datagram received on the same address and port to LOG (one line each), until stopped.
``connect ADDRESS PORT TIMEOUT``: print ``ok``, ``refused`` or ``timeout`` for one TCP connect.
``send ADDRESS PORT TEXT``: send one UDP datagram.
"""

from __future__ import annotations

import selectors
import socket
import sys


def listen(address: str, port: int, log: str) -> None:
    tcp = socket.create_server((address, port))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((address, port))
    sel = selectors.DefaultSelector()
    sel.register(tcp, selectors.EVENT_READ)
    sel.register(udp, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj is tcp:
                conn, _ = tcp.accept()
                conn.close()
            else:
                data = udp.recv(1024)
                with open(log, "a") as out:
                    out.write(data.decode() + "\n")


def connect(address: str, port: int, timeout: float) -> str:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return "ok"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return f"error {exc.errno}"


def main(argv: list[str]) -> None:
    command, address, port = argv[0], argv[1], int(argv[2])
    if command == "listen":
        listen(address, port, argv[3])
    elif command == "connect":
        print(connect(address, port, float(argv[3])))
    elif command == "send":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(argv[3].encode(), (address, port))


if __name__ == "__main__":
    main(sys.argv[1:])
