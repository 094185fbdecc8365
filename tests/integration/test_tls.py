"""TLS on the client listener (tls_cert_path/tls_key_path) of real replicas:
writes forwarded to the leader and joins go through the peers' TLS
listeners, /health answers over TLS, plain HTTP gets no answer, and a
replica's peer requests offer ALPN http/1.1 and carry SNI for host names
only. The certificate (for IP 127.0.0.1) is made with the openssl command."""
import http.client
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import unittest

from harness import Cluster, wait_until


def make_certificate(directory):
    """A self-signed certificate and key in directory; their paths."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise unittest.SkipTest("no openssl command to make a certificate")
    cert, key = directory + "/cert.pem", directory + "/key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=concord-test",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def unverified_context():
    """What peers do too: TLS without checking the certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def user_names(replica):
    return set(u["name"] for u in replica.get_json("/api/v1/user")["users"])


class TLSClusterCase(unittest.TestCase):
    """A started cluster of three with TLS on every replica's listener."""

    @classmethod
    def setUpClass(cls):
        cls.cert_dir = tempfile.mkdtemp(prefix="concord-tls-")
        try:
            cls.cert_path, cls.key_path = make_certificate(cls.cert_dir)
            cls.cluster = Cluster(3, extra_config=["tls_cert_path: " + cls.cert_path,
                                                   "tls_key_path: " + cls.key_path])
        except BaseException:
            shutil.rmtree(cls.cert_dir, ignore_errors=True)
            raise
        try:
            cls.cluster.start()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.cluster.close()
        shutil.rmtree(cls.cert_dir, ignore_errors=True)

    def fail_with_logs(self, msg):
        self.fail("%s\n%s" % (msg, self.cluster.logs()))


class ForwardingTest(TLSClusterCase):
    def test_write_through_a_follower_reaches_the_leader(self):
        follower = self.cluster.followers()[0]
        p = follower.cli("users", "create", "tls-alice", check=False)
        if p.returncode != 0:
            self.fail_with_logs("users create on follower %d: %s%s" % (follower.id, p.stdout,
                                                                      p.stderr))
        leader = self.cluster.leader()
        self.assertIn("tls-alice", user_names(leader))
        self.assertIn("tls-alice", user_names(follower))

    def test_health_answers_over_tls_on_every_replica(self):
        for replica in self.cluster.running():
            conn = http.client.HTTPSConnection("127.0.0.1", replica.http_port, timeout=10,
                                               context=unverified_context())
            try:
                conn.request("GET", "/health")
                r = conn.getresponse()
                self.assertEqual((r.status, r.read()), (200, b'{"status":"pass"}'))
                self.assertIn(conn.sock.version(), ("TLSv1.2", "TLSv1.3"))
            finally:
                conn.close()

    def test_plain_http_gets_no_answer(self):
        replica = self.cluster[1]
        conn = http.client.HTTPConnection("127.0.0.1", replica.http_port, timeout=10)
        try:
            with self.assertRaises((http.client.HTTPException, ConnectionError)):
                conn.request("GET", "/health")
                conn.getresponse().read()
        finally:
            conn.close()


class JoinTest(TLSClusterCase):
    def test_a_new_replica_joins_through_a_tls_listener(self):
        cluster = self.cluster
        fourth = cluster.add_replica(join_through=cluster[2])
        fourth.start()
        try:
            wait_until(lambda: [m for m in cluster[1].get_json("/api/v1/cluster/members")["members"]
                                if int(m["id"]) == fourth.id and m.get("voter")],
                       30, "replica 4 to become a voter")
        except AssertionError as e:
            self.fail_with_logs(str(e))
        # Its writes are forwarded over TLS as well.
        fourth.cli("users", "create", "tls-via-fourth")
        cluster.wait_converged(timeout=30)
        self.assertIn("tls-via-fourth", user_names(cluster[1]))


class FakePeer:
    """A TLS listener standing in for a peer replica: records the SNI name,
    the ALPN protocol and the request line of each connection, answers
    nothing."""

    def __init__(self, cert_path, key_path):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert_path, key_path)
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.ctx.sni_callback = self._on_sni
        self.sni = "not asked"  # of the connection being served
        self.seen = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _on_sni(self, ssl_sock, name, ctx):
        self.sni = name

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.settimeout(10)
                self.sni = "not asked"
                tls = self.ctx.wrap_socket(conn, server_side=True)
                line = tls.recv(4096).split(b"\r\n")[0]
                self.seen.append((self.sni, tls.selected_alpn_protocol(), line))
                tls.close()
            except (OSError, ssl.SSLError):
                conn.close()

    def close(self):
        self.sock.close()


class PeerRequestTest(unittest.TestCase):
    """A lone replica with TLS asks a fake peer to let it join."""

    def setUp(self):
        self.cert_dir = tempfile.mkdtemp(prefix="concord-tls-")
        self.addCleanup(shutil.rmtree, self.cert_dir, True)
        cert_path, key_path = make_certificate(self.cert_dir)
        self.peer = FakePeer(cert_path, key_path)
        self.addCleanup(self.peer.close)
        # Replica 1 is never started: only the joining replicas run.
        self.cluster = Cluster(1, extra_config=["tls_cert_path: " + cert_path,
                                                "tls_key_path: " + key_path])
        self.addCleanup(self.cluster.close)

    def join_through(self, host):
        class Target:
            http_address = "%s:%d" % (host, self.peer.port)
        replica = self.cluster.add_replica(join_through=Target)
        replica.start()
        seen = wait_until(lambda: self.peer.seen, 15, "a peer request to %s" % host)
        replica.stop()
        return seen[0]

    def test_sni_names_a_host_name(self):
        self.assertEqual(self.join_through("localhost"),
                         ("localhost", "http/1.1", b"POST /internal/v1/peer HTTP/1.1"))

    def test_no_sni_for_an_ip_address(self):
        self.assertEqual(self.join_through("127.0.0.1"),
                         (None, "http/1.1", b"POST /internal/v1/peer HTTP/1.1"))


if __name__ == "__main__":
    unittest.main()
