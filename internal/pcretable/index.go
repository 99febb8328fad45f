package pcretable

import (
	"regexp/syntax"
	"slices"
	"sort"
)

// The index is a pre-filter: for every rule it knows one literal byte string
// (ASCII case-folded) that any key the rule can match must contain, taken
// from the rule's own pattern or from the pattern of an enclosing positive
// "if". An Aho-Corasick automaton over all these literals finds, in one pass
// over the key, the rules whose literal occurs; rules without a literal
// (negated rules, rules whose pattern requires no literal) are always
// candidates. Candidates are then evaluated in file order with their
// enclosing if/endif conditions. The index only ever removes rules that
// cannot match.

// foldByte is ASCII lowercasing, the only case folding PCRE does here.
func foldByte(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// runeByte maps a rune of the mapped alphabet back to its byte.
func runeByte(r rune) (byte, bool) {
	switch {
	case r >= 0 && r < 0x80:
		return byte(r), true
	case r >= puaBase+0x80 && r <= puaBase+0xff:
		return byte(r - puaBase), true
	}
	return 0, false
}

// singleByte reports whether re matches exactly one byte value of the mapped
// alphabet (up to ASCII case), returning it folded.
func singleByte(re *syntax.Regexp) (byte, bool) {
	switch re.Op {
	case syntax.OpLiteral:
		if len(re.Rune) == 1 {
			if b, ok := runeByte(re.Rune[0]); ok {
				return foldByte(b), true
			}
		}
	case syntax.OpCharClass:
		var (
			got  byte
			seen bool
		)
		for i := 0; i+1 < len(re.Rune); i += 2 {
			lo, hi := re.Rune[i], re.Rune[i+1]
			for _, dom := range [2][2]rune{{0, 0x7f}, {puaBase + 0x80, puaBase + 0xff}} {
				l, h := max(lo, dom[0]), min(hi, dom[1])
				if l > h {
					continue
				}
				if h-l > 2 {
					return 0, false
				}
				for r := l; r <= h; r++ {
					b, _ := runeByte(r)
					b = foldByte(b)
					if seen && b != got {
						return 0, false
					}
					got, seen = b, true
				}
			}
		}
		return got, seen
	}
	return 0, false
}

// literalBytes returns the folded bytes of a literal node.
func literalBytes(re *syntax.Regexp) ([]byte, bool) {
	if re.Op == syntax.OpLiteral {
		out := make([]byte, 0, len(re.Rune))
		for _, r := range re.Rune {
			b, ok := runeByte(r)
			if !ok {
				return nil, false
			}
			out = append(out, foldByte(b))
		}
		return out, true
	}
	if b, ok := singleByte(re); ok {
		return []byte{b}, true
	}
	return nil, false
}

func zeroWidth(op syntax.Op) bool {
	switch op {
	case syntax.OpEmptyMatch, syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText,
		syntax.OpEndText, syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return true
	}
	return false
}

// requiredLiterals returns byte strings (ASCII-folded) that every text
// matched by re contains.
func requiredLiterals(re *syntax.Regexp) []string {
	switch re.Op {
	case syntax.OpLiteral, syntax.OpCharClass:
		if b, ok := literalBytes(re); ok && len(b) > 0 {
			return []string{string(b)}
		}
	case syntax.OpCapture, syntax.OpPlus:
		return requiredLiterals(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return requiredLiterals(re.Sub[0])
		}
	case syntax.OpConcat:
		var out []string
		var run []byte
		for _, s := range re.Sub {
			if zeroWidth(s.Op) {
				continue
			}
			if b, ok := literalBytes(s); ok {
				run = append(run, b...)
				continue
			}
			if len(run) > 0 {
				out = append(out, string(run))
				run = nil
			}
			out = append(out, requiredLiterals(s)...)
		}
		if len(run) > 0 {
			out = append(out, string(run))
		}
		return out
	}
	return nil
}

// bestLiteral picks the longest required literal of a parsed pattern.
func bestLiteral(re *syntax.Regexp) string {
	best := ""
	for _, l := range requiredLiterals(re) {
		if len(l) > len(best) {
			best = l
		}
	}
	return best
}

// acIndex is an Aho-Corasick automaton over the rules' literals.
type acIndex struct {
	root [256]int32 // transitions of the root node (full)
	// per node: outgoing edges (sorted bytes) in edgeByte/edgeNext[start:end]
	edgeStart, edgeEnd []int32
	edgeByte           []byte
	edgeNext           []int32
	fail               []int32
	out                [][]int32 // rule indices whose literal ends exactly here
	dict               []int32   // nearest node on the fail chain with output, -1
	always             []int32   // rules without a literal, ascending
}

func buildIndex(lits []string) *acIndex {
	type tnode struct {
		next map[byte]int32
		out  []int32
	}
	nodes := []tnode{{next: map[byte]int32{}}}
	ix := &acIndex{}
	for ri, lit := range lits {
		if lit == "" {
			ix.always = append(ix.always, int32(ri))
			continue
		}
		n := int32(0)
		for k := 0; k < len(lit); k++ {
			nx, ok := nodes[n].next[lit[k]]
			if !ok {
				nx = int32(len(nodes))
				nodes = append(nodes, tnode{next: map[byte]int32{}})
				nodes[n].next[lit[k]] = nx
			}
			n = nx
		}
		nodes[n].out = append(nodes[n].out, int32(ri))
	}
	nn := len(nodes)
	ix.edgeStart = make([]int32, nn)
	ix.edgeEnd = make([]int32, nn)
	ix.fail = make([]int32, nn)
	ix.dict = make([]int32, nn)
	ix.out = make([][]int32, nn)
	for i := range nodes {
		ix.out[i] = nodes[i].out
		ix.edgeStart[i] = int32(len(ix.edgeByte))
		keys := make([]int, 0, len(nodes[i].next))
		for b := range nodes[i].next {
			keys = append(keys, int(b))
		}
		sort.Ints(keys)
		for _, b := range keys {
			ix.edgeByte = append(ix.edgeByte, byte(b))
			ix.edgeNext = append(ix.edgeNext, nodes[i].next[byte(b)])
		}
		ix.edgeEnd[i] = int32(len(ix.edgeByte))
	}
	// Breadth-first computation of failure and dictionary links.
	queue := make([]int32, 0, nn)
	for b := 0; b < 256; b++ {
		if nx, ok := nodes[0].next[byte(b)]; ok {
			ix.root[b] = nx
			ix.fail[nx] = 0
			queue = append(queue, nx)
		}
	}
	ix.dict[0] = -1
	for qi := 0; qi < len(queue); qi++ {
		n := queue[qi]
		f := ix.fail[n]
		if len(ix.out[f]) > 0 {
			ix.dict[n] = f
		} else {
			ix.dict[n] = ix.dict[f]
		}
		for e := ix.edgeStart[n]; e < ix.edgeEnd[n]; e++ {
			b, child := ix.edgeByte[e], ix.edgeNext[e]
			ix.fail[child] = ix.step(f, b)
			queue = append(queue, child)
		}
	}
	return ix
}

// step is the goto/failure transition from node n on byte b.
func (ix *acIndex) step(n int32, b byte) int32 {
	for {
		if n == 0 {
			return ix.root[b]
		}
		lo, hi := ix.edgeStart[n], ix.edgeEnd[n]
		for e := lo; e < hi; e++ {
			if ix.edgeByte[e] == b {
				return ix.edgeNext[e]
			}
			if ix.edgeByte[e] > b {
				break
			}
		}
		n = ix.fail[n]
	}
}

// candidates appends to dst the indices of rules whose literal occurs in the
// (ASCII-folded) key, sorted and without duplicates; the always-candidates
// are not included. nodes is scratch space. Each automaton node with output
// is expanded once, however often its literal occurs, so the cost is bounded
// by the key length times the suffix-link depth plus the candidates.
func (ix *acIndex) candidates(dst, nodes []int32, key string) []int32 {
	n := int32(0)
	for k := 0; k < len(key); k++ {
		n = ix.step(n, foldByte(key[k]))
		for m := n; m > 0; m = ix.dict[m] {
			if len(ix.out[m]) > 0 {
				nodes = append(nodes, m)
			}
		}
	}
	if len(nodes) == 0 {
		return dst
	}
	if len(nodes) > 1 {
		slices.Sort(nodes)
		nodes = slices.Compact(nodes)
	}
	for _, m := range nodes {
		dst = append(dst, ix.out[m]...)
	}
	if len(dst) > 1 {
		// Every rule is in exactly one output list: sorting suffices.
		slices.Sort(dst)
	}
	return dst
}
