"""The README's start command: ops/start in a terminal prints the login
server, a pre-auth key and the admin invocation, Ctrl-C stops every replica
cleanly, and a second start reuses the data (no second bootstrap). Real
clients given only what it printed reach Running and talk through the
quickstart's own relays (no other relay, no internet)."""
import os
import pty
import re
import select
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

import tailscale

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PORTS = (7001, 7002, 7003, 8081, 8082, 8083, 3341, 3342, 3343)


def run_until_ready_then_ctrl_c(home, timeout=120, while_running=None):
    """Runs ops/start on a pseudo-terminal; returns (output, exit code).
    while_running(output) runs once the credentials are printed, before Ctrl-C."""
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["CONCORD_HOME"] = home
        os.chdir(ROOT)
        os.execvp("ops/start", ["ops/start"])
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and b"admin:" not in out:
            if select.select([fd], [], [], 0.5)[0]:
                out += os.read(fd, 65536)
        if while_running is not None:
            while_running(out.decode(errors="replace"))
        time.sleep(0.3)
        os.write(fd, b"\x03")  # Ctrl-C, through the terminal's line discipline
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    out += os.read(fd, 65536)
                except OSError:
                    pass
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return out.decode(errors="replace"), os.waitstatus_to_exitcode(status)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError("ops/start did not stop after Ctrl-C:\n" + out.decode(errors="replace"))
    finally:
        os.close(fd)


class QuickstartTest(unittest.TestCase):
    def setUp(self):
        for port in PORTS:
            with socket.socket() as s:
                # As the servers do: TIME_WAIT from an earlier run is no obstacle.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    self.fail("port %d is busy: the quickstart needs 7001-7003 and 8081-8083" % port)
        self.home = tempfile.mkdtemp(prefix="concord-qs-")
        self.addCleanup(shutil.rmtree, self.home, True)

    def test_start_prints_credentials_and_ctrl_c_stops_everything(self):
        out, code = run_until_ready_then_ctrl_c(self.home)
        self.assertEqual(code, 0, out)
        self.assertRegex(out, r"(?m)^login server: http://127\.0\.0\.1:8081\r?$")
        key = re.search(r"(?m)^pre-auth key: (concord-auth-\S+)\r?$", out)
        self.assertTrue(key, out)
        admin = re.search(r"(?m)^admin: (.+?)\r?$", out).group(1).split()
        self.assertTrue(os.path.exists(admin[0]), admin)

        stopped = subprocess.run(["pgrep", "-f", self.home], capture_output=True)
        self.assertNotEqual(stopped.returncode, 0, "replicas still running after Ctrl-C")
        for i in (1, 2, 3):
            with open(os.path.join(self.home, "replica%d" % i, "concord.log")) as f:
                self.assertIn("stopped exit=0", f.read())

        out2, code2 = run_until_ready_then_ctrl_c(self.home)
        self.assertEqual(code2, 0, out2)
        key2 = re.search(r"(?m)^pre-auth key: (concord-auth-\S+)\r?$", out2).group(1)
        self.assertNotEqual(key.group(1), key2, "each start prints a fresh key")
        with open(os.path.join(self.home, "replica1", "concord.log")) as f:
            self.assertEqual(f.read().count("bootstrapped"), 1, "bootstrapped twice")

    def test_clients_reach_running_through_the_quickstart_relays(self):
        version = tailscale.pinned_versions()["newest"]
        # TLS to the embedded relays, verified through the pinned certificate;
        # no direct UDP between the clients, so every packet is relayed.
        env = {"TS_DEBUG_USE_DERP_HTTP": None, "TS_DEBUG_ALWAYS_USE_DERP": "1"}
        clients = [tailscale.Client(self.home, "qs-%d" % i, version, env=env) for i in (1, 2)]
        for c in clients:
            self.addCleanup(c.close)

        def join_and_ping(out):
            login = re.search(r"(?m)^login server: (\S+)\r?$", out).group(1)
            key = re.search(r"(?m)^pre-auth key: (\S+)\r?$", out).group(1)
            for c in clients:
                c.start()
                c.up(login, auth_key=key)
            ip = clients[1].self_ips()[0]
            pongs = []
            deadline = time.monotonic() + 60
            while not pongs and time.monotonic() < deadline:
                pongs = clients[0].ping(ip, count=1)
            self.assertTrue(pongs, clients[0].logs())
            self.assertIn("via DERP(concord)", pongs[0])

        out, code = run_until_ready_then_ctrl_c(self.home, while_running=join_and_ping)
        self.assertEqual(code, 0, out)


if __name__ == "__main__":
    unittest.main()
