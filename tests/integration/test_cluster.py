"""Replicated core against real replicas on loopback: forwarding, leader
crash, catch-up by log and by snapshot install, membership, readiness."""
import os
import threading
import time
import unittest

from harness import Cluster, wait_until


def user_names(replica, consistent=True):
    q = "" if consistent else "?consistent=false"
    return set(u["name"] for u in replica.get_json("/api/v1/user" + q)["users"])


class ClusterTest(unittest.TestCase):
    snapshot_threshold = 4096
    snapshot_trailing = 8192

    def setUp(self):
        self.cluster = Cluster(3, snapshot_threshold=self.snapshot_threshold,
                               snapshot_trailing=self.snapshot_trailing)
        self.addCleanup(self.cluster.close)
        self.cluster.start()

    def fail_with_logs(self, msg):
        self.fail("%s\n%s" % (msg, self.cluster.logs()))

    def create_user(self, replica, name):
        r = replica.request("POST", "/api/v1/user", {"name": name})
        return r


class FollowerWriteTest(ClusterTest):
    def test_write_through_follower_is_read_back_on_that_follower(self):
        follower = self.cluster.followers()[0]
        r = self.create_user(follower, "alice")
        self.assertEqual(r.status, 200, r)
        # read-your-writes on the replica we talked to, even without a barrier
        self.assertIn("alice", user_names(follower, consistent=False))
        for rep in self.cluster.running():
            self.assertIn("alice", user_names(rep))
        self.cluster.wait_converged()
        # Every change is audited with its actor and the proposer's time, the
        # replicas' own membership bookkeeping included.
        entries = follower.get_json("/api/v1/audit")["entries"]
        actions = [e["action"] for e in entries]
        self.assertIn("user.create", actions)
        self.assertIn("replica.upsert", actions)
        for e in entries:
            self.assertTrue(e["time"] and e["actor"], e)

    def test_cli_on_follower_creates_and_lists(self):
        follower = self.cluster.followers()[0]
        follower.cli("users", "create", "bob")
        out = follower.cli("users", "list", "-o", "json").stdout
        self.assertIn('"bob"', out)


class LeaderCrashTest(ClusterTest):
    snapshot_threshold = 64
    snapshot_trailing = 32

    def test_acknowledged_writes_survive_leader_sigkill_and_restart(self):
        cluster = self.cluster
        old_leader = cluster.leader()
        acked = []
        unknown = []
        stop = threading.Event()
        writers_on = [r for r in cluster.running() if r is not old_leader]

        def writer(wid):
            i = 0
            while not stop.is_set():
                name = "w%d-%d" % (wid, i)
                i += 1
                target = writers_on[i % len(writers_on)]
                try:
                    r = self.create_user(target, name)
                except OSError:
                    unknown.append(name)
                    continue
                if r.status == 200:
                    acked.append(name)
                elif r.status == 503:
                    unknown.append(name)
                    time.sleep(0.05)
                else:
                    unknown.append(name)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        old_leader.kill()
        killed_at = time.monotonic()
        survivors = [r for r in cluster.replicas.values() if r is not old_leader]
        new_leader = cluster.wait_leader(among=survivors, timeout=20)
        self.assertIsNot(new_leader, old_leader)
        print("\n  new leader %d after %.2fs" % (new_leader.id, time.monotonic() - killed_at))
        time.sleep(2.0)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        self.assertGreater(len(acked), 50, "too few writes acknowledged: vacuous test")

        for rep in survivors:
            names = user_names(rep)
            missing = [n for n in acked if n not in names]
            if missing:
                self.fail_with_logs("replica %d lost %d acknowledged writes, e.g. %s"
                                    % (rep.id, len(missing), missing[:5]))
        # More writes so the killed replica must catch up past a compacted log.
        for i in range(200):
            self.assertEqual(self.create_user(new_leader, "after-%d" % i).status, 200)
            acked.append("after-%d" % i)

        old_leader.start()
        cluster.wait_converged(timeout=60)
        names = user_names(old_leader, consistent=False)
        missing = [n for n in acked if n not in names]
        if missing:
            self.fail_with_logs("restarted replica misses %d writes" % len(missing))
        with open(old_leader.log_path) as f:
            restarted = f.read().split("replica started")[-1]
        self.assertIn("snapshot restored", restarted,
                      "catch-up did not go through a snapshot install")


class MembershipTest(ClusterTest):
    def test_join_fourth_replica_then_remove_it(self):
        cluster = self.cluster
        leader = cluster.leader()
        self.assertEqual(self.create_user(leader, "before-join").status, 200)
        fourth = cluster.add_replica(join_through=cluster[2])
        fourth.start()
        wait_until(lambda: fourth.socket and os.path.exists(fourth.socket), 10, "socket")
        members = wait_until(
            lambda: [m for m in leader.get_json("/api/v1/cluster/members")["members"]
                     if int(m["id"]) == fourth.id and m.get("voter")],
            30, "replica 4 to become a voter")
        self.assertTrue(members)
        cluster.wait_converged(timeout=30)
        self.assertIn("before-join", user_names(fourth))
        # A write after the join reaches the new replica too.
        self.assertEqual(self.create_user(fourth, "via-fourth").status, 200)
        for rep in cluster.running():
            self.assertIn("via-fourth", user_names(rep))

        leader.cli("cluster", "remove", str(fourth.id), "--force")
        wait_until(lambda: all(int(m["id"]) != fourth.id for m in
                               leader.get_json("/api/v1/cluster/members")["members"]),
                   30, "replica 4 to leave")
        fourth.stop()
        self.assertEqual(self.create_user(leader, "after-remove").status, 200)

    def test_cli_join_on_an_empty_replica(self):
        cluster = self.cluster
        fifth = cluster.add_replica(join_through=cluster[1])
        # No join list in its config: it waits until the operator runs `cluster join`.
        fifth.write_config()
        fifth.start()
        wait_until(lambda: fifth.ready().status in (200, 503), 10, "replica up")
        fifth.cli("cluster", "join", cluster[1].http_address)
        wait_until(lambda: any(int(m["id"]) == fifth.id for m in
                               cluster[1].get_json("/api/v1/cluster/members")["members"]),
                   30, "replica to be a member")
        cluster.wait_converged(timeout=30)


class ReadinessTest(ClusterTest):
    def test_minority_replica_turns_not_ready_and_back(self):
        cluster = self.cluster
        r1, r2, r3 = cluster[1], cluster[2], cluster[3]
        wait_until(lambda: r1.ready().status == 200, 10, "replica 1 ready")
        r2.stop()
        r3.stop()
        r = wait_until(lambda: (lambda x: x if x.status == 503 else None)(r1.ready()), 15,
                       "replica 1 to be not ready")
        self.assertIn(b"leader", r.body.lower())
        # /health never depends on quorum.
        self.assertEqual(r1.request("GET", "/health", tcp=True).status, 200)
        # Writes and consistent reads fail fast with a hint; stale reads still work.
        t0 = time.monotonic()
        w = self.create_user(r1, "no-quorum")
        self.assertEqual(w.status, 503, w)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertIn(b"consistent=false", w.body)
        self.assertEqual(r1.request("GET", "/api/v1/user?consistent=false").status, 200)
        r2.start()
        r3.start()
        wait_until(lambda: r1.ready().status == 200, 30, "replica 1 ready again")
        self.assertNotIn("no-quorum", user_names(r1))


if __name__ == "__main__":
    unittest.main()
