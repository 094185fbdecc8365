// derpbench measures concord's embedded DERP relays on loopback, driving
// them with Tailscale's own DERP client (tailscale.com/derp/derphttp), in
// two setups:
//
//   - local: one replica; pairs of nodes (A sends, B receives) both
//     connected to its relay;
//   - mesh: two replicas whose relays mesh; every A is connected to the
//     first relay and its B to the second, so each packet crosses the
//     mesh link. A cluster whose relays do not mesh (a region per relay)
//     has nothing to measure there, and the mesh numbers are 0.
//
// The nodes are registered with tailscale.com/control/tsp, so that the
// relays admit their node keys, and connect through the DERP map the
// replica sends them (TLS verified against the CertName pin). In each
// setup:
//
//  1. Relayed packets per second: every A sends -size byte packets to its B
//     for -seconds, back to back or at most -pace a second; the rate is
//     what the Bs received.
//  2. Latency: A sends small packets to B at -ping-rate, B sends each one
//     straight back; both ends are in this process, so the two one-way
//     times and the round trip are measured on one clock.
//
// -derper runs the local setup against Tailscale's relay instead (with a
// self-signed certificate, admitting any key), for comparison.
//
// For the rate, the servers are pinned to CPU 0 and this generator to CPU 1
// when the machine has both and taskset exists. The last line is
//
//	derp-bench local_pps=N mesh_pps=N local_p99_us=N mesh_p99_us=N
//
// with the rates of the first measurement and the p99 round trips.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	baseDir string // everything the servers write, removed at the end

	// What a failure or an interrupt must end, under mu: the servers
	// running now and the DERP clients connected to them.
	mu      sync.Mutex
	servers []*server
	peers   []*peer

	failing atomic.Bool
)

// stopServers closes the DERP clients, then stops the servers; the error
// names the first server that did not exit cleanly.
func stopServers() error {
	mu.Lock()
	defer mu.Unlock()
	for _, p := range peers {
		p.close()
	}
	peers = nil
	var first error
	for _, s := range servers {
		if err := s.stop(); err != nil && first == nil {
			first = fmt.Errorf("server %d: %w", s.id, err)
		}
	}
	return first
}

// fail prints the message, how a server ended if one did on its own and
// the tail of their logs, stops everything and exits. Only the first
// caller reports: the others' errors are consequences (a crashed relay
// fails every client).
func fail(format string, args ...any) {
	if failing.Swap(true) {
		select {}
	}
	fmt.Fprintf(os.Stderr, "derpbench: "+format+"\n", args...)
	mu.Lock()
	running := append([]*server(nil), servers...)
	mu.Unlock()
	// A crash reaches the clients before the server is reaped.
	time.Sleep(300 * time.Millisecond)
	for _, s := range running {
		if !s.stopped && !s.alive() {
			fmt.Fprintf(os.Stderr, "derpbench: server %d exited by itself: %v\n", s.id, s.exitErr)
		}
	}
	stopServers()
	for _, s := range running {
		s.printLog(os.Stderr, 30)
	}
	os.RemoveAll(baseDir)
	os.Exit(1)
}

// canPin reports whether the servers and the generator can get a core each.
func canPin() bool {
	_, err := exec.LookPath("taskset")
	return err == nil && runtime.NumCPU() >= 2
}

// pinSelf moves every thread of this process to cpu, with one P for the Go
// scheduler.
func pinSelf(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	if err := setAffinity(os.Getpid(), &set); err != nil {
		return err
	}
	runtime.GOMAXPROCS(1)
	return nil
}

// unpin lets this process and the servers run on every CPU again.
func unpin(reps []*server) error {
	var set unix.CPUSet
	for cpu := 0; cpu < runtime.NumCPU(); cpu++ {
		set.Set(cpu)
	}
	for _, s := range reps {
		if err := setAffinity(s.cmd.Process.Pid, &set); err != nil {
			return err
		}
	}
	if err := setAffinity(os.Getpid(), &set); err != nil {
		return err
	}
	runtime.GOMAXPROCS(runtime.NumCPU())
	return nil
}

// setAffinity sets the CPU mask of every thread of process pid. Threads
// created later are cloned from these and inherit it.
func setAffinity(pid int, set *unix.CPUSet) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, set); err != nil {
			return err
		}
	}
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

// params are the measurement flags.
type params struct {
	pairs, size, pace, pingRate int
	seconds, pingSeconds        time.Duration
	verbose                     bool
}

// result is what one setup measured.
type result struct{ pps, p99 float64 }

