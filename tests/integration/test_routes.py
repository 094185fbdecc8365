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
    def router(self, name, replica, prefix=PREFIX, extra=()):
        """A client advertising prefix (and extra flags), recorded as such."""
        c = self.client(name)
        c.up(login_server(replica), self.auth_key,
             extra=("--advertise-routes=" + prefix,) + tuple(extra))
        self.assertEqual(c.backend_state(), "Running")
        wait_until(lambda: prefix in self.node(name)["availableRoutes"], 20,
                   "%s's advertised route to be recorded" % name)
        return c

    def approved_router(self, name, replica, prefix=PREFIX, extra=()):
        """A router whose advertised routes an operator approved."""
        c = self.router(name, replica, prefix, extra)
        self.cluster.leader().cli("nodes", "approve-routes", "-i", self.node_id(name), "-r",
                                  ",".join(self.node(name)["availableRoutes"]))
        return c

    def viewer(self, name):
        c = self.client(name)
        c.up(login_server(self.cluster[3]), self.auth_key)
        return c

    def node_id(self, name):
        return str(self.node(name)["id"])

    def primary_of(self, viewer, prefix=PREFIX):
        """The hostnames of viewer's peers that carry prefix as a primary route."""
        return sorted(h for h, p in viewer.peers().items()
                      if prefix in (p.get("PrimaryRoutes") or []))

    def wait_primary(self, viewer, hostname, prefix=PREFIX, timeout=20, what=None):
        wait_until(lambda: self.primary_of(viewer, prefix) == [hostname], timeout,
                   what or "%s to see %s as the only primary of %s"
                   % (viewer.name, hostname, prefix))

    def test_one_primary_and_failover_when_it_disconnects(self):
        leader = self.cluster.leader()
        a = self.router("rt-a", self.cluster[1])
        viewer = self.viewer("rt-viewer")
        # Not approved yet: advertised only, nobody routes it.
        self.assertEqual(self.primary_of(viewer), [])
        leader.cli("nodes", "approve-routes", "-i", self.node_id("rt-a"), "-r", PREFIX)
        self.wait_primary(viewer, "rt-a")
        self.approved_router("rt-b", self.cluster[2])
        routes = json.loads(leader.cli("nodes", "list-routes", "-o", "json").stdout)
        serving = dict((n["name"], n["subnetRoutes"]) for n in routes)
        self.assertEqual(serving["rt-a"], [PREFIX])
        self.assertEqual(serving["rt-b"], [PREFIX])
        # Both serve it; the one online longer stays the one primary.
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
        prefix = "10.78.0.0/24"
        a = self.approved_router("fz-a", self.cluster[1], prefix)
        self.approved_router("fz-b", self.cluster[2], prefix)
        viewer = self.viewer("fz-viewer")
        self.wait_primary(viewer, "fz-a", prefix)
        a.proc.send_signal(signal.SIGSTOP)
        try:
            start = time.monotonic()
            self.wait_primary(viewer, "fz-b", prefix, what="fz-b to take over from frozen fz-a")
            print("frozen primary to failover seen by a client: %.1fs" % (time.monotonic() - start))
            self.wait_peer(viewer, "fz-a", pred=lambda p: not p.get("Online"), what="offline")
        finally:
            a.proc.send_signal(signal.SIGCONT)
        # Thawed, it reconnects; the route stays with fz-b.
        self.wait_peer(viewer, "fz-a")
        self.assertEqual(self.primary_of(viewer, prefix), ["fz-b"])

    def test_killed_router_and_exit_node_fail_over_and_show_offline(self):
        """SIGKILL of a router that is also an exit node: the kernel closes its
        connection, its session ends, the subnet route moves to the other
        router and the exit node shows offline."""
        prefix = "10.80.0.0/24"
        a = self.approved_router("kl-a", self.cluster[1], prefix, ("--advertise-exit-node",))
        self.approved_router("kl-b", self.cluster[2], prefix)
        viewer = self.viewer("kl-viewer")
        self.wait_primary(viewer, "kl-a", prefix)
        self.wait_peer(viewer, "kl-a", pred=lambda p: p.get("Online") and p.get("ExitNodeOption"),
                       what="online as an exit node")
        a.proc.kill()
        a.proc.wait()
        start = time.monotonic()
        self.wait_primary(viewer, "kl-b", prefix, what="kl-b to take over from killed kl-a")
        self.wait_peer(viewer, "kl-a", pred=lambda p: not p.get("Online"), what="offline")
        print("killed router and exit node, failover and offline seen by a client: %.1fs"
              % (time.monotonic() - start))

    def test_router_of_a_crashed_replica_goes_offline_and_fails_over(self):
        """The replica holding the primary router's session dies (SIGKILL:
        it closes nothing); the leader expires that replica's sessions once
        its heartbeats stop, so the router, which cannot reach another
        replica here, goes offline and the other router takes the route."""
        prefix = "10.79.0.0/24"
        self.approved_router("cr-a", self.cluster[1], prefix)
        self.approved_router("cr-b", self.cluster[2], prefix)
        viewer = self.viewer("cr-viewer")
        self.wait_primary(viewer, "cr-a", prefix)
        self.cluster[1].kill()
        try:
            start = time.monotonic()
            self.wait_primary(viewer, "cr-b", prefix, timeout=30,
                              what="cr-b to take over from cr-a, whose replica died")
            print("replica crash to failover seen by a client: %.1fs" % (time.monotonic() - start))
        finally:
            self.cluster[1].start()
            self.cluster.wait_leader()
            self.cluster.wait_converged()
        # cr-a comes back through its restarted replica; the route stays.
        self.wait_peer(viewer, "cr-a", timeout=60)
        self.assertEqual(self.primary_of(viewer, prefix), ["cr-b"])

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
