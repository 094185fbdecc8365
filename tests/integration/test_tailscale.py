"""The real Tailscale client against a 3-replica cluster: stock tailscaled
daemons (userspace networking, a local derper) join with auth keys and
interactively, see each other, ping, resolve MagicDNS names, rename, log out
and back in, expire, vanish when ephemeral, and survive the SIGKILL of the
replica they are connected to behind HAProxy; bad keys and bad handshakes
change nothing. The newest pinned client runs everything, the oldest supported
one the join test (versions: ops/install-tailscale)."""
import base64
import datetime
import ipaddress
import itertools
import json
import os
import shutil
import socket
import tempfile
import time
import unittest

import tailscale
from harness import Cluster, wait_until

CGNAT = ipaddress.ip_network("100.64.0.0/10")
ULA = ipaddress.ip_network("fd7a:115c:a1e0::/48")
BASE_DOMAIN = "tail.test"
EPHEMERAL_TIMEOUT_S = 5
GC_INTERVAL_S = 5


def parse_time(rfc3339):
    return datetime.datetime.fromisoformat(rfc3339).timestamp()


def login_server(replica):
    return "http://" + replica.http_address


class TailnetTest(unittest.TestCase):
    """One cluster, relay and user per class; each test starts its own clients,
    with host names of its own, and stops them when it ends."""
    version = "newest"
    cluster_options = {}

    @classmethod
    def setUpClass(cls):
        cls.ts_version = tailscale.pinned_versions()[cls.version]
        bindir = tailscale.client_dir(cls.ts_version)
        tailscale.require(os.path.join(bindir, "tailscale"), os.path.join(bindir, "tailscaled"),
                          tailscale.derper_path())
        cls.workdir = tempfile.mkdtemp(prefix="concord-ts-")
        cls.tailnet = tailscale.Tailnet(cls.workdir, cls.ts_version)
        cls.cluster = None
        try:
            derper = cls.tailnet.derper()
            cls.cluster = Cluster(3, **cls.cluster_options, extra_config=[
                "ephemeral_node_inactivity_timeout: %ds" % EPHEMERAL_TIMEOUT_S,
                "derp:", "  map_path: " + derper.map_path,
                "dns:", "  base_domain: " + BASE_DOMAIN])
            cls.cluster.start()
            leader = cls.cluster.leader()
            leader.cli("users", "create", "alice")
            cls.auth_key = cls.new_key(leader, "--reusable")
            # Only AuthKeyVisibilityTest is about using a key before every
            # replica has applied it.
            cls.cluster.wait_converged()
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

    @staticmethod
    def new_key(replica, *flags):
        out = replica.cli("preauthkeys", "create", "-u", "alice", "-e", "24h", "-o", "json",
                          *flags).stdout
        return json.loads(out)["key"]

    def setUp(self):
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()

    def run(self, result=None):
        # Print the logs of a failed test's clients and replicas: the
        # processes and their directories are gone once the class ends.
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        try:
            return super().run(result)
        finally:
            if len(result.failures) + len(result.errors) > before and hasattr(self, "clients"):
                print("\n" + self.tailnet.logs(self.clients) + "\n" + self.cluster.logs())

    # -- helpers --

    def stable_state_hash(self):
        """The cluster's state hash once it has stopped changing for a second
        (earlier tests' clients may still be going offline)."""
        def settled():
            h1 = self.cluster.wait_converged()
            time.sleep(1)
            h2 = self.cluster.wait_converged()
            return h1 if h1 == h2 else None
        return wait_until(settled, 30, "a settled state hash")

    def client(self, name, ephemeral=False, env=None):
        c = self.tailnet.client(name, ephemeral, env)
        self.clients.append(c)
        return c

    def join(self, name, replica, key=None, ephemeral=False, env=None):
        c = self.client(name, ephemeral, env)
        c.up(login_server(replica), key or self.auth_key)
        self.assertEqual(c.backend_state(), "Running")
        return c

    def nodes(self, replica=None):
        rep = replica or self.cluster.leader() or self.cluster.running()[0]
        return json.loads(rep.cli("nodes", "list", "-o", "json").stdout)

    def node(self, name):
        found = [n for n in self.nodes() if n["name"] == name]
        self.assertEqual(len(found), 1, "nodes named %s: %r" % (name, found))
        return found[0]

    def wait_peer(self, client, hostname, pred=lambda p: p.get("Online"), timeout=30,
                  what="online"):
        """Waits until client lists the peer with this HostName and pred(peer) holds."""
        def ok():
            p = client.peers().get(hostname)
            return p if p is not None and pred(p) else None
        return wait_until(ok, timeout, "%s to see %s %s" % (client.name, hostname, what))

    def wait_no_peer(self, client, hostname, timeout=30):
        wait_until(lambda: hostname not in client.peers(), timeout,
                   "%s to stop listing %s" % (client.name, hostname))

    def wait_state(self, client, state, timeout=30):
        wait_until(lambda: client.backend_state() == state, timeout,
                   "%s to be %s" % (client.name, state))

    def wait_ping(self, src, dst_ip, timeout=30, tsmp=False):
        return wait_until(lambda: src.ping(dst_ip, tsmp=tsmp), timeout,
                          "%s to ping %s%s" % (src.name, dst_ip, " (TSMP)" if tsmp else ""))

    def assert_mesh(self, clients, ping=True, timeout=30):
        """Every client lists every other online with its name and addresses,
        and (ping) reaches it with a disco ping and a TSMP ping through WireGuard."""
        ips = dict((c.name, c.self_ips()) for c in clients)
        for c in clients:
            for a in ips[c.name]:
                addr = ipaddress.ip_address(a)
                self.assertIn(addr, CGNAT if addr.version == 4 else ULA, ips)
        for src, dst in itertools.permutations(clients, 2):
            # Relay: the home relay concord announces for the peer, by region
            # code; it follows the peer's own choice, so it may come a little later.
            peer = self.wait_peer(src, dst.name, timeout=timeout,
                                  pred=lambda p: p.get("Online") and p.get("Relay") == "test",
                                  what="online with home relay \"test\"")
            self.assertEqual(peer["DNSName"], "%s.%s." % (dst.name, BASE_DOMAIN), peer)
            self.assertEqual(sorted(peer["TailscaleIPs"]), sorted(ips[dst.name]), peer)
            self.assertFalse(peer.get("Expired"), peer)
        if ping:
            for src, dst in itertools.permutations(clients, 2):
                v4 = [a for a in ips[dst.name] if ipaddress.ip_address(a).version == 4][0]
                pong = self.wait_ping(src, v4, timeout)
                self.assertIn("(%s" % v4, pong[0])
                self.wait_ping(src, v4, timeout, tsmp=True)
        return ips


