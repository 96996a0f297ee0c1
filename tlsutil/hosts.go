package tlsutil

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// ParseHosts checks names for the subjectAltNames of a certificate and
// returns them as ParseHost does. Each name must be an IP address or a DNS
// name, and a DNS name may start with a wildcard label, as in
// *.example.com. The error names every invalid entry, one per line.
func ParseHosts(names []string) ([]string, error) {
	hosts := make([]string, 0, len(names))
	var problems []error
	for _, name := range names {
		host, err := ParseHost(name)
		if err != nil {
			problems = append(problems, fmt.Errorf("%q: %w", name, err))
			continue
		}
		hosts = append(hosts, host)
	}
	return hosts, errors.Join(problems...)
}

// ParseHost checks one name as ParseHosts does, and returns it in the form
// that a certificate contains: an IP address in its usual notation, without
// the brackets of [::1], or the DNS name unchanged.
func ParseHost(name string) (string, error) {
	ip, err := parseIP(name)
	if err != nil {
		return "", err
	}
	if ip.IsValid() {
		return ip.String(), nil
	}
	if strings.Contains(name, "://") {
		if u, err := url.Parse(name); err == nil && u.Hostname() != "" {
			return "", fmt.Errorf("a URL; give its host alone: %s", u.Hostname())
		}
		return "", errors.New("a URL; give its host alone")
	}
	if host, _, err := net.SplitHostPort(name); err == nil && host != "" {
		return "", fmt.Errorf("has a port; give the host alone: %s", strings.Trim(host, "[]"))
	}
	if err := checkDNSName(name); err != nil {
		return "", err
	}
	return name, nil
}

// parseIP returns name as an IP address, including an IPv6 address in
// brackets. It returns the zero Addr and no error for a name that is not
// an IP address.
func parseIP(name string) (netip.Addr, error) {
	text := name
	if inner, ok := strings.CutPrefix(name, "["); ok {
		if inner, ok = strings.CutSuffix(inner, "]"); ok {
			text = inner
		}
	}
	ip, err := netip.ParseAddr(text)
	switch {
	case err != nil:
		return netip.Addr{}, nil
	case text != name && !ip.Is6():
		return netip.Addr{}, fmt.Errorf("only an IPv6 address goes in brackets; give %s", text)
	case ip.Zone() != "":
		return netip.Addr{}, fmt.Errorf("an IP address with a zone, which a certificate cannot contain; give %s", ip.WithZone(""))
	}
	return ip.Unmap(), nil
}

// checkDNSName checks name against the syntax of host names (RFC 1123),
// with underscores allowed as Go's TLS client allows them, and a leftmost
// label "*" for a wildcard.
func checkDNSName(name string) error {
	if name == "" {
		return errors.New("empty; give a host name or an IP address")
	}
	if strings.HasSuffix(name, ".") {
		return fmt.Errorf("ends with a dot; give %s", strings.TrimSuffix(name, "."))
	}
	if len(name) > 253 {
		return fmt.Errorf("%d characters, more than the 253 of a DNS name", len(name))
	}
	labels := strings.Split(name, ".")
	for i, label := range labels {
		switch {
		case label == "*" && i == 0 && len(labels) > 1:
			continue
		case strings.Contains(label, "*"):
			return errors.New("a wildcard * must be the whole leftmost label, as in *.example.com")
		case label == "":
			return errors.New("not a valid DNS name: it has an empty label")
		case len(label) > 63:
			return fmt.Errorf("not a valid DNS name: label %q has more than 63 characters", label)
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Errorf("not a valid DNS name: label %q starts or ends with a hyphen", label)
		}
		for _, r := range label {
			if !isHostNameCharacter(r) {
				return fmt.Errorf("not a valid DNS name: %q is not allowed; use letters, digits, hyphens and dots (punycode, xn--, for other letters)", r)
			}
		}
	}
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" {
		// Such as 300.1.1.1: no top-level domain is all digits.
		return errors.New("neither a valid IP address nor a DNS name, whose last label cannot be all digits")
	}
	return nil
}

func isHostNameCharacter(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
}
