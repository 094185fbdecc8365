"""Subnet routes on real Tailscale clients: two routers advertise the same
prefix, an operator approves it on both (`concord nodes approve-routes`), and a
third client sees exactly one of them as the prefix's primary; when the
primary disconnects cleanly the other takes over, and the primary coming back
does not take the route back (the election is sticky). Routes that are not
advertised, malformed or not canonical are refused and change nothing."""
import json
import os
import signal
import time
import unittest

from harness import wait_until
from test_tailscale import TailnetTest, login_server

PREFIX = "10.77.0.0/24"


class RoutesTest(TailnetTest):
    def router(self, name, replica):
        c = self.client(name)
        c.up(login_server(replica), self.auth_key, extra=("--advertise-routes=" + PREFIX,))
        self.assertEqual(c.backend_state(), "Running")
        return c

    def node_id(self, name):
        return str(self.node(name)["id"])

    def primary_of(self, viewer):
        """The hostnames of viewer's peers that carry PREFIX as a primary route."""
        return sorted(h for h, p in viewer.peers().items()
                      if PREFIX in (p.get("PrimaryRoutes") or []))

    def wait_primary(self, viewer, hostname, timeout=20):
        wait_until(lambda: self.primary_of(viewer) == [hostname], timeout,
                   "%s to see %s as the only primary of %s" % (viewer.name, hostname, PREFIX))

    def test_one_primary_and_failover_when_it_disconnects(self):
        leader = self.cluster.leader()
        a = self.router("rt-a", self.cluster[1])
        viewer = self.client("rt-viewer")
        viewer.up(login_server(self.cluster[3]), self.auth_key)
        wait_until(lambda: PREFIX in self.node("rt-a")["availableRoutes"], 20,
                   "rt-a's advertised route to be recorded")
        # Not approved yet: advertised only, nobody routes it.
        self.assertEqual(self.primary_of(viewer), [])
        leader.cli("nodes", "approve-routes", "-i", self.node_id("rt-a"), "-r", PREFIX)
        self.wait_primary(viewer, "rt-a")
        b = self.router("rt-b", self.cluster[2])
        wait_until(lambda: PREFIX in self.node("rt-b")["availableRoutes"], 20,
                   "rt-b's advertised route to be recorded")
        leader.cli("nodes", "approve-routes", "-i", self.node_id("rt-b"), "-r", PREFIX)
        routes = json.loads(leader.cli("nodes", "list-routes", "-o", "json").stdout)
        serving = dict((n["name"], n["subnetRoutes"]) for n in routes)
        self.assertEqual(serving["rt-a"], [PREFIX])
        self.assertEqual(serving["rt-b"], [PREFIX])
        # Both serve it; the first one approved stays the one primary.
        self.wait_primary(viewer, "rt-a")

        # The primary leaves cleanly: its session closes and b takes over.
        a.cli("down")
        self.wait_primary(viewer, "rt-b")
        # a comes back: b keeps the route (no flapping back).
        a.cli("up")
        self.wait_peer(viewer, "rt-a")
        self.assertEqual(self.primary_of(viewer), ["rt-b"])

    def test_frozen_primary_fails_over_within_seconds(self):
        """A primary whose process freezes (SIGSTOP: no FIN, no RST, the socket
        stays open) is noticed by the liveness PINGs and loses the route."""
        leader = self.cluster.leader()
        prefix = "10.78.0.0/24"
        routers = []
        for name, replica in (("fz-a", self.cluster[1]), ("fz-b", self.cluster[2])):
            c = self.client(name)
            c.up(login_server(replica), self.auth_key, extra=("--advertise-routes=" + prefix,))
            wait_until(lambda: prefix in self.node(name)["availableRoutes"], 20,
                       "%s's advertised route to be recorded" % name)
            leader.cli("nodes", "approve-routes", "-i", self.node_id(name), "-r", prefix)
            routers.append(c)
        viewer = self.client("fz-viewer")
        viewer.up(login_server(self.cluster[3]), self.auth_key)

        def primaries():
            return sorted(h for h, p in viewer.peers().items()
                          if prefix in (p.get("PrimaryRoutes") or []))
        wait_until(lambda: primaries() == ["fz-a"], 20, "fz-a to be the primary")
        routers[0].proc.send_signal(signal.SIGSTOP)
        try:
            start = time.monotonic()
            wait_until(lambda: primaries() == ["fz-b"], 20, "fz-b to take over from frozen fz-a")
            print("frozen primary to failover seen by a client: %.1fs" % (time.monotonic() - start))
            self.wait_peer(viewer, "fz-a", pred=lambda p: not p.get("Online"), what="offline")
        finally:
            routers[0].proc.send_signal(signal.SIGCONT)
        # Thawed, it reconnects; the route stays with fz-b.
        self.wait_peer(viewer, "fz-a")
        self.assertEqual(primaries(), ["fz-b"])

    def test_killed_router_and_exit_node_fail_over_and_show_offline(self):
        """SIGKILL of a router that is also an exit node: the kernel closes its
        connection, its session ends, the subnet route moves to the other
        router and the exit node shows offline."""
        prefix = "10.80.0.0/24"
        leader = self.cluster.leader()
        routers = []
        for name, replica, extra in (
                ("kl-a", self.cluster[1], ("--advertise-routes=" + prefix,
                                           "--advertise-exit-node")),
                ("kl-b", self.cluster[2], ("--advertise-routes=" + prefix,))):
            c = self.client(name)
            c.up(login_server(replica), self.auth_key, extra=extra)
            wait_until(lambda: prefix in self.node(name)["availableRoutes"], 20,
                       "%s's advertised routes to be recorded" % name)
            routes = [r for r in self.node(name)["availableRoutes"]]
            leader.cli("nodes", "approve-routes", "-i", self.node_id(name), "-r", ",".join(routes))
            routers.append(c)
        viewer = self.client("kl-viewer")
        viewer.up(login_server(self.cluster[3]), self.auth_key)

        def primaries():
            return sorted(h for h, p in viewer.peers().items()
                          if prefix in (p.get("PrimaryRoutes") or []))
        wait_until(lambda: primaries() == ["kl-a"], 20, "kl-a to be the primary")
        self.wait_peer(viewer, "kl-a", pred=lambda p: p.get("Online") and p.get("ExitNodeOption"),
                       what="online as an exit node")
        routers[0].proc.kill()
        routers[0].proc.wait()
        start = time.monotonic()
        wait_until(lambda: primaries() == ["kl-b"], 20, "kl-b to take over from killed kl-a")
        self.wait_peer(viewer, "kl-a", pred=lambda p: not p.get("Online"), what="offline")
        print("killed router and exit node, failover and offline seen by a client: %.1fs"
              % (time.monotonic() - start))

    def test_router_of_a_crashed_replica_goes_offline_and_fails_over(self):
        """The replica holding the primary router's session dies (SIGKILL:
        it closes nothing); the leader expires that replica's sessions once
        its heartbeats stop, so the router, which cannot reach another
        replica here, goes offline and the other router takes the route."""
        prefix = "10.79.0.0/24"
        names = (("cr-a", self.cluster[1]), ("cr-b", self.cluster[2]))
        for name, replica in names:
            c = self.client(name)
            c.up(login_server(replica), self.auth_key, extra=("--advertise-routes=" + prefix,))
            wait_until(lambda: prefix in self.node(name)["availableRoutes"], 20,
                       "%s's advertised route to be recorded" % name)
            self.cluster.leader().cli("nodes", "approve-routes", "-i", self.node_id(name),
                                      "-r", prefix)
        viewer = self.client("cr-viewer")
        viewer.up(login_server(self.cluster[3]), self.auth_key)

        def primaries():
            return sorted(h for h, p in viewer.peers().items()
                          if prefix in (p.get("PrimaryRoutes") or []))
        wait_until(lambda: primaries() == ["cr-a"], 20, "cr-a to be the primary")
        self.cluster[1].kill()
        try:
            start = time.monotonic()
            wait_until(lambda: primaries() == ["cr-b"], 30,
                       "cr-b to take over from cr-a, whose replica died")
            print("replica crash to failover seen by a client: %.1fs" % (time.monotonic() - start))
        finally:
            self.cluster[1].start()
            self.cluster.wait_leader()
            self.cluster.wait_converged()
        # cr-a comes back through its restarted replica; the route stays.
        self.wait_peer(viewer, "cr-a", timeout=60)
        self.assertEqual(primaries(), ["cr-b"])

    def test_auto_approvers_approve_advertised_routes(self):
        leader = self.cluster.leader()
        policy = os.path.join(self.workdir, "routes-policy.hujson")
        with open(policy, "w") as f:
            json.dump({
                "tagOwners": {"tag:router": ["alice@"]},
                "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
                "autoApprovers": {"routes": {"10.88.0.0/16": ["tag:router"]}},
            }, f)
        leader.cli("policy", "set", "-f", policy)
        try:
            key = self.new_key(leader, "--reusable", "--tags", "tag:router")
            router = self.client("rt-auto")
            router.up(login_server(self.cluster[2]), key,
                      extra=("--advertise-routes=10.88.1.0/24,10.99.0.0/24",))
            # The policy approves the first (inside 10.88.0.0/16), not the second.
            wait_until(lambda: self.node("rt-auto")["approvedRoutes"] == ["10.88.1.0/24"], 20,
                       "rt-auto's route to be auto-approved")
            time.sleep(1)
            self.assertEqual(self.node("rt-auto")["approvedRoutes"], ["10.88.1.0/24"])
        finally:
            with open(policy, "w") as f:
                f.write('{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}')
            leader.cli("policy", "set", "-f", policy)

    def test_bad_routes_are_refused_and_change_nothing(self):
        leader = self.cluster.leader()
        plain = self.client("rt-plain")
        plain.up(login_server(self.cluster[1]), self.auth_key)
        node = self.node_id("rt-plain")
        before = self.stable_state_hash()
        for route, message in [
            ("10.77.0.0/24", "is not advertised by node"),
            ("10.77.0.1/24", "host bits set"),
            ("10.77.0.0/33", "prefix length must be 0 to 32"),
            ("fd7a:115c:a1e0:0::/48", "canonical form"),
        ]:
            rv = leader.cli("nodes", "approve-routes", "-i", node, "-r", route, check=False)
            self.assertNotEqual(rv.returncode, 0, route)
            self.assertIn(message, rv.stderr, route)
        rv = leader.cli("nodes", "approve-routes", "-i", "999999", "-r", PREFIX, check=False)
        self.assertIn("not found", rv.stderr)
        self.assertEqual(self.stable_state_hash(), before)


if __name__ == "__main__":
    unittest.main()
