package confedit

import (
	"fmt"
	"strings"

	"github.com/mailgate/mailgate/internal/address"
	"github.com/mailgate/mailgate/internal/conffile"
)

// Change describes one line an edit changed, for the command's report.
type Change struct {
	File string
	Line int    // 1-based line number before the edit; 0 for an appended line
	Old  string // "" for an added line
	New  string // "" for a removed line
}

func (c Change) String() string {
	switch {
	case c.Old == "":
		return fmt.Sprintf("%s: added %q", c.File, c.New)
	case c.New == "":
		return fmt.Sprintf("%s:%d: removed %q", c.File, c.Line, c.Old)
	}
	return fmt.Sprintf("%s:%d: %q → %q", c.File, c.Line, c.Old, c.New)
}

var addrOpts = address.Options{UTF8Local: true}

func isBlank(r rune) bool { return r == ' ' || r == '\t' }

// listEntry is a "key item[,item…]" line (postfix-virtual.cf,
// postfix-send-as.cf) with its items as written.
type listEntry struct {
	Entry
	keyText string
	key     conffile.Key
	items   []string
}

// listEntries returns the list lines, only those of key want when it is
// not nil.
func listEntries(d *Doc, bare bool, want *conffile.Key) []listEntry {
	var out []listEntry
	wantText := ""
	if want != nil {
		wantText = want.String()
	}
	d.Each(true, func(e Entry) bool {
		i := strings.IndexFunc(e.Text, isBlank)
		if i < 0 {
			return true // no items: a broken line, left as it is
		}
		if want != nil && !mayEqual(e.Text[:i], wantText) {
			return true
		}
		f := strings.FieldsFunc(e.Text, isBlank)
		k, err := conffile.ParseKey(f[0], bare)
		if err != nil {
			return true // a broken line is left as it is
		}
		items := strings.FieldsFunc(strings.Join(f[1:], " "), func(r rune) bool { return r == ',' || isBlank(r) })
		if len(items) > 0 {
			out = append(out, listEntry{Entry: e, keyText: f[0], key: k, items: items})
		}
		return true
	})
	return out
}

// itemIs reports whether a written item is the address a (canonical compare).
func itemIs(item string, a address.Address) bool {
	if !mayEqual(item, a.String()) {
		return false
	}
	b, err := address.Parse(item, addrOpts)
	return err == nil && b == a
}

// mayEqual is a fast pre-filter for canonical comparison: written text can
// only equal a canonical form when it does so ignoring ASCII case, or when
// it has a quote, a backslash or a non-ASCII byte (quoted local parts and
// U-label domains have other spellings). It keeps edits of 100k-line files
// from parsing every address.
func mayEqual(written, canonical string) bool {
	if strings.EqualFold(written, canonical) {
		return true
	}
	for i := 0; i < len(written); i++ {
		if c := written[i]; c == '"' || c == '\\' || c >= 0x80 {
			return true
		}
	}
	return false
}

// AddToList adds items to the line of key in a list file, or appends a new
// line "key item,item". It fails, changing nothing, when an item is already
// there.
func AddToList(d *Doc, key conffile.Key, items []address.Address, bare bool) ([]Change, error) {
	entries := listEntries(d, bare, &key)
	var first *listEntry
	for i := range entries {
		e := &entries[i]
		if e.key != key {
			continue
		}
		if first == nil {
			first = e
		}
		for _, it := range e.items {
			for _, a := range items {
				if itemIs(it, a) {
					return nil, fmt.Errorf("%s already has %s (%s:%d)", key, a, d.Name, e.Line())
				}
			}
		}
	}
	texts := make([]string, len(items))
	for i, a := range items {
		texts[i] = a.String()
	}
	if first == nil {
		line := key.String() + " " + strings.Join(texts, ",")
		d.Append(line)
		return []Change{{File: d.Name, New: line}}, nil
	}
	old := first.Raw
	line := first.keyText + " " + strings.Join(append(first.items, texts...), ",")
	if !strings.Contains(first.Raw, "\n") {
		// Keep the line as written and append: "k a" → "k a,b".
		line = strings.TrimRight(first.Raw, " \t") + "," + strings.Join(texts, ",")
	}
	d.Replace(first.Entry, line)
	return []Change{{File: d.Name, Line: first.Line(), Old: old, New: line}}, nil
}

// RemoveFromList removes item from every line of key (a line left without
// items is removed). It fails, changing nothing, when no line of key has it.
func RemoveFromList(d *Doc, key conffile.Key, item address.Address, bare bool) ([]Change, error) {
	changes := removeItems(d, bare, &key, item)
	if len(changes) == 0 {
		return nil, fmt.Errorf("%s has no %s in %s", key, item, d.Name)
	}
	return changes, nil
}

