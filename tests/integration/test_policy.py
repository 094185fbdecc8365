"""The ACL policy enforced on real Tailscale clients: stock tailscaled daemons
(userspace networking) on a 3-replica cluster get each their packet filter and
their peers from the policy. A node allowed one port on a peer reaches that
port and not another; a node no rule connects sees nobody and nobody sees it; a
policy set through one replica changes what clients connected to the others
enforce within seconds; a policy whose tests fail is refused and changes
nothing; policy.mode file proposes the file on SIGHUP."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import Cluster, wait_until
from test_tailscale import TailnetTest, login_server

# Inbound TCP to a userspace-networking node's address is forwarded to
# 127.0.0.1:<port> on its host: one banner server per port stands in for the
# services of the destination node.
BANNER = b"concord-policy-test\n"


class BannerServer:
    """Accepts on 127.0.0.1:port, writes BANNER and closes."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.sendall(BANNER)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def policy_text(acls, tests=None):
    doc = {
        "tagOwners": {"tag:server": ["alice@"]},
        "acls": acls,
    }
    if tests is not None:
        doc["tests"] = tests
    return json.dumps(doc, indent=2)


class PolicyTest(TailnetTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            leader = cls.cluster.leader()
            leader.cli("users", "create", "bob")
            out = leader.cli("preauthkeys", "create", "--tags", "tag:server", "-e", "24h",
                             "--reusable", "-o", "json").stdout
            cls.server_key = json.loads(out)["key"]
            out = leader.cli("preauthkeys", "create", "-u", "bob", "-e", "24h", "--reusable",
                             "-o", "json").stdout
            cls.bob_key = json.loads(out)["key"]
        except BaseException:
            cls.tearDownClass()
            raise

    def setUp(self):
        super().setUp()
        self.open_port = BannerServer()
        self.closed_port = BannerServer()

    def tearDown(self):
        super().tearDown()
        self.open_port.close()
        self.closed_port.close()
        # Back to the default (everyone reaches everyone) for the next test.
        self.set_policy(self.cluster.leader(), '{"acls": [{"action": "accept", "src": ["*"], '
                        '"dst": ["*:*"]}]}')

    # -- helpers --

    def set_policy(self, replica, text):
        path = os.path.join(self.workdir, "policy-%d.hujson" % time.monotonic_ns())
        with open(path, "w") as f:
            f.write(text)
        return replica.cli("policy", "set", "-f", path, check=False)

    def policy_version(self, replica):
        r = replica.request("GET", "/api/v1/policy")
        self.assertEqual(r.status, 200, r)
        return int(r.headers["etag"].strip('"'))

    def connects(self, src, dst_ip, port, timeout=6):
        """Whether `tailscale nc` from src reaches dst_ip:port and reads the banner."""
        argv = [src.tailscale, "--socket=" + src.socket, "nc", dst_ip, str(port)]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env=src.env)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            return False
        return out == BANNER

    def v4(self, client):
        return [a for a in client.self_ips() if "." in a][0]

    def assert_blocked(self, src, dst_ip, port):
        self.assertFalse(self.connects(src, dst_ip, port),
                         "%s reached %s:%d against the policy" % (src.name, dst_ip, port))

    def wait_connects(self, src, dst_ip, port, timeout=30):
        wait_until(lambda: self.connects(src, dst_ip, port), timeout,
                   "%s to reach %s:%d" % (src.name, dst_ip, port))

    # -- tests --

    def test_port_allowed_reaches_other_port_blocked_and_strangers_see_nobody(self):
        rv = self.set_policy(self.cluster[1], policy_text([
            {"action": "accept", "src": ["alice@"],
             "dst": ["tag:server:%d" % self.open_port.port]},
        ]))
        self.assertEqual(rv.returncode, 0, rv.stderr)
        web = self.join("pol-web", self.cluster[1], key=self.server_key)
        laptop = self.join("pol-laptop", self.cluster[2])
        stranger = self.join("pol-stranger", self.cluster[3], key=self.bob_key)
        web_ip = self.v4(web)
        # laptop may reach web: both see each other; the stranger is in no rule.
        self.wait_peer(laptop, "pol-web")
        self.wait_peer(web, "pol-laptop")
        self.wait_connects(laptop, web_ip, self.open_port.port)
        self.assert_blocked(laptop, web_ip, self.closed_port.port)
        # Nothing is allowed towards laptop: web's filter admits nobody.
        self.assert_blocked(web, self.v4(laptop), self.open_port.port)
        self.assertEqual(stranger.peers(), {})
        self.assertNotIn("pol-stranger", laptop.peers())
        self.assertNotIn("pol-stranger", web.peers())
        self.assert_blocked(stranger, web_ip, self.open_port.port)

    def test_change_through_one_replica_reaches_clients_of_the_others(self):
        rv = self.set_policy(self.cluster[1], policy_text([
            {"action": "accept", "src": ["alice@"],
             "dst": ["tag:server:%d" % self.open_port.port]},
        ]))
        self.assertEqual(rv.returncode, 0, rv.stderr)
        web = self.join("chg-web", self.cluster[2], key=self.server_key)
        laptop = self.join("chg-laptop", self.cluster[3])
        web_ip = self.v4(web)
        self.wait_connects(laptop, web_ip, self.open_port.port)
        self.assert_blocked(laptop, web_ip, self.closed_port.port)
        start = time.monotonic()
        rv = self.set_policy(self.cluster[1], policy_text([
            {"action": "accept", "src": ["alice@"],
             "dst": ["tag:server:%d,%d" % (self.open_port.port, self.closed_port.port)]},
        ]))
        self.assertEqual(rv.returncode, 0, rv.stderr)
        self.wait_connects(laptop, web_ip, self.closed_port.port, timeout=15)
        print("policy change to enforcement on another replica's client: %.1fs"
              % (time.monotonic() - start))
        # And back: the port closes again.
        rv = self.set_policy(self.cluster[3], policy_text([
            {"action": "accept", "src": ["alice@"],
             "dst": ["tag:server:%d" % self.open_port.port]},
        ]))
        self.assertEqual(rv.returncode, 0, rv.stderr)
        wait_until(lambda: not self.connects(laptop, web_ip, self.closed_port.port), 15,
                   "the closed port to be blocked again")

    def test_failing_tests_block_is_refused_and_changes_nothing(self):
        good = policy_text([{"action": "accept", "src": ["alice@"], "dst": ["tag:server:22"]}])
        rv = self.set_policy(self.cluster[2], good)
        self.assertEqual(rv.returncode, 0, rv.stderr)
        version = self.policy_version(self.cluster[2])
        bad = policy_text(
            [{"action": "accept", "src": ["alice@"], "dst": ["tag:server:22"]}],
            tests=[{"src": "alice@", "accept": ["tag:server:443"]}])
        rv = self.set_policy(self.cluster[2], bad)
        self.assertNotEqual(rv.returncode, 0)
        self.assertIn("test", rv.stderr)
        self.assertIn("443", rv.stderr)
        for r in self.cluster.running():
            wait_until(lambda: self.policy_version(r) == version, 10,
                       "replica %d to keep policy version %d" % (r.id, version))
        current = json.loads(self.cluster[1].request("GET", "/api/v1/policy").body)["policy"]
        self.assertEqual(current, good)
        # A syntax error: refused with its line and column.
        rv = self.set_policy(self.cluster[2], '{\n  "acls": [\n    {"action": "accept",,}\n]}')
        self.assertNotEqual(rv.returncode, 0)
        self.assertIn("line 3", rv.stderr)
        self.assertEqual(self.policy_version(self.cluster[2]), version)


