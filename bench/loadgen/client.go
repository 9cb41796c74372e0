package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// loopbackURL reports whether the URL's host is a loopback address.
func loopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

var httpClient = &http.Client{
	Timeout: 30 * time.Second,
	Transport: &http.Transport{
		Proxy:               nil, // loopback only, never through a proxy
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
	},
}

type tokenAnswer struct {
	AccessToken string   `json:"access_token"`
	SocketURLs  []string `json:"socket_urls"`
}

// fetchToken calls POST {gateway}/api/v1/auth/sdk/token.
func fetchToken(ctx context.Context, c *config, ext string) (*tokenAnswer, error) {
	body, _ := json.Marshal(map[string]string{
		"app_id": c.AppID, "app_secret": c.appSecret, "user_external_id": ext,
	})
	req, err := http.NewRequestWithContext(ctx, "POST", c.Gateway+"/api/v1/auth/sdk/token", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("token: HTTP %d: %.200s", resp.StatusCode, b)
	}
	var t tokenAnswer
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("token: %v", err)
	}
	if t.AccessToken == "" {
		return nil, fmt.Errorf("token: no access_token in answer")
	}
	return &t, nil
}

var dialer = &websocket.Dialer{
	Proxy:             nil,
	HandshakeTimeout:  15 * time.Second,
	ReadBufferSize:    4096,
	WriteBufferSize:   4096,
	EnableCompression: false,
}

// dialUser connects one user and reads the first frame, which must be the
// "ready" event.
func dialUser(ctx context.Context, c *config, rawURL, token, ext string) (*websocket.Conn, error) {
	hdr := http.Header{}
	if c.Target == "relay" && c.RelayAuth == "query" {
		u, err := url.Parse(rawURL)
		if err != nil {
			return nil, err
		}
		q := u.Query()
		q.Set("user", ext)
		u.RawQuery = q.Encode()
		rawURL = u.String()
	} else {
		hdr.Set("Authorization", "Bearer "+token)
	}
	conn, resp, err := dialer.DialContext(ctx, rawURL, hdr)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial: HTTP %d: %w", resp.StatusCode, err)
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	conn.SetReadLimit(2 << 20)
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, msg, err := conn.ReadMessage()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("reading ready frame: %w", err)
	}
	conn.SetReadDeadline(time.Time{})
	var f struct {
		Event string `json:"event"`
	}
	if json.Unmarshal(msg, &f) != nil || f.Event != "ready" {
		conn.Close()
		return nil, fmt.Errorf("first frame is not ready: %.200s", msg)
	}
	return conn, nil
}

// parallel runs fn(i) for i in [0,n) with at most conc at once and returns
// the errors by message (with counts) and the number of failures.
func parallel(ctx context.Context, n, conc int, fn func(ctx context.Context, i int) error) (map[string]int, int) {
	if conc < 1 {
		conc = 1
	}
	var mu sync.Mutex
	errs := map[string]int{}
	failed := 0
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < conc && w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if ctx.Err() != nil {
					mu.Lock()
					failed++
					errs["canceled"]++
					mu.Unlock()
					continue
				}
				if err := fn(ctx, i); err != nil {
					mu.Lock()
					failed++
					msg := err.Error()
					if len(msg) > 160 {
						msg = msg[:160]
					}
					if len(errs) < 20 || errs[msg] > 0 {
						errs[msg]++
					} else {
						errs["(other)"]++
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return errs, failed
}

// reqResult is a response to a setup request (conversation.create).
type reqResult struct {
	ok   bool
	code string
	data json.RawMessage
}

// frame is the generic shape of a server frame (response or event).
type frame struct {
	ID    *string         `json:"id"`
	OK    *bool           `json:"ok"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	Error *struct {
		Code         string  `json:"code"`
		Message      string  `json:"message"`
		RetryAfterMs float64 `json:"retry_after_ms"`
	} `json:"error"`
}

var errClosed = errors.New("connection closed")

func closeCodeOf(err error) string {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return fmt.Sprintf("close_%d", ce.Code)
	}
	s := err.Error()
	switch {
	case strings.Contains(s, "use of closed network connection"):
		return "closed_locally"
	case strings.Contains(s, "unexpected EOF"), strings.Contains(s, "EOF"):
		return "eof"
	case strings.Contains(s, "reset by peer"):
		return "reset"
	}
	return "read_error"
}
