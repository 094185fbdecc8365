"""The control protocol with input no real Tailscale client produces, sent by
tests/integration/protoprobe (a Go program built once here): another
machine's requests for a registered node key, a replayed registration,
unknown and expired auth keys, forged, oversized and truncated Noise
records, broken handshakes, map requests for unknown nodes, lite updates
reaching a peer's map stream, and the first map message and keepalives.

Every refusal is checked three ways: the exact answer (or the closed
connection), the replicated state hash (unchanged), and the line the
replica logs about it, where it logs one. Under CI=true a missing `go`
fails the tests instead of skipping them."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

from harness import Cluster, wait_until

PROBE_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "protoprobe")
BASE_DOMAIN = "proto.test"
ALLOW_ALL = [{"SrcIPs": ["*"], "DstPorts": [{"IP": "*", "Ports": {"First": 0, "Last": 65535}}]}]
ANOTHER_MACHINE = "this node key belongs to another machine\n"
HANDSHAKE_FAILED = "Noise handshake failed\n"
TOO_OLD = "client too old: Tailscale v1.80 or newer is required\n"
CLOSE_WITHIN_MS = 3000
# Keepalive interval (1 s here) plus up to 9 s of jitter, plus slack.
KEEPALIVE_MAX_MS = 11000

_build_dir = None
PROBE = None


def setUpModule():
    global _build_dir, PROBE
    if shutil.which("go") is None:
        if os.environ.get("CI") == "true":
            raise AssertionError("go is not installed; it builds tests/integration/protoprobe")
        raise unittest.SkipTest("go is not installed (needed to build protoprobe)")
    _build_dir = tempfile.mkdtemp(prefix="concord-protoprobe-")
    PROBE = os.path.join(_build_dir, "protoprobe")
    p = subprocess.run(["go", "build", "-o", PROBE, "."], cwd=PROBE_SRC, capture_output=True,
                       text=True, timeout=900)
    if p.returncode != 0:
        raise AssertionError("building protoprobe failed:\n%s%s" % (p.stdout, p.stderr))


def tearDownModule():
    if _build_dir is not None:
        shutil.rmtree(_build_dir, ignore_errors=True)


class ProbeCase(unittest.TestCase):
    """A cluster per class with user alice; helpers to run the probe and to
    compare the cluster's state before and after."""
    replicas = 3

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(cls.replicas, extra_config=cls.cluster_config())
        try:
            cls.cluster.start()
            leader = cls.cluster.leader()
            out = leader.cli("users", "create", "alice", "-o", "json").stdout
            cls.user_id = int(json.loads(out)["id"])
            cls.cluster.wait_converged()
        except BaseException:
            cls.cluster.close()
            raise

    @classmethod
    def cluster_config(cls):
        """YAML lines for the replicas' configuration (harness extra_config)."""
        return []

    @classmethod
    def tearDownClass(cls):
        cls.cluster.close()

    def setUp(self):
        self.keydir = tempfile.mkdtemp(prefix="keys-", dir=self.cluster.dir)
        # The replica every probe of this class talks to: a follower where
        # there is one, so registrations go through the leader.
        self.replica = (self.cluster.followers() or [self.cluster.leader()])[0]

    def run(self, result=None):
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        try:
            return super().run(result)
        finally:
            if len(result.failures) + len(result.errors) > before:
                print("\n" + self.cluster.logs())

    # -- probe --

    def keys(self, name):
        """Arguments for the machine and node called name: its key files and
        its host name (a node's requests keep reporting the same Hostinfo)."""
        return ["-machinekey-file", os.path.join(self.keydir, name + ".machine"),
                "-nodekey-file", os.path.join(self.keydir, name + ".node"), "-hostname", name]

    def probe(self, scenario, *args, replica=None, timeout=60):
        rep = replica or self.replica
        p = subprocess.run([PROBE, "-server", "http://" + rep.http_address, "-scenario", scenario]
                           + list(args), capture_output=True, text=True, timeout=timeout)
        self.assertEqual(p.returncode, 0, "protoprobe %s failed: %s%s" % (scenario, p.stdout,
                                                                          p.stderr))
        lines = p.stdout.splitlines()
        self.assertEqual(len(lines), 1, p.stdout)
        return json.loads(lines[0])

    def new_key(self, *flags, expiration="1h"):
        out = self.cluster.leader().cli("preauthkeys", "create", "-u", "alice", "-e", expiration,
                                        "-o", "json", *flags).stdout
        return json.loads(out)["key"]

    def register(self, name, auth_key, **kw):
        """Registers name; the probe's output for a 200 MachineAuthorized."""
        out = self.probe("register", "-authkey", auth_key, *self.keys(name), **kw)
        self.assertEqual(out["status"], 200, out)
        self.assert_logged_in(out["response"])
        return out

    def assert_logged_in(self, resp):
        self.assertEqual(resp.get("Error", ""), "", resp)
        self.assertIs(resp["MachineAuthorized"], True, resp)
        self.assertIs(resp["NodeKeyExpired"], False, resp)
        self.assertEqual(resp["AuthURL"], "", resp)
        self.assertEqual(resp["User"]["ID"], self.user_id, resp)
        self.assertEqual(resp["Login"]["ID"], self.user_id, resp)
        self.assertEqual(resp["Login"]["LoginName"], "alice", resp)

    # -- cluster state --

    def nodes(self):
        out = self.cluster.leader().cli("nodes", "list", "-o", "json").stdout
        return json.loads(out)

    def node_by_key(self, node_key):
        found = [n for n in self.nodes() if n["nodeKey"] == node_key]
        self.assertEqual(len(found), 1, "node %s: %r" % (node_key, found))
        return found[0]

    def settled_state(self):
        """The state hash every running replica agrees on, once it has stood
        still for half a second (a map session's close may still be on its
        way through Raft)."""
        def settled():
            h1 = self.cluster.wait_converged()
            time.sleep(0.5)
            h2 = self.cluster.wait_converged()
            return h1 if h1 == h2 else None
        wait_until(settled, 30, "a settled state hash")
        hashes = set(r.status(consistent=True)["stateHash"] for r in self.cluster.running())
        self.assertEqual(len(hashes), 1, hashes)
        return hashes.pop()

    def assert_logged(self, level, message, replica=None):
        """The replica's log has a line `<time> LEVEL message`."""
        rep = replica or self.replica
        pattern = re.compile(r"^\S+ %s %s$" % (level, re.escape(message)), re.M)

        def found():
            with open(rep.log_path, errors="replace") as f:
                return pattern.search(f.read())
        wait_until(found, 5, "log line %r on replica %d" % (message, rep.id))

    def assert_healthy(self, replica=None):
        rep = replica or self.replica
        self.assertTrue(rep.is_running(), "replica %d is gone" % rep.id)
        r = rep.request("GET", "/health", tcp=True)
        self.assertEqual(r.status, 200, r)


