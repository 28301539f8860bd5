package imagefetch

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode"
)

func TestCheckURL(t *testing.T) {
	tests := []struct {
		raw  string
		want string // error text, "" for accepted
	}{
		{"https://www.gstatic.com/webp/gallery/2.jpg", ""},
		{"http://example.com", ""},
		{"HTTPS://Example.COM/a.png?x=1#frag", ""},
		{"http://127.0.0.1:8080/a.jpg", ""},
		{"http://[2606:4700::1111]/a.jpg", ""},
		{"http://example.com/%20a.jpg", ""},
		{"http://xn--bcher-kva.example/a.jpg", ""},

		{"", "must not be empty"},
		{"https://example.com/" + strings.Repeat("a", 100), "is too long"},
		{"ftp://example.com/a.jpg", "must use http or https"},
		{"file:///etc/passwd", "must use http or https"},
		{"gopher://example.com:70/", "must use http or https"},
		{"javascript:alert(1)", "must use http or https"},
		{"//example.com/a.jpg", "must use http or https"},
		{"example.com/a.jpg", "must use http or https"},
		{"http:///a.jpg", "must have a host"},
		{"http://:80/a.jpg", "must have a host"},
		{"http:example.com", "must have a host"},
		{"https://user:pass@example.com/a.jpg", "must not contain credentials"},
		{"https://user@example.com/a.jpg", "must not contain credentials"},
		{"https://@example.com/a.jpg", "must not contain credentials"},
		{"https://example.com/a b.jpg", "must not contain whitespace or control characters"},
		{"https://example.com/a.jpg\n", "must not contain whitespace or control characters"},
		{" https://example.com/a.jpg", "must not contain whitespace or control characters"},
		{"https://example.com/\x00", "must not contain whitespace or control characters"},
		{"https://example.com/\u00a0", "must not contain whitespace or control characters"},
		{"https://example.com/\x7f", "must not contain whitespace or control characters"},
		{"https://example.com/\xff", "must be valid utf-8"},
		{"http://exa mple.com/", "must not contain whitespace or control characters"},
		{"http://[::1/", "is not a valid url"},
		{"http://example.com:99999/", "has an invalid port"},
		{"http://example.com:0/", "has an invalid port"},
		{"http://127.1/", "must spell an ip address in the standard form"},
		{"http://0x7f000001/", "must spell an ip address in the standard form"},
		{"http://2130706433/", "must spell an ip address in the standard form"},
		{"http://0177.0.0.1/", "must spell an ip address in the standard form"},
		{"http://127.0.0.1./", "must spell an ip address in the standard form"},
		{"http://%31%32%37.1/", "is not a valid url"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			err := CheckURL(tt.raw, 100)
			got := ""
			if err != nil {
				got = err.Error()
			}
			equal(t, "error", got, tt.want)
		})
	}
	t.Run("no length limit", func(t *testing.T) {
		if err := CheckURL("https://example.com/"+strings.Repeat("a", 10000), 0); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAmbiguousIPv4(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1":   false,
		"example.com": false,
		"1.example":   false,
		"example.1a":  false,
		"0x":          true,
		"127.1":       true,
		"1.2.3.4.5":   true,
		"0x7f.1":      true,
		"foo.0x10":    true,
		"::1":         false,
		"256.0.0.1":   true,
		"127.0.0.01":  true,
	} {
		equal(t, host, ambiguousIPv4(host), want)
	}
}

// FuzzCheckURL: CheckURL never panics, and whatever it accepts is short
// enough and parses as an absolute http(s) URL with a host and no userinfo
// or whitespace, which the fetcher's request builder accepts too.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{
		"https://www.gstatic.com/webp/gallery/2.jpg",
		"http://user:pass@example.com/",
		"http://127.1:8080/",
		"http://[::ffff:127.0.0.1]:80/",
		"HTTP://EXAMPLE.COM",
		"http://%31%32%37.1/",
		"http:///a",
		"http://[fe80::1%25eth0]/",
	} {
		f.Add(s, 2048)
	}
	f.Fuzz(func(t *testing.T, raw string, maxLen int) {
		if CheckURL(raw, maxLen) != nil {
			return
		}
		if maxLen > 0 && len(raw) > maxLen {
			t.Fatalf("accepted %d bytes with maxLen %d", len(raw), maxLen)
		}
		if strings.IndexFunc(raw, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			t.Fatalf("accepted whitespace or control characters in %q", raw)
		}
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("accepted %q, which does not parse: %v", raw, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			t.Fatalf("accepted scheme %q in %q", u.Scheme, raw)
		}
		if u.Hostname() == "" || u.Opaque != "" {
			t.Fatalf("accepted %q without a host", raw)
		}
		if u.User != nil {
			t.Fatalf("accepted userinfo in %q", raw)
		}
		if ambiguousIPv4(u.Hostname()) {
			t.Fatalf("accepted ambiguous numeric host in %q", raw)
		}
		if _, err := http.NewRequest(http.MethodGet, raw, nil); err != nil {
			t.Fatalf("accepted %q, which the fetcher cannot request: %v", raw, err)
		}
	})
}
