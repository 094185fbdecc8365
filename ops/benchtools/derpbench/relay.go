// The DERP side of derpbench: the nodes' relay connections and the two
// measurements over them.
//
// Every packet starts with a header: a kind byte, the sequence number and,
// for latency probes, the send time. Rate packets carry a fixed pattern
// after it, which the receiver compares, so a relay that damages or
// reorders packets is caught rather than counted.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tailscale.com/derp"
	"tailscale.com/derp/derphttp"
	"tailscale.com/net/netmon"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
	"tailscale.com/types/logger"
)

const (
	kindRate  = 'T' // counted by the receiver
	kindPing  = 'P' // sent back by the receiver
	kindReply = 'R' // a ping on its way back

	headerBytes = 1 + 8 + 8 // kind, sequence number, send time (ns since epoch)
	pingBytes   = 64        // the header and, in a reply, when b received the ping
)

// epoch is the origin of the send times in latency probes; both ends are in
// this process, so the monotonic clock serves.
var epoch = time.Now()

// peer is one node's connection to the relay, with a goroutine reading it.
type peer struct {
	name    string
	pub     key.NodePublic
	client  *derphttp.Client
	closing atomic.Bool

	// Rate packets received, and how many of them were out of order or
	// damaged.
	received atomic.Int64
	bad      atomic.Int64
	lastSeq  uint64 // reader only

	pattern []byte // what follows the header of a rate packet (set before read runs)

	// This node's latency probes (as the pinging A): the time to b, back
	// from b, and the round trip.
	mu    sync.Mutex
	there []time.Duration
	back  []time.Duration
	rtts  []time.Duration

	// Anything else the relay said: PeerGone for a node that should be
	// there, reconnections (the client redials on its own after an error).
	peerGone  atomic.Int64
	reconnect atomic.Int64
}

// pair is a sender and a receiver.
type pair struct{ a, b *peer }

// connectRegistered registers 2*p.pairs nodes through the first replica,
// waits until every replica has them and connects each A to relay a and
// each B to relay b, through the region the DERP map puts them in. It
// returns nil when a and b are different regions: no mesh to measure.
func connectRegistered(p params, reps []*server, a, b *server) []pair {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tn := newTailnet(reps[0])
	keys := make([]key.NodePrivate, 2*p.pairs)
	var m *tailcfg.DERPMap
	for i := range keys {
		c, k := tn.register(ctx, nodeName(i))
		if m == nil {
			m = derpMap(ctx, c, k, reps)
		}
		c.Close()
		keys[i] = k
	}
	waitApplied(reps)
	ra, _ := relayNode(m, a.derpPort)
	rb, _ := relayNode(m, b.derpPort)
	if ra.RegionID != rb.RegionID {
		fmt.Printf("the relays are regions %d and %d (no mesh): nothing to measure\n",
			ra.RegionID, rb.RegionID)
		return nil
	}
	return connectPairs(ctx, p, keys, onlyNode(m, a.derpPort), onlyNode(m, b.derpPort))
}

// connectAnonymous connects 2*p.pairs new node keys to a relay that admits
// any key.
func connectAnonymous(p params, region *tailcfg.DERPRegion) []pair {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	keys := make([]key.NodePrivate, 2*p.pairs)
	for i := range keys {
		keys[i] = key.NewNode()
	}
	return connectPairs(ctx, p, keys, region, region)
}

func nodeName(i int) string { return fmt.Sprintf("%c%d", "ab"[i%2], i/2) }