class RegistrationTest(ProbeCase):
    """Scenarios 1-3 and 8: requests inside a valid Noise session that no
    client of that machine would send."""

    def test_wrong_machine_key(self):
        auth_key = self.new_key("--reusable")
        a = self.register("wrongmk-a", auth_key)
        node = self.node_by_key(a["request"]["NodeKey"])
        self.assertEqual(node["machineKey"], a["machine_key"])
        before = self.settled_state()
        # Machine M2 names A's node key, on connections of its own.
        intruder = ["-machinekey-file", os.path.join(self.keydir, "intruder.machine"),
                    "-nodekey-file", os.path.join(self.keydir, "wrongmk-a.node"),
                    "-hostname", "wrongmk-a"]
        out = self.probe("map-stream", *intruder)
        self.assertEqual((out["status"], out["body"]), (403, ANOTHER_MACHINE), out)
        self.assert_logged("WARN", "control: %s: refused map request: node %s belongs to "
                           "another machine" % (out["local"], node["id"]))
        out = self.probe("map-lite", "-endpoints", "192.0.2.1:41641", *intruder)
        self.assertEqual((out["status"], out["body"]), (403, ANOTHER_MACHINE), out)
        self.assert_logged("WARN", "control: %s: refused map request: node %s belongs to "
                           "another machine" % (out["local"], node["id"]))
        out = self.probe("register", "-authkey", auth_key, *intruder)
        self.assertEqual((out["status"], out["body"]), (403, ANOTHER_MACHINE), out)
        self.assertEqual(out["request"]["NodeKey"], a["request"]["NodeKey"])
        self.assertNotEqual(out["machine_key"], a["machine_key"])
        self.assert_logged("WARN", "control: %s: refused: the node key of node %s belongs to another machine"
                           % (out["local"], node["id"]))
        self.assertEqual(self.settled_state(), before, "a refused request changed the state")
        self.assertEqual(self.node_by_key(a["request"]["NodeKey"]), node)

    def test_replayed_registration(self):
        # Single-use: the replay must not need the (now used) key again.
        auth_key = self.new_key()
        first = self.register("replay", auth_key)
        nodes = self.nodes()
        before = self.settled_state()
        again = self.register("replay", auth_key)
        self.assertEqual(again["request"], first["request"], "the probe did not replay")
        self.assertEqual(again["machine_key"], first["machine_key"])
        self.assertEqual(again["response"], first["response"])
        self.assertEqual(self.settled_state(), before, "the replay changed the state")
        after = self.nodes()
        self.assertEqual([n["id"] for n in after], [n["id"] for n in nodes])
        self.assertEqual(after, nodes)

    def assert_key_refused(self, name, auth_key, error, log_message):
        nodes = self.nodes()
        before = self.settled_state()
        out = self.probe("register", "-authkey", auth_key, *self.keys(name))
        self.assertEqual(out["status"], 200, out)
        resp = out["response"]
        self.assertEqual(resp["Error"], error, resp)
        self.assertIs(resp["MachineAuthorized"], False, resp)
        self.assertEqual(resp["AuthURL"], "", resp)
        self.assertIs(resp["NodeKeyExpired"], False, resp)
        self.assert_logged("INFO", "control: %s: %s" % (out["local"], log_message))
        self.assertEqual(self.settled_state(), before, "a refused auth key changed the state")
        self.assertEqual(self.nodes(), nodes)

    def test_unknown_auth_key(self):
        real = self.new_key("--reusable")
        wrong_secret = real[:-1] + ("A" if real[-1] != "A" else "B")
        self.assert_key_refused("badkey-1", wrong_secret, "invalid auth key", "unknown auth key")
        unknown = "concord-auth-ZZZZZZZZZZZZ-" + "x" * 43
        self.assert_key_refused("badkey-2", unknown, "invalid auth key", "unknown auth key")

    def test_expired_auth_key(self):
        auth_key = self.new_key(expiration="1s")
        time.sleep(2)
        self.assert_key_refused("expired", auth_key, "auth key has expired", "expired auth key")

    def test_map_for_unknown_node_key(self):
        before = self.settled_state()
        out = self.probe("map-stream", *self.keys("stranger"))
        self.assertEqual((out["status"], out["body"]), (401, "unknown node key: register first\n"),
                         out)
        out = self.probe("map-lite", "-endpoints", "192.0.2.1:41641", *self.keys("stranger"))
        self.assertEqual((out["status"], out["body"]), (401, "unknown node key: register first\n"),
                         out)
        self.assertEqual(self.settled_state(), before)

    def test_lite_update_reaches_peer_stream(self):
        auth_key = self.new_key("--reusable")
        a = self.register("lite-a", auth_key)
        self.register("lite-b", auth_key)
        a_key = a["request"]["NodeKey"]
        a_id = int(self.node_by_key(a_key)["id"])
        first_eps = ["192.0.2.10:41641", "[2001:db8::10]:41641"]
        before = self.settled_state()
        out = self.probe("map-lite", "-endpoints", ",".join(first_eps), *self.keys("lite-a"))
        self.assertEqual((out["status"], out["body"]), (200, ""), out)
        stored = self.settled_state()
        self.assertNotEqual(stored, before, "the lite update was not recorded")
        # The same report again changes nothing.
        out = self.probe("map-lite", "-endpoints", ",".join(first_eps), *self.keys("lite-a"))
        self.assertEqual((out["status"], out["body"]), (200, ""), out)
        self.assertEqual(self.settled_state(), stored)

        new_eps = ["198.51.100.7:41641"]
        out = self.probe("lite-watch", "-endpoints", ",".join(new_eps), *self.keys("lite-a"),
                         *self.keys("lite-b"))
        self.assertEqual(out["status"], 200, out)
        self.assertEqual(out["peer_id"], a_id)
        peers = {p["ID"]: p for p in out["first"]["msg"]["Peers"]}
        self.assertEqual(peers[a_id]["Key"], a_key)
        self.assertEqual(peers[a_id]["Endpoints"], first_eps)
        self.assertEqual((out["lite"]["status"], out["lite"]["body"]), (200, ""), out["lite"])
        self.assertEqual(out["stopped"], "done", out)
        last = out["messages"][-1]["msg"]
        patches = [p for p in last.get("PeersChangedPatch") or [] if p["NodeID"] == a_id]
        changed = [n for n in last.get("PeersChanged") or [] if n["ID"] == a_id]
        self.assertEqual(len(patches) + len(changed), 1, last)
        change = patches[0] if patches else changed[0]
        self.assertEqual(change["Endpoints"], new_eps, last)
        self.assertEqual(change["DiscoKey"], out["disco_key"], last)
        self.assertEqual(change["Key"], a_key, last)

    def test_first_map_without_derp_map(self):
        a = self.register("noderp", self.new_key())
        out = self.probe("map-stream", "-messages", "1", *self.keys("noderp"))
        self.assertEqual(out["status"], 200, out)
        first = out["messages"][0]["msg"]
        self.assertEqual(first["Node"]["Key"], a["request"]["NodeKey"])
        self.assertNotIn("DERPMap", first)


