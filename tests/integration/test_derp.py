"""The embedded DERP relay and STUN server of three replicas, with stock
tailscaled clients (the newest pinned version) over TLS, in both modes.

Meshed (the default): the relays link to each other within seconds of
start and clients hold one region whose nodes are the relays in replica
order, with their real ports and certificate pins; clients forbidden direct
UDP ping each other through it, and when the replica whose relay they use is
SIGKILLed they move to another node of the region and keep reaching each
other. Raw DERP clients on two different relays reach each other through the
mesh.

Region per relay (derp.server.mesh: false): clients joined on different
replicas ping each other through the relays, find UDP working through the
embedded STUN, and hold one region per replica; a client whose home relay is
SIGKILLed moves to another region. Raw TLS, DERP and STUN clients written
here check what stock clients never show: node keys outside the tailnet (or
expired) are refused and logged, the relay's HTTP routes, and the exact STUN
answers."""
import base64
import ctypes
import ctypes.util
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import unittest
import zlib
from datetime import datetime

import tailscale
from harness import Cluster, wait_until

# derp.server.region_id's default: the meshed relays' region; without the
# mesh, replica N's relay is region 899 + N.
REGION_ID = 900
MESH_REGION_CODE = "concord"
MESH_REGION_NAME = "concord embedded relay"
RELAY_CONFIG = ["derp:", "  server:", "    enabled: true", "    listen_addr: 127.0.0.1:0",
                "    stun_listen_addr: 127.0.0.1:0"]
NO_MESH_CONFIG = RELAY_CONFIG + ["    mesh: false"]
MESH_LINK_START_S = 10  # a relay links to every other one this soon after its start
# The embedded relay speaks TLS only; no UDP at all in the daemon, so every
# packet between clients goes through a relay.
CLIENT_ENV = {"TS_DEBUG_USE_DERP_HTTP": None, "TS_DEBUG_ALWAYS_USE_DERP": "1"}
# Clients that must notice a dead relay: see DerpFailoverTest.
FAILOVER_CLIENT_ENV = {"TS_DEBUG_USE_DERP_HTTP": None, "TS_DEBUG_NEVER_DIRECT_UDP": "1"}
REFUSAL_LOG = "derp: refused a client that is not a node of this tailnet"

FRAME_SERVER_KEY = 0x01
FRAME_CLIENT_INFO = 0x02
FRAME_SERVER_INFO = 0x03
FRAME_SEND_PACKET = 0x04
FRAME_RECV_PACKET = 0x05
FRAME_KEEP_ALIVE = 0x06
FRAME_PEER_GONE = 0x08
FRAME_PING = 0x12
FRAME_PONG = 0x13
DERP_MAGIC = "DERP🔑".encode()

STUN_COOKIE = 0x2112A442


def region_code(rid):
    return "concord-%d" % rid


def login_server(replica):
    return "http://" + replica.http_address


# -- the replicas' sockets --

def listening_ports(replica, proto):
    """Ports the replica's process listens on ("t": TCP, "u": UDP), from `ss`."""
    out = subprocess.run(["ss", "-%slnpH" % proto], capture_output=True, text=True,
                         check=True).stdout
    return set(int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines()
               if "pid=%d," % replica.proc.pid in line)


def relay_ports(replica):
    """(DERP port, STUN port) the replica bound for its relay (configured as
    port 0): its TCP listener besides the HTTP and Raft ones, its one UDP socket."""
    tcp = listening_ports(replica, "t") - {replica.http_port, replica.raft_port}
    udp = listening_ports(replica, "u")
    if len(tcp) != 1 or len(udp) != 1:
        raise AssertionError("replica %d listens on TCP %r and UDP %r besides HTTP and Raft"
                             % (replica.id, tcp, udp))
    return tcp.pop(), udp.pop()


def unverified_context():
    """The relay's certificate is self-signed: its pin is checked separately."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def tls_connect(port, timeout=10):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return unverified_context().wrap_socket(raw, server_hostname="127.0.0.1")


def cert_pin(port):
    """The CertName that pins the certificate served on port."""
    with tls_connect(port) as s:
        return "sha256-raw:" + hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


def relay_node(region_id, replica):
    """The DERP map node expected for the replica's relay in region_id."""
    derp_port, stun_port = relay_ports(replica)
    return {"Name": "%dr%d" % (region_id, replica.id), "RegionID": region_id,
            "HostName": "127.0.0.1", "IPv4": "127.0.0.1", "IPv6": "none",
            "DERPPort": derp_port, "STUNPort": stun_port, "CertName": cert_pin(derp_port)}


