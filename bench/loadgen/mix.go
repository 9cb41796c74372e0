package main

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// mixEntry is one kind of conversation in the mix: a direct conversation
// (size 2) or a group whose size (members including the creator) is drawn
// uniformly from [min, max].
type mixEntry struct {
	direct   bool
	min, max int
	weight   float64
}

type mix []mixEntry

// parseMix parses e.g. "d*2,g5*5,g2-50" (default weight 1).
func parseMix(s string) (mix, error) {
	var m mix
	for _, tok := range strings.Split(s, ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue
		}
		e := mixEntry{weight: 1}
		if i := strings.IndexByte(tok, '*'); i >= 0 {
			w, err := strconv.ParseFloat(tok[i+1:], 64)
			if err != nil || w <= 0 {
				return nil, fmt.Errorf("mix %q: bad weight", tok)
			}
			e.weight = w
			tok = tok[:i]
		}
		switch {
		case tok == "d" || tok == "direct":
			e.direct, e.min, e.max = true, 2, 2
		case strings.HasPrefix(tok, "g"):
			r := tok[1:]
			lo, hi := r, r
			if i := strings.IndexByte(r, '-'); i >= 0 {
				lo, hi = r[:i], r[i+1:]
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil || a < 2 || b < a {
				return nil, fmt.Errorf("mix %q: group size must be gN or gN-M with 2 <= N <= M", tok)
			}
			e.min, e.max = a, b
		default:
			return nil, fmt.Errorf("mix %q: expected d, gN or gN-M", tok)
		}
		m = append(m, e)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("empty -mix")
	}
	return m, nil
}

// pick returns (direct?, size incl. creator).
func (m mix) pick(r *rand.Rand) (bool, int) {
	total := 0.0
	for _, e := range m {
		total += e.weight
	}
	x := r.Float64() * total
	e := m[len(m)-1]
	for _, c := range m {
		if x < c.weight {
			e = c
			break
		}
		x -= c.weight
	}
	if e.direct {
		return true, 2
	}
	return false, e.min + r.IntN(e.max-e.min+1)
}