// RemoveItemEverywhere removes item from every line of a list file.
func RemoveItemEverywhere(d *Doc, item address.Address, bare bool) []Change {
	return removeItems(d, bare, nil, item)
}

func removeItems(d *Doc, bare bool, key *conffile.Key, item address.Address) []Change {
	entries := listEntries(d, bare, key)
	var changes []Change
	// From the last line to the first, so that earlier indexes stay valid.
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if key != nil && e.key != *key {
			continue
		}
		var keep []string
		for _, it := range e.items {
			if !itemIs(it, item) {
				keep = append(keep, it)
			}
		}
		if len(keep) == len(e.items) {
			continue
		}
		old := e.Raw
		if len(keep) == 0 {
			d.Delete(e.Entry)
			changes = append(changes, Change{File: d.Name, Line: e.Line(), Old: old})
			continue
		}
		line := e.keyText + " " + strings.Join(keep, ",")
		d.Replace(e.Entry, line)
		changes = append(changes, Change{File: d.Name, Line: e.Line(), Old: old, New: line})
	}
	// Report in file order.
	for i, j := 0, len(changes)-1; i < j; i, j = i+1, j-1 {
		changes[i], changes[j] = changes[j], changes[i]
	}
	return changes
}

// firstFieldIs finds the entries whose first field (split at sep) is a.
func firstFieldIs(d *Doc, a address.Address, continuation bool, sep func(rune) bool) []Entry {
	var out []Entry
	d.Each(continuation, func(e Entry) bool {
		first := e.Text
		if i := strings.IndexFunc(first, sep); i >= 0 {
			first = first[:i]
		}
		if itemIs(first, a) {
			out = append(out, e)
		}
		return true
	})
	return out
}

func isPipe(r rune) bool { return r == '|' }

// AddAccount appends "address|hash" to postfix-accounts.cf.
func AddAccount(d *Doc, a address.Address, hash string) ([]Change, error) {
	if e := firstFieldIs(d, a, false, isPipe); len(e) > 0 {
		return nil, fmt.Errorf("account %s already exists (%s:%d)", a, d.Name, e[0].Line())
	}
	line := a.String() + "|" + hash
	d.Append(line)
	return []Change{{File: d.Name, New: "(account " + a.String() + ")"}}, nil
}

// UpdateAccount replaces the password hash of an account, keeping the
// third field ("address|hash|extra") as it is.
func UpdateAccount(d *Doc, a address.Address, hash string) ([]Change, error) {
	es := firstFieldIs(d, a, false, isPipe)
	if len(es) == 0 {
		return nil, fmt.Errorf("account %s does not exist", a)
	}
	var changes []Change
	for i := len(es) - 1; i >= 0; i-- {
		parts := strings.SplitN(es[i].Text, "|", 3)
		parts = append(parts[:1], append([]string{hash}, parts[min(2, len(parts)):]...)...)
		d.Replace(es[i], strings.Join(parts, "|"))
		changes = append(changes, Change{File: d.Name, Line: es[i].Line(), Old: "(password of " + a.String() + ")", New: "(new password)"})
	}
	return changes, nil
}

// DeleteAccount removes the line of an account.
func DeleteAccount(d *Doc, a address.Address) ([]Change, error) {
	return deleteFirstField(d, a, false, isPipe, "account")
}

func deleteFirstField(d *Doc, a address.Address, continuation bool, sep func(rune) bool, what string) ([]Change, error) {
	es := firstFieldIs(d, a, continuation, sep)
	if len(es) == 0 {
		return nil, fmt.Errorf("%s %s does not exist", what, a)
	}
	var changes []Change
	for i := len(es) - 1; i >= 0; i-- {
		old := es[i].Raw
		if what == "account" {
			old = "(account " + a.String() + ")"
		}
		d.Delete(es[i])
		changes = append([]Change{{File: d.Name, Line: es[i].Line(), Old: old}}, changes...)
	}
	return changes, nil
}

// AddRestriction appends "address REJECT" to an access file.
func AddRestriction(d *Doc, a address.Address) ([]Change, error) {
	if e := firstFieldIs(d, a, true, isBlank); len(e) > 0 {
		return nil, fmt.Errorf("%s is already restricted (%s:%d)", a, d.Name, e[0].Line())
	}
	line := a.String() + " REJECT"
	d.Append(line)
	return []Change{{File: d.Name, New: line}}, nil
}

// DeleteRestriction removes the line of an address from an access file.
func DeleteRestriction(d *Doc, a address.Address) ([]Change, error) {
	return deleteFirstField(d, a, true, isBlank, "restriction of")
}
