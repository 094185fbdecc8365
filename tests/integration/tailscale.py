"""tests/integration/tailscale.py: the real Tailscale client, relay and HAProxy for tests.

Runs stock tailscaled daemons in userspace-networking mode (no root, no TUN),
each with its own state directory and LocalAPI socket, a local derper on a free
loopback port with the DERP map file concord serves to clients, and an HAProxy
in front of the replicas. Binaries come from ops/install-tailscale, which pins
the client versions; under CI=true a missing binary fails the test instead of
skipping it. Every process started here is killed on close() and at exit; logs
stay in the test's directory and their tails are printed when a test fails.
"""
import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest

from harness import free_port, wait_until

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOOLS = os.path.join(ROOT, "build", "tools")
INSTALL_SCRIPT = os.path.join(ROOT, "ops", "install-tailscale")

# The environment of every daemon: no log upload, no port mapping, plain-HTTP
# DERP for the local relay, and no pausing when the host looks offline.
# TS_PANIC_IF_HIT_MAIN_CONTROL turns any attempt to reach Tailscale's own
# control plane into a crash we would see. (TS_NETCHECK_GENERATE_204_URL, set
# by Tailscale's own harness, is read by no client version tested here.)
DAEMON_ENV = {
    "TS_NO_LOGS_NO_SUPPORT": "true",
    "TS_ASSUME_NETWORK_UP_FOR_TEST": "1",
    "TS_DISABLE_PORTMAPPER": "1",
    "TS_PANIC_IF_HIT_MAIN_CONTROL": "1",
    "TS_DEBUG_USE_DERP_HTTP": "1",
}

_live = []  # every Popen started here, killed at exit if a test forgot


@atexit.register
def _kill_leftovers():
    for p in _live:
        if p.poll() is None:
            p.kill()


def _spawn(argv, log_path=None, env=None):
    """Starts argv with its output appended to log_path, or to a pipe
    (stdout, stderr merged) when log_path is None."""
    log = open(log_path, "ab") if log_path else subprocess.PIPE
    try:
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env)
    finally:
        if log_path:
            log.close()
    _live.append(p)
    return p


def _stop(p, sig=signal.SIGTERM, timeout=15):
    if p is None or p.poll() is not None:
        return
    p.send_signal(sig)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def tail(path, n=4000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read().decode(errors="replace")
    except OSError:
        return "(no log)"


def pinned_versions():
    """{"newest": "v1.102.3", "oldest": "v1.80.3"} from ops/install-tailscale,
    the one place the supported client range is written down."""
    with open(INSTALL_SCRIPT) as f:
        text = f.read()
    found = dict(re.findall(r"^(TAILSCALE_VERSION|TAILSCALE_OLDEST)=(\S+)$", text, re.M))
    return {"newest": found["TAILSCALE_VERSION"], "oldest": found["TAILSCALE_OLDEST"]}


def client_dir(version):
    return os.path.join(TOOLS, "tailscale-" + version)


def derper_path():
    return os.path.join(TOOLS, "derper")


def require(*paths):
    """Fails (CI=true) or skips the test when a binary is missing."""
    missing = [p for p in paths if not os.access(p, os.X_OK)]
    if not missing:
        return
    msg = "missing %s: run ops/install-tailscale" % ", ".join(missing)
    if os.environ.get("CI") == "true":
        raise AssertionError(msg)
    raise unittest.SkipTest(msg)


def require_haproxy():
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy")
                                       else None)
    if path is None:
        msg = "haproxy is not installed: run ops/install-deps"
        if os.environ.get("CI") == "true":
            raise AssertionError(msg)
        raise unittest.SkipTest(msg)
    return path


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp(port, proc, timeout, what):
    def up():
        if proc.poll() is not None:
            raise AssertionError("%s exited with %d" % (what, proc.returncode))
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    wait_until(up, timeout, what)


