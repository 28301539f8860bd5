package main

import (
	"strings"
	"testing"
)

func TestByteSize_Set(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "1048576", want: 1 << 20},
		{in: "0", want: 0},
		{in: "10GiB", want: 10 << 30},
		{in: "512MiB", want: 512 << 20},
		{in: "64KiB", want: 64 << 10},
		{in: "2TiB", want: 2 << 40},
		{in: "1GB", want: 1_000_000_000},
		{in: "3MB", want: 3_000_000},
		{in: "7KB", want: 7_000},
		{in: "2TB", want: 2_000_000_000_000},
		{in: "100B", want: 100},
		{in: "10gib", want: 10 << 30},
		{in: "10GIB", want: 10 << 30},
		{in: "1kb", want: 1000},
		{in: " 10 GiB ", want: 10 << 30},
		{in: "1.5GiB", want: 3 << 29},
		{in: "0.5KiB", want: 512},
		{in: "1.001KB", want: 1001},
		{in: "8589934591GiB", want: 8589934591 << 30},
		{in: "9223372036854775807", want: 1<<63 - 1},
		{in: "-1", wantErr: "negative"},
		{in: "-1GiB", wantErr: "negative"},
		{in: "1.5B", wantErr: "whole number of bytes"},
		{in: "0.0001KiB", wantErr: "whole number of bytes"},
		{in: "9223372036854775808", wantErr: "too large"},
		{in: "8589934592GiB", wantErr: "too large"},
		{in: "99999999999999999999TiB", wantErr: "too large"},
		{in: "", wantErr: "want a byte size"},
		{in: "GiB", wantErr: "want a byte size"},
		{in: "ten", wantErr: "want a byte size"},
		{in: "10XB", wantErr: `unknown unit "XB"`},
		{in: "10G", wantErr: `unknown unit "G"`},
		{in: "1e9", wantErr: `unknown unit "e9"`},
		{in: "0x10", wantErr: `unknown unit "x10"`},
		{in: "+5", wantErr: "want a byte size"},
		{in: ".5GiB", wantErr: "want a byte size"},
		{in: "5.GiB", wantErr: "want a byte size"},
		{in: "1.2.3", wantErr: "want a byte size"},
		{in: "10GiB5", wantErr: "unknown unit"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			b := byteSize(42)
			err := b.Set(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Set(%q) = %v, want an error containing %q", tt.in, err, tt.wantErr)
				}
				if b != 42 {
					t.Fatalf("Set(%q) failed but changed the value to %d", tt.in, b)
				}
				return
			}
			if err != nil {
				t.Fatalf("Set(%q): %v", tt.in, err)
			}
			if int64(b) != tt.want {
				t.Fatalf("Set(%q) = %d, want %d", tt.in, b, tt.want)
			}
		})
	}
}

func TestByteSize_String(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0"},
		{1, "1"},
		{1000, "1KB"},
		{1024, "1KiB"},
		{1536, "1536"},
		{10 << 20, "10MiB"},
		{10 << 30, "10GiB"},
		{1_000_000_000, "1GB"},
		{3 << 40, "3TiB"},
		{1025, "1025"},
		{1<<63 - 1, "9223372036854775807"},
	}
	for _, tt := range tests {
		b := byteSize(tt.in)
		if got := b.String(); got != tt.want {
			t.Errorf("byteSize(%d).String() = %q, want %q", tt.in, got, tt.want)
		}
		// What String writes, Set reads back.
		var back byteSize
		if err := back.Set(b.String()); err != nil || back != b {
			t.Errorf("Set(%q) = %d, %v; want %d", b.String(), back, err, tt.in)
		}
	}
}
