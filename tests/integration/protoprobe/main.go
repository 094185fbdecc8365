// protoprobe: speaks the Tailscale control protocol (ts2021) to a concord
// replica the way no real client would, and prints what came back as one
// JSON line on stdout. tests/integration/test_protocol.py drives it.
//
// A real client only ever asks for its own node with its own machine key,
// never replays a registration byte for byte on purpose, and its Noise layer
// never writes a forged or truncated record. The probe does each of these on
// request, one scenario per run:
//
//	register           POST /machine/register for the first key pair
//	map-stream         streaming MapRequest; reads -messages messages, or up
//	                   to the first keepalive with -until-keepalive
//	map-lite           lite update (OmitPeers, no Stream) with -endpoints
//	lite-watch         streams the map of the second key pair's node, then
//	                   sends the first's lite update with -endpoints and a
//	                   fresh disco key, and reads until the change arrives
//	garbage-record     a transport record with a correct header and a wrong tag
//	oversized-record   a record header announcing more than 4096 bytes
//	truncated-record   half a record, then the write side is shut
//	garbage-handshake  a 101-byte initiation whose type byte is wrong
//	garbage-payload    an initiation with a correct header and random payload
//	short-handshake    an X-Tailscale-Handshake of 100 bytes
//	old-version        a real initiation for capability version 100
//
// Key pairs come from -machinekey-file and -nodekey-file (repeatable, paired
// by position): files holding "privkey:<hex>", created with a new key when
// missing, so that several runs act as the same machine and node. Each pair's
// Hostinfo carries the -hostname at the same position: the server stores
// what a request reports, so a node's requests must keep reporting the same.
//
// Exit status 0: the scenario ran and the JSON line says what the server did
// (whatever that was). Exit status 1: the probe could not run it (bad flags,
// network failure, unexpected protocol error); the line is {"error": "..."}.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

type probe struct {
	host           string // host:port of the replica
	authKey        string
	endpoints      string
	messages       int
	untilKeepAlive bool
	timeout        time.Duration
	machineFiles   stringList
	nodeFiles      stringList
	hostnames      stringList
}

var scenarios = map[string]func(*probe) (any, error){
	"register":          (*probe).register,
	"map-stream":        (*probe).mapStream,
	"map-lite":          (*probe).mapLite,
	"lite-watch":        (*probe).liteWatch,
	"garbage-record":    (*probe).garbageRecord,
	"oversized-record":  (*probe).oversizedRecord,
	"truncated-record":  (*probe).truncatedRecord,
	"garbage-handshake": (*probe).garbageHandshake,
	"garbage-payload":   (*probe).garbagePayload,
	"short-handshake":   (*probe).shortHandshake,
	"old-version":       (*probe).oldVersion,
}

func main() {
	p := &probe{}
	server := flag.String("server", "", "the replica's URL, http://127.0.0.1:PORT")
	scenario := flag.String("scenario", "", "what to do (see the source's header)")
	flag.StringVar(&p.authKey, "authkey", "", "pre-auth key for register")
	flag.StringVar(&p.endpoints, "endpoints", "", "comma-separated ip:port list for lite updates")
	flag.IntVar(&p.messages, "messages", 1, "map-stream: messages to read")
	flag.BoolVar(&p.untilKeepAlive, "until-keepalive", false,
		"map-stream: read until a keepalive arrives")
	flag.DurationVar(&p.timeout, "timeout", 10*time.Second, "limit for the whole scenario")
	flag.Var(&p.machineFiles, "machinekey-file", "machine key file (repeatable)")
	flag.Var(&p.nodeFiles, "nodekey-file", "node key file (repeatable, paired with machine keys)")
	flag.Var(&p.hostnames, "hostname", "Hostinfo.Hostname (repeatable, paired with node keys; "+
		"default \"probe\")")
	flag.Parse()

	run, ok := scenarios[*scenario]
	if !ok {
		fail(fmt.Errorf("unknown -scenario %q", *scenario))
	}
	u, err := url.Parse(*server)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		fail(fmt.Errorf("-server must be http://host:port, got %q", *server))
	}
	p.host = u.Host
	out, err := run(p)
	if err != nil {
		fail(err)
	}
	emit(out)
}

func emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		fail(err)
	}
	fmt.Println(string(b))
}

func fail(err error) {
	b, _ := json.Marshal(map[string]string{"error": err.Error()})
	fmt.Println(string(b))
	os.Exit(1)
}
