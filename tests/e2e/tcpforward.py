"""A small TCP forwarder for e2e tests: one listening address relayed to one target.

A service that listens on loopback only (RabbitMQ on 127.0.0.1) cannot be
reached from a network namespace playing another node; ``TcpForwarder``
listens on an address that namespace can reach (the test's data bridge) and
relays each connection to the target, in threads of the test process.
``close()`` stops listening and cuts every relayed connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["TcpForwarder"]

_CHUNK = 65536


class TcpForwarder:
    def __init__(self, listen_host: str, target: tuple[str, int], listen_port: int = 0):
        self.target = target
        self._listener = socket.create_server((listen_host, listen_port))
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        """(host, port) the forwarder listens on."""
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="tcp-forwarder", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.address[1]

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._closed:
                sock.close()
                return False
            self._sockets.add(sock)
            return True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            if not (self._track(client) and self._track(upstream)):
                upstream.close()
                client.close()
                continue
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True,
                                 name="tcp-forwarder-pump").start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # one direction ended: end the other half too, then forget both
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                for sock in (src, dst):
                    if sock in self._sockets:
                        self._sockets.discard(sock)
            with contextlib.suppress(OSError):
                src.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = list(self._sockets)
            self._sockets.clear()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        self._thread.join(5)

    def __enter__(self) -> TcpForwarder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
