// controlbench measures the Tailscale control protocol side of one concord
// replica on loopback, driving it with Tailscale's own client libraries:
//
//  1. Noise handshakes per second: -conns goroutines each repeatedly open a
//     connection, do the ts2021 HTTP upgrade and the Noise IK handshake, and
//     close it again (see handshake.go for the two client modes).
//  2. Time to the first full map of a new node while 100 and 1000 other nodes
//     exist: the other nodes are registered with tailscale.com/control/tsp
//     (one machine key each, not kept online); then -fresh new nodes register
//     one after another and each opens a streaming map request. The time from
//     sending that request until its first MapResponse is decoded is the
//     node's full-map time.
//
// The server is pinned to CPU 0 and this generator to CPU 1 when the machine
// has both and taskset exists, so a saturated generator shows up in its CPU
// seconds instead of stealing the server's core. The last line is
//
//	control-bench handshakes_per_s=N fullmap_ms_100=N fullmap_ms_1000=N
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"tailscale.com/control/tsp"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
)

// Clock ticks per second in /proc/PID/stat; 100 on every Linux this runs on.
const clockTicks = 100

// server is the one concord replica under test.
type server struct {
	bin     string
	dir     string
	port    int
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
	logPath string
	url     string
	key     key.MachinePublic
	authKey string
}

var (
	cleanupOnce sync.Once
	srv         *server
)

// stop terminates the server (once), so that every exit path, including
// fail and SIGINT, leaves no replica behind; the temp dir goes with it.
func stop() {
	cleanupOnce.Do(func() {
		if srv == nil {
			return
		}
		if srv.exited != nil {
			srv.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-srv.exited:
			case <-time.After(10 * time.Second):
				srv.cmd.Process.Kill()
				<-srv.exited
			}
		}
		os.RemoveAll(srv.dir)
	})
}

// fail prints the message and the tail of the server log, then exits.
func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "controlbench: "+format+"\n", args...)
	if srv != nil {
		printServerLog(os.Stderr, 40)
	}
	stop()
	os.Exit(1)
}

// printServerLog writes the last n lines of the server log (it runs at
// level warn, so every line there is worth seeing).
func printServerLog(w *os.File, n int) {
	data, err := os.ReadFile(srv.logPath)
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	fmt.Fprintf(w, "---- server log (last %d lines) ----\n%s\n", len(lines), strings.Join(lines, "\n"))
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// canPin reports whether the server and the generator can get a core each.
func canPin() bool {
	_, err := exec.LookPath("taskset")
	return err == nil && runtime.NumCPU() >= 2
}

// pinSelf moves every thread of this process to cpu. Threads the Go runtime
// creates later are cloned from these and inherit the mask.
func pinSelf(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil {
			return err
		}
	}
	runtime.GOMAXPROCS(1)
	return nil
}