class NoiseLayerTest(ProbeCase):
    """Scenarios 4-7: broken Noise records and handshakes. Each must cost the
    sender its connection and nothing else."""

    def assert_closed(self, scenario, log_message=None):
        before = self.settled_state()
        out = self.probe(scenario, "-timeout", "10s")
        self.assertIs(out["closed"], True, out)
        self.assertLess(out["after_ms"], CLOSE_WITHIN_MS, out)
        if log_message is not None:
            self.assert_logged("INFO", "control: %s: dropping the connection: %s"
                               % (out["local"], log_message))
        self.assert_healthy()
        self.assertEqual(self.settled_state(), before)
        return out

    def test_garbage_after_handshake(self):
        self.assert_closed("garbage-record", "Noise authentication failed")
        # A normal registration on the same replica still works.
        self.register("after-garbage", self.new_key())

    def test_oversized_record(self):
        self.assert_closed("oversized-record", "Noise record too large")
        self.register("after-oversized", self.new_key())

    def test_truncated_record(self):
        # An end of stream inside a record is logged only at debug level.
        self.assert_closed("truncated-record")
        self.register("after-truncated", self.new_key())

    def assert_upgrade_refused(self, scenario, status, body, log_message):
        before = self.settled_state()
        out = self.probe(scenario)
        self.assertEqual((out.get("status"), out.get("body")), (status, body), out)
        self.assert_logged("INFO", "control: %s: %s" % (out["local"], log_message))
        self.assert_healthy()
        self.assertEqual(self.settled_state(), before)

    def test_garbage_handshake(self):
        self.assert_upgrade_refused("garbage-handshake", 400, HANDSHAKE_FAILED,
                                    "Noise handshake failed: malformed Noise message")

    def test_garbage_handshake_payload(self):
        self.assert_upgrade_refused("garbage-payload", 400, HANDSHAKE_FAILED,
                                    "Noise handshake failed: Noise authentication failed")

    def test_short_handshake(self):
        self.assert_upgrade_refused("short-handshake", 400,
                                    "missing or malformed X-Tailscale-Handshake header\n",
                                    "refused upgrade: bad X-Tailscale-Handshake header")

    def test_old_capability_version(self):
        self.assert_upgrade_refused("old-version", 400, TOO_OLD,
                                    "refused client capability version 100 (< 113)")