class JoinMixin:
    n_join_clients = 3

    def test_auth_key_join_status_ping_and_magicdns(self):
        clients = [self.join("join%d" % i, self.cluster[i])
                   for i in range(1, self.n_join_clients + 1)]
        ips = self.assert_mesh(clients)
        for c in clients:
            st = c.status_json()
            self.assertEqual(st["Self"]["DNSName"], "%s.%s." % (c.name, BASE_DOMAIN))
            self.assertEqual(st.get("MagicDNSSuffix"), BASE_DOMAIN)
        for src, dst in itertools.permutations(clients, 2):
            fqdn = "%s.%s" % (dst.name, BASE_DOMAIN)
            v4 = [a for a in ips[dst.name] if ipaddress.ip_address(a).version == 4]
            rcode, answers = src.dns_query(fqdn)
            self.assertEqual(rcode, "RCodeSuccess", answers)
            self.assertEqual([a[2] for a in answers if a[1] == "TypeA"], v4, answers)
        # The cluster agrees on the nodes and their addresses.
        for c in clients:
            node = self.node(c.name)
            self.assertEqual(sorted(node["ipAddresses"]), sorted(ips[c.name]))
            self.assertEqual(node["user"]["name"], "alice")


class TailscaleTest(JoinMixin, TailnetTest):
    def test_ping_through_the_derp_relay_alone(self):
        # No UDP at all: every packet goes through the relay of concord's DERP map.
        env = {"TS_DEBUG_ALWAYS_USE_DERP": "1"}
        a = self.join("derp-a", self.cluster[1], env=env)
        b = self.join("derp-b", self.cluster[3], env=env)
        ips = self.assert_mesh([a, b])
        for src, dst in ((a, b), (b, a)):
            pongs = src.ping(ips[dst.name][0], count=2)
            self.assertEqual(len(pongs), 2, pongs)
            for pong in pongs:
                self.assertIn("via DERP(test)", pong)

    def test_interactive_join_approved_on_another_replica(self):
        watcher = self.join("ia-watch", self.cluster[2])
        c = self.client("ia-new")
        proc, url = c.up_interactive(login_server(self.cluster[1]))
        prefix = login_server(self.cluster[1]) + "/register/"
        self.assertTrue(url.startswith(prefix), url)
        auth_id = url[len(prefix):]
        page = self.cluster[1].request("GET", "/register/" + auth_id, tcp=True)
        self.assertEqual(page.status, 200, page)
        self.assertIn(auth_id.encode(), page.body)
        self.assertEqual(c.backend_state(), "NeedsLogin")
        self.cluster[3].cli("auth", "register", "--auth-id", auth_id, "--user", "alice")
        self.assertEqual(proc.wait(timeout=60), 0, "tailscale up failed after the approval")
        self.wait_state(c, "Running")
        self.assertEqual(self.node("ia-new")["registerMethod"], "REGISTER_METHOD_CLI")
        self.assert_mesh([watcher, c])

    def test_hostname_change_reaches_peers(self):
        a = self.join("hn-a", self.cluster[1])
        b = self.join("hn-b", self.cluster[2])
        self.wait_peer(a, "hn-b")
        node_id = self.node("hn-b")["id"]
        b.set_hostname("hn-renamed")
        peer = self.wait_peer(a, "hn-renamed", timeout=15, what="under its new name")
        self.assertEqual(peer["DNSName"], "hn-renamed.%s." % BASE_DOMAIN)
        self.assertNotIn("hn-b", a.peers())
        wait_until(lambda: b.status_json()["Self"]["DNSName"] == "hn-renamed.%s." % BASE_DOMAIN,
                   15, "the renamed node's own DNS name")
        self.assertEqual(self.node("hn-renamed")["id"], node_id)
        rcode, answers = a.dns_query("hn-renamed." + BASE_DOMAIN)
        self.assertEqual(rcode, "RCodeSuccess")
        self.assertEqual([x[2] for x in answers], [peer["TailscaleIPs"][0]])

    def test_logout_then_login_again_keeps_node_and_addresses(self):
        a = self.join("lo-a", self.cluster[1])
        b = self.join("lo-b", self.cluster[3])
        before = self.node("lo-b")
        self.wait_peer(a, "lo-b")
        b.logout()
        self.wait_state(b, "NeedsLogin")
        # The node stays, expired; peers see it expired and offline.
        node = wait_until(lambda: (lambda n: n if n["expiry"] else None)(self.node("lo-b")), 15,
                          "the node's expiry to be set")
        self.assertLessEqual(parse_time(node["expiry"]), time.time() + 1, node)
        self.wait_peer(a, "lo-b", lambda p: p.get("Expired") and not p.get("Online"),
                       what="expired and offline")
        b.up(login_server(self.cluster[3]), self.auth_key)
        self.wait_state(b, "Running")
        after = self.node("lo-b")
        self.assertEqual(after["id"], before["id"])
        self.assertEqual(after["ipAddresses"], before["ipAddresses"])
        self.assertNotEqual(after["nodeKey"], before["nodeKey"])
        self.assertFalse(after["expiry"] and parse_time(after["expiry"]) <= time.time(), after)
        self.assert_mesh([a, b])

    def test_ephemeral_node_stays_while_connected_and_goes_after_it_stops(self):
        a = self.join("eph-a", self.cluster[1])
        # --state=mem: makes tailscaled register as ephemeral; the key is not.
        e = self.join("eph-e", self.cluster[2], ephemeral=True)
        self.wait_peer(a, "eph-e")
        time.sleep(EPHEMERAL_TIMEOUT_S + GC_INTERVAL_S + 2)
        self.assertEqual(self.node("eph-e")["name"], "eph-e")
        self.assertEqual(e.backend_state(), "Running")
        self.wait_ping(a, e.self_ips()[0])
        # SIGKILL: no logout, only the inactivity timeout can remove it.
        e.kill()
        t0 = time.monotonic()
        wait_until(lambda: all(n["name"] != "eph-e" for n in self.nodes()),
                   EPHEMERAL_TIMEOUT_S + GC_INTERVAL_S + 10, "the ephemeral node to be deleted")
        self.wait_no_peer(a, "eph-e", timeout=10)
        print("\n  ephemeral node gone after %.1fs" % (time.monotonic() - t0))
        for rep in self.cluster.running():
            self.assertNotIn("eph-e", [n["name"] for n in self.nodes(rep)])

    def test_node_expiry_forces_login_and_peers_see_it_expired(self):
        a = self.join("exp-a", self.cluster[1])
        b = self.join("exp-b", self.cluster[2])
        self.wait_peer(a, "exp-b")
        self.cluster[3].cli("nodes", "expire", "-i", self.node("exp-b")["id"])
        expiry = self.node("exp-b")["expiry"]
        self.assertTrue(expiry and parse_time(expiry) <= time.time() + 1, expiry)
        self.wait_state(b, "NeedsLogin")
        self.wait_peer(a, "exp-b", lambda p: p.get("Expired"), what="expired")

    def test_unknown_auth_key_is_refused_and_creates_nothing(self):
        c = self.client("badkey")
        before = self.stable_state_hash()
        bogus = "concord-auth-AAAAAAAAAAAA-" + "A" * 40
        p = c.up(login_server(self.cluster[2]), bogus, timeout=20, check=False)
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("key", (p.stdout + p.stderr).lower())
        self.assertNotEqual(c.backend_state(), "Running")
        self.assertNotIn("badkey", [n["name"] for n in self.nodes()])
        self.assertEqual(self.stable_state_hash(), before)
        self.assertIn("unknown auth key", tailscale.tail(self.cluster[2].log_path, 20000))

    def test_garbage_ts2021_handshakes_are_refused_without_state_change(self):
        rep = self.cluster[2]
        before = self.stable_state_hash()
        # A structurally valid initiation (capability 113, type 1, length 96)
        # whose key material is random: the Noise handshake must fail.
        bad_noise = bytes([0, 113, 1, 0, 96]) + os.urandom(96)
        cases = [
            ({"Upgrade": "tailscale-control-protocol", "Connection": "upgrade",
              "X-Tailscale-Handshake": base64.b64encode(bad_noise).decode()},
             "Noise handshake failed"),
            ({"Upgrade": "tailscale-control-protocol", "Connection": "upgrade",
              "X-Tailscale-Handshake": "!!not base64!!"}, "refused upgrade"),
            ({"Upgrade": "tailscale-control-protocol", "Connection": "upgrade",
              "X-Tailscale-Handshake": base64.b64encode(bad_noise[:50]).decode()},
             "refused upgrade"),
            ({"Upgrade": "websocket", "Connection": "upgrade"}, None),
        ]
        for headers, log_line in cases:
            r = rep.request("POST", "/ts2021", body=b"", headers=headers, tcp=True)
            self.assertEqual(r.status, 400, (headers, r))
            if log_line:
                wait_until(lambda: log_line in tailscale.tail(rep.log_path, 20000), 5,
                           "the log line %r" % log_line)
        # Bytes that are not HTTP at all.
        with socket.create_connection(("127.0.0.1", rep.http_port), timeout=5) as s:
            s.sendall(b"\x00\x01\x02garbage\r\n\r\n" * 20)
            reply = s.recv(4096)
        self.assertTrue(reply == b"" or reply.startswith(b"HTTP/1.1 400"), reply)
        self.assertEqual(rep.request("GET", "/health", tcp=True).status, 200)
        self.assertTrue(rep.is_running())
        self.assertEqual(self.stable_state_hash(), before)