// cpuSelf returns this process's user+system CPU time.
func cpuSelf() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		fail("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuServer returns the server's user+system CPU time from /proc/PID/stat.
func cpuServer() time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", srv.cmd.Process.Pid))
	if err != nil {
		fail("server stat: %v (did it exit?)", err)
	}
	// The command name (field 2) may contain spaces; the fields after its
	// closing parenthesis start at field 3, so utime (14) is index 11.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// start writes the config, starts the replica (on CPU 0 if pin) and waits
// until it answers /ready.
func (s *server) start(pin bool) {
	run := func(args ...string) {
		if out, err := exec.Command(s.bin, args...).CombinedOutput(); err != nil {
			fail("concord %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	noiseKey := filepath.Join(s.dir, "noise.key")
	secret := filepath.Join(s.dir, "cluster.secret")
	run("generate", "private-key", "-o", noiseKey)
	run("generate", "cluster-secret", "-o", secret)
	s.port = freePort()
	raftPort := freePort()
	s.url = fmt.Sprintf("http://127.0.0.1:%d", s.port)
	cfg := fmt.Sprintf(`listen_addr: 127.0.0.1:%d
unix_socket: %s
unix_socket_permission: "0700"
data_dir: %s
log:
  level: warn
noise:
  private_key_path: %s
cluster:
  id: 1
  raft_listen_addr: 127.0.0.1:%d
  secret_path: %s
  initial_members: ["1@127.0.0.1:%d"]
`, s.port, s.socket(), filepath.Join(s.dir, "data"), noiseKey, raftPort, secret, raftPort)
	cfgPath := filepath.Join(s.dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		fail("%v", err)
	}
	logf, err := os.Create(s.logPath)
	if err != nil {
		fail("%v", err)
	}
	defer logf.Close()
	argv := []string{s.bin, "serve", "-c", cfgPath}
	if pin {
		// taskset execs concord, so the process we track is the server.
		argv = append([]string{"taskset", "-c", "0"}, argv...)
	}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		fail("start server: %v", err)
	}
	s.exited = make(chan struct{})
	go func() {
		s.cmd.Wait()
		close(s.exited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.url + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			fail("server not ready after 30s")
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

// setup creates the user and the reusable pre-auth key every node registers
// with, and learns the server's Noise public key.
func (s *server) setup() {
	var user struct{ ID string }
	s.cli(&user, "users", "create", "bench")
	var pak struct{ Key string }
	s.cli(&pak, "preauthkeys", "create", "-u", user.ID, "--reusable")
	if user.ID == "" || pak.Key == "" {
		fail("user id %q / auth key %q missing", user.ID, pak.Key)
	}
	s.authKey = pak.Key
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	k, err := tsp.DiscoverServerKey(ctx, s.url)
	if err != nil {
		fail("server key: %v", err)
	}
	s.key = k
}

// node is one simulated machine.
type node struct {
	client  *tsp.Client
	nodeKey key.NodePrivate
}

// register creates a client with a new machine key and registers a new node
// key on it with the pre-auth key; the Noise connection stays open until
// the client is closed.
func (s *server) register(ctx context.Context, name string) (*node, error) {
	c, err := tsp.NewClient(tsp.ClientOpts{ServerURL: s.url, MachineKey: key.NewMachine()})
	if err != nil {
		return nil, err
	}
	c.SetControlPublicKey(s.key)
	n := &node{client: c, nodeKey: key.NewNode()}
	resp, err := c.Register(ctx, tsp.RegisterOpts{
		NodeKey:  n.nodeKey,
		AuthKey:  s.authKey,
		Hostinfo: &tailcfg.Hostinfo{Hostname: name, OS: "linux"},
	})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("register %s: %w", name, err)
	}
	if !resp.MachineAuthorized {
		c.Close()
		return nil, fmt.Errorf("register %s: not authorized: %+v", name, resp)
	}
	return n, nil
}

// populate registers nodes peer-<from> .. peer-<to-1>, 16 at a time.
func (s *server) populate(from, to int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	next := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				n, err := s.register(ctx, fmt.Sprintf("peer-%d", i))
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					continue
				}
				n.client.Close()
			}
		}()
	}
	for i := from; i < to; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		fail("%v", err)
	default:
	}
}

// mapTiming is one new node's first streaming map request.
type mapTiming struct {
	// headers: until tsp.Map returned, i.e. the response headers arrived;
	// concord sends them together with the first map, so this is close to
	// the server's share.
	headers time.Duration
	// total: until the first MapResponse was decoded (the client has read
	// and parsed the whole map by then).
	total time.Duration
	peers int
}

// fullMap registers a new node, then times its streaming map request.
func (s *server) fullMap(name string) mapTiming {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := s.register(ctx, name)
	if err != nil {
		fail("%v", err)
	}
	defer n.client.Close()
	// Register left the Noise connection open, so what is timed is the map
	// request alone.
	t0 := time.Now()
	sess, err := n.client.Map(ctx, tsp.MapOpts{NodeKey: n.nodeKey, Stream: true})
	if err != nil {
		fail("map %s: %v", name, err)
	}
	defer sess.Close()
	headers := time.Since(t0)
	resp, err := sess.Next()
	if err != nil {
		fail("map %s: first response: %v", name, err)
	}
	total := time.Since(t0)
	if resp.Node == nil {
		fail("map %s: first response has no self node", name)
	}
	return mapTiming{headers: headers, total: total, peers: len(resp.Peers)}
}

