package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// The text of every message starts with this marker, then the send time in
// Unix nanoseconds, the sender index and the message number.
var marker = []byte("LG1|")
var msgNewTag = []byte(`"message.new"`)

type conv struct {
	idx        int
	id         string
	quoted     []byte // JSON string of id
	direct     bool
	members    []int // user indexes, creator first
	recipients int64
	dup        bool
}

type user struct {
	idx   int
	ext   string
	token string
	url   string
	conn  *websocket.Conn

	wmu  sync.Mutex // one writer at a time
	wbuf []byte

	convs   []int
	rng     *rand.Rand
	slots   chan struct{} // in-flight message.send, cap = -inflight
	queue   chan struct{} // fixed-rate: sends dispatched to this user
	backoff atomic.Int64  // unix ns until which the user must not send (rate_limited)
	closed  atomic.Bool
	reqSeq  atomic.Uint64
	msgN    uint64

	pmu     sync.Mutex
	pending map[string]chan reqResult

	// owned by the reader goroutine until readerDone is closed
	ackLat    []int64
	delLat    []int64
	errAll    map[string]int64
	errWin    map[string]int64
	events    map[string]int64
	closeCode string

	readerDone chan struct{}
}

type gen struct {
	c     *config
	users []*user
	convs []*conv

	winStart atomic.Int64
	winEnd   atomic.Int64
	closing  atomic.Bool
	stopSend chan struct{}

	sentTotal, sentWindow         atomic.Int64
	respTotal, respWindow         atomic.Int64
	acceptedTotal, acceptedWindow atomic.Int64 // acceptedWindow: ok answers to messages sent in the window
	acceptedRecvWindow            atomic.Int64 // ok answers received in the window
	expectedWindow                atomic.Int64
	deliveredTotal                atomic.Int64
	deliveredRecvWindow           atomic.Int64
	deliveredOfWindow             atomic.Int64
	backlogDrops                  atomic.Int64
	lostDuringRun                 atomic.Int64
}

