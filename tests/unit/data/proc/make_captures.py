# Writes the /proc/net captures used by tests/unit/metrics_collect_test.cpp: the same sockets as
# an x86 (little-endian) kernel and a big-endian (MIPS/PowerPC) kernel print them.
import ipaddress, os, struct, sys
SOCKETS = [  # (file, local, lport, remote, rport, state)
    ("tcp", "0.0.0.0", 22, "0.0.0.0", 0, 0x0A),
    ("tcp", "127.0.0.1", 631, "0.0.0.0", 0, 0x0A),
    ("tcp", "192.0.2.2", 8080, "0.0.0.0", 0, 0x0A),
    ("tcp", "192.0.2.2", 22, "198.51.100.7", 51000, 0x01),
    ("tcp", "127.0.0.1", 40000, "127.0.0.1", 631, 0x01),
    ("tcp", "192.0.2.2", 22, "198.51.100.8", 51001, 0x06),   # TIME_WAIT: not listed
    ("tcp", "10.9.9.9", 9999, "0.0.0.0", 0, 0x0A),            # an address no interface holds
    ("tcp6", "::", 22, "::", 0, 0x0A),                        # same port as 0.0.0.0:22: one entry
    ("tcp6", "fd00::2", 443, "::", 0, 0x0A),
    ("tcp6", "fd00::2", 443, "2001:db8::5", 40000, 0x01),
    ("tcp6", "::ffff:192.0.2.2", 8080, "::ffff:198.51.100.9", 5555, 0x01),
    ("udp", "0.0.0.0", 68, "0.0.0.0", 0, 0x07),
    ("udp", "127.0.0.1", 323, "0.0.0.0", 0, 0x07),
    ("udp", "192.0.2.2", 5353, "8.8.8.8", 53, 0x01),          # connected: not listening
    ("udp", "0.0.0.0", 0, "0.0.0.0", 0, 0x07),                # unbound: no port
    ("udp6", "::", 5353, "::", 0, 0x07),
    ("udp6", "::1", 323, "::", 0, 0x07),
]
HEAD = {
    "tcp": "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
    "udp": "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops",
}
HEAD["tcp6"] = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
HEAD["udp6"] = HEAD["tcp6"] + " ref pointer drops"

def hexaddr(addr, big):
    b = ipaddress.ip_address(addr).packed
    out = ""
    for i in range(0, len(b), 4):
        (v,) = struct.unpack(">I" if big else "<I", b[i:i + 4])
        out += "%08X" % v
    return out

for name, big in (("le", False), ("be", True)):
    os.makedirs(f"{name}/net", exist_ok=True)
    rows = {f: [] for f in HEAD}
    for f, la, lp, ra, rp, st in SOCKETS:
        n = len(rows[f])
        rows[f].append("%4d: %s:%04X %s:%04X %02X 00000000:00000000 00:00000000 00000000  1000        0 %d 1 0000000000000000 100 0 0 10 0"
                       % (n, hexaddr(la, big), lp, hexaddr(ra, big), rp, st, 10000 + n))
    for f in HEAD:
        with open(f"{name}/net/{f}", "w") as out:
            out.write(HEAD[f] + "\n" + "".join(r + "\n" for r in rows[f]))
