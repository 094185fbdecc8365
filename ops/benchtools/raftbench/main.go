// raftbench measures acknowledged client writes on a 3-replica concord cluster
// on loopback: each writer creates users through the admin API of the leader
// (over its Unix socket, keep-alive), one request at a time; -via follower
// writes through a follower instead, which forwards to the leader and answers
// once it has applied the entry itself. For each writer
// count it prints committed writes/s and p50/p99 latency, ending with
//
//	raft-bench writers=N ops_per_s=X p50_ms=Y p99_ms=Z
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type replica struct {
	id       int
	dir      string
	httpPort int
	raftPort int
	cmd      *exec.Cmd
	client   *http.Client
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "raftbench: "+format+"\n", args...)
	os.Exit(1)
}

func unixClient(path string, conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
		},
	}
}

func (r *replica) socket() string { return filepath.Join(r.dir, "concord.sock") }

func (r *replica) status() (map[string]any, error) {
	resp, err := r.client.Get("http://concord/api/v1/cluster/status?consistent=false")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

func main() {
	bin := flag.String("bin", "build/concord", "concord binary")
	seconds := flag.Float64("seconds", 10, "measurement time per writer count")
	writersFlag := flag.String("writers", "1,16,64", "writer counts")
	via := flag.String("via", "leader", "replica the writers talk to: leader or follower")
	flag.Parse()

	dir, err := os.MkdirTemp("", "concord-raftbench-")
	if err != nil {
		fail("%v", err)
	}
	defer os.RemoveAll(dir)
	secret := filepath.Join(dir, "cluster.secret")
	if out, err := exec.Command(*bin, "generate", "cluster-secret", "-o", secret).CombinedOutput(); err != nil {
		fail("generate secret: %v %s", err, out)
	}
	reps := make([]*replica, 3)
	var members []string
	for i := range reps {
		r := &replica{id: i + 1, dir: filepath.Join(dir, fmt.Sprintf("replica%d", i+1)),
			httpPort: freePort(), raftPort: freePort()}
		reps[i] = r
		members = append(members, fmt.Sprintf("\"%d@127.0.0.1:%d\"", r.id, r.raftPort))
	}
	for _, r := range reps {
		if err := os.MkdirAll(r.dir, 0o700); err != nil {
			fail("%v", err)
		}
		cfg := fmt.Sprintf(`listen_addr: 127.0.0.1:%d
unix_socket: %s
unix_socket_permission: "0700"
data_dir: %s
log:
  level: warn
cluster:
  id: %d
  raft_listen_addr: 127.0.0.1:%d
  secret_path: %s
  initial_members: [%s]
`, r.httpPort, r.socket(), filepath.Join(r.dir, "data"), r.id, r.raftPort, secret,
			strings.Join(members, ", "))
		cfgPath := filepath.Join(r.dir, "config.yaml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			fail("%v", err)
		}
		logf, err := os.Create(filepath.Join(r.dir, "concord.log"))
		if err != nil {
			fail("%v", err)
		}
		r.cmd = exec.Command(*bin, "serve", "-c", cfgPath)
		r.cmd.Stdout, r.cmd.Stderr = logf, logf
		if err := r.cmd.Start(); err != nil {
			fail("start replica %d: %v", r.id, err)
		}
		r.client = unixClient(r.socket(), 128)
	}
	defer func() {
		for _, r := range reps {
			r.cmd.Process.Signal(syscall.SIGTERM)
			r.cmd.Wait()
		}
	}()

	leader := waitLeader(reps)
	target := leader
	switch *via {
	case "leader":
	case "follower":
		for _, r := range reps {
			if r != leader {
				target = r
				break
			}
		}
	default:
		fail("-via must be leader or follower")
	}
	fmt.Printf("cluster up, leader replica %d, writing via replica %d (%s); %0.fs per writer count\n",
		leader.id, target.id, *via, *seconds)
	var counts []int
	for _, w := range strings.Split(*writersFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 1 {
			fail("bad writer count %q", w)
		}
		counts = append(counts, n)
	}
	var summary []string
	for round, n := range counts {
		ops, lat, errs := run(target, n, round, time.Duration(*seconds*float64(time.Second)))
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		opsPerS := float64(ops) / *seconds
		line := fmt.Sprintf("raft-bench writers=%d ops_per_s=%.0f p50_ms=%.2f p99_ms=%.2f",
			n, opsPerS, pct(lat, 0.50), pct(lat, 0.99))
		fmt.Printf("writers=%d acknowledged=%d errors=%d max_ms=%.2f\n", n, ops, errs, pct(lat, 1.0))
		summary = append(summary, line)
	}
	for _, l := range summary {
		fmt.Println(l)
	}
}

func waitLeader(reps []*replica) *replica {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range reps {
			st, err := r.status()
			if err != nil {
				continue
			}
			if st["role"] == "leader" {
				return r
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	fail("no leader after 30s")
	return nil
}

func run(target *replica, writers, round int, d time.Duration) (int, []float64, int) {
	var mu sync.Mutex
	var all []float64
	total, errs := 0, 0
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var lat []float64
			n, e := 0, 0
			for i := 0; time.Now().Before(deadline); i++ {
				body, _ := json.Marshal(map[string]string{"name": fmt.Sprintf("b%d-%d-%d", round, w, i)})
				t0 := time.Now()
				resp, err := target.client.Post("http://concord/api/v1/user", "application/json",
					bytes.NewReader(body))
				if err != nil {
					e++
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					e++
					continue
				}
				lat = append(lat, float64(time.Since(t0).Microseconds())/1000.0)
				n++
			}
			mu.Lock()
			all = append(all, lat...)
			total += n
			errs += e
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	return total, all, errs
}

func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return sorted[i]
}