func main() {
	bin := flag.String("bin", "build/concord", "concord binary")
	var p params
	seconds := flag.Float64("seconds", 5, "duration of the packet rate measurement")
	flag.IntVar(&p.size, "size", 1024, "payload bytes of a packet in the rate measurement")
	flag.IntVar(&p.pairs, "pairs", 1, "sender/receiver node pairs in the rate measurement")
	flag.IntVar(&p.pace, "pace", 0, "packets/s each sender sends at most (0: back to back)")
	flag.IntVar(&p.pingRate, "ping-rate", 500, "round trips started per second")
	pingSeconds := flag.Float64("ping-seconds", 4, "duration of the latency measurement")
	mesh := flag.Bool("mesh", true, "also measure across two meshed replicas")
	derper := flag.String("derper", "", "measure this derper binary (Tailscale's relay) instead, for comparison")
	pin := flag.Bool("pin", true, "servers on CPU 0, generator on CPU 1 (needs taskset and 2 CPUs)")
	flag.BoolVar(&p.verbose, "v", false, "print the DERP clients' log")
	flag.Parse()
	p.seconds = time.Duration(*seconds * float64(time.Second))
	p.pingSeconds = time.Duration(*pingSeconds * float64(time.Second))
	if p.size < headerBytes || p.size > 65536 || p.pairs < 1 || p.pace < 0 || p.pingRate < 1 {
		fail("need %d <= -size <= 65536, -pairs >= 1, -pace >= 0, -ping-rate >= 1", headerBytes)
	}

	var err error
	baseDir, err = os.MkdirTemp("", "concord-derpbench-")
	if err != nil {
		fail("%v", err)
	}
	defer os.RemoveAll(baseDir)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		fail("interrupted")
	}()

	*pin = *pin && canPin()
	var local, meshed result
	if *derper != "" {
		fmt.Println("== local: Tailscale's derper")
		s, region := startDerper(*derper, *pin)
		local = measure(p, connectAnonymous(p, region), *pin, []*server{s})
	} else {
		fmt.Println("== local: one replica, both nodes of each pair on its relay")
		reps := startCluster("local", 1, *bin, *pin)
		local = measure(p, connectRegistered(p, reps, reps[0], reps[0]), *pin, reps)
		if *mesh {
			fmt.Println("== mesh: two replicas, A on the first relay, B on the second")
			reps = startCluster("mesh", 2, *bin, *pin)
			if ps := connectRegistered(p, reps, reps[0], reps[1]); ps != nil {
				meshed = measure(p, ps, *pin, reps)
			} else {
				stopAll(reps)
			}
		}
	}
	fmt.Printf("derp-bench local_pps=%.0f mesh_pps=%.0f local_p99_us=%.0f mesh_p99_us=%.0f\n",
		local.pps, meshed.pps, local.p99, meshed.p99)
}

// measure runs both measurements over ps, then checks what the clients
// saw and stops reps. The rate is measured pinned (the servers were
// started on CPU 0, this process moves to CPU 1): a saturated generator
// must not take the servers' core. The latency is measured unpinned: at
// its modest rate pinning protects nothing, and on a machine that runs
// anything else a woken thread confined to one busy core waits for it,
// which is the scheduler's delay, not the relay's.
func measure(p params, ps []pair, pin bool, reps []*server) result {
	if pin {
		if err := pinSelf(1); err != nil {
			fail("pin generator: %v", err)
		}
		fmt.Println("rate: servers pinned to CPU 0, generator to CPU 1")
	} else {
		fmt.Println("rate: not pinned, servers and generator share the CPUs")
	}
	var r result
	r.pps = measureRate(ps, p.size, p.pace, p.seconds, reps)
	if pin {
		if err := unpin(reps); err != nil {
			fail("unpin: %v", err)
		}
	}
	r.p99 = measureLatency(ps[0], p.pingRate, p.pingSeconds)
	checkClients(ps)
	stopAll(reps)
	return r
}

// stopAll stops the servers, failing the run unless each one was still
// running and exits cleanly, and prints the end of their logs.
func stopAll(reps []*server) {
	for _, s := range reps {
		if !s.alive() {
			fail("server %d exited during the run: %v", s.id, s.exitErr)
		}
	}
	if err := stopServers(); err != nil {
		fail("no clean shutdown: %v", err)
	}
	mu.Lock()
	servers = nil
	mu.Unlock()
	for _, s := range reps {
		s.printLog(os.Stdout, 4)
	}
}
