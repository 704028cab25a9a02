"""A handler written to the seed's process protocol, using only Python's standard library.

The orchestrator starts it with AETHER_SOCKET, AETHER_FUNCTION_ID, AETHER_TRIGGER_PORT and
AETHER_LISTEN_PORT set. It binds its HTTP server on AETHER_LISTEN_PORT first (with the eBPF data
plane a private port the kernel steers the trigger port to; otherwise the trigger port itself),
then connects to AETHER_SOCKET and sends READY, so that no request can arrive before it is able
to answer.
"""

import http.server
import json
import os
import socket


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Buffer the response so headers and body leave in one segment (no delayed-ACK stall).
    wbufsize = -1

    def do_GET(self):
        body = json.dumps({"function": os.environ.get("AETHER_FUNCTION_ID"), "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, format, *args):
        pass


def main():
    port = int(os.environ["AETHER_LISTEN_PORT"])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as control:
        control.connect(os.environ["AETHER_SOCKET"])
        control.sendall(b"READY\n")
        server.serve_forever()


if __name__ == "__main__":
    main()
