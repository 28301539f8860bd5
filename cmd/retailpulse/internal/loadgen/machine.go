package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

// machineCPU is the whole machine's CPU time so far, from Linux's
// /proc/stat, in seconds summed over its CPUs.
type machineCPU struct {
	busy  float64 // user, nice, system, irq and softirq: what all processes ran
	steal float64 // time the hypervisor gave this machine's CPUs to others
}

// clockTicks is Linux's USER_HZ, the unit of /proc/stat: 100 on every
// architecture Go supports (the kernel fixes it for the ABI, whatever the
// kernel's own HZ).
const clockTicks = 100

// readMachineCPU reads /proc/stat; ok is false where there is none.
func readMachineCPU() (machineCPU, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, false
	}
	m, err := parseProcStat(b)
	return m, err == nil
}

// parseProcStat parses the aggregate "cpu" line of /proc/stat: user nice
// system idle iowait irq softirq steal [guest guest_nice]. Guest time is
// already counted in user and nice, so it is not added again. Kernels
// older than 2.6.11 have no steal column; it reads as 0.
func parseProcStat(b []byte) (machineCPU, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) == 0 || string(f[0]) != "cpu" {
			continue
		}
		if len(f) < 8 {
			return machineCPU{}, fmt.Errorf("/proc/stat: cpu line has %d fields, want at least 8", len(f))
		}
		var v [8]float64
		for i := range v {
			if i+1 >= len(f) {
				break
			}
			n, err := strconv.ParseUint(string(f[i+1]), 10, 64)
			if err != nil {
				return machineCPU{}, fmt.Errorf("/proc/stat: cpu field %d: %w", i+1, err)
			}
			v[i] = float64(n) / clockTicks
		}
		user, nice, system, irq, softirq, steal := v[0], v[1], v[2], v[5], v[6], v[7]
		return machineCPU{busy: user + nice + system + irq + softirq, steal: steal}, nil
	}
	return machineCPU{}, errors.New("/proc/stat: no cpu line")
}

// machineMeter measures the machine's CPU over a run: how busy its CPUs
// were with every process on it (the service, the generator, the image
// host, anything else) and how much the hypervisor took. Steal is what
// makes one run of a virtual machine slower than the next with nothing
// else changed; a run's numbers are only comparable with runs that had as
// little.
type machineMeter struct {
	start machineCPU
	t0    time.Time
	ok    bool
}

// machineUse is the machine's CPU over a measured interval.
type machineUse struct {
	cpus        int
	seconds     float64 // the interval
	busy, steal float64 // CPU-seconds, summed over the CPUs
}

func startMachineMeter() machineMeter {
	m, ok := readMachineCPU()
	return machineMeter{start: m, t0: time.Now(), ok: ok}
}

// finish returns the machine's use since start; ok is false where
// /proc/stat is not available.
func (mm machineMeter) finish() (u machineUse, ok bool) {
	if !mm.ok {
		return machineUse{}, false
	}
	end, ok := readMachineCPU()
	if !ok {
		return machineUse{}, false
	}
	return machineUse{cpus: runtime.NumCPU(), seconds: time.Since(mm.t0).Seconds(),
		busy: end.busy - mm.start.busy, steal: end.steal - mm.start.steal}, true
}
