"""Bad input to the admin API gets a clear 4xx error and changes nothing: the
replicated state hash is the same before and after, on every replica."""
import json
import unittest

from harness import Cluster


class BadInputTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(3)
        cls.cluster.start()
        cls.leader = cls.cluster.leader()
        cls.follower = cls.cluster.followers()[0]
        r = cls.leader.request("POST", "/api/v1/user", {"name": "alice"})
        assert r.status == 200, r
        cls.user_id = r.json()["user"]["id"]
        r = cls.leader.request("POST", "/api/v1/apikey", {})
        assert r.status == 200, r
        cls.api_key = r.json()["apiKey"]
        r = cls.leader.request("POST", "/api/v1/apikey", {})
        expired = r.json()["apiKey"]
        prefix = expired[len("concord-api-"):len("concord-api-") + 12]
        r = cls.leader.request("POST", "/api/v1/apikey/expire", {"prefix": prefix})
        assert r.status == 200, r
        cls.expired_key = expired
        node = cls.leader.request("POST", "/api/v1/debug/node", {
            "user": str(cls.user_id), "name": "laptop",
            "key": "nodekey:" + "ab" * 32})
        assert node.status == 200, node
        cls.node_id = node.json()["node"]["id"]
        cls.cluster.wait_converged()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.close()

    def state_hashes(self):
        self.cluster.wait_converged()
        return [r.status(consistent=True)["stateHash"] for r in self.cluster.running()]

    def assert_rejected(self, status, method, path, body=None, headers=None, api_key=None,
                        replica=None, message=None):
        before = self.state_hashes()
        rep = replica or self.follower
        key = api_key if api_key is not None else self.api_key
        r = rep.request(method, path, body=body, headers=headers, api_key=key)
        self.assertEqual(r.status, status, r)
        err = r.json()
        self.assertIn("message", err, r)
        self.assertTrue(err["message"], r)
        if message:
            self.assertIn(message.lower(), err["message"].lower(), r)
        self.assertEqual(self.state_hashes(), before, "state changed after a rejected request")
        return err

    def test_malformed_json(self):
        self.assert_rejected(400, "POST", "/api/v1/user", body=b'{"name": "bob",')

    def test_body_not_an_object(self):
        self.assert_rejected(400, "POST", "/api/v1/user", body=b'["bob"]')

    def test_unknown_field(self):
        self.assert_rejected(400, "POST", "/api/v1/user", body={"name": "bob", "colour": "red"},
                             message="colour")

    def test_wrong_type(self):
        self.assert_rejected(400, "POST", "/api/v1/user", body={"name": 42})

    def test_oversized_body(self):
        big = json.dumps({"name": "x" * (2 * 1024 * 1024)}).encode()
        before = self.state_hashes()
        r = self.follower.request("POST", "/api/v1/user", body=big, api_key=self.api_key)
        self.assertEqual(r.status, 413, r)
        self.assertEqual(self.state_hashes(), before)

    def test_missing_api_key(self):
        before = self.state_hashes()
        r = self.follower.request("POST", "/api/v1/user", body={"name": "bob"}, tcp=True)
        self.assertEqual(r.status, 401, r)
        self.assertEqual(self.state_hashes(), before)

    def test_garbage_api_key(self):
        self.assert_rejected(401, "POST", "/api/v1/user", body={"name": "bob"},
                             api_key="not-a-key")

    def test_wrong_secret_with_a_real_prefix(self):
        key = self.api_key
        forged = key[:-1] + ("A" if key[-1] != "A" else "B")
        self.assert_rejected(401, "POST", "/api/v1/user", body={"name": "bob"}, api_key=forged)

    def test_expired_api_key(self):
        self.assert_rejected(401, "POST", "/api/v1/user", body={"name": "bob"},
                             api_key=self.expired_key, message="expired")

    def test_duplicate_user_name(self):
        self.assert_rejected(409, "POST", "/api/v1/user", body={"name": "alice"},
                             message="alice")

    def test_invalid_user_name(self):
        self.assert_rejected(400, "POST", "/api/v1/user", body={"name": "Bad Name!"})

    def test_invalid_tag_name(self):
        for tags in (["nottag"], ["tag:"], ["tag:Upper"], ["tag:sp ace"]):
            with self.subTest(tags=tags):
                self.assert_rejected(400, "POST", "/api/v1/node/%s/tags" % self.node_id,
                                     body={"tags": tags})

    def test_invalid_tag_on_preauthkey(self):
        self.assert_rejected(400, "POST", "/api/v1/preauthkey",
                             body={"user": str(self.user_id), "aclTags": ["bad"]})

    def test_unknown_node_id(self):
        self.assert_rejected(404, "POST", "/api/v1/node/999999/rename/ghost")
        self.assert_rejected(404, "DELETE", "/api/v1/node/999999")
        self.assert_rejected(404, "GET", "/api/v1/node/999999")

    def test_non_numeric_node_id(self):
        self.assert_rejected(400, "DELETE", "/api/v1/node/abc")

    def test_unknown_user_for_preauthkey(self):
        self.assert_rejected(404, "POST", "/api/v1/preauthkey", body={"user": "424242"})

    def test_policy_if_match_mismatch(self):
        r = self.leader.request("PUT", "/api/v1/policy", {"policy": "{}"})
        self.assertEqual(r.status, 200, r)
        etag = self.leader.request("GET", "/api/v1/policy").headers["etag"]
        stale = '"%d"' % (int(etag.strip('"')) + 7)
        self.assert_rejected(412, "PUT", "/api/v1/policy", body={"policy": "{}"},
                             headers={"If-Match": stale})

    def test_policy_not_hujson(self):
        self.assert_rejected(400, "PUT", "/api/v1/policy", body={"policy": "{ acls: [ }"})

    def test_unknown_route(self):
        before = self.state_hashes()
        r = self.follower.request("POST", "/api/v1/nonsense", body={}, api_key=self.api_key)
        self.assertEqual(r.status, 404, r)
        self.assertEqual(self.state_hashes(), before)


if __name__ == "__main__":
    unittest.main()