// connectPairs connects the nodes with even index (the As) through region
// ra and the others (the Bs) through rb, and checks that each pair can
// reach each other.
func connectPairs(ctx context.Context, p params, keys []key.NodePrivate, ra, rb *tailcfg.DERPRegion) []pair {
	for i, r := range []*tailcfg.DERPRegion{ra, rb} {
		n := r.Nodes[0]
		fmt.Printf("relay of the %cs: region %d (%s) %s:%d, CertName %q\n", "AB"[i], r.RegionID,
			r.RegionCode, n.HostName, n.DERPPort, n.CertName)
	}
	var ps []pair
	for i := 0; i < p.pairs; i++ {
		pr := pair{a: newPeer(nodeName(2*i), keys[2*i], ra, p.verbose),
			b: newPeer(nodeName(2*i+1), keys[2*i+1], rb, p.verbose)}
		pr.b.pattern = bytes.Repeat([]byte{byte(0xa5 ^ i)}, p.size-headerBytes)
		ps = append(ps, pr)
	}
	for _, pr := range ps {
		for _, n := range []*peer{pr.a, pr.b} {
			if err := n.client.Connect(ctx); err != nil {
				fail("%s: connect: %v", n.name, err)
			}
			if state, ok := n.client.TLSConnectionState(); !ok || !state.HandshakeComplete {
				fail("%s: no TLS session", n.name)
			}
			go n.read()
		}
	}
	for _, pr := range ps {
		warmUp(ctx, pr)
	}
	fmt.Printf("%d nodes connected (TLS, certificate pinned), every pair reaches each other\n",
		len(keys))
	return ps
}

func newPeer(name string, k key.NodePrivate, region *tailcfg.DERPRegion, verbose bool) *peer {
	logf := logger.Discard
	if verbose {
		logf = func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, name+": "+format+"\n", args...)
		}
	}
	p := &peer{name: name, pub: k.Public()}
	p.client = derphttp.NewRegionClient(k, logf, netmon.NewStatic(),
		func() *tailcfg.DERPRegion { return region })
	mu.Lock()
	peers = append(peers, p)
	mu.Unlock()
	return p
}

// warmUp pings b from a until a reply arrives: the relay has taken both
// client infos and the path works both ways.
func warmUp(ctx context.Context, pr pair) {
	for seq := uint64(1); ctx.Err() == nil; seq++ {
		sendPing(pr, seq)
		time.Sleep(20 * time.Millisecond)
		pr.a.mu.Lock()
		got := len(pr.a.rtts)
		pr.a.mu.Unlock()
		if got > 0 {
			// Pings and replies sent before the relays knew both
			// ends were answered with PeerGone; forget those once
			// they have arrived.
			time.Sleep(100 * time.Millisecond)
			pr.a.peerGone.Store(0)
			pr.b.peerGone.Store(0)
			return
		}
	}
	fail("%s cannot reach %s through the relay", pr.a.name, pr.b.name)
}

func sendPing(pr pair, seq uint64) {
	pkt := make([]byte, pingBytes)
	putHeader(pkt, kindPing, seq, int64(time.Since(epoch)))
	if err := pr.a.client.Send(pr.b.pub, pkt); err != nil {
		fail("%s: send: %v", pr.a.name, err)
	}
}

func putHeader(pkt []byte, kind byte, seq uint64, sent int64) {
	pkt[0] = kind
	binary.BigEndian.PutUint64(pkt[1:], seq)
	binary.BigEndian.PutUint64(pkt[9:], uint64(sent))
}

// read handles everything the relay sends this node until it is closed.
func (p *peer) read() {
	firstGen := 0
	for {
		m, gen, err := p.client.RecvDetail()
		if err != nil {
			if p.closing.Load() || errors.Is(err, derphttp.ErrClientClosed) {
				return
			}
			fail("%s: receive: %v", p.name, err)
		}
		if firstGen == 0 {
			firstGen = gen
		} else if gen != firstGen {
			p.reconnect.Add(1)
			firstGen = gen
		}
		switch m := m.(type) {
		case derp.ReceivedPacket:
			p.packet(m)
		case derp.PeerGoneMessage:
			p.peerGone.Add(1)
		}
	}
}