// median sorts ds in place and returns its middle element.
func median(ds []time.Duration) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func main() {
	bin := flag.String("bin", "build/concord", "concord binary")
	seconds := flag.Float64("seconds", 8, "duration of the handshake measurement")
	conns := flag.Int("conns", 32, "concurrent handshaking goroutines")
	mode := flag.String("mode", "raw", "handshake client: raw (initiations precomputed) or controlhttp")
	poolSize := flag.Int("pool", 0, "raw mode: initiations to precompute (default 5000 per second)")
	existingFlag := flag.String("existing", "100,1000", "node counts to measure the full map against")
	fresh := flag.Int("fresh", 10, "new nodes timed per node count")
	pin := flag.Bool("pin", true, "server on CPU 0, generator on CPU 1 (needs taskset and 2 CPUs)")
	cpuProfile := flag.String("cpuprofile", "", "write the generator's CPU profile of the handshakes here")
	flag.Parse()

	if *mode != "raw" && *mode != "controlhttp" {
		fail("-mode must be raw or controlhttp")
	}
	if *fresh < 1 || *conns < 1 {
		fail("-fresh and -conns must be at least 1")
	}
	var counts []int
	for _, f := range strings.Split(*existingFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || (len(counts) > 0 && n < counts[len(counts)-1]) {
			fail("bad -existing %q (ascending counts)", *existingFlag)
		}
		counts = append(counts, n)
	}
	d := time.Duration(*seconds * float64(time.Second))
	if *poolSize == 0 {
		*poolSize = int(5000 * *seconds)
	}

	dir, err := os.MkdirTemp("", "concord-controlbench-")
	if err != nil {
		fail("%v", err)
	}
	srv = &server{bin: *bin, dir: dir, logPath: filepath.Join(dir, "concord.log")}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		fail("interrupted")
	}()
	defer stop()

	*pin = *pin && canPin()
	srv.start(*pin)
	srv.setup()
	var pool chan initiation
	if *mode == "raw" {
		// Before pinning, so that both cores share the work.
		t := time.Now()
		pool = srv.precompute(*poolSize)
		fmt.Printf("precomputed %d handshake initiations in %.1fs\n", *poolSize, time.Since(t).Seconds())
	}
	if *pin {
		if err := pinSelf(1); err != nil {
			fail("pin generator: %v", err)
		}
		fmt.Println("server pinned to CPU 0, generator to CPU 1")
	} else {
		fmt.Println("not pinned: server and generator share the CPUs")
	}

	hps := measureHandshakes(*mode, *conns, d, pool, *cpuProfile)
	summary := fmt.Sprintf("control-bench handshakes_per_s=%.0f", hps)
	registered := 0
	for _, target := range counts {
		med := measureFullMaps(&registered, target, *fresh)
		summary += fmt.Sprintf(" fullmap_ms_%d=%.1f", target, ms(med))
	}
	if !srv.alive() {
		fail("server exited during the run")
	}
	printServerLog(os.Stdout, 20)
	fmt.Println(summary)
}

// measureHandshakes runs the handshake load, prints the details and returns
// handshakes per second.
func measureHandshakes(mode string, conns int, d time.Duration, pool chan initiation, profile string) float64 {
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			fail("%v", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fail("cpu profile: %v", err)
		}
		defer pprof.StopCPUProfile()
	}
	cpuGen0, cpuSrv0, t0 := cpuSelf(), cpuServer(), time.Now()
	r := srv.handshakes(mode, conns, d, pool)
	wall := time.Since(t0).Seconds()
	cpuGen, cpuSrv := (cpuSelf() - cpuGen0).Seconds(), (cpuServer() - cpuSrv0).Seconds()
	hps := float64(r.ok) / wall
	fmt.Printf("handshakes (%s): %d in %.1fs with %d goroutines = %.0f/s, failed %d\n",
		mode, r.ok, wall, conns, hps, r.failed)
	if r.inline > 0 {
		fmt.Printf("the precomputed pool ran dry: %d initiations computed in the window (raise -pool)\n",
			r.inline)
	}
	fmt.Printf("CPU seconds: generator %.2f (%.0f%% of a core), server %.2f (%.0f%%)\n",
		cpuGen, 100*cpuGen/wall, cpuSrv, 100*cpuSrv/wall)
	if r.ok > 0 && cpuSrv > 0 {
		perHs := cpuSrv / float64(r.ok)
		fmt.Printf("server CPU per handshake %.0f us = %.0f handshakes/s per server core\n",
			perHs*1e6, 1/perHs)
	}
	if r.firstErr != nil {
		fmt.Printf("first handshake error: %v\n", r.firstErr)
	}
	return hps
}

// measureFullMaps registers nodes until *registered reaches target, then
// times the first full map of fresh new nodes, prints the details and
// returns the median time to the decoded map.
func measureFullMaps(registered *int, target, fresh int) time.Duration {
	if *registered < target {
		t := time.Now()
		srv.populate(*registered, target)
		fmt.Printf("registered %d nodes in %.1fs\n", target-*registered, time.Since(t).Seconds())
		*registered = target
	}
	var totals, headers []time.Duration
	minPeers, maxPeers := -1, 0
	for i := 0; i < fresh; i++ {
		t := srv.fullMap(fmt.Sprintf("fresh-%d-%d", target, i))
		totals = append(totals, t.total)
		headers = append(headers, t.headers)
		if minPeers < 0 || t.peers < minPeers {
			minPeers = t.peers
		}
		maxPeers = max(maxPeers, t.peers)
	}
	*registered += fresh
	med := median(totals)
	fmt.Printf("full map with >=%d other nodes: median %.1f ms (min %.1f, max %.1f), "+
		"response headers after median %.1f ms, %d..%d peers\n", target, ms(med),
		ms(totals[0]), ms(totals[len(totals)-1]), ms(median(headers)), minPeers, maxPeers)
	return med
}
