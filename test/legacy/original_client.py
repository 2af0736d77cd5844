#!/usr/bin/env python3
"""A stand-in for the original tool's interactive client (see /work/shared/LEGACY-WIRE.md).

    python3 original_client.py [--host HOST] [--port N]      (default localhost:9098)

Connects, retrying once a second until the server is up, then reads lines from stdin:
  `send file`  the next line is a path; the file is uploaded and the 13-byte ACK printed
  `exit`       sends `exit` (which stops an original server) and quits
  anything else is sent as a message and the reply printed, header and all.

Reproduced faithfully from the original:
  * message headers count characters (len(str)), not bytes;
  * replies are read two bytes at a time until at least as many bytes as the header's number
    have arrived, so a non-ASCII echo is cut short and the rest is left in the socket, where it
    desynchronises the next reply;
  * a file name longer than 20 characters is sent whole and unpadded.
To get past the original server's single recv(1024), `file` is sent on its own with Nagle off,
followed by a ~50 ms pause. A zero-byte file is sent as size 0000000000 and the ACK awaited
(the original server never sent one; ferry does).
stdin ending without `exit` closes the connection without sending `exit`.
"""
import argparse
import os
import socket
import sys
import time


def out(text):
    print(text, flush=True)


def note(text):
    print('original_client: ' + text, file=sys.stderr, flush=True)


def connect(host, port):
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.connect((host, port))
        except OSError as err:
            sock.close()
            note('server not up yet (%s); retrying in 1 s' % err)
            time.sleep(1)
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def recv_exact(sock, n):
    buf = b''
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError('the server closed the connection')
        buf += chunk
    return buf


def receive_reply(sock):
    """The original's loop: two bytes at a time until the body has >= the header's number in bytes."""
    buf = b''
    while len(buf) < 10:
        chunk = sock.recv(2)
        if not chunk:
            raise ConnectionError('the server closed the connection')
        buf += chunk
    length = int(buf[:10])  # after a desync this is text, and int() fails as it did in the original
    while len(buf) - 10 < length:
        chunk = sock.recv(2)
        if not chunk:
            raise ConnectionError('the server closed the connection')
        buf += chunk
    return buf.decode('utf-8', errors='replace')


def send_message(sock, text):
    sock.sendall(('%010d' % len(text)).encode() + text.encode('utf-8'))
    out(receive_reply(sock))


def send_file(sock, path):
    with open(path, 'rb') as f:
        data = f.read()
    name = os.path.basename(path)
    sock.sendall(b'file')
    time.sleep(0.05)  # so the server's recv(1024) sees `file` alone
    sock.sendall(('%010d' % len(data)).encode() + name.rjust(20).encode('utf-8') + data)
    out(recv_exact(sock, 13).decode('utf-8', errors='replace'))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--host', default='localhost')
    parser.add_argument('--port', type=int, default=9098)
    args = parser.parse_args()
    sock = connect(args.host, args.port)
    try:
        while True:
            line = sys.stdin.readline()
            if not line:
                return 0
            text = line.rstrip('\r\n')
            if text == 'exit':
                sock.sendall(b'exit')
                return 0
            if text == 'send file':
                path = sys.stdin.readline().rstrip('\r\n')
                if not path:
                    return 0
                send_file(sock, path)
            else:
                send_message(sock, text)
    except (ConnectionError, ValueError) as err:
        note('giving up: %s' % err)
        return 1
    finally:
        sock.close()


if __name__ == '__main__':
    sys.exit(main())