func runLoad(ctx context.Context, c *config) (map[string]any, error) {
	g := &gen{c: c, stopSend: make(chan struct{})}
	g.winStart.Store(math.MaxInt64)
	g.winEnd.Store(math.MaxInt64)
	res := map[string]any{"mode": "load", "target": c.Target}
	setup := map[string]any{}
	res["setup"] = setup
	t0 := time.Now()
	sctx, scancel := context.WithTimeout(ctx, c.SetupTimeout)
	defer scancel()

	// 1. users and tokens
	g.users = make([]*user, c.Users)
	for i := range g.users {
		g.users[i] = &user{
			idx: i, ext: fmt.Sprintf("%s-u%d", c.Prefix, i),
			rng:        rand.New(rand.NewPCG(uint64(c.Seed), uint64(i)+1)),
			slots:      make(chan struct{}, c.Inflight),
			queue:      make(chan struct{}, 256),
			pending:    map[string]chan reqResult{},
			errAll:     map[string]int64{},
			errWin:     map[string]int64{},
			events:     map[string]int64{},
			readerDone: make(chan struct{}),
		}
	}
	urls := c.SocketURLs
	if c.Target == "chatcluster" {
		var umu sync.Mutex
		logf("fetching %d tokens from %s", c.Users, c.Gateway)
		errs, failed := parallel(sctx, c.Users, c.TokenConc, func(ctx context.Context, i int) error {
			t, err := fetchToken(ctx, c, g.users[i].ext)
			if err != nil {
				return err
			}
			g.users[i].token = t.AccessToken
			umu.Lock()
			if len(urls) == 0 && len(t.SocketURLs) > 0 {
				urls = t.SocketURLs
			}
			umu.Unlock()
			return nil
		})
		setup["token_failures"] = failed
		if failed > 0 {
			setup["token_errors"] = errs
		}
		if len(urls) == 0 {
			return res, fmt.Errorf("no socket URL (token failures: %v)", errs)
		}
		for _, u := range urls {
			if !loopbackURL(u) {
				return res, fmt.Errorf("refusing non-loopback socket URL %q", u)
			}
		}
	} else {
		for _, u := range g.users {
			u.token = u.ext
		}
	}
	setup["socket_urls"] = urls
	setup["tokens_s"] = time.Since(t0).Seconds()

	// 2. connect, alternating over the socket URLs
	t1 := time.Now()
	logf("connecting %d users over %d socket URL(s)", c.Users, len(urls))
	perURL := map[string]int{}
	for i, u := range g.users {
		u.url = urls[i%len(urls)]
	}
	errs, failed := parallel(sctx, c.Users, c.DialConc, func(ctx context.Context, i int) error {
		u := g.users[i]
		if u.token == "" {
			return fmt.Errorf("no token")
		}
		conn, err := dialUser(ctx, c, u.url, u.token, u.ext)
		if err != nil {
			return err
		}
		u.conn = conn
		go u.readLoop(g)
		return nil
	})
	for _, u := range g.users {
		if u.conn != nil {
			perURL[u.url]++
		} else {
			u.closed.Store(true)
			close(u.readerDone)
		}
	}
	setup["connect_failures"] = failed
	if failed > 0 {
		setup["connect_errors"] = errs
	}
	setup["connections_per_url"] = perURL
	setup["connect_s"] = time.Since(t1).Seconds()
	defer g.closeAll()
	if failed == c.Users {
		return res, fmt.Errorf("no connection could be opened: %v", errs)
	}

	// 3. conversations
	t2 := time.Now()
	m, _ := parseMix(c.Mix)
	lrng := rand.New(rand.NewPCG(uint64(c.Seed), 0))
	perm := lrng.Perm(c.Users)
	cursor := 0
	sizes := map[string]int{}
	for ci := 0; ci < c.Convs; ci++ {
		direct, size := m.pick(lrng)
		if size > c.Users {
			size = c.Users
		}
		cv := &conv{idx: ci, direct: direct}
		for j := 0; j < size; j++ {
			cv.members = append(cv.members, perm[cursor%c.Users])
			cursor++
		}
		cv.recipients = int64(size - 1)
		if direct {
			sizes["direct"]++
		} else {
			sizes["g"+strconv.Itoa(size)]++
		}
		g.convs = append(g.convs, cv)
	}
	logf("creating %d conversations", c.Convs)
	var idmu sync.Mutex
	seen := map[string]int{}
	cerrs, cfailed := parallel(sctx, len(g.convs), 32, func(ctx context.Context, ci int) error {
		cv := g.convs[ci]
		u := g.users[cv.members[0]]
		others := make([]string, 0, len(cv.members)-1)
		for _, mi := range cv.members[1:] {
			others = append(others, g.users[mi].ext)
		}
		data := map[string]any{"type": "group", "members": others, "title": "g"}
		if cv.direct {
			data = map[string]any{"type": "direct", "members": others}
		}
		r, err := u.request(ctx, "conversation.create", data)
		if err != nil {
			return err
		}
		if !r.ok {
			return fmt.Errorf("conversation.create: %s", r.code)
		}
		var d struct {
			Conversation struct {
				ID json.RawMessage `json:"id"`
			} `json:"conversation"`
		}
		if err := json.Unmarshal(r.data, &d); err != nil || len(d.Conversation.ID) == 0 {
			return fmt.Errorf("conversation.create: no conversation id in %.200s", r.data)
		}
		var id string
		if json.Unmarshal(d.Conversation.ID, &id) != nil { // a numeric id
			id = string(d.Conversation.ID)
		}
		q, _ := json.Marshal(id)
		if d.Conversation.ID[0] != '"' {
			q = d.Conversation.ID
		}
		idmu.Lock()
		defer idmu.Unlock()
		if _, dup := seen[id]; dup {
			cv.dup = true // e.g. the same direct pair twice: the server returns the same one
			return nil
		}
		seen[id] = ci
		cv.id, cv.quoted = id, q
		return nil
	})
	setup["create_failures"] = cfailed
	if cfailed > 0 {
		setup["create_errors"] = cerrs
	}
	nconv, dups := 0, 0
	for _, cv := range g.convs {
		if cv.dup {
			dups++
			continue
		}
		if cv.id == "" {
			continue
		}
		nconv++
		for _, mi := range cv.members {
			g.users[mi].convs = append(g.users[mi].convs, cv.idx)
		}
	}
	setup["conversations"] = nconv
	setup["duplicate_conversations"] = dups
	setup["conversation_sizes"] = sizes
	setup["create_s"] = time.Since(t2).Seconds()
	var senders []*user
	for _, u := range g.users {
		if len(u.convs) > 0 && u.conn != nil && !u.closed.Load() {
			senders = append(senders, u)
		}
	}
	setup["senders"] = len(senders)
	if len(senders) == 0 {
		return res, fmt.Errorf("no user can send (conversations: %d, failures: %v)", nconv, cerrs)
	}
	if sctx.Err() != nil && ctx.Err() == nil {
		return res, fmt.Errorf("setup timed out after %v", c.SetupTimeout)
	}
	select {
	case <-time.After(c.Settle):
	case <-ctx.Done():
	}
	setup["setup_s"] = time.Since(t0).Seconds()

	// 4. send
	start := time.Now()
	g.winStart.Store(start.Add(c.Warmup).UnixNano())
	g.winEnd.Store(start.Add(c.Warmup + c.Duration).UnixNano())
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	if c.Rate > 0 {
		logf("sending at %.0f msgs/s (%s) from %d senders for %v + %v warmup", c.Rate, c.Pacing, len(senders), c.Duration, c.Warmup)
	} else {
		logf("sending as fast as accepted (%d in flight per connection) from %d senders for %v + %v warmup", c.Inflight, len(senders), c.Duration, c.Warmup)
	}
	var swg sync.WaitGroup
	for _, u := range senders {
		swg.Add(1)
		go func(u *user) {
			defer swg.Done()
			u.sendLoop(g, c.Rate > 0)
		}(u)
	}
	if c.Rate > 0 {
		go g.dispatch(senders)
	}
	// stop sending at the end of the window (or on a signal)
	select {
	case <-time.After(time.Until(time.Unix(0, g.winEnd.Load()))):
	case <-ctx.Done():
		now := time.Now().UnixNano()
		if now < g.winEnd.Load() {
			g.winEnd.Store(now)
		}
		res["interrupted"] = true
	}
	close(g.stopSend)
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	sendWall := time.Since(start).Seconds()
	winStart, winEnd := g.winStart.Load(), g.winEnd.Load()
	window := float64(winEnd-winStart) / 1e9
	if window <= 0 {
		window = 0
	}

	// 5. drain: wait for every answer and delivery of the window's messages
	t3 := time.Now()
	drainDeadline := time.After(c.Drain)
	drained := false
	tick := time.NewTicker(20 * time.Millisecond)
loop:
	for {
		if g.respWindow.Load() >= g.sentWindow.Load() && g.deliveredOfWindow.Load() >= g.expectedWindow.Load() {
			drained = true
			break
		}
		select {
		case <-tick.C:
		case <-drainDeadline:
			break loop
		case <-ctx.Done():
			if res["interrupted"] == nil {
				res["interrupted"] = true
			}
			break loop
		}
	}
	tick.Stop()
	drainS := time.Since(t3).Seconds()
	swg.Wait()
	g.closeAll()

	// 6. results
	var ack, del []int64
	errAll, errWin, events, closes := map[string]int64{}, map[string]int64{}, map[string]int64{}, map[string]int64{}
	for _, u := range g.users {
		<-u.readerDone
		ack = append(ack, u.ackLat...)
		del = append(del, u.delLat...)
		for k, v := range u.errAll {
			errAll[k] += v
		}
		for k, v := range u.errWin {
			errWin[k] += v
		}
		for k, v := range u.events {
			events[k] += v
		}
		if u.closeCode != "" {
			closes[u.closeCode]++
		}
	}
	per := func(n int64) float64 {
		if window <= 0 {
			return 0
		}
		return round(float64(n)/window, 1)
	}
	sentW, accW := g.sentWindow.Load(), g.acceptedWindow.Load()
	expW, delW := g.expectedWindow.Load(), g.deliveredOfWindow.Load()
	if c.Rate > 0 {
		res["offered_rate"] = c.Rate
	} else {
		res["offered_rate"] = nil
	}
	res["window_s"] = round(window, 3)
	res["window_unix"] = []float64{float64(winStart) / 1e9, float64(winEnd) / 1e9}
	res["sent_per_s"] = per(sentW)
	// throughput by arrival time, like delivered_per_s: under overload the
	// answers to the window's messages may come long after it
	res["accepted_per_s"] = per(g.acceptedRecvWindow.Load())
	res["delivered_per_s"] = per(g.deliveredRecvWindow.Load())
	res["counts"] = map[string]int64{
		"sent_window": sentW, "responses_window": g.respWindow.Load(), "accepted_of_window_msgs": accW,
		"accepted_in_window":         g.acceptedRecvWindow.Load(),
		"expected_deliveries_window": expW, "delivered_of_window_msgs": delW,
		"delivered_in_window": g.deliveredRecvWindow.Load(),
		"sent_total":          g.sentTotal.Load(), "accepted_total": g.acceptedTotal.Load(),
		"responses_total": g.respTotal.Load(), "delivered_total": g.deliveredTotal.Load(),
		"dispatch_backlog_drops": g.backlogDrops.Load(),
	}
	ratio := 1.0
	if expW > 0 {
		ratio = float64(delW) / float64(expW)
	}
	res["delivery_ratio"] = round(ratio, 5)
	res["latency_ms"] = map[string]any{
		"deliver": summarize(del),
		"ack":     summarize(ack),
	}
	res["errors"] = errAll
	res["errors_window"] = errWin
	res["connections_lost"] = g.lostDuringRun.Load()
	res["close_codes"] = closes
	res["other_events"] = events
	res["drain_s"] = round(drainS, 3)
	res["drained"] = drained
	cpu := tvSec(ru1.Utime) + tvSec(ru1.Stime) - tvSec(ru0.Utime) - tvSec(ru0.Stime)
	res["generator"] = map[string]any{
		"cpu_s": round(cpu, 3), "send_wall_s": round(sendWall, 3),
		"cpu_util": round(cpu/sendWall, 3), // of one core; near 1.0 means the generator was the bottleneck
	}
	return res, nil
}

