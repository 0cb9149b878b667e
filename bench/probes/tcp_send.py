"""Runs on a lab host: send MIB mebibytes to HOST:PORT in 1 MiB writes; print bytes/second."""

import socket
import sys
import time

host, port, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
block = bytes(1 << 20)
sock = socket.create_connection((host, port))
t0 = time.monotonic()
for _ in range(mib):
    sock.sendall(block)
sock.shutdown(socket.SHUT_WR)
sock.recv(1)  # the receiver closes once it has read everything
print(mib * (1 << 20) / (time.monotonic() - t0))
