package smtpclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/net/idna"
)

// destination is a parsed relay host.
type destination struct {
	host string // host name or IP address, without brackets
	port string
	noMX bool // "[host]": connect to host's addresses, no MX lookup
}

// parseRelayHost parses Postfix relayhost syntax: "[host]:port", "[host]",
// "host:port" or "host"; the port defaults to 25. "[ipv6:2001:db8::1]:25"
// and "[2001:db8::1]:25" are IPv6 addresses; an IPv6 address needs brackets.
func parseRelayHost(s string) (destination, error) {
	var d destination
	rest := strings.TrimSpace(s)
	if rest == "" {
		return d, errors.New("empty")
	}
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return d, fmt.Errorf("%q: missing ']'", s)
		}
		d.host, rest, d.noMX = rest[1:end], rest[end+1:], true
		if len(d.host) > 5 && strings.EqualFold(d.host[:5], "ipv6:") {
			d.host = d.host[5:]
			if ip, err := netip.ParseAddr(d.host); err != nil || !ip.Is6() {
				return d, fmt.Errorf("%q: %q is not an IPv6 address", s, d.host)
			}
		}
		if rest != "" {
			if rest[0] != ':' {
				return d, fmt.Errorf("%q: expected ':port' after ']'", s)
			}
			d.port = rest[1:]
			if d.port == "" {
				return d, fmt.Errorf("%q: empty port", s)
			}
		}
	} else {
		if i := strings.LastIndexByte(rest, ':'); i >= 0 {
			d.host, d.port = rest[:i], rest[i+1:]
			if d.port == "" {
				return d, fmt.Errorf("%q: empty port", s)
			}
		} else {
			d.host = rest
		}
		if strings.Contains(d.host, ":") {
			return d, fmt.Errorf("%q: an IPv6 address must be written in brackets, as [2001:db8::1]:25", s)
		}
	}
	if d.port == "" {
		d.port = DefaultPort
	}
	if err := checkPort(d.port); err != nil {
		return d, fmt.Errorf("%q: %w", s, err)
	}
	if d.host == "" {
		return d, fmt.Errorf("%q: empty host", s)
	}
	if ip, err := netip.ParseAddr(d.host); err == nil {
		d.host, d.noMX = ip.String(), true // an address has no MX records
	} else if !validHostname(d.host) || strings.HasPrefix(d.host, "[") {
		return d, fmt.Errorf("%q: %q is not a host name or IP address", s, d.host)
	}
	return d, nil
}

// target is one server host to try.
type target struct {
	host   string       // lowercase name without trailing dot, or an IP address: RemoteMTA, TLS ServerName, pool key
	lookup string       // the name whose addresses to look up; "" when addrs is known
	addrs  []netip.Addr // known addresses
	port   string
}

func (t target) key() string { return net.JoinHostPort(t.host, t.port) }

// route returns the hosts of a relay destination in the order to try.
func (c *Client) route(ctx context.Context, d destination) ([]target, *failure) {
	if ip, err := netip.ParseAddr(d.host); err == nil {
		return []target{{host: ip.String(), addrs: []netip.Addr{ip}, port: d.port}}, nil
	}
	if d.noMX {
		return []target{{host: strings.ToLower(strings.TrimSuffix(d.host, ".")), lookup: d.host, port: d.port}}, nil
	}
	return c.mx(ctx, d.host, d.port)
}

// routeDomain returns the hosts serving a recipient domain, in the order to
// try, or the failure that ends delivery to it.
func (c *Client) routeDomain(ctx context.Context, domain string) ([]target, *failure) {
	if strings.HasPrefix(domain, "[") {
		// RFC 5321 §4.1.3 address literal: deliver to that address.
		ip, ok := parseAddressLiteral(domain)
		if !ok {
			return nil, &failure{enh: "5.1.2", msg: fmt.Sprintf("bad address literal %s", domain)}
		}
		return []target{{host: ip.String(), addrs: []netip.Addr{ip}, port: c.o.Port}}, nil
	}
	ascii, err := idna.Lookup.ToASCII(strings.TrimSuffix(domain, "."))
	if err != nil || ascii == "" {
		return nil, &failure{enh: "5.1.2", msg: fmt.Sprintf("bad destination domain %q: %v", domain, err)}
	}
	// Absolute name: the resolver's search list must not turn an unknown
	// domain into some local one.
	return c.mx(ctx, ascii+".", c.o.Port)
}

