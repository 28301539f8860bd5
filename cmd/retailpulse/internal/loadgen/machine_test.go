package loadgen

import (
	"strings"
	"testing"
	"time"
)

func TestParseProcStat_Columns(t *testing.T) {
	tests := []struct {
		name  string
		stat  string
		want  machineCPU
		error string
	}{
		{
			name: "current kernel: steal and guest columns",
			stat: "cpu  1000 200 300 4000 500 60 70 80 900 10\ncpu0 500 100 150 2000 250 30 35 40 450 5\nintr 1 2 3\n",
			// busy = user+nice+system+irq+softirq; guest is inside user already
			want: machineCPU{busy: (1000 + 200 + 300 + 60 + 70) / 100.0, steal: 0.8},
		},
		{
			name: "kernel without a steal column",
			stat: "cpu 100 0 100 800 0 0 0\n",
			want: machineCPU{busy: 2},
		},
		{
			name:  "no aggregate line",
			stat:  "cpu0 1 2 3 4 5 6 7 8\nintr 1\n",
			error: "no cpu line",
		},
		{
			name:  "too few columns",
			stat:  "cpu 1 2 3 4\n",
			error: "5 fields",
		},
		{
			name:  "not a number",
			stat:  "cpu 1 2 x 4 5 6 7 8\n",
			error: "field 3",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcStat([]byte(tt.stat))
			if tt.error != "" {
				if err == nil || !strings.Contains(err.Error(), tt.error) {
					t.Fatalf("error = %v, want one containing %q", err, tt.error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// The meter sees this process's own work: spin until the machine's busy
// time has grown by a tenth of a CPU-second.
func TestMachineMeter_SeesWorkDone(t *testing.T) {
	mm := startMachineMeter()
	if !mm.ok {
		t.Skip("no /proc/stat on this system")
	}
	deadline := time.Now().Add(30 * time.Second)
	x := 0
	for {
		for i := range 1_000_000 {
			x += i
		}
		u, ok := mm.finish()
		if !ok {
			t.Fatal("finish could not read /proc/stat")
		}
		if u.steal < 0 || u.busy < 0 || u.cpus < 1 || u.seconds <= 0 {
			t.Fatalf("implausible use %+v", u)
		}
		if u.busy >= 0.1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("busy stayed at %.2f CPU-seconds while this test spun (%d)", u.busy, x)
		}
	}
}