func tvSec(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

func round(x float64, d int) float64 {
	p := math.Pow(10, float64(d))
	return math.Round(x*p) / p
}

func summarize(ns []int64) map[string]any {
	out := map[string]any{"count": len(ns)}
	if len(ns) == 0 {
		return out
	}
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(ns)))) - 1
		if i < 0 {
			i = 0
		}
		return round(float64(ns[i])/1e6, 3)
	}
	var sum float64
	for _, v := range ns {
		sum += float64(v)
	}
	out["p50"] = q(0.50)
	out["p90"] = q(0.90)
	out["p95"] = q(0.95)
	out["p99"] = q(0.99)
	out["p999"] = q(0.999)
	out["max"] = round(float64(ns[len(ns)-1])/1e6, 3)
	out["min"] = round(float64(ns[0])/1e6, 3)
	out["mean"] = round(sum/float64(len(ns))/1e6, 3)
	return out
}

// request sends a setup request and waits for its response.
func (u *user) request(ctx context.Context, op string, data any) (reqResult, error) {
	id := "c." + strconv.FormatUint(u.reqSeq.Add(1), 10)
	ch := make(chan reqResult, 1)
	u.pmu.Lock()
	u.pending[id] = ch
	u.pmu.Unlock()
	defer func() {
		u.pmu.Lock()
		delete(u.pending, id)
		u.pmu.Unlock()
	}()
	b, _ := json.Marshal(map[string]any{"id": id, "op": op, "data": data})
	u.wmu.Lock()
	u.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	err := u.conn.WriteMessage(websocket.TextMessage, b)
	u.wmu.Unlock()
	if err != nil {
		return reqResult{}, err
	}
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case r := <-ch:
		return r, nil
	case <-u.readerDone:
		return reqResult{}, errClosed
	case <-t.C:
		return reqResult{}, fmt.Errorf("%s: no answer in 30s", op)
	case <-ctx.Done():
		return reqResult{}, ctx.Err()
	}
}