def mesh_region(cluster):
    """The one region expected of the cluster's meshed relays."""
    replicas = [cluster[rid] for rid in sorted(cluster.replicas)]
    return {"RegionID": REGION_ID, "RegionCode": MESH_REGION_CODE,
            "RegionName": MESH_REGION_NAME,
            "Nodes": [relay_node(REGION_ID, r) for r in replicas]}


def relays_in_use(client, replicas):
    """Ids of the replicas whose relay the client holds a connection to."""
    return set(r.id for r in replicas if client.tcp_source_ports(relay_ports(r)[0]))


def https_get(port, path, headers=None, method="GET"):
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                       context=unverified_context())
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        conn.close()


def read_until_closed(sock, timeout):
    """Everything the peer sends until it closes (or resets) the
    connection; AssertionError if it is still open after timeout."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return data
    except socket.timeout:
        raise AssertionError("the connection is still open after %ds (got %r)"
                             % (timeout, data[:200]))


# -- the replicas' logs --

def log_time(stamp):
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")


def mesh_log(replica):
    """The replica's log since its last start: (the time of its "replica
    started" line, [(time, peer replica id, address, "up" or "down: why")]
    of its mesh link lines)."""
    started = None
    events = []
    for line in tailscale.tail(replica.log_path, 1 << 24).splitlines():
        m = re.match(r"(\S+) INFO replica started id=%d " % replica.id, line)
        if m:
            started, events = log_time(m.group(1)), []
            continue
        m = re.match(r"(\S+) INFO derp mesh: link to replica (\d+) at (\S+) (up|down: .*)$", line)
        if m:
            events.append((log_time(m.group(1)), int(m.group(2)), m.group(3), m.group(4)))
    if started is None:
        raise AssertionError("no start of replica %d in its log" % replica.id)
    return started, events


def relay_address(replica):
    return "127.0.0.1:%d" % relay_ports(replica)[0]


# -- NaCl boxes (libsodium, which concord itself is built with) --

class Sodium:
    KEY = 32
    NONCE = 24
    MAC = 16

    def __init__(self):
        name = ctypes.util.find_library("sodium")
        if name is None:
            msg = "libsodium is not installed: run ops/install-deps"
            if os.environ.get("CI") == "true":
                raise AssertionError(msg)
            raise unittest.SkipTest(msg)
        self.lib = ctypes.CDLL(name)
        p, ull = ctypes.c_char_p, ctypes.c_ulonglong
        self.lib.crypto_box_easy.argtypes = [p, p, ull, p, p, p]
        self.lib.crypto_box_open_easy.argtypes = [p, p, ull, p, p, p]
        self.lib.crypto_scalarmult_base.argtypes = [p, p]
        if self.lib.sodium_init() < 0:
            raise AssertionError("sodium_init failed")

    def public_key(self, private):
        out = ctypes.create_string_buffer(self.KEY)
        if self.lib.crypto_scalarmult_base(out, private) != 0:
            raise AssertionError("crypto_scalarmult_base failed")
        return out.raw

    def box(self, msg, nonce, their_public, my_private):
        out = ctypes.create_string_buffer(len(msg) + self.MAC)
        if self.lib.crypto_box_easy(out, msg, len(msg), nonce, their_public, my_private) != 0:
            raise AssertionError("crypto_box_easy failed")
        return out.raw

    def open(self, box, nonce, their_public, my_private):
        """The plaintext, or None when the box does not open."""
        if len(box) < self.MAC:
            return None
        out = ctypes.create_string_buffer(len(box) - self.MAC)
        if self.lib.crypto_box_open_easy(out, box, len(box), nonce, their_public,
                                         my_private) != 0:
            return None
        return out.raw


class DerpConn:
    """The client side of a DERP connection over TLS: the HTTP upgrade, the
    server key, the client info, then frames."""

    def __init__(self, sodium, port, private_key, fast_start=False):
        self.na = sodium
        self.private = private_key
        self.public = sodium.public_key(private_key)
        self.sock = tls_connect(port)
        self.buf = b""
        self.headers = {}
        self.sock.sendall(b"GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: DERP\r\n"
                          b"Connection: Upgrade\r\n" +
                          (b"Derp-Fast-Start: 1\r\n" if fast_start else b"") + b"\r\n")
        if not fast_start:
            head = self._read_head()
            self.status_line = head[0]
            for line in head[1:]:
                k, v = line.split(":", 1)
                self.headers[k.strip().lower()] = v.strip()
        ftype, payload = self.read_frame()
        if ftype != FRAME_SERVER_KEY or len(payload) != 8 + 32 or payload[:8] != DERP_MAGIC:
            raise AssertionError("not a server key frame: %d %r" % (ftype, payload))
        self.server_key = payload[8:]

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("the relay closed the connection")
        self.buf += chunk

    def _read_head(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head.decode().split("\r\n")

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self):
        # The header stays buffered until the whole frame is: a read that
        # times out leaves the stream intact.
        while len(self.buf) < 5:
            self._fill()
        ftype, length = struct.unpack(">BI", self.buf[:5])
        return ftype, self._read_exact(5 + length)[5:]

    def next_frame(self, timeout):
        """The next frame other than a keepalive, or None after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                frame = self.read_frame()
            except socket.timeout:
                return None
            if frame[0] != FRAME_KEEP_ALIVE:
                return frame

    def send_frame(self, ftype, payload):
        self.sock.sendall(struct.pack(">BI", ftype, len(payload)) + payload)

    def send_client_info(self, info=b'{"version":2}'):
        nonce = os.urandom(Sodium.NONCE)
        self.send_frame(FRAME_CLIENT_INFO, self.public + nonce +
                        self.na.box(info, nonce, self.server_key, self.private))

    def server_info(self):
        """The opened FrameServerInfo, which admits the client."""
        ftype, payload = self.read_frame()
        if ftype != FRAME_SERVER_INFO:
            raise AssertionError("expected a server info frame, got %d %r" % (ftype, payload))
        n = Sodium.NONCE
        return self.na.open(payload[n:], payload[:n], self.server_key, self.private)

    def close(self):
        self.sock.close()


