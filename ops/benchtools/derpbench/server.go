// The servers derpbench measures: a cluster of concord replicas with their
// relays, or Tailscale's derper; and the tailnet the nodes join.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"tailscale.com/control/tsp"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
)

// Clock ticks per second in /proc/PID/stat; 100 on every Linux this runs on.
const clockTicks = 100

// server is one process under test: a concord replica or derper.
type server struct {
	id       int
	bin      string
	dir      string
	url      string // concord's HTTP listener
	derpPort int
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd has been waited for
	exitErr  error         // cmd.Wait's result, once exited is closed
	logPath  string
	stopped  bool
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func freeUDPPort() int {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		fail("free UDP port: %v", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// startCluster starts n concord replicas forming one cluster, each with its
// relay (on CPU 0 if pin), in a new directory under baseDir, and waits
// until every one answers /ready. The replicas share the Noise key, as
// replicas behind one URL do; their relays mesh unless told otherwise.
func startCluster(name string, n int, bin string, pin bool) []*server {
	dir := filepath.Join(baseDir, name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		fail("%v", err)
	}
	noiseKey := filepath.Join(dir, "noise.key")
	secret := filepath.Join(dir, "cluster.secret")
	for _, args := range [][]string{{"generate", "private-key", "-o", noiseKey},
		{"generate", "cluster-secret", "-o", secret}} {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			fail("concord %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	var members []string
	raftPorts := make([]int, n)
	for i := range raftPorts {
		raftPorts[i] = freePort()
		members = append(members, fmt.Sprintf("%q", fmt.Sprintf("%d@127.0.0.1:%d", i+1, raftPorts[i])))
	}
	var reps []*server
	for i := 0; i < n; i++ {
		s := &server{id: i + 1, bin: bin, dir: filepath.Join(dir, strconv.Itoa(i+1)),
			derpPort: freePort()}
		s.logPath = filepath.Join(s.dir, "concord.log")
		port := freePort()
		s.url = fmt.Sprintf("http://127.0.0.1:%d", port)
		if err := os.Mkdir(s.dir, 0o700); err != nil {
			fail("%v", err)
		}
		// Level info: the relay logs refused clients there, and with a
		// few clients the log stays short.
		cfg := fmt.Sprintf(`listen_addr: 127.0.0.1:%d
unix_socket: %s
unix_socket_permission: "0700"
data_dir: %s
log:
  level: info
noise:
  private_key_path: %s
derp:
  server:
    enabled: true
    listen_addr: 127.0.0.1:%d
    stun_listen_addr: 127.0.0.1:%d
cluster:
  id: %d
  raft_listen_addr: 127.0.0.1:%d
  secret_path: %s
  initial_members: [%s]
`, port, s.socket(), filepath.Join(s.dir, "data"), noiseKey, s.derpPort, freeUDPPort(), s.id,
			raftPorts[i], secret, strings.Join(members, ", "))
		cfgPath := filepath.Join(s.dir, "config.yaml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			fail("%v", err)
		}
		s.launch(pin, bin, "serve", "-c", cfgPath)
		reps = append(reps, s)
	}
	for _, s := range reps {
		s.waitReady(http.DefaultClient, s.url+"/ready")
	}
	return reps
}

// startDerper starts Tailscale's relay instead, with the self-signed
// certificate it makes for an IP address, and describes it as a region.
func startDerper(bin string, pin bool) (*server, *tailcfg.DERPRegion) {
	s := &server{id: 1, bin: bin, dir: filepath.Join(baseDir, "derper"), derpPort: freePort()}
	s.logPath = filepath.Join(s.dir, "derper.log")
	if err := os.Mkdir(s.dir, 0o700); err != nil {
		fail("%v", err)
	}
	s.launch(pin, bin, "-a", fmt.Sprintf("127.0.0.1:%d", s.derpPort), "-hostname", "127.0.0.1",
		"-certmode", "manual", "-certdir", s.dir, "-c", filepath.Join(s.dir, "derper.json"),
		"-stun=false", "-http-port=-1")
	insecure := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	s.waitReady(insecure, fmt.Sprintf("https://127.0.0.1:%d/derp/probe", s.derpPort))
	pemData, err := os.ReadFile(filepath.Join(s.dir, "127.0.0.1.crt"))
	if err != nil {
		fail("derper certificate: %v", err)
	}
	block, _ := pem.Decode(pemData)
	if block == nil {
		fail("derper certificate: no PEM block")
	}
	region := &tailcfg.DERPRegion{RegionID: 900, RegionCode: "derper", Nodes: []*tailcfg.DERPNode{{
		Name: "900a", RegionID: 900, HostName: "127.0.0.1", DERPPort: s.derpPort,
		CertName: fmt.Sprintf("sha256-raw:%x", sha256.Sum256(block.Bytes)),
	}}}
	return s, region
}

// launch starts the server's argv (on CPU 0 if pin) with its output in the
// log, and makes it one of the servers stopServers ends.
func (s *server) launch(pin bool, argv ...string) {
	logf, err := os.Create(s.logPath)
	if err != nil {
		fail("%v", err)
	}
	defer logf.Close()
	if pin {
		// taskset execs the server, so the process we track is the server.
		argv = append([]string{"taskset", "-c", "0"}, argv...)
	}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	// Under mu, so that an interrupt either stops it or comes before it.
	mu.Lock()
	err = s.cmd.Start()
	if err == nil {
		s.exited = make(chan struct{})
		go func() {
			s.exitErr = s.cmd.Wait()
			close(s.exited)
		}()
		servers = append(servers, s)
	}
	mu.Unlock()
	if err != nil {
		fail("start server: %v", err)
	}
}

// waitReady polls url until it answers 200.
func (s *server) waitReady(c *http.Client, url string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if !s.alive() {
			fail("server %d exited during startup: %v", s.id, s.exitErr)
		}
		if time.Now().After(deadline) {
			fail("server %d not ready after 30s", s.id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive reports whether the server is still running.
func (s *server) alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits; the error says why the exit was not clean.
func (s *server) stop() error {
	if s.stopped {
		return nil
	}
	s.stopped = true
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return s.exitErr
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		return fmt.Errorf("did not exit within 10s of SIGTERM")
	}
}

// cpu returns the server's user+system CPU time from /proc/PID/stat.
func (s *server) cpu() time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		fail("server %d stat: %v (did it exit?)", s.id, err)
	}
	// The command name (field 2) may contain spaces; the fields after its
	// closing parenthesis start at field 3, so utime (14) is index 11.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// printLog writes the last n lines of the server's log.
func (s *server) printLog(w *os.File, n int) {
	data, err := os.ReadFile(s.logPath)
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	fmt.Fprintf(w, "---- server %d log (last %d lines) ----\n%s\n", s.id, len(lines),
		strings.Join(lines, "\n"))
}

func (s *server) socket() string { return filepath.Join(s.dir, "concord.sock") }

// cli runs one admin command over the Unix socket and decodes its JSON.
func (s *server) cli(out any, args ...string) {
	argv := append([]string{"--socket", s.socket()}, args...)
	argv = append(argv, "-o", "json")
	cmd := exec.Command(s.bin, argv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	data, err := cmd.Output()
	if err != nil {
		fail("concord %s: %v %s", strings.Join(args, " "), err, stderr.String())
	}
	if err := json.Unmarshal(data, out); err != nil {
		fail("concord %s: bad JSON %q: %v", strings.Join(args, " "), data, err)
	}
}

// tailnet is where the nodes register: a replica's control URL, its Noise
// key and a reusable pre-auth key.
type tailnet struct {
	url     string
	key     key.MachinePublic
	authKey string
}

// newTailnet creates the user and the pre-auth key through s.
func newTailnet(s *server) *tailnet {
	var user struct{ ID string }
	s.cli(&user, "users", "create", "bench")
	var pak struct{ Key string }
	s.cli(&pak, "preauthkeys", "create", "-u", user.ID, "--reusable")
	if user.ID == "" || pak.Key == "" {
		fail("user id %q / auth key %q missing", user.ID, pak.Key)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	k, err := tsp.DiscoverServerKey(ctx, s.url)
	if err != nil {
		fail("server key: %v", err)
	}
	return &tailnet{url: s.url, key: k, authKey: pak.Key}
}

// register registers a new node key with the pre-auth key, so that the
// relays admit it. The returned client keeps the Noise connection open
// until closed.
func (t *tailnet) register(ctx context.Context, name string) (*tsp.Client, key.NodePrivate) {
	c, err := tsp.NewClient(tsp.ClientOpts{ServerURL: t.url, MachineKey: key.NewMachine()})
	if err != nil {
		fail("tsp client: %v", err)
	}
	c.SetControlPublicKey(t.key)
	nodeKey := key.NewNode()
	resp, err := c.Register(ctx, tsp.RegisterOpts{
		NodeKey:  nodeKey,
		AuthKey:  t.authKey,
		Hostinfo: &tailcfg.Hostinfo{Hostname: name, OS: "linux"},
	})
	if err != nil {
		c.Close()
		fail("register %s: %v", name, err)
	}
	if !resp.MachineAuthorized {
		c.Close()
		fail("register %s: not authorized: %+v", name, resp)
	}
	return c, nodeKey
}

// derpMap returns the DERP map a node receives in its first map response
// once it lists every relay of reps. The replicas announce their relays
// through the cluster after they start, so that may take a moment.
func derpMap(ctx context.Context, c *tsp.Client, nodeKey key.NodePrivate, reps []*server) *tailcfg.DERPMap {
	for {
		sess, err := c.Map(ctx, tsp.MapOpts{NodeKey: nodeKey, Stream: true})
		if err != nil {
			fail("map: %v", err)
		}
		resp, err := sess.Next()
		sess.Close()
		if err != nil {
			fail("map: first response: %v", err)
		}
		if resp.DERPMap != nil && listsAll(resp.DERPMap, reps) {
			return resp.DERPMap
		}
		if ctx.Err() != nil {
			fail("the DERP map does not list every relay: %+v", resp.DERPMap)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func listsAll(m *tailcfg.DERPMap, reps []*server) bool {
	for _, s := range reps {
		if r, _ := relayNode(m, s.derpPort); r == nil {
			return false
		}
	}
	return true
}

// relayNode finds the relay listening on port: its region and node.
func relayNode(m *tailcfg.DERPMap, port int) (*tailcfg.DERPRegion, *tailcfg.DERPNode) {
	for _, r := range m.Regions {
		for _, n := range r.Nodes {
			if n.DERPPort == port {
				return r, n
			}
		}
	}
	return nil, nil
}

// onlyNode returns a copy of the relay's region that lists that relay
// alone, so that a client connects to it and to no other node.
func onlyNode(m *tailcfg.DERPMap, port int) *tailcfg.DERPRegion {
	r, n := relayNode(m, port)
	only := *r
	only.Nodes = []*tailcfg.DERPNode{n}
	return &only
}

// waitApplied returns once every replica has applied what was written so
// far (a list without --stale reads after a Raft barrier), so that every
// relay finds the nodes just registered.
func waitApplied(reps []*server) {
	for _, s := range reps {
		var nodes []json.RawMessage
		s.cli(&nodes, "nodes", "list")
	}
}