class Derper:
    """Tailscale's DERP relay in plain HTTP and its STUN server on free
    loopback ports. (--dev is not used: it forces the fixed port 3340 on every
    interface.) With STUN answering, the clients' netcheck finds UDP working
    and does not fall back to probing Tailscale's servers for a captive portal."""

    def __init__(self, workdir):
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.port = free_port()
        self.stun_port = free_udp_port()
        self.log_path = os.path.join(workdir, "derper.log")
        self.map_path = os.path.join(workdir, "derpmap.json")
        self.proc = None
        with open(self.map_path, "w") as f:
            json.dump(self.derp_map(), f, indent=1)

    def derp_map(self):
        return {"Regions": {"900": {
            "RegionID": 900, "RegionCode": "test", "RegionName": "Test relay",
            "Nodes": [{"Name": "900a", "RegionID": 900, "HostName": "127.0.0.1",
                       "IPv4": "127.0.0.1", "IPv6": "none", "DERPPort": self.port,
                       "STUNPort": self.stun_port, "InsecureForTests": True}]}}}

    def start(self):
        require(derper_path())
        self.proc = _spawn([derper_path(), "-a", "127.0.0.1:%d" % self.port,
                            "-c", os.path.join(self.dir, "derper.key"),
                            "--stun-port=%d" % self.stun_port,
                            "--http-port=-1", "--home=blank"], self.log_path)
        wait_tcp(self.port, self.proc, 20, "derper to listen")

    def close(self):
        _stop(self.proc)