def node_private_key(client):
    """The node private key a tailscaled keeps in its state file."""
    with open(os.path.join(client.dir, "state", "tailscaled.state")) as f:
        state = json.load(f)
    keys = set()
    for value in state.values():
        keys.update(re.findall(r'"PrivateNodeKey":\s*"privkey:([0-9a-f]{64})"',
                               base64.b64decode(value).decode(errors="replace")))
    if len(keys) != 1:
        raise AssertionError("node keys in %s's state: %r" % (client.name, keys))
    return bytes.fromhex(keys.pop())


# -- STUN (RFC 5389) --

def stun_request(txid, attributes=b"", cookie=STUN_COOKIE, msg_type=0x0001):
    return struct.pack(">HHI", msg_type, len(attributes), cookie) + txid + attributes


def stun_attribute(atype, value):
    pad = b"\0" * (-len(value) % 4)
    return struct.pack(">HH", atype, len(value)) + value + pad


def tailscale_style_request(txid, fingerprint_xor=0x5354554E):
    """What Tailscale's netcheck sends: SOFTWARE "tailnode" and a FINGERPRINT."""
    software = stun_attribute(0x8022, b"tailnode")
    # The header's length counts the FINGERPRINT attribute the CRC precedes.
    head = struct.pack(">HHI", 0x0001, len(software) + 8, STUN_COOKIE) + txid + software
    crc = (zlib.crc32(head) ^ fingerprint_xor) & 0xFFFFFFFF
    return head + stun_attribute(0x8028, struct.pack(">I", crc))


def binding_success(txid, addr):
    """The exact answer expected: a Binding Success Response whose only
    attribute is the XOR-MAPPED-ADDRESS of addr (IPv4)."""
    ip = struct.unpack(">I", socket.inet_aton(addr[0]))[0]
    attr = struct.pack(">HHBBHI", 0x0020, 8, 0, 1, addr[1] ^ (STUN_COOKIE >> 16),
                       ip ^ STUN_COOKIE)
    return struct.pack(">HHI", 0x0101, len(attr), STUN_COOKIE) + txid + attr


