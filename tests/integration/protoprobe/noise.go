// noise.go: keys, the /ts2021 upgrade done by hand (so that its header can
// carry anything), the Noise handshake through controlbase, and the
// record-level scenarios, which write to the TCP connection under Noise.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"tailscale.com/control/controlbase"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
)

const (
	recordTypeTransport = 4
	maxRecordBytes      = 4096 // header included (protocol section 4.6)
	initiationBytes     = 101
)

func capVersion() uint16 { return uint16(tailcfg.CurrentCapabilityVersion) }

// textKey is what a key file holds: MarshalText / UnmarshalText.
type textKey interface {
	MarshalText() ([]byte, error)
	UnmarshalText([]byte) error
}

// loadOrCreate reads k from path, or writes fresh (already in k) there when
// the file does not exist yet.
func loadOrCreate(path string, k textKey) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		text, err := k.MarshalText()
		if err != nil {
			return err
		}
		return os.WriteFile(path, append(text, '\n'), 0o600)
	}
	if err != nil {
		return err
	}
	if len(b) > 0 && b[len(b)-1] == '\n' {
		b = b[:len(b)-1]
	}
	return k.UnmarshalText(b)
}

// machineKey is the i-th -machinekey-file's key; a new random one when the
// flag was not given that often.
func (p *probe) machineKey(i int) (key.MachinePrivate, error) {
	k := key.NewMachine()
	if i >= len(p.machineFiles) {
		return k, nil
	}
	err := loadOrCreate(p.machineFiles[i], &k)
	return k, err
}

func (p *probe) nodeKey(i int) (key.NodePrivate, error) {
	k := key.NewNode()
	if i >= len(p.nodeFiles) {
		return k, fmt.Errorf("this scenario needs %d -nodekey-file flags", i+1)
	}
	err := loadOrCreate(p.nodeFiles[i], &k)
	return k, err
}

// serverKey fetches the replica's Noise public key from /key.
func (p *probe) serverKey(ctx context.Context) (key.MachinePublic, error) {
	var out struct{ PublicKey key.MachinePublic }
	url := fmt.Sprintf("http://%s/key?v=%d", p.host, capVersion())
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return out.PublicKey, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return out.PublicKey, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return out.PublicKey, fmt.Errorf("GET /key: %s", resp.Status)
	}
	err = json.NewDecoder(resp.Body).Decode(&out)
	return out.PublicKey, err
}

// bufConn reads through the reader that parsed the 101 response, which may
// already hold the start of the server's Noise message.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// upgraded is a TCP connection after the upgrade request.
type upgraded struct {
	raw  *net.TCPConn
	br   *bufio.Reader
	resp *http.Response
}

// upgrade sends the request controlhttp sends (protocol section 3.1) with
// handshakeB64 as X-Tailscale-Handshake and reads the response head. A
// connection the server closes instead of answering gives resp == nil.
func (p *probe) upgrade(ctx context.Context, handshakeB64 string) (*upgraded, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", p.host)
	if err != nil {
		return nil, err
	}
	if deadline, ok := ctx.Deadline(); ok {
		c.SetDeadline(deadline)
	}
	req := fmt.Sprintf("POST /ts2021 HTTP/1.1\r\nHost: %s\r\n"+
		"Upgrade: tailscale-control-protocol\r\nConnection: upgrade\r\n"+
		"X-Tailscale-Handshake: %s\r\nContent-Length: 0\r\n\r\n", p.host, handshakeB64)
	if _, err := c.Write([]byte(req)); err != nil {
		c.Close()
		return nil, err
	}
	u := &upgraded{raw: c.(*net.TCPConn), br: bufio.NewReader(c)}
	u.resp, err = http.ReadResponse(u.br, nil)
	if err != nil && !isClosed(err) {
		c.Close()
		return nil, err
	}
	return u, nil
}

// handshake upgrades and completes the Noise handshake as machine mk.
func (p *probe) handshake(ctx context.Context, mk key.MachinePrivate) (*upgraded, *controlbase.Conn, error) {
	serverKey, err := p.serverKey(ctx)
	if err != nil {
		return nil, nil, err
	}
	init, cont, err := controlbase.ClientDeferred(mk, serverKey, capVersion())
	if err != nil {
		return nil, nil, err
	}
	u, err := p.upgrade(ctx, base64.StdEncoding.EncodeToString(init))
	if err != nil {
		return nil, nil, err
	}
	if u.resp == nil || u.resp.StatusCode != http.StatusSwitchingProtocols {
		u.raw.Close()
		return nil, nil, fmt.Errorf("upgrade refused: %v", upgradeOutcome(u))
	}
	conn, err := cont(ctx, &bufConn{Conn: u.raw, r: u.br})
	if err != nil {
		u.raw.Close()
		return nil, nil, err
	}
	return u, conn, nil
}