// sendLoop sends message.send requests: in closed loop as soon as an
// in-flight slot frees up, or (fixed rate) whenever the dispatcher says so.
func (u *user) sendLoop(g *gen, fixed bool) {
	for {
		if fixed {
			select {
			case <-u.queue:
			case <-g.stopSend:
				return
			case <-u.readerDone:
				return
			}
		}
		select {
		case u.slots <- struct{}{}:
		case <-g.stopSend:
			return
		case <-u.readerDone:
			return
		}
		if b := u.backoff.Load(); b > 0 {
			if d := time.Until(time.Unix(0, b)); d > 0 {
				select {
				case <-time.After(d):
				case <-g.stopSend:
					return
				case <-u.readerDone:
					return
				}
			}
		}
		if time.Now().UnixNano() >= g.winEnd.Load() {
			return
		}
		if err := u.sendOne(g); err != nil {
			return
		}
	}
}

func (u *user) sendOne(g *gen) error {
	c := g.c
	ci := u.convs[u.rng.IntN(len(u.convs))]
	cv := g.convs[ci]
	seq := u.reqSeq.Add(1)
	u.msgN++
	u.wmu.Lock()
	ns := time.Now().UnixNano()
	b := u.wbuf[:0]
	b = append(b, `{"id":"s.`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(ci), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, ns, 10)
	b = append(b, `","op":"message.send","data":{"conversation_id":`...)
	b = append(b, cv.quoted...)
	b = append(b, `,"client_msg_id":"`...)
	b = append(b, c.Prefix...)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(u.idx), 10)
	b = append(b, '-')
	b = strconv.AppendUint(b, u.msgN, 10)
	b = append(b, `","text":"`...)
	t0 := len(b)
	b = append(b, marker...)
	b = strconv.AppendInt(b, ns, 10)
	b = append(b, '|')
	b = strconv.AppendInt(b, int64(u.idx), 10)
	b = append(b, '|')
	b = strconv.AppendUint(b, u.msgN, 10)
	b = append(b, '|')
	for len(b)-t0 < c.TextSize {
		b = append(b, 'x')
	}
	b = append(b, `"}}`...)
	u.wbuf = b
	u.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	err := u.conn.WriteMessage(websocket.TextMessage, b)
	u.wmu.Unlock()
	if err != nil {
		return err
	}
	g.sentTotal.Add(1)
	if ns >= g.winStart.Load() && ns < g.winEnd.Load() {
		g.sentWindow.Add(1)
	}
	return nil
}

