"""A TLS front for the test broker: accepts TLS on 127.0.0.1 (a free port, printed on stdout)
with the given certificate and forwards the plain bytes to RabbitMQ on 127.0.0.1:5672, so
tests can use amqps:// URLs without reconfiguring the shared broker. Runs until killed."""

import socket
import ssl
import sys
import threading


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def handle(ctx, client):
    try:
        tls = ctx.wrap_socket(client, server_side=True)
    except (ssl.SSLError, OSError):
        client.close()
        return
    upstream = socket.create_connection(("127.0.0.1", 5672))
    threading.Thread(target=pipe, args=(tls, upstream), daemon=True).start()
    pipe(upstream, tls)


def main(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(32)
    print(server.getsockname()[1], flush=True)
    while True:
        client, _ = server.accept()
        threading.Thread(target=handle, args=(ctx, client), daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