func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// upgradeOutcome reports a refused upgrade: status and body, or closed.
func upgradeOutcome(u *upgraded) map[string]any {
	if u.resp == nil {
		return map[string]any{"closed": true}
	}
	body, _ := io.ReadAll(io.LimitReader(u.resp.Body, 4096))
	return map[string]any{"status": u.resp.StatusCode, "body": string(body)}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// refusedUpgrade sends an upgrade carrying init (base64) and reports the answer.
func (p *probe) refusedUpgrade(init []byte) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	u, err := p.upgrade(ctx, base64.StdEncoding.EncodeToString(init))
	if err != nil {
		return nil, err
	}
	defer u.raw.Close()
	out := upgradeOutcome(u)
	out["local"] = u.raw.LocalAddr().String()
	return out, nil
}

// initiationHeader writes the 5-byte header of a type-1 message into b.
func initiationHeader(b []byte, version uint16, msgType byte) {
	binary.BigEndian.PutUint16(b[0:2], version)
	b[2] = msgType
	binary.BigEndian.PutUint16(b[3:5], initiationBytes-5)
}

func (p *probe) garbageHandshake() (any, error) {
	init := randomBytes(initiationBytes)
	// A current version and a type that is not "initiation": the server
	// gets past its version check and must refuse the message itself.
	initiationHeader(init, capVersion(), 0x01^0xff)
	return p.refusedUpgrade(init)
}

func (p *probe) garbagePayload() (any, error) {
	init := randomBytes(initiationBytes)
	initiationHeader(init, capVersion(), 0x01)
	return p.refusedUpgrade(init)
}

func (p *probe) shortHandshake() (any, error) {
	init := randomBytes(initiationBytes - 1)
	initiationHeader(init, capVersion(), 0x01)
	return p.refusedUpgrade(init)
}

func (p *probe) oldVersion() (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	serverKey, err := p.serverKey(ctx)
	if err != nil {
		return nil, err
	}
	mk, err := p.machineKey(0)
	if err != nil {
		return nil, err
	}
	init, _, err := controlbase.ClientDeferred(mk, serverKey, 100)
	if err != nil {
		return nil, err
	}
	return p.refusedUpgrade(init)
}

// recordScenario completes a handshake, writes what send writes on the TCP
// connection under Noise, and reports whether and when the server closes it.
func (p *probe) recordScenario(send func(c *net.TCPConn) error) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	mk, err := p.machineKey(0)
	if err != nil {
		return nil, err
	}
	u, _, err := p.handshake(ctx, mk)
	if err != nil {
		return nil, err
	}
	defer u.raw.Close()
	if err := send(u.raw); err != nil {
		return nil, fmt.Errorf("writing the record: %w", err)
	}
	start := time.Now()
	out := waitClosed(u.br)
	out["after_ms"] = time.Since(start).Milliseconds()
	out["local"] = u.raw.LocalAddr().String()
	return out, nil
}

// waitClosed reads (and discards: the server's HTTP/2 settings, in Noise
// records) until the server closes the connection or the deadline passes.
func waitClosed(r io.Reader) map[string]any {
	n, err := io.Copy(io.Discard, r)
	out := map[string]any{"received_bytes": n}
	switch {
	case err == nil:
		out["closed"], out["how"] = true, "eof"
	case errors.Is(err, syscall.ECONNRESET):
		out["closed"], out["how"] = true, "reset"
	case errors.Is(err, os.ErrDeadlineExceeded):
		out["closed"], out["how"] = false, "still open at the deadline"
	default:
		out["closed"], out["how"] = false, err.Error()
	}
	return out
}

func recordHeader(length int) []byte {
	return []byte{recordTypeTransport, byte(length >> 8), byte(length)}
}

func (p *probe) garbageRecord() (any, error) {
	return p.recordScenario(func(c *net.TCPConn) error {
		// 48 bytes: a 32-byte "plaintext" and a tag that cannot verify.
		_, err := c.Write(append(recordHeader(48), randomBytes(48)...))
		return err
	})
}

func (p *probe) oversizedRecord() (any, error) {
	return p.recordScenario(func(c *net.TCPConn) error {
		_, err := c.Write(append(recordHeader(5000), randomBytes(maxRecordBytes)...))
		return err
	})
}

func (p *probe) truncatedRecord() (any, error) {
	return p.recordScenario(func(c *net.TCPConn) error {
		if _, err := c.Write(append(recordHeader(200), randomBytes(100)...)); err != nil {
			return err
		}
		return c.CloseWrite()
	})
}