class HAProxy:
    """HAProxy in TCP mode in front of the replicas' HTTP listeners, as a
    deployment would run it: health checks every 500 ms, sessions to a server
    marked down are cut, a connection that cannot reach its server is sent to
    another. Its runtime API (a Unix socket) steers new connections and tells
    which server holds a client's connection."""

    def __init__(self, workdir, backends):
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.port = free_port()
        self.backends = list(backends)
        self.cfg_path = os.path.join(workdir, "haproxy.cfg")
        self.log_path = os.path.join(workdir, "haproxy.log")
        self.stats_socket = os.path.join(workdir, "haproxy.sock")
        self.proc = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def config(self):
        lines = [
            "global",
            "    log stderr format short local0 info",
            "    stats socket %s mode 600 level admin" % self.stats_socket,
            "defaults",
            "    mode tcp",
            "    log global",
            "    option tcplog",
            "    timeout connect 2s",
            "    timeout client 1h",
            "    timeout server 1h",
            "    timeout check 1s",
            "    retries 3",
            "    option redispatch",
            "frontend control",
            "    bind 127.0.0.1:%d" % self.port,
            "    default_backend replicas",
            "backend replicas",
            "    balance roundrobin",
            "    default-server check inter 500ms fall 2 rise 2 on-marked-down shutdown-sessions",
        ]
        for i, addr in enumerate(self.backends, 1):
            lines.append("    server r%d %s" % (i, addr))
        return "\n".join(lines) + "\n"

    def start(self):
        binary = require_haproxy()
        with open(self.cfg_path, "w") as f:
            f.write(self.config())
        self.proc = _spawn([binary, "-db", "-f", self.cfg_path], self.log_path)
        wait_tcp(self.port, self.proc, 20, "haproxy to listen")

    def command(self, line):
        """One command on HAProxy's runtime API (the stats socket); its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.stats_socket)
            s.sendall(line.encode() + b"\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data.decode()

    def only(self, server):
        """Sends new connections to this server ("r1"...) alone; None: to all."""
        for i in range(1, len(self.backends) + 1):
            name = "r%d" % i
            state = "ready" if server is None or name == server else "maint"
            self.command("set server replicas/%s state %s" % (name, state))

    def server_status(self, server):
        """The health of a server ("UP", "DOWN", "MAINT"...) from `show stat`."""
        lines = self.command("show stat").splitlines()
        cols = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(cols, line.split(",")))
            if row.get("pxname") == "replicas" and row.get("svname") == server:
                return row["status"]
        return None

    def sessions(self):
        """{client source port: server name} of the proxied connections."""
        out = {}
        for m in re.finditer(r"src=[0-9.]+:(\d+) fe=control be=replicas srv=(\S+)",
                             self.command("show sess")):
            out[int(m.group(1))] = m.group(2)
        return out

    def server_of(self, client):
        """The backend server name ("r1"...) holding the client's one
        connection through the proxy, or None while it has none or several."""
        ports = client.tcp_source_ports(self.port)
        if len(ports) != 1:
            return None
        return self.sessions().get(ports[0])

    def close(self):
        _stop(self.proc)


class Client:
    """One tailscaled in userspace-networking mode and the `tailscale` CLI
    talking to it over its own LocalAPI socket."""

    def __init__(self, workdir, name, version, ephemeral=False, env=None):
        self.name = name
        self.version = version
        self.dir = os.path.join(workdir, "ts-" + name)
        os.makedirs(self.dir, exist_ok=True)
        bindir = client_dir(version)
        self.tailscale = os.path.join(bindir, "tailscale")
        self.tailscaled = os.path.join(bindir, "tailscaled")
        self.socket = os.path.join(self.dir, "tailscaled.sock")
        self.log_path = os.path.join(self.dir, "tailscaled.log")
        self.cli_log_path = os.path.join(self.dir, "cli.log")
        self.ephemeral = ephemeral
        self.env = dict(os.environ)
        self.env.update(DAEMON_ENV)
        # A value of None removes the variable (e.g. TS_DEBUG_USE_DERP_HTTP
        # for a relay that speaks TLS).
        for k, v in (env or {}).items():
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = v
        self.proc = None
        self.bg = []  # background CLI processes (interactive `up`)

    def start(self):
        require(self.tailscale, self.tailscaled)
        state = ["--state=mem:"] if self.ephemeral else []
        self.proc = _spawn([self.tailscaled, "--tun=userspace-networking",
                            "--statedir=" + os.path.join(self.dir, "state"),
                            "--socket=" + self.socket, "--port=0", "--no-logs-no-support",
                            "--verbose=1"] + state, self.log_path, env=self.env)
        wait_until(lambda: self._alive() and self.cli("status", "--json", check=False,
                                                      timeout=5).returncode == 0,
                   30, "tailscaled %s to answer on its socket" % self.name)
        return self

    def _alive(self):
        if self.proc.poll() is not None:
            raise AssertionError("tailscaled %s exited with %d:\n%s"
                                 % (self.name, self.proc.returncode, tail(self.log_path)))
        return os.path.exists(self.socket)

    def cli(self, *args, check=True, timeout=60):
        argv = [self.tailscale, "--socket=" + self.socket] + list(args)
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.env)
        with open(self.cli_log_path, "a") as f:
            f.write("$ %s\n[%d] %s%s\n" % (" ".join(args), p.returncode, p.stdout, p.stderr))
        if check and p.returncode != 0:
            raise AssertionError("tailscale %s on %s failed (%d): %s%s"
                                 % (" ".join(args), self.name, p.returncode, p.stdout, p.stderr))
        return p

    def up_args(self, login_server, auth_key=None, hostname=None, extra=(), timeout=60):
        args = ["up", "--reset", "--login-server=" + login_server,
                "--hostname=" + (hostname or self.name), "--accept-dns=false",
                "--timeout=%ds" % timeout]
        if auth_key:
            args.append("--auth-key=" + auth_key)
        return args + list(extra)

    def up(self, login_server, auth_key=None, hostname=None, extra=(), timeout=60, check=True):
        """`tailscale up`, waiting until Running; returns the CompletedProcess."""
        return self.cli(*self.up_args(login_server, auth_key, hostname, extra, timeout),
                        check=check, timeout=timeout + 15)

    def up_interactive(self, login_server, hostname=None, extra=(), timeout=60):
        """Starts `tailscale up` without a key in the background and returns
        (process, AuthURL) once the CLI has printed the URL to visit."""
        argv = [self.tailscale, "--socket=" + self.socket] + self.up_args(
            login_server, None, hostname, extra, timeout)
        out_path = os.path.join(self.dir, "up-interactive.log")
        p = _spawn(argv, env=self.env)
        self.bg.append(p)
        lines = []
        found = []

        def reader():
            for raw in p.stdout:
                line = raw.decode(errors="replace")
                lines.append(line)
                with open(out_path, "a") as f:
                    f.write(line)
                m = re.search(r"(https?://\S+/register/\S+)", line)
                if m and not found:
                    found.append(m.group(1))
        threading.Thread(target=reader, daemon=True).start()

        def url():
            if found:
                return found[0]
            if p.poll() is not None:
                time.sleep(0.2)  # let the reader drain the pipe
                if found:
                    return found[0]
                raise AssertionError("tailscale up exited with %d before printing an AuthURL:"
                                     "\n%s" % (p.returncode, "".join(lines)))
            return None
        return p, wait_until(url, 30, "the AuthURL from tailscale up on %s" % self.name)

    def tcp_source_ports(self, dest_port):
        """Local ports of this tailscaled's established TCP connections to
        127.0.0.1:dest_port (from `ss`)."""
        out = subprocess.run(["ss", "-tnpH", "state", "established", "dst",
                              "127.0.0.1:%d" % dest_port], capture_output=True, text=True,
                             check=True).stdout
        ports = []
        for line in out.splitlines():
            if "pid=%d," % self.proc.pid in line:
                ports.append(int(line.split()[2].rsplit(":", 1)[1]))
        return ports

    def status_json(self):
        return json.loads(self.cli("status", "--json", timeout=20).stdout)

    def backend_state(self):
        return self.status_json()["BackendState"]

    def self_ips(self):
        return self.status_json()["Self"]["TailscaleIPs"]

    def peers(self):
        """The peers in `tailscale status --json`, by HostName."""
        st = self.status_json()
        return dict((p["HostName"], p) for p in (st.get("Peer") or {}).values())

    def ping(self, target, count=1, tsmp=False, timeout=5):
        """`tailscale ping`; returns the "pong from ..." lines (empty when none came)."""
        args = ["ping", "--until-direct=false", "-c", str(count), "--timeout=%ds" % timeout]
        if tsmp:
            args.append("--tsmp")
        p = self.cli(*(args + [target]), check=False, timeout=count * (timeout + 2) + 10)
        return [line for line in p.stdout.splitlines() if line.startswith("pong from ")]

    def dns_query(self, name, qtype="A"):
        """`tailscale dns query` through the client's internal resolver:
        (response code, [(name, type, body)...])."""
        out = self.cli("dns", "query", name, qtype, timeout=20).stdout
        m = re.search(r"^Response code: (\S+)", out, re.M)
        answers = []
        table = False
        for line in out.splitlines():
            cols = line.split()
            if cols[:1] == ["----"]:
                table = True
            elif table and len(cols) >= 5:
                answers.append((cols[0], cols[3], cols[4]))
        return (m.group(1) if m else None), answers

    def logout(self):
        return self.cli("logout", timeout=30)

    def set_hostname(self, hostname):
        return self.cli("set", "--hostname=" + hostname, timeout=30)

    def kill(self, sig=signal.SIGKILL):
        _stop(self.proc, sig)

    def close(self):
        for p in self.bg:
            _stop(p, signal.SIGKILL)
        _stop(self.proc)

    def logs(self):
        return ("---- %s tailscaled log tail ----\n%s\n---- %s CLI ----\n%s"
                % (self.name, tail(self.log_path), self.name, tail(self.cli_log_path, 2000)))


class Tailnet:
    """The clients, relay and proxy of one test class; close() stops them all."""

    def __init__(self, workdir, version):
        self.dir = workdir
        self.version = version
        self.clients = []
        self.others = []

    def client(self, name, ephemeral=False, env=None):
        c = Client(self.dir, name, self.version, ephemeral, env)
        self.clients.append(c)
        return c.start()

    def derper(self):
        d = Derper(os.path.join(self.dir, "derper"))
        self.others.append(d)
        d.start()
        return d

    def haproxy(self, backends):
        h = HAProxy(os.path.join(self.dir, "haproxy"), backends)
        self.others.append(h)
        h.start()
        return h

    def close(self):
        for c in self.clients:
            c.close()
        for o in self.others:
            o.close()

    def logs(self, clients=None):
        out = [c.logs() for c in (clients or self.clients)]
        for o in self.others:
            out.append("---- %s ----\n%s" % (os.path.basename(o.log_path), tail(o.log_path, 2000)))
        return "\n".join(out)
