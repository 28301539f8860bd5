package imagefetch

import (
	"errors"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// CheckURL validates an image URL at submit time, before anything is fetched:
// it must be at most maxLen bytes (maxLen <= 0: no limit), valid UTF-8 with no
// whitespace or control characters, parse with net/url as an absolute http or
// https URL (scheme case-insensitive) with a host, carry no credentials
// (user:pass@), and not spell an IPv4 address in a non-standard way (127.1,
// 0x7f000001, 2130706433, 0177.0.0.1). The error is short and lowercase, meant
// to follow a field name ("image_url must not contain credentials").
//
// CheckURL does not resolve names or judge addresses: the fetcher does that
// when it dials, where the answer cannot change between check and use.
func CheckURL(raw string, maxLen int) error {
	if maxLen > 0 && len(raw) > maxLen {
		return errors.New("is too long")
	}
	_, err := parseURL(raw)
	return err
}

// parseURL is CheckURL without the length limit, returning the parsed URL.
func parseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("must not be empty")
	}
	if !utf8.ValidString(raw) {
		return nil, errors.New("must be valid utf-8")
	}
	for _, r := range raw {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return nil, errors.New("must not contain whitespace or control characters")
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("is not a valid url")
	}
	return u, checkParsed(u)
}

// checkParsed holds the rules that apply to a parsed URL, so redirect targets
// (which arrive parsed) obey them too.
func checkParsed(u *url.URL) error {
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
	default:
		return errors.New("must use http or https")
	}
	if u.Opaque != "" || u.Hostname() == "" {
		return errors.New("must have a host")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return errors.New("has an invalid port")
		}
	}
	if u.User != nil {
		return errors.New("must not contain credentials")
	}
	if ambiguousIPv4(u.Hostname()) {
		return errors.New("must spell an ip address in the standard form")
	}
	return nil
}

// ambiguousIPv4 reports whether host is numeric in a way some resolvers and
// browsers read as an IPv4 address but netip does not accept: the WHATWG URL
// rule is that a host whose last label is a number (decimal, or 0x hex) is an
// IPv4 address. Such hosts are refused rather than left to the resolver's
// interpretation. Real names never end in an all-numeric label.
func ambiguousIPv4(host string) bool {
	if strings.Contains(host, ":") {
		return false // IPv6 literal; url.Parse has checked the brackets
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return false
	}
	labels := strings.Split(strings.TrimSuffix(host, "."), ".")
	last := strings.ToLower(labels[len(labels)-1])
	if last == "" {
		return false
	}
	digits := last
	if strings.HasPrefix(last, "0x") {
		digits = last[2:]
		for _, c := range digits {
			if !strings.ContainsRune("0123456789abcdef", c) {
				return false
			}
		}
		return true
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