class RelayTestCase(unittest.TestCase):
    """Three replicas, each with its relay and STUN server on ports it
    picks, one user and a reusable key, and with uses_proxy an HAProxy in
    front of the replicas' HTTP listeners; each test's clients stop with it."""
    client_env = CLIENT_ENV
    relay_config = RELAY_CONFIG
    uses_proxy = False

    @classmethod
    def setUpClass(cls):
        cls.ts_version = tailscale.pinned_versions()["newest"]
        bindir = tailscale.client_dir(cls.ts_version)
        tailscale.require(os.path.join(bindir, "tailscale"), os.path.join(bindir, "tailscaled"))
        cls.workdir = tempfile.mkdtemp(prefix="concord-derp-")
        cls.tailnet = tailscale.Tailnet(cls.workdir, cls.ts_version)
        cls.cluster = None
        try:
            cls.cluster = Cluster(3, extra_config=cls.relay_config)
            cls.cluster.start()
            leader = cls.cluster.leader()
            leader.cli("users", "create", "alice")
            out = leader.cli("preauthkeys", "create", "-u", "alice", "-e", "24h", "-o", "json",
                             "--reusable").stdout
            cls.auth_key = json.loads(out)["key"]
            cls.cluster.wait_converged()
            if cls.uses_proxy:
                cls.proxy = cls.tailnet.haproxy([r.http_address for r in
                                                 cls.cluster.replicas.values()])
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.tailnet.close()
        if cls.cluster is not None:
            cls.cluster.close()
        if os.environ.get("CONCORD_TEST_KEEP"):
            print("kept", cls.workdir)
        else:
            shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()

    def run(self, result=None):
        # The logs of a failed test's clients and replicas are gone once the class ends.
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        try:
            return super().run(result)
        finally:
            if len(result.failures) + len(result.errors) > before and hasattr(self, "clients"):
                print("\n" + self.tailnet.logs(self.clients) + "\n" + self.cluster.logs())

    def join(self, name, login_url):
        c = self.tailnet.client(name, env=self.client_env)
        self.clients.append(c)
        c.up(login_url, self.auth_key)
        self.assertEqual(c.backend_state(), "Running")
        return c

    def home(self, client):
        """The region code of the client's home relay, once it has one."""
        return wait_until(lambda: client.status_json()["Self"].get("Relay"), 30,
                          "%s to pick a home relay" % client.name)

    def derp_map(self, client):
        return json.loads(client.cli("debug", "derp-map", timeout=20).stdout)

    def wait_ping_via_derp(self, src, dst, timeout=30):
        """A disco ping from src to dst answered through dst's home relay
        (a client reaches a peer through the peer's home region when there
        is no direct path), once src sees dst online with that home relay."""
        ip = dst.self_ips()[0]

        def pong():
            relay = dst.status_json()["Self"].get("Relay")
            peer = src.peers().get(dst.name)
            if not (relay and peer and peer.get("Online") and peer.get("Relay") == relay):
                return None
            pongs = src.ping(ip)
            if pongs and "via DERP(%s)" % relay in pongs[0] and "(%s)" % ip in pongs[0]:
                return pongs[0]
            return None
        return wait_until(pong, timeout, "%s to ping %s via its home relay" % (src.name, dst.name))

    def relay_in_use(self, client, replicas, timeout=30):
        """The id of the one replica (of replicas) whose relay the client is
        connected to."""
        return wait_until(lambda: (lambda ids: ids.pop() if len(ids) == 1 else None)(
            relays_in_use(client, replicas)), timeout,
            "%s to be connected to one relay" % client.name)

    def assert_mesh_links(self, replica, peers, since):
        """replica's log shows a mesh link up to the relay of each of peers
        (at its current port) no later than MESH_LINK_START_S after since."""
        want = dict((p.id, relay_address(p)) for p in peers)

        def linked():
            ups = {}
            for t, rid, address, what in mesh_log(replica)[1]:
                if what == "up" and want.get(rid) == address:
                    ups.setdefault(rid, t)
            return ups if len(ups) == len(want) else None
        ups = wait_until(linked, MESH_LINK_START_S + 5,
                         "replica %d's mesh links to %r" % (replica.id, want))
        for rid, t in sorted(ups.items()):
            delay = (t - since).total_seconds()
            print("\n  replica %d linked to replica %d after %.1fs" % (replica.id, rid, delay),
                  end="")
            self.assertGreaterEqual(delay, 0)
            self.assertLessEqual(delay, MESH_LINK_START_S,
                                 "replica %d's link to replica %d" % (replica.id, rid))