class FailoverTest(TailnetTest):
    """Clients log in through HAProxy; the replica holding a client's
    connection is SIGKILLed; the client reconnects through the proxy to
    another replica and keeps its peers and connectivity."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.proxy = cls.tailnet.haproxy([r.http_address for r in
                                             cls.cluster.replicas.values()])
        except BaseException:
            cls.tearDownClass()
            raise

    def join_through_proxy(self, name, replica):
        """A client logged in through the proxy while it forwards only to replica."""
        self.proxy.only("r%d" % replica.id)
        try:
            c = self.client(name)
            c.up(self.proxy.url, self.auth_key)
            wait_until(lambda: self.proxy.server_of(c) == "r%d" % replica.id, 30,
                       "%s's connection through the proxy to replica %d" % (name, replica.id))
        finally:
            self.proxy.only(None)
        return c

    def check_failover(self, victim, other, prefix):
        a = self.join_through_proxy(prefix + "-a", victim)
        b = self.join_through_proxy(prefix + "-b", other)
        self.assert_mesh([a, b])
        victim.kill()
        killed_at = time.monotonic()
        survivors = [r for r in self.cluster.replicas.values() if r is not victim]
        self.cluster.wait_leader(among=survivors, timeout=20)
        victim_server = "r%d" % victim.id
        new = wait_until(lambda: (lambda s: s if s and s != victim_server else None)(
            self.proxy.server_of(a)), 30, "%s to reconnect through the proxy" % a.name)
        for c in (a, b):
            self.wait_state(c, "Running", timeout=30)
        self.assert_mesh([a, b], timeout=30)
        print("\n  %s moved from %s to %s; mesh back after %.1fs"
              % (a.name, victim_server, new, time.monotonic() - killed_at))
        # Changes made after the failover reach both clients.
        late = self.join(prefix + "-late", survivors[0])
        for c in (a, b):
            self.wait_peer(c, late.name, timeout=30)
        victim.start()
        self.cluster.wait_converged(timeout=60)
        wait_until(lambda: self.proxy.server_status(victim_server) == "UP", 30,
                   "the proxy to see replica %d again" % victim.id)
        self.assert_mesh([a, b, late], ping=False)

    def test_sigkill_of_the_leader_a_client_is_connected_to(self):
        leader = self.cluster.wait_leader()
        other = [r for r in self.cluster.running() if r is not leader][0]
        self.check_failover(leader, other, "fo-lead")

    def test_sigkill_of_a_follower_a_client_is_connected_to(self):
        leader = self.cluster.wait_leader()
        followers = [r for r in self.cluster.running() if r is not leader]
        self.check_failover(followers[0], followers[1], "fo-foll")


class AuthKeyVisibilityTest(TailnetTest):
    """A key is usable as soon as its creation is acknowledged, on every
    replica. Heartbeats 1 s apart make followers learn of the commit up to a
    second late, so a replica that only looks at its own applied state fails."""
    cluster_options = {"election_timeout_ms": 5000, "heartbeat_timeout_ms": 1000}

    def test_new_key_works_at_once_on_a_follower(self):
        leader = self.cluster.wait_leader()
        follower = [r for r in self.cluster.running() if r is not leader][0]
        c = self.client("fresh-key")
        key = self.new_key(leader)
        p = c.up(login_server(follower), key, timeout=30, check=False)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(c.backend_state(), "Running")


class OldestClientTest(JoinMixin, TailnetTest):
    """The oldest client version concord supports, two clients."""
    version = "oldest"
    n_join_clients = 2


if __name__ == "__main__":
    unittest.main()