func (p *peer) packet(m derp.ReceivedPacket) {
	if len(m.Data) < headerBytes {
		p.bad.Add(1)
		return
	}
	seq := binary.BigEndian.Uint64(m.Data[1:])
	switch m.Data[0] {
	case kindRate:
		if seq <= p.lastSeq || !bytes.Equal(m.Data[headerBytes:], p.pattern) {
			p.bad.Add(1)
		}
		p.lastSeq = seq
		p.received.Add(1)
	case kindPing:
		if len(m.Data) < headerBytes+8 {
			p.bad.Add(1)
			return
		}
		// Data aliases the receive buffer; Send is done with it on return.
		m.Data[0] = kindReply
		binary.BigEndian.PutUint64(m.Data[headerBytes:], uint64(time.Since(epoch)))
		if err := p.client.Send(m.Source, m.Data); err != nil && !p.closing.Load() {
			fail("%s: send reply: %v", p.name, err)
		}
	case kindReply:
		if len(m.Data) < headerBytes+8 {
			p.bad.Add(1)
			return
		}
		now := time.Since(epoch)
		sent := time.Duration(binary.BigEndian.Uint64(m.Data[9:]))
		atB := time.Duration(binary.BigEndian.Uint64(m.Data[headerBytes:]))
		p.mu.Lock()
		p.there = append(p.there, atB-sent)
		p.back = append(p.back, now-atB)
		p.rtts = append(p.rtts, now-sent)
		p.mu.Unlock()
	default:
		p.bad.Add(1)
	}
}

// close ends the connection; the reader sees ErrClientClosed and returns.
func (p *peer) close() {
	p.closing.Store(true)
	p.client.Close()
}

// measureRate has every A send size-byte packets to its B for d, back to
// back or at most pace a second, waits until the Bs stop receiving, prints
// the details and returns the packets received per second of sending.
func measureRate(ps []pair, size, pace int, d time.Duration, reps []*server) float64 {
	cpuSrv0 := make([]time.Duration, len(reps))
	for i, s := range reps {
		cpuSrv0[i] = s.cpu()
	}
	cpuGen0, t0 := cpuSelf(), time.Now()
	sent := send(ps, size, pace, d)
	wall := time.Since(t0).Seconds()
	cpuGen, cpuSrv, perSrv := (cpuSelf() - cpuGen0).Seconds(), 0.0, []string{}
	for i, s := range reps {
		c := (s.cpu() - cpuSrv0[i]).Seconds()
		cpuSrv += c
		perSrv = append(perSrv, fmt.Sprintf("%d: %.2f", s.id, c))
	}
	received := drain(ps)
	var bad int64
	for _, pr := range ps {
		bad += pr.b.bad.Load()
	}
	pps := float64(received) / wall
	paced := "back to back"
	if pace > 0 {
		paced = fmt.Sprintf("at most %d/s per sender", pace)
	}
	fmt.Printf("rate: %d pair(s), %d-byte packets %s for %.1fs: sent %d (%.0f/s), received %d "+
		"(%.0f/s, %.1f MB/s), dropped %d (%.1f%%), out of order or damaged %d\n",
		len(ps), size, paced, wall, sent, float64(sent)/wall, received, pps,
		pps*float64(size)/1e6, sent-received, 100*float64(sent-received)/float64(max(sent, 1)), bad)
	fmt.Printf("CPU seconds: generator (senders and receivers) %.2f (%.0f%% of a core), "+
		"server %.2f (%.0f%%)", cpuGen, 100*cpuGen/wall, cpuSrv, 100*cpuSrv/wall)
	if len(reps) > 1 {
		fmt.Printf(", per replica %s", strings.Join(perSrv, ", "))
	}
	fmt.Println()
	if received > 0 && cpuSrv > 0 {
		fmt.Printf("server CPU per packet sent to it %.2f us, per packet relayed %.2f us\n",
			cpuSrv/float64(sent)*1e6, cpuSrv/float64(received)*1e6)
	}
	return pps
}