class PolicyFileModeTest(unittest.TestCase):
    """policy.mode file: every replica reads the same file; the policy it holds
    is proposed at start and on SIGHUP; a bad file changes nothing and makes
    /ready say so."""

    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="concord-polfile-")
        cls.path = os.path.join(cls.workdir, "policy.hujson")
        with open(cls.path, "w") as f:
            f.write('// first\n{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:22"]},]}\n')
        cls.cluster = Cluster(3, extra_config=["policy:", "  mode: file", "  path: " + cls.path])
        try:
            cls.cluster.start()
        except BaseException:
            cls.cluster.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.cluster.close()
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def applied(self, replica):
        r = replica.request("GET", "/api/v1/policy")
        self.assertEqual(r.status, 200, r)
        return int(r.headers["etag"].strip('"')), r.json()["policy"]

    def wait_applied(self, text):
        for r in self.cluster.running():
            try:
                wait_until(lambda: self.applied(r)[1] == text, 15,
                           "replica %d to apply the file's policy" % r.id)
            except AssertionError as e:
                raise AssertionError("%s\n%s" % (e, self.cluster.logs())) from None
        return self.applied(self.cluster[1])[0]

    def test_file_applied_at_start_then_on_sighup_and_bad_file_refused(self):
        with open(self.path) as f:
            first = f.read()
        version = self.wait_applied(first)
        second = '{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:443"]}]}\n'
        with open(self.path, "w") as f:
            f.write(second)
        self.cluster[2].proc.send_signal(signal.SIGHUP)
        newer = self.wait_applied(second)
        self.assertGreater(newer, version)
        # Replicas that have not read the file again say their copy differs,
        # and never propose it back; once they read it, they are ready.
        wait_until(lambda: self.cluster[1].ready().status == 503, 15, "replica 1 not ready")
        self.assertEqual(self.applied(self.cluster[1]), (newer, second))
        for r in self.cluster.running():
            r.proc.send_signal(signal.SIGHUP)
        for r in self.cluster.running():
            wait_until(lambda: r.ready().status == 200, 15, "replica %d ready" % r.id)
        self.assertEqual(self.applied(self.cluster[1]), (newer, second))
        # A file that does not parse: logged, nothing changes, /ready tells.
        with open(self.path, "w") as f:
            f.write('{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:80"]}\n')
        self.cluster[3].proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.cluster[3].ready().status == 503, 15, "replica 3 not ready")
        body = self.cluster[3].ready().json()
        self.assertIn("policy file differs from the applied policy", body["reasons"])
        self.assertEqual(self.applied(self.cluster[1]), (newer, second))
        with open(self.cluster[3].log_path) as f:
            self.assertIn("rejected: line", f.read())
