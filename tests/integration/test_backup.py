"""Backup and restore at a realistic size, against real replicas and the real
CLI: a logical snapshot of more than 1.5 MiB saved through one follower and
restored through another converges every replica to exactly the saved state;
a corrupted snapshot is refused and changes nothing; `cluster backup` writes an
LMDB copy that the LMDB tools read, only over the Unix socket, and that can
put its replica back."""
import json
import os
import random
import shutil
import string
import subprocess
import threading
import unittest

from harness import BIN, Cluster

ALPHABET = string.ascii_letters + string.digits


def random_text(rng, n):
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def user_names(replica):
    return set(u["name"] for u in replica.get_json("/api/v1/user", timeout=60)["users"])


def user_ids(replica):
    return dict((u["name"], u["id"])
                for u in replica.get_json("/api/v1/user", timeout=60)["users"])


class BackupTest(unittest.TestCase):
    def setUp(self):
        self.cluster = Cluster(3)
        self.addCleanup(self.cluster.close)
        self.cluster.start()
        self.rng = random.Random(20260101)

    def fail_with_logs(self, msg):
        self.fail("%s\n%s" % (msg, self.cluster.logs()))

    def create_users(self, names, threads=8):
        """Creates the users through every replica at once; long random
        display names and emails make the state large and poorly compressible."""
        replicas = self.cluster.running()
        work = [(name, random_text(self.rng, 250), "%s@%s.example" % (
            random_text(self.rng, 120), random_text(self.rng, 100))) for name in names]
        errors = []

        def worker(k):
            for i in range(k, len(work), threads):
                name, display, email = work[i]
                r = replicas[i % len(replicas)].request(
                    "POST", "/api/v1/user", {"name": name, "displayName": display, "email": email})
                if r.status != 200:
                    errors.append((name, r))

        ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errors:
            self.fail_with_logs("creating users failed: %r" % errors[:3])

    def state_hashes(self):
        return dict((r.id, r.status()["stateHash"]) for r in self.cluster.running())

    def test_large_snapshot_restored_through_another_follower_converges_everywhere(self):
        cluster = self.cluster
        self.create_users(["user-%05d" % i for i in range(4000)])
        follower_a, follower_b = cluster.followers()
        path = os.path.join(cluster.dir, "big.zst")

        follower_a.cli("cluster", "snapshot", "save", path, timeout=120)
        size = os.path.getsize(path)
        self.assertGreater(size, 1536 * 1024, "snapshot too small to test the body limits")
        self.assertGreater(size, 1024 * 1024)  # above http.max_body_bytes' default
        saved = user_names(follower_a)
        self.assertEqual(len(saved), 4000)

        # Diverge: more users, and some of the saved ones deleted.
        self.create_users(["later-%03d" % i for i in range(100)])
        ids = user_ids(cluster.leader())
        for name in sorted(saved)[:100]:
            r = follower_b.request("DELETE", "/api/v1/user/%s" % ids[name])
            self.assertEqual(r.status, 200, r)
        self.assertNotEqual(user_names(follower_b), saved)

        out = follower_b.cli("cluster", "snapshot", "restore", path, "--force", timeout=120).stdout
        self.assertIn("State restored at index", out)
        cluster.wait_converged(timeout=60)
        for rep in cluster.running():
            names = user_names(rep)
            if names != saved:
                self.fail_with_logs("replica %d: %d users missing, %d extra after the restore"
                                    % (rep.id, len(saved - names), len(names - saved)))

        # Writes keep working through every replica afterwards.
        for rep in cluster.running():
            rep.cli("users", "create", "after-restore-%d" % rep.id)
        cluster.wait_converged(timeout=30)
        want = saved | set("after-restore-%d" % r.id for r in cluster.running())
        for rep in cluster.running():
            self.assertEqual(user_names(rep), want)

    def test_corrupted_snapshot_is_refused_and_changes_nothing(self):
        cluster = self.cluster
        self.create_users(["user-%04d" % i for i in range(300)])
        follower = cluster.followers()[0]
        path = os.path.join(cluster.dir, "good.zst")
        follower.cli("cluster", "snapshot", "save", path)
        with open(path, "rb") as f:
            data = bytearray(f.read())
        middle = len(data) // 2
        for i in range(middle, middle + 16):
            data[i] ^= 0xFF
        bad = os.path.join(cluster.dir, "corrupted.zst")
        with open(bad, "wb") as f:
            f.write(data)
        self.create_users(["after-save"])
        cluster.wait_converged()
        before = self.state_hashes()

        p = follower.cli("cluster", "snapshot", "restore", bad, "--force", check=False)
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("Error:", p.stderr)
        self.assertRegex(p.stderr, "snapshot|dump|checksum|corrupt")
        for rep in cluster.running():
            r = rep.request("POST", "/api/v1/cluster/snapshot/restore", bytes(data),
                            headers={"Content-Type": "application/octet-stream"}, timeout=60)
            self.assertTrue(400 <= r.status < 500, r)
            self.assertTrue(r.json()["message"], r)
        cluster.wait_converged()
        self.assertEqual(self.state_hashes(), before)
        for rep in cluster.running():
            self.assertIn("after-save", user_names(rep))

    def test_backup_writes_an_lmdb_copy_only_over_the_unix_socket_that_seeds_its_replica(self):
        cluster = self.cluster
        self.create_users(["user-%03d" % i for i in range(200)])
        follower = cluster.followers()[0]
        leader_applied = int(cluster.leader().status()["appliedIndex"])
        target = os.path.join(cluster.dir, "lmdb-backup")

        out = follower.cli("cluster", "backup", target, "-o", "json").stdout
        answer = json.loads(out)
        self.assertEqual(answer["path"], target)
        # The barrier first: the copy holds at least what the leader had applied.
        self.assertGreaterEqual(int(answer["appliedIndex"]), leader_applied)
        data = os.path.join(target, "data.mdb")
        self.assertEqual(os.path.getsize(data), answer["bytes"])
        self.assertEqual(os.listdir(target), ["data.mdb"])
        stat = subprocess.run(["mdb_stat", "-s", "users", target], capture_output=True,
                              text=True, timeout=30)
        self.assertEqual(stat.returncode, 0, stat)
        self.assertIn("Entries: 200", stat.stdout)
        # A second backup into the same, now non-empty, directory is refused.
        p = follower.cli("cluster", "backup", target, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("not empty", p.stderr)

        # Over TCP an API key is not enough: the backup would write on the server.
        token = follower.cli("apikeys", "create", "-e", "1d").stdout.splitlines()[0].strip()
        remote = os.path.join(cluster.dir, "tcp-backup")
        p = subprocess.run([BIN, "--address", "http://%s" % follower.http_address, "--api-key",
                            token, "cluster", "backup", remote], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("Unix socket", p.stderr)
        r = follower.request("POST", "/api/v1/cluster/backup", {"path": remote}, api_key=token)
        self.assertEqual(r.status, 403, r)
        self.assertFalse(os.path.exists(remote))

        # The copy seeds its replica back: stopped, its state replaced by the
        # older copy, it catches up from the copy's applied index.
        self.create_users(["later-%03d" % i for i in range(100)])
        follower.stop()
        state = os.path.join(follower.dir, "data", "state")
        shutil.copyfile(data, os.path.join(state, "data.mdb"))
        os.unlink(os.path.join(state, "lock.mdb"))
        follower.start()
        cluster.wait_converged(timeout=60)
        self.assertEqual(len(user_names(follower)), 300)


if __name__ == "__main__":
    unittest.main()
