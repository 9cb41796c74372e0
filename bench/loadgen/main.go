// Command loadgen is the chatcluster benchmark load generator.
//
// It speaks the public chatcluster socket protocol (PROTOCOL.md sections 1-2):
// it signs U users in through the gateway's SDK token route (or, with
// -target relay, makes tokens up for the bare baseline relay), connects each
// user to one of the socket URLs, creates C conversations and then sends
// message.send requests, either at a fixed total rate or as fast as the server
// accepts them (closed loop, bounded in-flight requests per connection).
// Receivers time every message.new event against the send timestamp embedded
// in the message text (same machine, same clock).
//
// A second mode (-mode idle) opens N idle connections to ONE socket URL and
// holds them, so that a harness can measure the server's memory per idle
// connection.
//
// The result is one JSON object on stdout; progress goes to stderr.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	Mode       string   `json:"mode"`
	Target     string   `json:"target"`
	Gateway    string   `json:"gateway_url,omitempty"`
	AppID      string   `json:"app_id,omitempty"`
	appSecret  string   // not echoed in the output
	SocketURLs []string `json:"socket_urls,omitempty"`
	RelayAuth  string   `json:"relay_auth,omitempty"`

	Users     int     `json:"users,omitempty"`
	Convs     int     `json:"conversations,omitempty"`
	Mix       string  `json:"mix,omitempty"`
	Rate      float64 `json:"rate"` // total msgs/s; 0 = closed loop (saturation)
	Pacing    string  `json:"pacing,omitempty"`
	Inflight  int     `json:"inflight_per_conn,omitempty"`
	TextSize  int     `json:"text_size,omitempty"`
	Prefix    string  `json:"user_prefix"`
	Seed      int64   `json:"seed"`
	TokenConc int     `json:"token_concurrency"`
	DialConc  int     `json:"dial_concurrency"`

	Warmup       time.Duration `json:"-"`
	Duration     time.Duration `json:"-"`
	Drain        time.Duration `json:"-"`
	Settle       time.Duration `json:"-"`
	SetupTimeout time.Duration `json:"-"`
	MaxRuntime   time.Duration `json:"-"`

	WarmupS   float64 `json:"warmup_s,omitempty"`
	DurationS float64 `json:"duration_s,omitempty"`
	DrainS    float64 `json:"drain_max_s,omitempty"`

	IdleConns int     `json:"idle_conns,omitempty"`
	IdleUsers int     `json:"idle_users,omitempty"`
	IdleURL   string  `json:"idle_url,omitempty"`
	HoldS     float64 `json:"hold_s,omitempty"`
	hold      time.Duration
	ReadyFile string `json:"-"`
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadgen: "+format+"\n", args...)
}

