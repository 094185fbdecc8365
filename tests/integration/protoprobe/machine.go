// machine.go: HTTP/2 inside Noise, the /machine/register and /machine/map
// requests the probe builds itself, and the map stream's framing (u32
// little-endian length, then one zstd frame of MapResponse JSON).
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/net/http2"
	"tailscale.com/control/controlbase"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"
)

// session is one Noise connection carrying an HTTP/2 client connection.
type session struct {
	host  string
	local string
	noise *controlbase.Conn
	h2    *http2.ClientConn
}

func (p *probe) open(ctx context.Context, mk key.MachinePrivate) (*session, error) {
	u, conn, err := p.handshake(ctx, mk)
	if err != nil {
		return nil, err
	}
	// The handshake's deadline would cut a long map stream; requests carry
	// their own context instead.
	u.raw.SetDeadline(time.Time{})
	h2, err := (&http2.Transport{}).NewClientConn(conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &session{host: p.host, local: u.raw.LocalAddr().String(), noise: conn, h2: h2}, nil
}

func (s *session) close() {
	s.h2.Close()
	s.noise.Close()
}

// post sends body as the real client does: POST https://<host><path>.
func (s *session) post(ctx context.Context, path string, nodeKey key.NodePublic, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", "https://"+s.host+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set(tailcfg.LBHeader, nodeKey.String())
	return s.h2.RoundTrip(req)
}

// answer is a complete non-streaming response.
func answer(resp *http.Response) (map[string]any, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	out := map[string]any{"status": resp.StatusCode, "body": string(body)}
	var parsed any
	if resp.StatusCode == http.StatusOK && json.Unmarshal(body, &parsed) == nil {
		out["response"] = parsed
	}
	return out, nil
}

// hostinfo is what key pair i reports about its host.
func (p *probe) hostinfo(i int) *tailcfg.Hostinfo {
	name := "probe"
	if i < len(p.hostnames) {
		name = p.hostnames[i]
	}
	return &tailcfg.Hostinfo{IPNVersion: "protoprobe", OS: "linux", Hostname: name}
}

func (p *probe) registerBody(i int, nk key.NodePrivate) ([]byte, error) {
	req := tailcfg.RegisterRequest{
		Version:  tailcfg.CurrentCapabilityVersion,
		NodeKey:  nk.Public(),
		Hostinfo: p.hostinfo(i),
	}
	if p.authKey != "" {
		req.Auth = &tailcfg.RegisterResponseAuth{AuthKey: p.authKey}
	}
	return json.Marshal(req)
}

func (p *probe) register() (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	mk, err := p.machineKey(0)
	if err != nil {
		return nil, err
	}
	nk, err := p.nodeKey(0)
	if err != nil {
		return nil, err
	}
	body, err := p.registerBody(0, nk)
	if err != nil {
		return nil, err
	}
	s, err := p.open(ctx, mk)
	if err != nil {
		return nil, err
	}
	defer s.close()
	resp, err := s.post(ctx, "/machine/register", nk.Public(), body)
	if err != nil {
		return nil, err
	}
	out, err := answer(resp)
	if err != nil {
		return nil, err
	}
	out["request"] = json.RawMessage(body)
	out["machine_key"] = mk.Public()
	out["local"] = s.local
	return out, nil
}

func (p *probe) parseEndpoints() ([]netip.AddrPort, error) {
	var eps []netip.AddrPort
	for _, text := range strings.Split(p.endpoints, ",") {
		if text == "" {
			continue
		}
		ap, err := netip.ParseAddrPort(text)
		if err != nil {
			return nil, fmt.Errorf("-endpoints: %w", err)
		}
		eps = append(eps, ap)
	}
	return eps, nil
}

// mapBody is a MapRequest as the real client words it: a long poll has
// Stream and no OmitPeers, a lite update OmitPeers and no Stream.
func (p *probe) mapBody(i int, nk key.NodePrivate, stream bool, disco key.DiscoPublic, eps []netip.AddrPort) ([]byte, error) {
	req := tailcfg.MapRequest{
		Version:   tailcfg.CurrentCapabilityVersion,
		Compress:  "zstd",
		KeepAlive: true,
		NodeKey:   nk.Public(),
		DiscoKey:  disco,
		Stream:    stream,
		OmitPeers: !stream,
		Hostinfo:  p.hostinfo(i),
		Endpoints: eps,
	}
	for range eps {
		req.EndpointTypes = append(req.EndpointTypes, tailcfg.EndpointLocal)
	}
	return json.Marshal(req)
}

// liteUpdate sends a lite update for key pair i on a connection of its own.
func (p *probe) liteUpdate(ctx context.Context, i int, disco key.DiscoPublic) (map[string]any, error) {
	mk, err := p.machineKey(i)
	if err != nil {
		return nil, err
	}
	nk, err := p.nodeKey(i)
	if err != nil {
		return nil, err
	}
	eps, err := p.parseEndpoints()
	if err != nil {
		return nil, err
	}
	body, err := p.mapBody(i, nk, false, disco, eps)
	if err != nil {
		return nil, err
	}
	s, err := p.open(ctx, mk)
	if err != nil {
		return nil, err
	}
	defer s.close()
	resp, err := s.post(ctx, "/machine/map", nk.Public(), body)
	if err != nil {
		return nil, err
	}
	out, err := answer(resp)
	if err == nil {
		out["local"] = s.local
	}
	return out, err
}

func (p *probe) mapLite() (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	return p.liteUpdate(ctx, 0, key.DiscoPublic{})
}

// mapStream is an open streaming map request.
type mapStream struct {
	s     *session
	resp  *http.Response
	zstd  *zstd.Decoder
	start time.Time
}

// message is one received MapResponse and when it arrived.
type message struct {
	AtMs int64           `json:"at_ms"`
	Msg  json.RawMessage `json:"msg"`
}

// startStream opens a long poll for key pair i; a refused one is returned
// with ms == nil and the answer in out.
func (p *probe) startStream(ctx context.Context, i int) (ms *mapStream, out map[string]any, err error) {
	mk, err := p.machineKey(i)
	if err != nil {
		return nil, nil, err
	}
	nk, err := p.nodeKey(i)
	if err != nil {
		return nil, nil, err
	}
	body, err := p.mapBody(i, nk, true, key.DiscoPublic{}, nil)
	if err != nil {
		return nil, nil, err
	}
	s, err := p.open(ctx, mk)
	if err != nil {
		return nil, nil, err
	}
	resp, err := s.post(ctx, "/machine/map", nk.Public(), body)
	if err != nil {
		s.close()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		out, err := answer(resp)
		s.close()
		if err == nil {
			out["local"] = s.local
		}
		return nil, out, err
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		s.close()
		return nil, nil, err
	}
	ms = &mapStream{s: s, resp: resp, zstd: dec, start: time.Now()}
	out = map[string]any{"status": resp.StatusCode, "local": s.local,
		"content_type": resp.Header.Get("Content-Type")}
	return ms, out, nil
}

func (ms *mapStream) close() {
	ms.resp.Body.Close()
	ms.zstd.Close()
	ms.s.close()
}

// next reads one framed message. io.EOF: the server ended the stream.
func (ms *mapStream) next() (message, error) {
	var size [4]byte
	if _, err := io.ReadFull(ms.resp.Body, size[:]); err != nil {
		return message{}, err
	}
	n := binary.LittleEndian.Uint32(size[:])
	if n == 0 || n > 16<<20 {
		return message{}, fmt.Errorf("map message length %d", n)
	}
	frame := make([]byte, n)
	if _, err := io.ReadFull(ms.resp.Body, frame); err != nil {
		return message{}, fmt.Errorf("map message body: %w", err)
	}
	plain, err := ms.zstd.DecodeAll(frame, nil)
	if err != nil {
		return message{}, fmt.Errorf("map message is not zstd: %w", err)
	}
	if !json.Valid(plain) {
		return message{}, fmt.Errorf("map message is not JSON: %q", plain)
	}
	return message{AtMs: time.Since(ms.start).Milliseconds(), Msg: plain}, nil
}

// readUntil reads messages until done says so, the stream ends, or ctx
// expires; out gets them and how the reading stopped.
func (ms *mapStream) readUntil(ctx context.Context, out map[string]any, done func(message) bool) error {
	msgs := []message{}
	defer func() { out["messages"] = msgs }()
	for {
		m, err := ms.next()
		switch {
		case err == nil:
			msgs = append(msgs, m)
			if done(m) {
				out["stopped"] = "done"
				return nil
			}
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			out["stopped"] = "stream ended"
			return nil
		case ctx.Err() != nil:
			out["stopped"] = "timeout"
			return nil
		default:
			return err
		}
	}
}

func (p *probe) mapStream() (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	ms, out, err := p.startStream(ctx, 0)
	if err != nil || ms == nil {
		return out, err
	}
	defer ms.close()
	count := 0
	err = ms.readUntil(ctx, out, func(m message) bool {
		count++
		if p.untilKeepAlive {
			var r struct{ KeepAlive bool }
			return json.Unmarshal(m.Msg, &r) == nil && r.KeepAlive
		}
		return count >= p.messages
	})
	return out, err
}

// peerIDByKey finds the peer with node key nk in a full MapResponse.
func peerIDByKey(full json.RawMessage, nk key.NodePublic) (tailcfg.NodeID, bool) {
	var r struct {
		Peers []struct {
			ID  tailcfg.NodeID
			Key key.NodePublic
		}
	}
	if json.Unmarshal(full, &r) != nil {
		return 0, false
	}
	for _, peer := range r.Peers {
		if peer.Key == nk {
			return peer.ID, true
		}
	}
	return 0, false
}

// mentions reports whether a delta changes or patches node id.
func mentions(m json.RawMessage, id tailcfg.NodeID) bool {
	var r struct {
		PeersChanged      []struct{ ID tailcfg.NodeID }
		PeersChangedPatch []struct{ NodeID tailcfg.NodeID }
	}
	if json.Unmarshal(m, &r) != nil {
		return false
	}
	for _, n := range r.PeersChanged {
		if n.ID == id {
			return true
		}
	}
	for _, n := range r.PeersChangedPatch {
		if n.NodeID == id {
			return true
		}
	}
	return false
}

// liteWatch: node B (key pair 1) streams its map; node A (key pair 0) sends
// a lite update; B's stream is read until A's change arrives.
func (p *probe) liteWatch() (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	nkA, err := p.nodeKey(0)
	if err != nil {
		return nil, err
	}
	ms, out, err := p.startStream(ctx, 1)
	if err != nil || ms == nil {
		return out, err
	}
	defer ms.close()
	first, err := ms.next()
	if err != nil {
		return nil, fmt.Errorf("first map message: %w", err)
	}
	out["first"] = first
	idA, ok := peerIDByKey(first.Msg, nkA.Public())
	if !ok {
		return nil, fmt.Errorf("node A (%v) is not among B's peers", nkA.Public())
	}
	out["peer_id"] = idA
	disco := key.NewDisco().Public()
	out["disco_key"] = disco
	lite, err := p.liteUpdate(ctx, 0, disco)
	if err != nil {
		return nil, fmt.Errorf("lite update: %w", err)
	}
	out["lite"] = lite
	err = ms.readUntil(ctx, out, func(m message) bool { return mentions(m.Msg, idA) })
	return out, err
}