// dispatch is the fixed-rate clock: it hands sends to the users round-robin,
// with Poisson (exponential) or even gaps for the configured total rate.
func (g *gen) dispatch(senders []*user) {
	c := g.c
	r := rand.New(rand.NewPCG(uint64(c.Seed), 1<<40))
	gap := func() time.Duration {
		if c.Pacing == "even" {
			return time.Duration(float64(time.Second) / c.Rate)
		}
		return time.Duration(r.ExpFloat64() / c.Rate * float64(time.Second))
	}
	next := time.Now()
	rr := 0
	for {
		now := time.Now()
		for !next.After(now) {
			u := senders[rr%len(senders)]
			rr++
			select {
			case u.queue <- struct{}{}:
			default:
				g.backlogDrops.Add(1)
			}
			next = next.Add(gap())
		}
		select {
		case <-time.After(next.Sub(now)):
		case <-g.stopSend:
			return
		}
	}
}

// readLoop reads every frame of one connection.
func (u *user) readLoop(g *gen) {
	defer close(u.readerDone)
	for {
		_, msg, err := u.conn.ReadMessage()
		now := time.Now().UnixNano()
		if err != nil {
			u.closed.Store(true)
			if !g.closing.Load() {
				u.closeCode = closeCodeOf(err)
				g.lostDuringRun.Add(1)
			}
			return
		}
		if bytes.Contains(msg, msgNewTag) {
			g.deliveredTotal.Add(1)
			winStart, winEnd := g.winStart.Load(), g.winEnd.Load()
			if now >= winStart && now < winEnd {
				g.deliveredRecvWindow.Add(1)
			}
			i := bytes.Index(msg, marker)
			if i < 0 {
				u.events["message.new(unmarked)"]++
				continue
			}
			ns, ok := parseInt(msg[i+len(marker):])
			if !ok {
				u.events["message.new(bad marker)"]++
				continue
			}
			if ns >= winStart && ns < winEnd {
				g.deliveredOfWindow.Add(1)
				u.delLat = append(u.delLat, now-ns)
			}
			continue
		}
		var f frame
		if err := json.Unmarshal(msg, &f); err != nil {
			u.events["(unparsable frame)"]++
			continue
		}
		if f.ID == nil {
			if f.OK != nil { // a response to a frame the server could not read
				code := "unknown"
				if f.Error != nil {
					code = f.Error.Code
				}
				u.errAll["null-id:"+code]++
				continue
			}
			u.events[f.Event]++
			continue
		}
		id := *f.ID
		if strings.HasPrefix(id, "s.") {
			u.onSendResponse(g, id, &f, now)
			continue
		}
		u.pmu.Lock()
		ch := u.pending[id]
		u.pmu.Unlock()
		if ch != nil {
			r := reqResult{ok: f.OK != nil && *f.OK, data: f.Data}
			if f.Error != nil {
				r.code = f.Error.Code
			}
			ch <- r
		} else {
			u.events["(response to unknown id)"]++
		}
	}
}