class DerpRelayTest(RelayTestCase):
    """Relays with derp.server.mesh: false, the mode for relays that cannot
    reach each other: each is a region of its own (900 + N - 1, concord-N)
    and a client reaches a peer through the peer's home region. The raw
    DERP, HTTP and STUN tests do not depend on the mode."""
    relay_config = NO_MESH_CONFIG

    def test_clients_on_different_replicas_ping_through_the_relays(self):
        clients = [self.join("ping%d" % r.id, login_server(r))
                   for r in self.cluster.replicas.values()]
        codes = set(region_code(rid) for rid in self.cluster.replicas)
        for c in clients:
            self.assertIn(self.home(c), codes)
        for src in clients:
            for dst in clients:
                if src is not dst:
                    pong = self.wait_ping_via_derp(src, dst)
                    print("\n  %s -> %s: %s" % (src.name, dst.name, pong), end="")
        # netcheck runs in the CLI with the DERP map its daemon holds: the
        # embedded STUN servers are the only ones there.
        stun_ports = dict((REGION_ID + r.id - 1, relay_ports(r)[1])
                          for r in self.cluster.replicas.values())
        for c in clients:
            p = c.cli("netcheck", "--format=json", timeout=60)
            report = json.loads(p.stdout)
            self.assertIs(report["UDP"], True, report)
            self.assertIs(report["IPv4"], True, report)
            self.assertRegex(report["GlobalV4"], r"^127\.0\.0\.1:\d+$", report)
            self.assertEqual(set(report["RegionLatency"]), set(str(r) for r in stun_ports),
                             report)
            for latency in report["RegionLatency"].values():
                self.assertGreater(latency, 0, report)
            self.assertIn(report["PreferredDERP"], stun_ports, report)
            text = c.cli("netcheck", timeout=60).stdout
            self.assertIn("* UDP: true", text)
            for rid in self.cluster.replicas:
                self.assertRegex(text, r"- %s: [0-9.]+[µm]?s " % region_code(rid))

    def test_clients_hold_the_regions_with_real_ports_and_certificate_pins(self):
        clients = [self.join("map%d" % rid, login_server(self.cluster[rid])) for rid in (1, 2)]
        expected = {}
        for r in self.cluster.replicas.values():
            rid = REGION_ID + r.id - 1
            expected[str(rid)] = {
                "RegionID": rid, "RegionCode": region_code(r.id),
                "RegionName": "concord embedded relay (replica %d)" % r.id,
                "Nodes": [relay_node(rid, r)]}
        pins = [region["Nodes"][0]["CertName"] for region in expected.values()]
        self.assertEqual(len(set(pins)), 3, pins)
        for c in clients:
            m = wait_until(lambda: (lambda m: m if len(m.get("Regions", {})) == 3 else None)(
                self.derp_map(c)), 30, "%s's DERP map to list three regions" % c.name)
            self.assertEqual(m["Regions"], expected)
            self.assertIs(m.get("omitDefaultRegions"), True, m)
        # The CLI reads the daemon's map too.
        self.assertEqual(self.derp_map(clients[0]), self.derp_map(clients[1]))
        # Unmeshed relays never dial each other.
        for r in self.cluster.replicas.values():
            self.assertNotIn("derp mesh:", tailscale.tail(r.log_path, 1 << 24), r.id)

    def test_relay_refuses_node_keys_outside_the_tailnet(self):
        na = Sodium()
        known = [self.join("raw%d" % i, login_server(self.cluster[i])) for i in (1, 2)]
        keys = [node_private_key(c) for c in known]
        for c, key in zip(known, keys):
            self.assertEqual("nodekey:" + na.public_key(key).hex(),
                             c.status_json()["Self"]["PublicKey"])
            # Stopped: the raw connections below do not replace its own.
            c.close()
        rep = self.cluster[3]
        port = relay_ports(rep)[0]

        # Registered node keys are admitted and relayed to each other.
        a = DerpConn(na, port, keys[0])
        b = DerpConn(na, port, keys[1], fast_start=True)
        try:
            self.assertEqual(a.status_line, "HTTP/1.1 101 Switching Protocols")
            self.assertEqual(a.headers.get("upgrade"), "DERP")
            self.assertEqual(a.headers.get("derp-public-key"), a.server_key.hex())
            self.assertEqual(b.server_key, a.server_key)
            for conn in (a, b):
                conn.send_client_info()
                self.assertEqual(conn.server_info(), b'{"version":2}')
            a.send_frame(FRAME_PING, b"12345678")
            self.assertEqual(a.read_frame(), (FRAME_PONG, b"12345678"))
            a.send_frame(FRAME_SEND_PACKET, b.public + b"hello through the relay")
            self.assertEqual(b.read_frame(),
                             (FRAME_RECV_PACKET, a.public + b"hello through the relay"))
        finally:
            a.close()
            b.close()

        # A random key: the handshake is refused, the connection closed, the refusal logged.
        refused_before = tailscale.tail(rep.log_path, 1 << 24).count(REFUSAL_LOG)
        stranger = DerpConn(na, port, os.urandom(32))
        try:
            stranger.send_client_info()
            self.assertEqual(read_until_closed(stranger.sock, 10), b"")
        finally:
            stranger.close()
        wait_until(lambda: tailscale.tail(rep.log_path, 1 << 24).count(REFUSAL_LOG) >
                   refused_before, 10, "the refusal in replica 3's log")

        # An expired node's key is refused too.
        node_id = [n["id"] for n in json.loads(rep.cli("nodes", "list", "-o", "json").stdout)
                   if n["name"] == "raw1"][0]
        rep.cli("nodes", "expire", "-i", node_id)

        def refused():
            conn = DerpConn(na, port, keys[0])
            try:
                conn.send_client_info()
                try:
                    conn.server_info()
                    return False
                except EOFError:
                    return True
            finally:
                conn.close()
        wait_until(refused, 15, "the expired node's key to be refused")

        # A client info box that does not open (sealed for another server key).
        conn = DerpConn(na, port, keys[1])
        try:
            conn.server_key = os.urandom(32)
            conn.send_client_info()
            self.assertEqual(read_until_closed(conn.sock, 10), b"")
        finally:
            conn.close()
        self.assertTrue(rep.is_running())
        self.assertEqual(https_get(port, "/derp/probe")[0], 200)

    def test_relay_http_routes(self):
        for r in self.cluster.replicas.values():
            port = relay_ports(r)[0]
            status, headers, body = https_get(port, "/derp/probe")
            self.assertEqual(status, 200, body)
            self.assertEqual(headers.get("access-control-allow-origin"), "*")
            self.assertEqual(https_get(port, "/derp/probe", method="HEAD")[0], 200)
            self.assertEqual(https_get(port, "/derp/latency-check")[0], 200)
            self.assertEqual(https_get(port, "/derp/probe", method="POST")[0], 405)
            status, headers, body = https_get(port, "/derp")
            self.assertEqual((status, body), (426, b"DERP requires connection upgrade\n"))
            self.assertEqual(https_get(port, "/derp", {"Upgrade": "websocket"})[0], 426)
            self.assertEqual(https_get(port, "/nothing-here")[0], 404)
            challenge = "ts_%d.%s:x-y" % (r.id, os.urandom(8).hex())
            status, headers, body = https_get(port, "/generate_204",
                                              {"X-Tailscale-Challenge": challenge})
            self.assertEqual((status, body), (204, b""))
            self.assertEqual(headers.get("x-tailscale-response"), "response " + challenge)
            # No challenge, or one that is not a token: no echo.
            for bad in (None, "a b", "<x>", "a" * 65):
                status, headers, _ = https_get(port, "/generate_204",
                                               {"X-Tailscale-Challenge": bad} if bad else {})
                self.assertEqual(status, 204)
                self.assertNotIn("x-tailscale-response", headers, bad)

    def test_plain_http_to_the_relay_gets_no_http_answer(self):
        port = relay_ports(self.cluster[2])[0]
        for request in (b"GET /derp/probe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                        b"GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: DERP\r\n"
                        b"Connection: Upgrade\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(request)
                reply = read_until_closed(s, 10)
            self.assertNotIn(b"HTTP/", reply)
        self.assertEqual(https_get(port, "/derp/probe")[0], 200)

    def test_stun_binding_requests_get_their_mapped_address(self):
        for r in self.cluster.replicas.values():
            stun_port = relay_ports(r)[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                s.settimeout(5)
                for build in (stun_request, tailscale_style_request):
                    txid = os.urandom(12)
                    s.sendto(build(txid), ("127.0.0.1", stun_port))
                    reply, src = s.recvfrom(2048)
                    self.assertEqual(src, ("127.0.0.1", stun_port))
                    self.assertEqual(reply, binding_success(txid, s.getsockname()))

    def test_stun_ignores_what_is_not_a_binding_request(self):
        stun_port = relay_ports(self.cluster[1])[1]
        txid = os.urandom(12)
        garbage = [
            os.urandom(64),
            b"\x00\x01\x00",                                 # shorter than a header
            stun_request(txid, cookie=0),                    # RFC 3489: no magic cookie
            stun_request(txid, msg_type=0x0101),             # a response, not a request
            stun_request(txid)[:-1],                         # truncated
            stun_request(txid, b"\0" * 4)[:20],              # length beyond the packet
            tailscale_style_request(txid, fingerprint_xor=0),  # wrong FINGERPRINT
            stun_request(txid, stun_attribute(0x0006, b"user")),  # USERNAME: required
        ]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.5)  # a loopback answer takes well under a millisecond
            for packet in garbage:
                s.sendto(packet, ("127.0.0.1", stun_port))
                try:
                    reply = s.recvfrom(2048)
                except socket.timeout:
                    reply = None
                self.assertIsNone(reply, packet)
            # Still serving.
            s.settimeout(5)
            s.sendto(stun_request(txid), ("127.0.0.1", stun_port))
            self.assertEqual(s.recvfrom(2048)[0], binding_success(txid, s.getsockname()))


class DerpFailoverTest(RelayTestCase):
    """Clients log in through HAProxy, so any replica may die without
    cutting their control connection for good; the one killed is the
    replica whose relay is a client's home.

    The daemons keep their UDP socket but never use a direct path: a
    daemon without UDP (TS_DEBUG_ALWAYS_USE_DERP) measures relays by ICMP
    and HTTPS instead of STUN, and as every relay here is 127.0.0.1, which
    still answers ICMP, it would stay homed on the dead relay. With STUN, the
    dead relay's region drops out of its next netcheck.

    With derp.server.mesh: false each relay is a region of its own and the
    client moves to another region (DerpMeshFailoverTest: to another node
    of the one region)."""
    client_env = FAILOVER_CLIENT_ENV
    relay_config = NO_MESH_CONFIG
    uses_proxy = True

    def test_sigkill_of_a_clients_home_relay(self):
        a = self.join("fo-a", self.proxy.url)
        b = self.join("fo-b", self.proxy.url)
        for src, dst in ((a, b), (b, a)):
            self.wait_ping_via_derp(src, dst)
        old_home = self.home(a)
        victim = self.cluster[int(old_home.rsplit("-", 1)[1])]
        old_ports = relay_ports(victim)
        old_pin = cert_pin(old_ports[0])
        print("\n  %s homed on %s, %s on %s; SIGKILL of replica %d"
              % (a.name, old_home, b.name, self.home(b), victim.id), end="")
        victim.kill()
        killed_at = time.monotonic()
        survivors = [r for r in self.cluster.replicas.values() if r is not victim]
        self.cluster.wait_leader(among=survivors, timeout=20)
        new_home = wait_until(lambda: (lambda h: h if h and h != old_home else None)(
            a.status_json()["Self"].get("Relay")), 60, "%s to leave %s" % (a.name, old_home))
        rehomed = time.monotonic() - killed_at
        self.assertIn(new_home, [region_code(r.id) for r in survivors])
        for src, dst in ((a, b), (b, a)):
            self.wait_ping_via_derp(src, dst, timeout=45)
        print("; %s re-homed on %s after %.1fs, pings both ways after %.1fs"
              % (a.name, new_home, rehomed, time.monotonic() - killed_at), end="")
        # Restarted, the replica binds new ports and announces them; its
        # certificate, kept in its data directory, keeps its pin.
        victim.start()
        self.cluster.wait_converged(timeout=60)
        new_ports = relay_ports(victim)
        self.assertNotEqual(new_ports, old_ports)
        self.assertEqual(cert_pin(new_ports[0]), old_pin)
        rid = str(REGION_ID + victim.id - 1)

        def announced():
            node = self.derp_map(a)["Regions"][rid]["Nodes"][0]
            return (node["DERPPort"], node["STUNPort"]) == new_ports and node["CertName"] == old_pin
        wait_until(announced, 30, "the restarted relay's new ports in %s's DERP map" % a.name)
        for src, dst in ((a, b), (b, a)):
            self.wait_ping_via_derp(src, dst)



class DerpMeshTest(RelayTestCase):
    """Meshed relays (the default): one region whose nodes are the relays
    in replica order; a client connects to the first node that answers and
    the relays forward packets to each other's clients."""

    def test_clients_hold_one_region_of_all_relays_in_replica_order(self):
        clients = [self.join("mmap%d" % r.id, login_server(r))
                   for r in self.cluster.replicas.values()]
        region = mesh_region(self.cluster)
        pins = [node["CertName"] for node in region["Nodes"]]
        self.assertEqual(len(set(pins)), 3, pins)
        for c in clients:
            m = wait_until(lambda: (lambda m: m if len(m.get("Regions", {}).get(
                str(REGION_ID), {}).get("Nodes", [])) == 3 else None)(self.derp_map(c)),
                30, "%s's DERP map to list three relays" % c.name)
            self.assertEqual(m["Regions"], {str(REGION_ID): region})
            self.assertIs(m.get("omitDefaultRegions"), True, m)
            self.assertEqual(self.home(c), MESH_REGION_CODE)
            print("\n  %s uses the relay of replica %d"
                  % (c.name, self.relay_in_use(c, self.cluster.replicas.values())), end="")

    def test_relays_link_to_each_other_at_start(self):
        replicas = list(self.cluster.replicas.values())
        for r in replicas:
            started = mesh_log(r)[0]
            self.assert_mesh_links(r, [p for p in replicas if p is not r], started)
        # All replicas run: no link has gone down.
        for r in replicas:
            downs = [e for e in mesh_log(r)[1] if e[3] != "up"]
            self.assertEqual(downs, [], "replica %d" % r.id)

    def test_clients_ping_each_other_via_the_region(self):
        a = self.join("mping-a", login_server(self.cluster[2]))
        b = self.join("mping-b", login_server(self.cluster[3]))
        for c in (a, b):
            self.assertEqual(self.home(c), MESH_REGION_CODE)
        for src, dst in ((a, b), (b, a)):
            pong = self.wait_ping_via_derp(src, dst)
            print("\n  %s -> %s: %s" % (src.name, dst.name, pong), end="")
        # netcheck measures the one region through its relays' STUN servers.
        for c in (a, b):
            report = json.loads(c.cli("netcheck", "--format=json", timeout=60).stdout)
            self.assertIs(report["UDP"], True, report)
            self.assertEqual(list(report["RegionLatency"]), [str(REGION_ID)], report)
            self.assertEqual(report["PreferredDERP"], REGION_ID, report)

    def test_raw_clients_on_different_relays_reach_each_other_through_the_mesh(self):
        na = Sodium()
        known = [self.join("mraw%d" % i, login_server(self.cluster[i])) for i in (1, 2)]
        keys = [node_private_key(c) for c in known]
        for c in known:
            c.close()
        a = DerpConn(na, relay_ports(self.cluster[2])[0], keys[0])
        b = DerpConn(na, relay_ports(self.cluster[3])[0], keys[1])
        try:
            for conn in (a, b):
                conn.send_client_info()
                self.assertEqual(conn.server_info(), b'{"version":2}')
            self.deliver_through_mesh(a, b, b"from relay 2 to relay 3")
            self.deliver_through_mesh(b, a, b"from relay 3 to relay 2")
            # Both relays know the other's client now: no retry needed.
            a.send_frame(FRAME_SEND_PACKET, b.public + b"again")
            self.assertEqual(b.next_frame(5), (FRAME_RECV_PACKET, a.public + b"again"))
            # b leaves relay 3: relay 2 tells a, which wrote to b, and then
            # no longer knows b.
            b.close()
            self.assertEqual(a.next_frame(10), (FRAME_PEER_GONE, b.public + b"\x00"))
            a.send_frame(FRAME_SEND_PACKET, b.public + b"too late")
            self.assertEqual(a.next_frame(5), (FRAME_PEER_GONE, b.public + b"\x01"))
        finally:
            a.close()
            b.close()

    def deliver_through_mesh(self, src, dst, payload, timeout=10):
        """src sends payload to dst until dst receives it: src's relay learns
        of dst a moment after dst connects to its own relay. Until then, src
        is told dst is not here."""
        deadline = time.monotonic() + timeout
        got = None
        while got is None and time.monotonic() < deadline:
            src.send_frame(FRAME_SEND_PACKET, dst.public + payload)
            got = dst.next_frame(0.5)
        self.assertEqual(got, (FRAME_RECV_PACKET, src.public + payload))
        while True:
            frame = src.next_frame(0.5)
            if frame is None:
                break
            self.assertEqual(frame, (FRAME_PEER_GONE, dst.public + b"\x01"))
        self.assertIsNone(dst.next_frame(0.5))


class DerpMeshFailoverTest(RelayTestCase):
    """Meshed relays, clients logged in through HAProxy (as in
    DerpFailoverTest): when the replica whose relay both clients use dies,
    they move to another node of the region."""
    client_env = FAILOVER_CLIENT_ENV
    uses_proxy = True

    def test_sigkill_of_the_relay_clients_use(self):
        a = self.join("mfo-a", self.proxy.url)
        b = self.join("mfo-b", self.proxy.url)
        for src, dst in ((a, b), (b, a)):
            self.wait_ping_via_derp(src, dst)
        replicas = list(self.cluster.replicas.values())
        used = [self.relay_in_use(c, replicas) for c in (a, b)]
        victim = self.cluster[used[0]]
        old_address = relay_address(victim)
        old_pin = cert_pin(relay_ports(victim)[0])
        print("\n  %s uses the relay of replica %d, %s that of replica %d; SIGKILL of replica %d"
              % (a.name, used[0], b.name, used[1], victim.id), end="")
        victim.kill()
        killed_at = time.monotonic()
        survivors = [r for r in replicas if r is not victim]
        self.cluster.wait_leader(among=survivors, timeout=20)

        def remaining():
            return max(0.1, killed_at + 60 - time.monotonic())
        for c in (a, b):
            wait_until(lambda: c.backend_state() == "Running", remaining(),
                       "%s to be Running" % c.name)
        for src, dst in ((a, b), (b, a)):
            self.wait_ping_via_derp(src, dst, timeout=remaining())
        moved = [self.relay_in_use(c, survivors, timeout=remaining()) for c in (a, b)]
        print("; pings both ways after %.1fs, %s on replica %d's relay, %s on replica %d's"
              % (time.monotonic() - killed_at, a.name, moved[0], b.name, moved[1]), end="")
        for r in survivors:
            self.assertIn(old_address, [e[2] for e in mesh_log(r)[1] if e[3] != "up"],
                          "replica %d's link to the dead relay going down" % r.id)

        # Restarted, the replica binds new ports and announces them, keeps
        # its pin, and the relays link up again.
        victim.start()
        self.cluster.wait_converged(timeout=60)
        self.assertNotEqual(relay_address(victim), old_address)
        self.assertEqual(cert_pin(relay_ports(victim)[0]), old_pin)
        region = mesh_region(self.cluster)
        wait_until(lambda: self.derp_map(a)["Regions"] == {str(REGION_ID): region}, 30,
                   "the restarted relay's new ports in %s's DERP map" % a.name)
        restarted = mesh_log(victim)[0]
        self.assert_mesh_links(victim, survivors, restarted)
        for r in survivors:
            self.assert_mesh_links(r, [victim], restarted)
        for src, dst in ((a, b), (b, a)):
            self.wait_ping_via_derp(src, dst)


if __name__ == "__main__":
    unittest.main()