func main() {
	var c config
	var socketURLs string
	flag.StringVar(&c.Mode, "mode", "load", "load (send messages, measure latency) or idle (hold N idle connections to one socket URL)")
	flag.StringVar(&c.Target, "target", "chatcluster", "chatcluster (tokens from the gateway) or relay (the bare baseline relay: no gateway, the token is the user id)")
	flag.StringVar(&c.Gateway, "gateway", "", "gateway base URL, e.g. http://127.0.0.1:8080 (target chatcluster)")
	flag.StringVar(&c.AppID, "app-id", "", "app_id (target chatcluster)")
	flag.StringVar(&c.appSecret, "app-secret", "", "app_secret (target chatcluster); also read from $LOADGEN_APP_SECRET")
	flag.StringVar(&socketURLs, "socket-urls", "", "comma-separated socket URLs; default: the socket_urls of the token answer (chatcluster); required for relay. Users alternate over them")
	flag.StringVar(&c.RelayAuth, "relay-auth", "header", "how to name the user to the relay: header (Authorization: Bearer <user>) or query (?user=<user>)")
	flag.IntVar(&c.Users, "users", 200, "number of users (one connection each)")
	flag.IntVar(&c.Convs, "convs", 100, "number of conversations")
	flag.StringVar(&c.Mix, "mix", "g5", "conversation mix: comma list of d (direct), gN (group of N members incl. creator), gN-M (size uniform in N..M), each optionally *WEIGHT, e.g. d*2,g5*5,g2-50")
	flag.Float64Var(&c.Rate, "rate", 0, "total offered message rate in msgs/s spread over the users; 0 = closed loop, as fast as accepted")
	flag.StringVar(&c.Pacing, "pacing", "poisson", "fixed-rate pacing: poisson or even")
	flag.IntVar(&c.Inflight, "inflight", 4, "max unanswered message.send per connection (1..40)")
	flag.IntVar(&c.TextSize, "text-size", 64, "message text length in characters (>= 40; holds the send timestamp)")
	flag.StringVar(&c.Prefix, "prefix", "", "user external id prefix (default: random per run, so runs do not share users)")
	flag.Int64Var(&c.Seed, "seed", 1, "random seed (conversation layout, Poisson gaps)")
	flag.IntVar(&c.TokenConc, "token-concurrency", 16, "concurrent token requests")
	flag.IntVar(&c.DialConc, "dial-concurrency", 32, "concurrent websocket handshakes")
	durVar(&c.Warmup, "warmup", 2*time.Second, "sending time before the measurement window (not counted)")
	durVar(&c.Duration, "duration", 10*time.Second, "measurement window")
	durVar(&c.Drain, "drain", 5*time.Second, "max wait after sending stops for outstanding acks and deliveries")
	durVar(&c.Settle, "settle", time.Second, "pause after creating conversations before sending")
	durVar(&c.SetupTimeout, "setup-timeout", 120*time.Second, "bound on tokens + connects + conversation creation")
	durVar(&c.MaxRuntime, "max-runtime", 0, "hard bound on the whole run (default: setup-timeout + warmup + duration + drain + hold + 30s)")
	flag.IntVar(&c.IdleConns, "idle-conns", 5000, "idle mode: number of connections")
	flag.IntVar(&c.IdleUsers, "idle-users", 0, "idle mode: distinct users (default: one per connection)")
	flag.StringVar(&c.IdleURL, "idle-url", "", "idle mode: the socket URL (default: the first socket URL)")
	durVar(&c.hold, "hold", 30*time.Second, "idle mode: how long to hold the connections (SIGTERM ends it early)")
	flag.StringVar(&c.ReadyFile, "ready-file", "", "idle mode: write a JSON line here once every connection is open")
	flag.Parse()

	if c.appSecret == "" {
		c.appSecret = os.Getenv("LOADGEN_APP_SECRET")
	}
	for _, u := range strings.Split(socketURLs, ",") {
		if u = strings.TrimSpace(u); u != "" {
			c.SocketURLs = append(c.SocketURLs, u)
		}
	}
	if c.Prefix == "" {
		c.Prefix = fmt.Sprintf("lg%x", time.Now().UnixNano()&0xffffffffff)
	}
	c.WarmupS, c.DurationS, c.DrainS, c.HoldS = c.Warmup.Seconds(), c.Duration.Seconds(), c.Drain.Seconds(), c.hold.Seconds()
	if err := validate(&c); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	if c.Mode == "idle" {
		c.Rate, c.Inflight, c.Users, c.Convs, c.Mix, c.Pacing, c.TextSize = 0, 0, 0, 0, "", "", 0
		c.WarmupS, c.DurationS, c.DrainS = 0, 0, 0
		if c.IdleUsers <= 0 || c.IdleUsers > c.IdleConns {
			c.IdleUsers = c.IdleConns
		}
	} else {
		c.IdleConns, c.IdleUsers, c.HoldS = 0, 0, 0
	}
	raiseNofile()

	if c.MaxRuntime == 0 {
		c.MaxRuntime = c.SetupTimeout + c.Warmup + c.Duration + c.Drain + c.Settle + 30*time.Second
		if c.Mode == "idle" {
			c.MaxRuntime = c.SetupTimeout + c.hold + 30*time.Second
		}
	}
	// Watchdog: whatever happens, the process ends.
	go func() {
		time.Sleep(c.MaxRuntime)
		emit(map[string]any{"error": "watchdog: max runtime exceeded", "max_runtime_s": c.MaxRuntime.Seconds(), "params": c})
		os.Exit(3)
	}()

	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		logf("got %v, finishing", s)
		cancel()
		<-sigs
		os.Exit(130)
	}()

	var res map[string]any
	var err error
	if c.Mode == "idle" {
		res, err = runIdle(ctx, &c)
	} else {
		res, err = runLoad(ctx, &c)
	}
	if res == nil {
		res = map[string]any{}
	}
	res["params"] = c
	if err != nil {
		res["error"] = err.Error()
	}
	emit(res)
	if err != nil {
		os.Exit(1)
	}
}

