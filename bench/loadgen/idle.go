package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// runIdle opens c.IdleConns connections to one socket URL, holds them for
// c.hold (or until SIGTERM), then closes them.
func runIdle(ctx context.Context, c *config) (map[string]any, error) {
	res := map[string]any{"mode": "idle", "target": c.Target}
	t0 := time.Now()
	sctx, scancel := context.WithTimeout(ctx, c.SetupTimeout)
	defer scancel()

	n, nu := c.IdleConns, c.IdleUsers
	exts := make([]string, nu)
	tokens := make([]string, nu)
	for i := range exts {
		exts[i] = fmt.Sprintf("%s-idle%d", c.Prefix, i)
		tokens[i] = exts[i]
	}
	urls := c.SocketURLs
	if c.Target == "chatcluster" {
		logf("fetching %d tokens", nu)
		var umu sync.Mutex
		errs, failed := parallel(sctx, nu, c.TokenConc, func(ctx context.Context, i int) error {
			t, err := fetchToken(ctx, c, exts[i])
			if err != nil {
				return err
			}
			tokens[i] = t.AccessToken
			umu.Lock()
			if len(urls) == 0 {
				urls = t.SocketURLs
			}
			umu.Unlock()
			return nil
		})
		res["token_failures"] = failed
		if failed > 0 {
			res["token_errors"] = errs
		}
		res["tokens_s"] = round(time.Since(t0).Seconds(), 3)
	}
	url := c.IdleURL
	if url == "" && len(urls) > 0 {
		url = urls[0]
	}
	if url == "" || !loopbackURL(url) {
		return res, fmt.Errorf("no usable (loopback) socket URL: %q", url)
	}
	res["url"] = url

	t1 := time.Now()
	logf("opening %d idle connections to %s", n, url)
	conns := make([]*websocket.Conn, n)
	var closing atomic.Bool
	var lost atomic.Int64
	var cmu sync.Mutex
	codes := map[string]int{}
	var rwg sync.WaitGroup
	errs, failed := parallel(sctx, n, c.DialConc, func(ctx context.Context, i int) error {
		ui := i % nu
		if tokens[ui] == "" {
			return fmt.Errorf("no token")
		}
		conn, err := dialUser(ctx, c, url, tokens[ui], exts[ui])
		if err != nil {
			return err
		}
		conns[i] = conn
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for {
				_, r, err := conn.NextReader()
				if err != nil {
					if !closing.Load() {
						lost.Add(1)
						cmu.Lock()
						codes[closeCodeOf(err)]++
						cmu.Unlock()
					}
					return
				}
				io.Copy(io.Discard, r)
			}
		}()
		return nil
	})
	connected := n - failed
	res["connected"] = connected
	res["connect_failures"] = failed
	if failed > 0 {
		res["connect_errors"] = errs
	}
	res["connect_s"] = round(time.Since(t1).Seconds(), 3)
	logf("idle-ready: %d connected, %d failed", connected, failed)
	if c.ReadyFile != "" {
		b, _ := json.Marshal(map[string]any{"connected": connected, "failed": failed, "setup_s": time.Since(t0).Seconds()})
		tmp := c.ReadyFile + ".tmp"
		if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err == nil {
			os.Rename(tmp, c.ReadyFile)
		}
	}

	th := time.Now()
	select {
	case <-time.After(c.hold):
	case <-ctx.Done():
		res["interrupted"] = true
	}
	res["held_s"] = round(time.Since(th).Seconds(), 3)
	res["lost_while_holding"] = lost.Load()
	res["still_open"] = int64(connected) - lost.Load()
	cmu.Lock()
	res["close_codes"] = codes
	cmu.Unlock()

	closing.Store(true)
	dl := time.Now().Add(2 * time.Second)
	for _, conn := range conns {
		if conn != nil {
			conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bench done"), dl)
		}
	}
	for _, conn := range conns {
		if conn != nil {
			conn.Close()
		}
	}
	done := make(chan struct{})
	go func() { rwg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	if connected == 0 {
		return res, fmt.Errorf("no connection could be opened")
	}
	return res, nil
}
