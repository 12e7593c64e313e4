#!/usr/bin/python3
"""A one-connection TLS server that speaks just enough MQTT for `iot-config check --online`: mutual
TLS with the given certificate and client CA, CONNECT answered by a CONNACK, then it waits for the
client to go. The protocol versions and TLS 1.2 ciphers come from the command line; TLS 1.3 suites
and groups from an OpenSSL config file in OPENSSL_CONF, the only way Python's ssl module takes
them (test_tls_algorithms.py writes one per case).

  OPENSSL_CONF=case.cnf tls_probe_server.py CERT KEY CLIENT_CA RESULT_JSON MIN MAX [CIPHERS]

MIN and MAX are TLSVersion names (TLSv1, TLSv1_1, TLSv1_2, TLSv1_3).

Prints the port on the first line of standard output once it listens; writes the negotiated
protocol and cipher and the client certificate's CN (or the handshake error) to RESULT_JSON."""
import json
import socket
import ssl
import sys

cert, key, client_ca, result_file, low, high = sys.argv[1:7]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.load_verify_locations(client_ca)
ctx.verify_mode = ssl.CERT_REQUIRED
# Set here, since Python sets its own after reading the config file.
ctx.minimum_version = ssl.TLSVersion[low]
ctx.maximum_version = ssl.TLSVersion[high]
if len(sys.argv) > 7:
    ctx.set_ciphers(sys.argv[7])
listener = socket.create_server(('127.0.0.1', 0))
listener.settimeout(30)
print(listener.getsockname()[1], flush=True)

result = {}
try:
    raw, _ = listener.accept()
    raw.settimeout(10)
    try:
        conn = ctx.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError) as e:
        result = {'error': str(e)}
    else:
        peer = conn.getpeercert()
        cn = [v for rdn in peer.get('subject', ()) for k, v in rdn if k == 'commonName']
        result = {'version': conn.version(), 'cipher': conn.cipher()[0], 'client_cn': cn[0] if cn else None}
        try:
            first = conn.recv(1)
            if first and first[0] >> 4 == 1:  # CONNECT: answer "accepted", no session present
                conn.sendall(b'\x20\x02\x00\x00')
                while conn.recv(4096):  # until DISCONNECT and close
                    pass
        except (ssl.SSLError, OSError):
            pass
        conn.close()
except socket.timeout:
    result = {'error': 'no connection'}
with open(result_file, 'w') as f:
    json.dump(result, f)
