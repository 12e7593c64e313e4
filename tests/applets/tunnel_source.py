"""The operator's end of a secure tunnel for the black-box tests: a blocking TLS WebSocket
client in source mode with its own encoder and decoder of the tunnel Message (reference
secure-tunneling.md §1-§6), after the client of tests/fakecloud/test_tunnel_api.py. It shares
no code with the device, so a codec bug in iotbox cannot hide behind it.

    src = Source(broker, ws_port, token).connect()       # consumes SERVICE_IDS (V2/V3)
    src.stream_start('SSH', stream=1, connection=1)
    src.data('SSH', 1, 1, b'hello')
    src.received('SSH', 1)  -> bytes the destination sent back on that connection
"""
import base64
import hashlib
import os
import socket
import ssl
import struct
import time

P1, P2, P3 = ('aws.iot.securetunneling-1.0', 'aws.iot.securetunneling-2.0', 'aws.iot.securetunneling-3.0')
DATA, STREAM_START, STREAM_RESET, SESSION_RESET, SERVICE_IDS, CONNECTION_START, CONNECTION_RESET = range(1, 8)
WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'


def _varint(n):
    n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode(type, stream=0, payload=b'', service='', connection=0):
    """A Message: fields in tag order, zero values left out (proto3)."""
    out = b'\x08' + _varint(type)
    if stream:
        out += b'\x10' + _varint(stream)
    if payload:
        out += b'\x22' + _varint(len(payload)) + payload
    if service:
        out += b'\x2a' + _varint(len(service)) + service.encode()
    if connection:
        out += b'\x38' + _varint(connection)
    return out


def decode(b):
    m = {'type': 0, 'stream': 0, 'payload': b'', 'service': '', 'services': [], 'connection': 0}
    i = 0

    def varint():
        nonlocal i
        v = shift = 0
        while True:
            c = b[i]
            i += 1
            v |= (c & 0x7F) << shift
            shift += 7
            if c < 0x80:
                return v
    while i < len(b):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            v = varint()
        elif wire == 2:
            n = varint()
            v = bytes(b[i:i + n])
            i += n
        else:
            raise AssertionError('wire type %d' % wire)
        if field == 1:
            m['type'] = v
        elif field == 2:
            m['stream'] = v - (1 << 64) if v >= 1 << 63 else v
        elif field == 4:
            m['payload'] = v
        elif field == 5:
            m['service'] = v.decode()
        elif field == 6:
            m['services'].append(v.decode())
        elif field == 7:
            m['connection'] = v
    return m



def ws_mask(payload, key):
    """XOR with the 4-byte masking key (RFC 6455 5.3), a whole integer at a time."""
    n = len(payload)
    if not n:
        return b''
    k = (key * ((n + 3) // 4))[:n]
    return (int.from_bytes(payload, 'little') ^ int.from_bytes(k, 'little')).to_bytes(n, 'little')


def ws_frame(opcode, payload):
    """One masked client frame, FIN set."""
    n = len(payload)
    if n < 126:
        head = struct.pack('!BB', 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack('!BBH', 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack('!BBQ', 0x80 | opcode, 0x80 | 127, n)
    key = os.urandom(4)
    return head + key + ws_mask(payload, key)

class Source:
    def __init__(self, broker, port, token, protocol=P3):
        self.broker, self.port, self.token, self.protocol = broker, port, token, protocol
        self.sock = None
        self.buf = b''       # raw bytes not yet parsed into frames
        self.stream = b''    # tunnel bytes not yet parsed into messages
        self.msgs = []       # every message received, decoded
        self.data = {}       # (service, connection) -> bytes received
        self.closed = False

    def connect(self, timeout=10):
        raw = socket.create_connection(('127.0.0.1', self.port), timeout=timeout)
        self.sock = self.broker.client_context().wrap_socket(raw, server_hostname='localhost')
        key = base64.b64encode(os.urandom(16)).decode()
        req = ('GET /tunnel?local-proxy-mode=source HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n'
               'Connection: upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n'
               'Sec-WebSocket-Protocol: %s\r\naccess-token: %s\r\n\r\n' % (key, self.protocol, self.token))
        self.sock.sendall(req.encode())
        while b'\r\n\r\n' not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, 'closed during the upgrade'
            self.buf += chunk
        head, self.buf = self.buf.split(b'\r\n\r\n', 1)
        lines = head.decode('latin-1').split('\r\n')
        assert lines[0].split(' ')[1] == '101', lines[0]
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(':', 1) for line in lines[1:])}
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        assert headers['sec-websocket-accept'] == accept
        assert headers['sec-websocket-protocol'] == self.protocol
        if self.protocol != P1:
            self.wait(lambda: any(m['type'] == SERVICE_IDS for m in self.msgs), what='SERVICE_IDS')
        return self

    def service_ids(self):
        return [m['services'] for m in self.msgs if m['type'] == SERVICE_IDS][-1]

    def _frame(self, opcode, payload):
        self.sock.sendall(ws_frame(opcode, payload))

    def send(self, *msgs):
        for m in msgs:
            self._frame(2, struct.pack('!H', len(m)) + m)

    def stream_start(self, service, stream=1, connection=1):
        self.send(encode(STREAM_START, stream, service=service, connection=connection))

    def connection_start(self, service, stream, connection):
        self.send(encode(CONNECTION_START, stream, service=service, connection=connection))

    def send_data(self, service, stream, connection, payload):
        self.send(encode(DATA, stream, payload, service=service, connection=connection))

    def _exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def pump(self, timeout):
        """Read one frame; False on a timeout or once closed."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            h = self._exact(2)
            n = h[1] & 0x7F
            if n == 126:
                n = struct.unpack('!H', self._exact(2))[0]
            elif n == 127:
                n = struct.unpack('!Q', self._exact(8))[0]
            payload = self._exact(n)
        except (socket.timeout, ssl.SSLWantReadError):
            return False
        except (EOFError, OSError):
            self.closed = True
            return False
        opcode = h[0] & 0x0F
        if opcode == 9:
            self._frame(10, payload)
        elif opcode == 8:
            self.closed = True
            return False
        elif opcode in (0, 2):
            self.stream += payload
            while len(self.stream) >= 2:
                size = struct.unpack('!H', self.stream[:2])[0]
                if len(self.stream) < 2 + size:
                    break
                m = decode(self.stream[2:2 + size])
                self.stream = self.stream[2 + size:]
                self.msgs.append(m)
                if m['type'] == DATA:
                    key = (m['service'], m['connection'])
                    self.data[key] = self.data.get(key, b'') + m['payload']
        return True

    def wait(self, predicate, timeout=10, what='the condition'):
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            assert left > 0 and not self.closed, '%s not met (closed: %s); messages: %s' % (
                what, self.closed, [(m['type'], m['service'], m['stream'], m['connection']) for m in self.msgs])
            self.pump(min(left, 0.2))

    def received(self, service, connection=1):
        return self.data.get((service, connection), b'')

    def wait_data(self, service, connection, want, timeout=10):
        self.wait(lambda: len(self.received(service, connection)) >= len(want), timeout,
                  '%d bytes on %s/%d' % (len(want), service, connection))
        return self.received(service, connection)

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
