package main

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
)

// byteSize is a flag.Value for a count of bytes given as a number with an
// optional unit: 1048576, 512MiB, 1.5GB, 10 gib. Units are case-insensitive:
// B; KB, MB, GB, TB (powers of 1000); KiB, MiB, GiB, TiB (powers of 1024).
// A fraction is accepted when it makes a whole number of bytes. Negative
// values, overflow of int64 and anything else are refused.
type byteSize int64

// byteUnits lists the units by name (lower case), and for String the
// largest first.
var byteUnits = []struct {
	name string
	size int64
}{
	{"tib", 1 << 40}, {"tb", 1e12},
	{"gib", 1 << 30}, {"gb", 1e9},
	{"mib", 1 << 20}, {"mb", 1e6},
	{"kib", 1 << 10}, {"kb", 1e3},
	{"b", 1},
}

// unitSpelling is how String writes each unit.
var unitSpelling = map[string]string{
	"tib": "TiB", "tb": "TB", "gib": "GiB", "gb": "GB", "mib": "MiB", "mb": "MB", "kib": "KiB", "kb": "KB", "b": "B",
}

// String writes the size in the largest unit that divides it exactly,
// binary units first (10GiB, 1GB), else as plain bytes.
func (b *byteSize) String() string {
	n := int64(*b)
	if n == 0 {
		return "0"
	}
	for _, u := range byteUnits {
		if u.size > 1 && n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, unitSpelling[u.name])
		}
	}
	return fmt.Sprint(n)
}

// Set parses s; on error b is unchanged.
func (b *byteSize) Set(s string) error {
	n, err := parseByteSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

var errByteSizeSyntax = errors.New("want a byte size such as 10GiB, 512MiB, 64KiB, 1GB or 1048576 (units B, KB/KiB, MB/MiB, GB/GiB, TB/TiB)")

func parseByteSize(s string) (int64, error) {
	text := strings.TrimSpace(s)
	if strings.HasPrefix(text, "-") {
		return 0, errors.New("must not be negative")
	}
	i := 0
	for i < len(text) && (text[i] >= '0' && text[i] <= '9' || text[i] == '.') {
		i++
	}
	num, unit := text[:i], strings.ToLower(strings.TrimSpace(text[i:]))
	whole, frac, hasFrac := strings.Cut(num, ".")
	if whole == "" || (hasFrac && (frac == "" || strings.Contains(frac, "."))) {
		return 0, errByteSizeSyntax
	}
	mult := int64(-1)
	if unit == "" {
		mult = 1
	}
	for _, u := range byteUnits {
		if u.name == unit {
			mult = u.size
		}
	}
	if mult < 0 {
		return 0, fmt.Errorf("unknown unit %q: %w", strings.TrimSpace(text[i:]), errByteSizeSyntax)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, errByteSizeSyntax
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, errors.New("not a whole number of bytes")
	}
	if !r.Num().IsInt64() {
		return 0, fmt.Errorf("too large: at most %d bytes", int64(math.MaxInt64))
	}
	return r.Num().Int64(), nil
}