class StreamReportTest(ProbeCase):
    """A long poll reporting a new Hostinfo (the real client's carries one) is
    recorded with no lite update waiting on it; lite updates to that replica
    must still be answered afterwards."""
    replicas = 1

    def test_lite_update_after_stream_report(self):
        self.register("reporter", self.new_key())
        key_files = self.keys("reporter")[:4]
        out = self.probe("map-stream", "-messages", "1", *key_files, "-hostname", "renamed")
        self.assertEqual(out["status"], 200, out)
        wait_until(lambda: [n["name"] for n in self.nodes()] == ["renamed"], 10,
                   "the stream's Hostinfo to be recorded")
        out = self.probe("map-lite", "-endpoints", "192.0.2.20:41641", "-timeout", "10s",
                         *key_files, "-hostname", "renamed")
        self.assertEqual((out["status"], out["body"]), (200, ""), out)


class StreamingMapTest(ProbeCase):
    """Scenario 9: the first map message and keepalives, on one replica with
    a DERP map and a 1 s keepalive interval."""
    replicas = 1
    derp_map = {"Regions": {"900": {
        "RegionID": 900, "RegionCode": "test", "RegionName": "Test",
        "Nodes": [{"Name": "900a", "RegionID": 900, "HostName": "127.0.0.1",
                   "IPv4": "127.0.0.1", "DERPPort": 3340, "STUNPort": -1,
                   "InsecureForTests": True}]}}}

    @classmethod
    def cluster_config(cls):
        cls.derp_dir = tempfile.mkdtemp(prefix="concord-derp-")
        path = os.path.join(cls.derp_dir, "derp.json")
        with open(path, "w") as f:
            json.dump(cls.derp_map, f)
        return ["derp:", "  map_path: " + path, "dns:", "  base_domain: " + BASE_DOMAIN,
                "control:", "  keepalive_interval: 1s"]

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.derp_dir, ignore_errors=True)

    def test_first_message_and_keepalive(self):
        auth_key = self.new_key("--reusable")
        self_reg = self.register("streamer", auth_key)
        peer_reg = self.register("bystander", auth_key)
        me = self.node_by_key(self_reg["request"]["NodeKey"])
        peer = self.node_by_key(peer_reg["request"]["NodeKey"])
        out = self.probe("map-stream", "-until-keepalive", "-timeout", "20s",
                         *self.keys("streamer"))
        self.assertEqual(out["status"], 200, out)
        self.assertEqual(out["stopped"], "done", out)
        msgs = out["messages"]
        first = msgs[0]["msg"]

        node = first["Node"]
        self.assertEqual(node["ID"], int(me["id"]))
        self.assertEqual(node["Key"], me["nodeKey"])
        self.assertEqual(node["Machine"], me["machineKey"])
        self.assertEqual(node["Machine"], self_reg["machine_key"])
        self.assertIs(node["MachineAuthorized"], True)
        self.assertEqual(node["Name"], "%s.%s." % (me["givenName"], BASE_DOMAIN))
        self.assertEqual(node["Addresses"], [me["ipAddresses"][0] + "/32",
                                             me["ipAddresses"][1] + "/128"])
        self.assertTrue(node["StableID"])
        self.assertEqual(node["User"], self.user_id)

        self.assertEqual([p["ID"] for p in first["Peers"]], [int(peer["id"])])
        self.assertEqual(first["Peers"][0]["Key"], peer["nodeKey"])
        # The configured regions, and no default ones (protocol section 10).
        self.assertEqual(first["DERPMap"], dict(self.derp_map, omitDefaultRegions=True))
        dns = first["DNSConfig"]
        self.assertEqual(dns["Domains"][0], BASE_DOMAIN)
        self.assertIs(dns["Proxied"], True)
        self.assertEqual(first["PacketFilter"], ALLOW_ALL)
        self.assertIn(self.user_id, [p["ID"] for p in first["UserProfiles"]])
        self.assertNotIn("KeepAlive", first)

        # Exactly one keepalive, the last message, after the interval and
        # at most its jitter since the message before it.
        self.assertEqual(msgs[-1]["msg"], {"KeepAlive": True}, msgs)
        self.assertTrue(all("KeepAlive" not in m["msg"] for m in msgs[:-1]), msgs)
        gap = msgs[-1]["at_ms"] - msgs[-2]["at_ms"]
        self.assertGreaterEqual(gap, 950, msgs)
        self.assertLessEqual(msgs[-1]["at_ms"], KEEPALIVE_MAX_MS, msgs)


if __name__ == "__main__":
    unittest.main()