func validate(c *config) error {
	switch c.Mode {
	case "load", "idle":
	default:
		return fmt.Errorf("-mode must be load or idle")
	}
	switch c.Target {
	case "chatcluster":
		if c.Gateway == "" || c.AppID == "" || c.appSecret == "" {
			return fmt.Errorf("target chatcluster needs -gateway, -app-id and -app-secret")
		}
		c.Gateway = strings.TrimRight(c.Gateway, "/")
	case "relay":
		if len(c.SocketURLs) == 0 {
			return fmt.Errorf("target relay needs -socket-urls")
		}
		if c.RelayAuth != "header" && c.RelayAuth != "query" {
			return fmt.Errorf("-relay-auth must be header or query")
		}
	default:
		return fmt.Errorf("-target must be chatcluster or relay")
	}
	if c.Target != "relay" {
		c.RelayAuth = ""
	}
	for _, u := range append(append([]string{}, c.SocketURLs...), c.Gateway, c.IdleURL) {
		if u != "" && !loopbackURL(u) {
			return fmt.Errorf("refusing non-loopback URL %q: this benchmark only talks to 127.0.0.0/8, localhost or [::1]", u)
		}
	}
	if c.Mode == "load" {
		if c.Users < 2 {
			return fmt.Errorf("-users must be >= 2")
		}
		if c.Convs < 1 {
			return fmt.Errorf("-convs must be >= 1")
		}
		if c.Inflight < 1 || c.Inflight > 40 {
			return fmt.Errorf("-inflight must be in 1..40")
		}
		if c.Rate < 0 {
			return fmt.Errorf("-rate must be >= 0")
		}
		if c.Pacing != "poisson" && c.Pacing != "even" {
			return fmt.Errorf("-pacing must be poisson or even")
		}
		if c.TextSize < 40 {
			c.TextSize = 40
		}
		if c.TextSize > 4000 {
			return fmt.Errorf("-text-size must be <= 4000")
		}
		if _, err := parseMix(c.Mix); err != nil {
			return err
		}
		if c.Duration <= 0 {
			return fmt.Errorf("-duration must be > 0")
		}
	} else if c.IdleConns < 1 {
		return fmt.Errorf("-idle-conns must be >= 1")
	}
	return nil
}

func emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(fmt.Sprintf(`{"error":%q}`, err.Error()))
	}
	os.Stdout.Write(append(b, '\n'))
}

func raiseNofile() {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			logf("cannot raise RLIMIT_NOFILE: %v", err)
		}
	}
}

// durFlag accepts a Go duration ("1500ms", "2m") or plain seconds ("10", "0.5").
type durFlag struct{ d *time.Duration }

func (f durFlag) String() string {
	if f.d == nil {
		return ""
	}
	return f.d.String()
}

func (f durFlag) Set(s string) error {
	if v, err := strconv.ParseFloat(s, 64); err == nil {
		*f.d = time.Duration(v * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration like 10s or plain seconds")
	}
	*f.d = v
	return nil
}

func durVar(p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	flag.Var(durFlag{p}, name, usage+" (seconds or Go duration)")
}
