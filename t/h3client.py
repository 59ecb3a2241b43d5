"""An HTTP/3 client for t/wsgi_http3.t, on aioquic's sans-I/O QUIC and H3
connections over a plain UDP socket, so that the test decides when the
client reads (and so acknowledges) and when it gives up on a stream.

    h3client.py PORT CAFILE [OPTIONS] METHOD PATH [METHOD PATH ...]

makes the requests one after the other, each on a new stream of one
connection, and prints for each

    status=200 length=N sha256=HEX
    body=<the first 256 bytes, repr>

Options (they apply to the first request):
    --body N            send N bytes (byte i is i % 251) as the request body
    --hold-after N      send only the first N bytes of it, then keep the
                        connection going until --until FILE exists (the
                        app says it read them), then the rest
    --stall-after N     when N bytes of the response body are in, stop
                        reading the socket (no acknowledgements, no flow
                        control credit), create --stalled FILE and wait
                        until --resume FILE exists, then read on
    --abandon-after N   when N bytes of the response body are in, send
                        STOP_SENDING (H3_REQUEST_CANCELLED) for the stream
                        and keep the connection going until --wait FILE
                        exists (the app says it saw the end), then go on
                        with the next request
    --close-after N     when N bytes of the response body are in, close the
                        whole connection (CONNECTION_CLOSE) and exit
    --window N          the client's flow control limits (max_data and
                        max_stream_data; aioquic raises them as data comes)

Exits 1 with a message on stderr if the connection fails or a wait is over
its time limit (30 s).
"""

import argparse
import hashlib
import os
import select
import socket
import sys
import time

from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, StreamReset

LIMIT = 30.0


def fail(msg):
    print('h3client: ' + msg, file=sys.stderr)
    sys.exit(1)


def wait_file(path):
    """Wait for path to exist, not touching the connection."""
    deadline = time.monotonic() + LIMIT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            fail('no ' + path + ' after %d s' % LIMIT)
        time.sleep(0.01)


class Response:
    def __init__(self):
        self.status = None
        self.length = 0
        self.sha = hashlib.sha256()
        self.head = b''
        self.ended = False
        self.reset = None


class Client:
    def __init__(self, port, cafile, window):
        config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN,
                                   server_name='localhost', cafile=cafile)
        if window:
            config.max_data = config.max_stream_data = window
        self.addr = ('127.0.0.1', port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(self.addr)
        self.quic = QuicConnection(configuration=config)
        self.quic.connect(self.addr, now=time.monotonic())
        self.h3 = H3Connection(self.quic)
        self.responses = {}
        self.terminated = None

    def flush(self):
        for data, _ in self.quic.datagrams_to_send(now=time.monotonic()):
            self.sock.send(data)

    def step(self, timeout):
        self.flush()
        timer = self.quic.get_timer()
        wait = timeout
        if timer is not None:
            wait = max(0.0, min(timeout, timer - time.monotonic()))
        if select.select([self.sock], [], [], wait)[0]:
            while True:
                try:
                    data = self.sock.recv(65536, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    fail('connection refused (ICMP)')
                self.quic.receive_datagram(data, self.addr, now=time.monotonic())
        timer = self.quic.get_timer()
        if timer is not None and time.monotonic() >= timer:
            self.quic.handle_timer(now=time.monotonic())
        event = self.quic.next_event()
        while event is not None:
            if isinstance(event, ConnectionTerminated):
                self.terminated = event
            elif isinstance(event, StreamReset) and event.stream_id in self.responses:
                self.responses[event.stream_id].reset = event.error_code
            for h in self.h3.handle_event(event):
                r = self.responses.get(h.stream_id)
                if r is None:
                    continue
                if isinstance(h, HeadersReceived):
                    for k, v in h.headers:
                        if k == b':status':
                            r.status = int(v)
                elif isinstance(h, DataReceived):
                    r.length += len(h.data)
                    r.sha.update(h.data)
                    if len(r.head) < 256:
                        r.head = (r.head + h.data)[:256]
                if h.stream_ended:
                    r.ended = True
            event = self.quic.next_event()
        self.flush()

    def run_until(self, cond, what):
        deadline = time.monotonic() + LIMIT
        while not cond():
            if self.terminated is not None:
                fail('connection closed while waiting for %s: %r' % (what, self.terminated))
            if time.monotonic() > deadline:
                fail('no %s after %d s' % (what, LIMIT))
            self.step(0.05)

    def request(self, method, path, body=None, end=True):
        sid = self.quic.get_next_available_stream_id()
        headers = [(b':method', method.encode()), (b':scheme', b'https'),
                   (b':authority', b'localhost'), (b':path', path.encode())]
        if body is not None and end:
            headers.append((b'content-length', str(len(body)).encode()))
        self.responses[sid] = Response()
        self.h3.send_headers(sid, headers, end_stream=body is None)
        if body is not None:
            self.h3.send_data(sid, body, end_stream=end)
        self.flush()
        return sid


def main():
    p = argparse.ArgumentParser()
    p.add_argument('port', type=int)
    p.add_argument('cafile')
    p.add_argument('requests', nargs='+')
    p.add_argument('--body', type=int)
    p.add_argument('--stall-after', type=int)
    p.add_argument('--stalled')
    p.add_argument('--resume')
    p.add_argument('--abandon-after', type=int)
    p.add_argument('--wait')
    p.add_argument('--hold-after', type=int)
    p.add_argument('--until')
    p.add_argument('--close-after', type=int)
    p.add_argument('--window', type=int)
    a = p.parse_args()
    if len(a.requests) % 2:
        fail('METHOD PATH pairs expected')

    c = Client(a.port, a.cafile, a.window)
    for i in range(0, len(a.requests), 2):
        body = None
        if i == 0 and a.body is not None:
            body = bytes(j % 251 for j in range(251)) * (a.body // 251 + 1)
            body = body[:a.body]
        rest = b''
        if body is not None and a.hold_after is not None:
            body, rest = body[:a.hold_after], body[a.hold_after:]
        sid = c.request(a.requests[i], a.requests[i + 1], body, end=not rest)
        r = c.responses[sid]
        if rest:
            c.run_until(lambda: os.path.exists(a.until), a.until)
            c.h3.send_data(sid, rest, end_stream=True)
        if i == 0 and a.stall_after is not None:
            c.run_until(lambda: r.length >= a.stall_after or r.ended, 'response data to stall at')
            # not a read of the socket until the test says so
            open(a.stalled, 'w').close()
            wait_file(a.resume)
        if i == 0 and a.close_after is not None:
            c.run_until(lambda: r.length >= a.close_after or r.ended, 'response data to close at')
            if r.ended:
                fail('the response ended before the connection was closed')
            print('closed after %d' % r.length)
            break
        if i == 0 and a.abandon_after is not None:
            c.run_until(lambda: r.length >= a.abandon_after or r.ended, 'response data to abandon at')
            if r.ended:
                fail('the response ended before it was abandoned')
            c.quic.stop_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
            c.flush()
            print('abandoned after %d' % r.length)
            c.run_until(lambda: os.path.exists(a.wait), a.wait)
            continue
        c.run_until(lambda: r.ended or r.reset is not None, 'the end of the response')
        print('status=%s length=%d sha256=%s reset=%s' % (
            r.status, r.length, r.sha.hexdigest(), r.reset))
        print('body=%r' % r.head)
        sys.stdout.flush()

    c.quic.close(error_code=ErrorCode.H3_NO_ERROR)
    c.flush()


if __name__ == '__main__':
    main()
