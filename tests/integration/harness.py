"""tests/integration/harness.py: real concord replicas on loopback for tests.

A Cluster writes one config per replica into a temporary directory, starts
`concord serve` processes, and talks to them over their Unix sockets (trusted,
no API key) or over TCP with an API key. Every wait is bounded; a test that
times out fails with the replica logs attached.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

BIN = os.environ.get("CONCORD_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "build", "concord"))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "Response(%d, %r)" % (self.status, self.body[:300])


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except (OSError, http.client.HTTPException, ValueError) as e:
            last = e
        time.sleep(0.05)
    raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))


class Replica:
    def __init__(self, cluster, rid):
        self.cluster = cluster
        self.id = rid
        self.dir = os.path.join(cluster.dir, "replica%d" % rid)
        self.http_port = free_port()
        self.raft_port = free_port()
        self.proc = None
        os.makedirs(self.dir, exist_ok=True)

    @property
    def socket(self):
        return os.path.join(self.dir, "concord.sock")

    @property
    def http_address(self):
        return "127.0.0.1:%d" % self.http_port

    @property
    def raft_address(self):
        return "127.0.0.1:%d" % self.raft_port

    @property
    def config_path(self):
        return os.path.join(self.dir, "config.yaml")

    @property
    def log_path(self):
        return os.path.join(self.dir, "concord.log")

    def write_config(self, initial_members=None, join=None):
        lines = [
            "listen_addr: %s" % self.http_address,
            "server_url: http://%s" % self.http_address,
            "unix_socket: %s" % self.socket,
            'unix_socket_permission: "0700"',
            "data_dir: %s" % os.path.join(self.dir, "data"),
            "log:",
            "  level: %s" % os.environ.get("CONCORD_TEST_LOG_LEVEL", "info"),
            "noise:",
            "  private_key_path: %s" % self.cluster.noise_key_path,
        ] + self.cluster.extra_config + [
            "cluster:",
            "  id: %d" % self.id,
            "  raft_listen_addr: %s" % self.raft_address,
            "  secret_path: %s" % self.cluster.secret_path,
            "  election_timeout_ms: %d" % self.cluster.election_timeout_ms,
            "  heartbeat_timeout_ms: %d" % self.cluster.heartbeat_timeout_ms,
            "  snapshot_threshold: %d" % self.cluster.snapshot_threshold,
            "  snapshot_trailing: %d" % self.cluster.snapshot_trailing,
        ]
        if initial_members:
            lines.append("  initial_members: [%s]" % ", ".join('"%s"' % m for m in initial_members))
        if join:
            lines.append("  join: [%s]" % ", ".join('"%s"' % j for j in join))
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self):
        assert self.proc is None or self.proc.poll() is not None
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BIN, "serve", "-c", self.config_path], stdout=log, stderr=log)
        log.close()

    def is_running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.is_running():
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self):
        if self.is_running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("replica %d did not stop on SIGTERM" % self.id)
            return rc
        return None

    # -- HTTP --
    def request(self, method, path, body=None, headers=None, api_key=None, tcp=False, timeout=15):
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            if isinstance(data, str):
                data = data.encode()
            hdrs.setdefault("Content-Type", "application/json")
        if api_key is not None:
            hdrs["Authorization"] = "Bearer " + api_key
        if tcp or api_key is not None:
            conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        else:
            conn = UnixHTTPConnection(self.socket, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            return Response(r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read())
        finally:
            conn.close()

    def get_json(self, path, **kw):
        r = self.request("GET", path, **kw)
        if r.status != 200:
            raise AssertionError("GET %s on replica %d: %r" % (path, self.id, r))
        return r.json()

    def status(self, consistent=False):
        q = "" if consistent else "?consistent=false"
        return self.get_json("/api/v1/cluster/status" + q)

    def ready(self):
        return self.request("GET", "/ready", tcp=True, timeout=5)

    def cli(self, *args, check=True, timeout=30):
        p = subprocess.run([BIN, "--socket", self.socket] + list(args), capture_output=True,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError("concord %s failed (%d): %s%s" % (" ".join(args), p.returncode,
                                                                   p.stdout, p.stderr))
        return p


class Cluster:
    def __init__(self, n=3, snapshot_threshold=4096, snapshot_trailing=8192,
                 election_timeout_ms=1000, heartbeat_timeout_ms=100, extra_config=None):
        """extra_config: YAML lines for top-level sections other than
        log, noise and cluster (e.g. derp:, dns:)."""
        self.dir = tempfile.mkdtemp(prefix="concord-it-")
        self.extra_config = list(extra_config or [])
        self.snapshot_threshold = snapshot_threshold
        self.snapshot_trailing = snapshot_trailing
        self.election_timeout_ms = election_timeout_ms
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.secret_path = os.path.join(self.dir, "cluster.secret")
        subprocess.run([BIN, "generate", "cluster-secret", "-o", self.secret_path], check=True,
                       capture_output=True)
        self.noise_key_path = os.path.join(self.dir, "noise_private.key")
        subprocess.run([BIN, "generate", "private-key", "-o", self.noise_key_path], check=True,
                       capture_output=True)
        self.replicas = {}
        for rid in range(1, n + 1):
            self.replicas[rid] = Replica(self, rid)
        members = ["%d@%s" % (r.id, r.raft_address) for r in self.replicas.values()]
        for r in self.replicas.values():
            r.write_config(initial_members=members)

    def __getitem__(self, rid):
        return self.replicas[rid]

    def running(self):
        return [r for r in self.replicas.values() if r.is_running()]

    def start(self):
        for r in self.replicas.values():
            r.start()
        self.wait_leader()

    def add_replica(self, join_through):
        rid = max(self.replicas) + 1
        r = Replica(self, rid)
        r.write_config(join=[join_through.http_address])
        self.replicas[rid] = r
        return r

    def leader(self, among=None):
        """The replica all running replicas agree is leader, or None."""
        among = among or self.running()
        ids = set()
        for r in among:
            try:
                s = r.status()
            except (OSError, http.client.HTTPException, AssertionError):
                return None
            ids.add(s.get("leaderId"))
        if len(ids) == 1:
            lid = int(ids.pop() or 0)
            if lid in self.replicas and self.replicas[lid].is_running():
                return self.replicas[lid]
        return None

    def wait_leader(self, among=None, timeout=30):
        return wait_until(lambda: self.leader(among), timeout, "an agreed leader")

    def followers(self):
        lead = self.leader()
        return [r for r in self.running() if r is not lead]

    def wait_converged(self, timeout=30, among=None):
        """All running replicas at the same applied index with the same state hash."""
        among = among or self.running()

        def same():
            st = [r.status() for r in among]
            hashes = set(s["stateHash"] for s in st)
            idx = set(int(s["appliedIndex"]) for s in st)
            return st[0]["stateHash"] if len(hashes) == 1 and len(idx) == 1 else None
        return wait_until(same, timeout, "replicas to converge")

    def logs(self):
        out = []
        for r in self.replicas.values():
            try:
                with open(r.log_path, "rb") as f:
                    data = f.read()[-4000:].decode(errors="replace")
            except OSError:
                data = "(no log)"
            out.append("---- replica %d log tail ----\n%s" % (r.id, data))
        return "\n".join(out)

    def close(self):
        for r in self.replicas.values():
            try:
                r.stop()
            except AssertionError:
                pass
        if os.environ.get("CONCORD_TEST_KEEP"):
            print("kept", self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def quote(s):
    return urllib.parse.quote(s, safe="")