// send runs one sender per pair for d and returns how many packets they
// handed to their connections.
func send(ps []pair, size, pace int, d time.Duration) int64 {
	var stop atomic.Bool
	var total atomic.Int64
	var wg sync.WaitGroup
	for _, pr := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pkt := make([]byte, size)
			copy(pkt[headerBytes:], pr.b.pattern)
			start := time.Now()
			seq := uint64(1)
			for ; !stop.Load(); seq++ {
				// Paced: sleep whenever ahead of schedule, so the packets
				// go out in bursts of about a millisecond's worth.
				for pace > 0 && float64(seq) > float64(pace)*time.Since(start).Seconds() {
					time.Sleep(time.Millisecond)
				}
				putHeader(pkt, kindRate, seq, 0)
				if err := pr.a.client.Send(pr.b.pub, pkt); err != nil {
					fail("%s: send: %v", pr.a.name, err)
				}
			}
			total.Add(int64(seq - 1))
		}()
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	return total.Load()
}

// drain waits until the receivers have counted nothing new for 300 ms and
// returns their total.
func drain(ps []pair) int64 {
	count := func() (n int64) {
		for _, pr := range ps {
			n += pr.b.received.Load()
		}
		return n
	}
	last := count()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(300 * time.Millisecond)
		n := count()
		if n == last {
			break
		}
		last = n
	}
	return last
}

// measureLatency has pr.a ping pr.b rate times a second for d, prints the
// round-trip percentiles and returns the p99 in microseconds.
func measureLatency(pr pair, rate int, d time.Duration) float64 {
	pr.a.mu.Lock()
	pr.a.there, pr.a.back, pr.a.rtts = nil, nil, nil
	pr.a.mu.Unlock()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var seq uint64
	for end := time.Now().Add(d); time.Now().Before(end); {
		<-tick.C
		seq++
		sendPing(pr, seq)
	}
	// Stragglers: a reply later than this is counted as lost.
	time.Sleep(time.Second)
	pr.a.mu.Lock()
	there, back, rtts := slices.Clone(pr.a.there), slices.Clone(pr.a.back), slices.Clone(pr.a.rtts)
	pr.a.mu.Unlock()
	if len(rtts) == 0 {
		fail("latency: no replies to %d pings", seq)
	}
	fmt.Printf("latency: %d-byte pings %s -> %s -> %s at %d/s for %.1fs: %d sent, %d answered, "+
		"%d lost\n", pingBytes, pr.a.name, pr.b.name, pr.a.name, rate, d.Seconds(), seq,
		len(rtts), int64(seq)-int64(len(rtts)))
	fmt.Printf("  one way %s -> %s: %s\n", pr.a.name, pr.b.name, percentiles(there))
	fmt.Printf("  one way %s -> %s: %s\n", pr.b.name, pr.a.name, percentiles(back))
	fmt.Printf("  round trip: %s\n", percentiles(rtts))
	return quantile(rtts, 0.99)
}

// quantile returns the f-quantile of sorted ds in microseconds.
func quantile(ds []time.Duration, f float64) float64 {
	return float64(ds[int(f*float64(len(ds)-1))].Nanoseconds()) / 1e3
}

// percentiles sorts ds and formats its p50, p90, p99 and maximum.
func percentiles(ds []time.Duration) string {
	slices.Sort(ds)
	return fmt.Sprintf("p50 %.0f us, p90 %.0f us, p99 %.0f us, max %.0f us", quantile(ds, 0.5),
		quantile(ds, 0.9), quantile(ds, 0.99), quantile(ds, 1))
}

// checkClients fails the run if the relay said a connected peer was gone or
// a client had to reconnect: both mean the relay dropped a connection.
func checkClients(ps []pair) {
	for _, pr := range ps {
		for _, p := range []*peer{pr.a, pr.b} {
			if n := p.peerGone.Load(); n > 0 {
				fail("%s was told %d time(s) that its peer is gone", p.name, n)
			}
			if n := p.reconnect.Load(); n > 0 {
				fail("%s reconnected %d time(s)", p.name, n)
			}
			if n := p.bad.Load(); n > 0 {
				fail("%s received %d out-of-order or damaged packet(s)", p.name, n)
			}
		}
	}
}
