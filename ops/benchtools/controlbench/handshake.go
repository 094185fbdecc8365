// handshake.go: the Noise handshake load generator.
//
// A Noise IK handshake costs both sides five X25519 operations, and Go's
// X25519 is slower than the server's, so a generator that does the whole
// client side inside the measured window saturates its core before the
// server does. Two modes:
//
//   - raw (default): the initiation message (ephemeral key, es, ss) is made
//     with Tailscale's controlbase.ClientDeferred before the window opens;
//     inside it the generator writes the ts2021 upgrade request itself and
//     runs the continuation (ee, se). Two X25519 per handshake on the client
//     against the server's five.
//   - controlhttp: controlhttp.Dialer.Dial, exactly the real client's path
//     (all five X25519 plus a new http.Transport per connection).
//
// Either way a handshake ends when the client has verified the server's
// response message, i.e. the Noise session is established; the connection
// is then closed.
package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"tailscale.com/control/controlbase"
	"tailscale.com/control/controlhttp"
	"tailscale.com/net/dnscache"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
)

// initiation is a precomputed first handshake message and its continuation.
type initiation struct {
	msg  []byte
	cont controlbase.HandshakeContinuation
}

// hsResult is what one handshake run measured.
type hsResult struct {
	ok, failed int64
	inline     int64 // raw mode: initiations computed inside the window
	firstErr   error
}

func protocolVersion() uint16 { return uint16(tailcfg.CurrentCapabilityVersion) }

// newInitiation computes one initiation message for machineKey.
func (s *server) newInitiation(machineKey key.MachinePrivate) initiation {
	msg, cont, err := controlbase.ClientDeferred(machineKey, s.key, protocolVersion())
	if err != nil {
		fail("handshake initiation: %v", err)
	}
	return initiation{msg: msg, cont: cont}
}

// precompute fills a pool of n initiations on all CPUs.
func (s *server) precompute(n int) chan initiation {
	pool := make(chan initiation, n)
	machineKey := key.NewMachine()
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(count int) {
			defer wg.Done()
			for i := 0; i < count; i++ {
				pool <- s.newInitiation(machineKey)
			}
		}(n/workers + boolToInt(w < n%workers))
	}
	wg.Wait()
	return pool
}

func boolToInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// bufConn reads through the buffer that parsed the HTTP response, which
// may already hold the start of the server's Noise message.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// rawHandshake sends the ts2021 upgrade request carrying in.msg, as
// controlhttp does (POST, Upgrade, Connection, X-Tailscale-Handshake), and
// completes the handshake on the switched connection.
func (s *server) rawHandshake(ctx context.Context, in initiation) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(s.port))
	if err != nil {
		return err
	}
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	req := fmt.Sprintf("POST /ts2021 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"+
		"Upgrade: tailscale-control-protocol\r\nConnection: upgrade\r\n"+
		"X-Tailscale-Handshake: %s\r\nContent-Length: 0\r\n\r\n",
		s.port, base64.StdEncoding.EncodeToString(in.msg))
	if _, err := conn.Write([]byte(req)); err != nil {
		conn.Close()
		return err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols ||
		resp.Header.Get("Upgrade") != "tailscale-control-protocol" {
		conn.Close()
		return fmt.Errorf("upgrade: %s, Upgrade %q", resp.Status, resp.Header.Get("Upgrade"))
	}
	nc, err := in.cont(ctx, &bufConn{Conn: conn, r: br})
	if err != nil {
		conn.Close()
		return err
	}
	return nc.Close()
}

// handshakes runs conns goroutines doing handshakes back to back for d.
// pool is used in raw mode; when it runs dry, initiations are computed
// inline (and counted, since that slows the generator down).
func (s *server) handshakes(mode string, conns int, d time.Duration, pool chan initiation) hsResult {
	var ok, failed, inline atomic.Int64
	var errOnce sync.Once
	var firstErr error
	resolver := &dnscache.Resolver{} // 127.0.0.1 is a literal, no lookups
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The machine key does not change the server's work per
			// handshake, so each goroutine keeps one.
			machineKey := key.NewMachine()
			dialer := controlhttp.Dialer{
				Hostname:        "127.0.0.1",
				HTTPPort:        strconv.Itoa(s.port),
				HTTPSPort:       controlhttp.NoPort,
				MachineKey:      machineKey,
				ControlKey:      s.key,
				ProtocolVersion: protocolVersion(),
				DNSCache:        resolver,
			}
			for time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				var err error
				if mode == "controlhttp" {
					var conn *controlhttp.ClientConn
					if conn, err = dialer.Dial(ctx); err == nil {
						conn.Close()
					}
				} else {
					var in initiation
					select {
					case in = <-pool:
					default:
						in = s.newInitiation(machineKey)
						inline.Add(1)
					}
					err = s.rawHandshake(ctx, in)
				}
				cancel()
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return hsResult{ok: ok.Load(), failed: failed.Load(), inline: inline.Load(), firstErr: firstErr}
}
