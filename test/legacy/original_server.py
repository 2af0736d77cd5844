#!/usr/bin/env python3
"""A stand-in for the original tool's server (see /work/shared/LEGACY-WIRE.md), for interop tests.

Python 3 standard library only, blocking sockets, one client at a time, like the original:

    python3 original_server.py [HOST [PORT]] [--host HOST] [--port N] [--dir DIR]

Defaults: localhost, 9098, ./upload. Port 0 picks a free port. Once bound it prints
`listening on PORT`. It then prints one line per thing it does (`connected`, `message N bytes`,
`saved NAME SIZE`, `disconnected`, `exit received`) so that tests can wait on them; notes about
quirks go to stderr.

What it reproduces from the original:
  * each command is read with a single recv(1024) compared with b'file' / b'exit', so `file`
    arriving in the same recv as the size header is mistaken for a message (and echoed);
  * a message is echoed back header and all, exactly as received;
  * `exit` stops the whole server (exit status 0);
  * a zero-byte upload is never acknowledged: the original kept waiting for file data.
What it does not: launching Paint / Windows Media Player for received media.
Deviations for robustness: the size header, the name and the file body are read until complete
(the original did single recv(10)/recv(20) calls, which on loopback return whole), and a message
longer than the first recv is completed by reading on (the byte count needed is the header's
character count encoded as UTF-8).
"""
import argparse
import os
import socket
import sys

ACK = b'0000000003ACK'


def say(*parts):
    print(*parts, flush=True)


def note(text):
    print('original_server: ' + text, file=sys.stderr, flush=True)


def recv_exact(conn, n):
    """n bytes, or None when the client closes first."""
    buf = b''
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def utf8_end(buf, start, chars):
    """Index just past `chars` UTF-8 characters starting at `start`, or None if buf ends first."""
    i = start
    for _ in range(chars):
        if i >= len(buf):
            return None
        lead = buf[i]
        if lead < 0x80:
            size = 1
        elif lead >> 5 == 0b110:
            size = 2
        elif lead >> 4 == 0b1110:
            size = 3
        elif lead >> 3 == 0b11110:
            size = 4
        else:
            size = 1  # not UTF-8; count the byte as one character, as a lenient decoder would
        if i + size > len(buf):
            return None
        i += size
    return i


def is_header(b):
    return len(b) == 10 and all(0x30 <= c <= 0x39 for c in b)


def complete_messages(conn, buf):
    """Reads on until every message that starts in `buf` is whole. Returns (bytes, closed)."""
    pos = 0
    while pos < len(buf):
        head = buf[pos:pos + 10]
        if len(head) < 10 and all(0x30 <= c <= 0x39 for c in head):
            more = conn.recv(1024)
            if not more:
                return buf, True
            buf += more
            continue
        if not is_header(head):
            # Not a message header: the original did not look, it echoed the whole recv as text.
            note('bytes that are not a message header (%r) arrived in a message recv; '
                 'echoed as text, as the original did' % head)
            return buf, False
        end = utf8_end(buf, pos + 10, int(head))
        if end is None:
            more = conn.recv(1024)
            if not more:
                return buf, True
            buf += more
            continue
        pos = end
    return buf, False


def receive_file(conn, folder):
    """After a lone b'file'. Returns False when the client went away."""
    size_bytes = recv_exact(conn, 10)
    if size_bytes is None:
        return False
    name_bytes = recv_exact(conn, 20)
    if name_bytes is None:
        return False
    try:
        size = int(size_bytes)
    except ValueError:
        note('file size header %r is not a number; dropping the client' % size_bytes)
        return False
    name = os.path.basename(name_bytes.decode('utf-8', errors='replace').strip(' '))
    path = os.path.join(folder, name)
    with open(path, 'wb') as f:
        if size == 0:
            # The original's receive loop blocked in recv before checking the count: no ACK, ever.
            note('zero-byte upload %r: waiting for data that never comes, no ACK (as the original)' % name)
            say('waiting forever for', name)
            while conn.recv(1024):
                pass
            return False
        left = size
        while left > 0:
            chunk = conn.recv(min(left, 65536))
            if not chunk:
                note('client left %d bytes into %r (%d expected)' % (size - left, name, size))
                return False
            f.write(chunk)
            left -= len(chunk)
    say('saved', name, size)
    conn.sendall(ACK)
    return True


def serve_client(conn, folder):
    """Returns True when the client asked the whole server to stop."""
    while True:
        data = conn.recv(1024)
        if not data:
            return False
        if data == b'file':
            if not receive_file(conn, folder):
                return False
        elif data == b'exit':
            say('exit received')
            return True
        else:
            message, closed = complete_messages(conn, data)
            say('message', len(message), 'bytes')
            conn.sendall(message)
            if closed:
                return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('host_arg', nargs='?', metavar='HOST')
    parser.add_argument('port_arg', nargs='?', type=int, metavar='PORT')
    parser.add_argument('--host', default=None)
    parser.add_argument('--port', type=int, default=None)
    parser.add_argument('--dir', default='upload')
    args = parser.parse_args()
    host = args.host or args.host_arg or 'localhost'
    port = args.port if args.port is not None else (args.port_arg if args.port_arg is not None else 9098)
    os.makedirs(args.dir, exist_ok=True)

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen(1)
    say('listening on', server.getsockname()[1])
    try:
        while True:
            conn, peer = server.accept()
            say('connected', '%s:%d' % peer[:2])
            try:
                stop = serve_client(conn, args.dir)
            except OSError as err:
                note('connection error: %s' % err)
                stop = False
            finally:
                conn.close()
            if stop:
                return 0
            say('disconnected')
    finally:
        server.close()


if __name__ == '__main__':
    sys.exit(main())