// parseAddressLiteral parses "[192.0.2.1]" or "[IPv6:2001:db8::1]"
// (RFC 5321 §4.1.3).
func parseAddressLiteral(s string) (netip.Addr, bool) {
	if len(s) < 3 || s[0] != '[' || s[len(s)-1] != ']' {
		return netip.Addr{}, false
	}
	in := s[1 : len(s)-1]
	v6 := len(in) > 5 && strings.EqualFold(in[:5], "ipv6:")
	if v6 {
		in = in[5:]
	}
	ip, err := netip.ParseAddr(in)
	if err != nil || ip.Zone() != "" || ip.Is6() != v6 {
		return netip.Addr{}, false
	}
	return ip, true
}

// mx looks up the MX records of name and returns their hosts, in the order
// to try (RFC 5321 §5.1).
func (c *Client) mx(ctx context.Context, name, port string) ([]target, *failure) {
	display := strings.TrimSuffix(name, ".")
	mxs, err := c.o.Resolver.LookupMX(ctx, name)
	if err != nil {
		var de *net.DNSError
		switch {
		case errors.As(err, &de) && de.IsNotFound:
			// Both NXDOMAIN and "no MX records" are reported as not found;
			// the implicit MX lookup below tells them apart.
			mxs = nil
		case len(mxs) > 0:
			// net.Resolver drops malformed records and reports them
			// alongside the valid ones: use those.
			c.log.Warn("MX lookup returned errors", "name", display, "error", err)
		default:
			return nil, &failure{enh: "4.4.3", msg: fmt.Sprintf("MX lookup of %s failed: %v", display, err), temp: true}
		}
	}
	if len(mxs) == 0 {
		// RFC 5321 §5.1: without MX records the domain itself is the
		// implicit MX, with preference 0 (its A/AAAA records).
		addrs, f := c.lookupAddrs(ctx, name)
		if f != nil {
			if f.notFound {
				// NXDOMAIN, or a domain with neither MX nor address
				// records: no mail route exists (RFC 3463 X.1.2: bad
				// destination system address).
				return nil, &failure{enh: "5.1.2", msg: fmt.Sprintf("domain %s not found: no MX or address records", display)}
			}
			return nil, f
		}
		return []target{{host: strings.ToLower(display), addrs: addrs, port: port}}, nil
	}
	for _, mx := range mxs {
		if mx == nil {
			continue
		}
		if mx.Host == "." || mx.Host == "" {
			// RFC 7505 §3: a null MX ("." as exchange) says the domain
			// accepts no mail; the client must not fall back to its
			// address records and fails at once with 5.1.10 ("Recipient
			// address has null MX", the code RFC 7505 registers). A null
			// MX must be the only MX record; one among others is taken as
			// meant all the same.
			return nil, &failure{enh: "5.1.10", msg: fmt.Sprintf("domain %s does not accept mail (null MX, RFC 7505)", display)}
		}
	}
	// RFC 5321 §5.1: lowest preference first; hosts of equal preference
	// in random order, to spread the load.
	mxs = slices.Clone(mxs)
	rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
	slices.SortStableFunc(mxs, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
	var ts []target
	seen := make(map[string]bool)
	for _, mx := range mxs {
		if mx == nil {
			continue
		}
		h := strings.ToLower(strings.TrimSuffix(mx.Host, "."))
		if seen[h] {
			continue
		}
		seen[h] = true
		if ip, err := netip.ParseAddr(h); err == nil {
			ts = append(ts, target{host: ip.String(), addrs: []netip.Addr{ip}, port: port})
			continue
		}
		ts = append(ts, target{host: h, lookup: h + ".", port: port})
	}
	return ts, nil
}

// addrs returns the addresses of t.
func (c *Client) addrs(ctx context.Context, t target) ([]netip.Addr, *failure) {
	if t.lookup == "" {
		return t.addrs, nil
	}
	return c.lookupAddrs(ctx, t.lookup)
}

// lookupAddrs looks up the A and AAAA records of name.
func (c *Client) lookupAddrs(ctx context.Context, name string) ([]netip.Addr, *failure) {
	display := strings.TrimSuffix(name, ".")
	ias, err := c.o.Resolver.LookupIPAddr(ctx, name)
	if err != nil {
		var de *net.DNSError
		nf := errors.As(err, &de) && de.IsNotFound
		return nil, &failure{enh: "4.4.3", msg: fmt.Sprintf("address lookup of %s failed: %v", display, err), temp: true, notFound: nf}
	}
	var out []netip.Addr
	for _, ia := range ias {
		ip, ok := netip.AddrFromSlice(ia.IP)
		if !ok {
			continue
		}
		out = append(out, ip.Unmap().WithZone(ia.Zone))
	}
	if len(out) == 0 {
		return nil, &failure{enh: "4.4.3", msg: fmt.Sprintf("address lookup of %s: no addresses", display), temp: true, notFound: true}
	}
	return out, nil
}