func (u *user) onSendResponse(g *gen, id string, f *frame, now int64) {
	// id = s.<seq>.<conv index>.<send ns>
	parts := strings.SplitN(id, ".", 4)
	select {
	case <-u.slots: // release the in-flight slot
	default:
	}
	if len(parts) != 4 {
		u.events["(bad send id)"]++
		return
	}
	ci, _ := strconv.Atoi(parts[2])
	ns, _ := strconv.ParseInt(parts[3], 10, 64)
	inWin := ns >= g.winStart.Load() && ns < g.winEnd.Load()
	ok := f.OK != nil && *f.OK
	g.respTotal.Add(1)
	if inWin {
		g.respWindow.Add(1)
	}
	if ok {
		g.acceptedTotal.Add(1)
		if now >= g.winStart.Load() && now < g.winEnd.Load() {
			g.acceptedRecvWindow.Add(1)
		}
		if inWin {
			g.acceptedWindow.Add(1)
			u.ackLat = append(u.ackLat, now-ns)
			if ci >= 0 && ci < len(g.convs) {
				g.expectedWindow.Add(g.convs[ci].recipients)
			}
		}
		return
	}
	code := "unknown"
	var retry float64
	if f.Error != nil {
		code, retry = f.Error.Code, f.Error.RetryAfterMs
	}
	u.errAll[code]++
	if inWin {
		u.errWin[code]++
	}
	if code == "rate_limited" {
		if retry <= 0 {
			retry = 100
		}
		until := now + int64(retry*1e6)
		if until > u.backoff.Load() {
			u.backoff.Store(until)
		}
	}
}

func parseInt(b []byte) (int64, bool) {
	var n int64
	i := 0
	for ; i < len(b) && i < 19 && b[i] >= '0' && b[i] <= '9'; i++ {
		n = n*10 + int64(b[i]-'0')
	}
	return n, i > 0
}

var closeOnce sync.Map

// closeAll closes every connection (once) and waits briefly for the readers.
func (g *gen) closeAll() {
	if _, done := closeOnce.LoadOrStore(g, true); done {
		return
	}
	g.closing.Store(true)
	dl := time.Now().Add(time.Second)
	for _, u := range g.users {
		if u.conn != nil {
			u.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bench done"), dl)
		}
	}
	for _, u := range g.users {
		if u.conn != nil {
			u.conn.Close()
		}
	}
	t := time.After(5 * time.Second)
	for _, u := range g.users {
		select {
		case <-u.readerDone:
		case <-t:
			return
		}
	}
}
