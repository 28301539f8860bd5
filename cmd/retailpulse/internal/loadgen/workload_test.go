package loadgen

import (
	"encoding/json"
	"testing"
)

// A job that ends differently from what its inputs imply is reported.
func TestJobRecord_Check(t *testing.T) {
	status := func(s, id string, stores ...string) jobStatus {
		st := jobStatus{Status: s, JobID: json.RawMessage(id)}
		for _, id := range stores {
			st.Error = append(st.Error, storeError{StoreID: id, Error: "image x: http 404"})
		}
		return st
	}
	ok := jobRecord{id: 7}
	bad := jobRecord{id: 7, wantFailed: []string{"S1", "S2"}}
	tests := []struct {
		name    string
		job     jobRecord
		st      jobStatus
		wantErr bool
	}{
		{"completed as expected", ok, status("completed", `"7"`), false},
		{"numeric job id accepted", ok, status("completed", `7`), false},
		{"wrong job id", ok, status("completed", `"8"`), true},
		{"failed unexpectedly", ok, status("failed", `"7"`, "S1"), true},
		{"failed as expected, any order", bad, status("failed", `"7"`, "S2", "S1"), false},
		{"store listed twice", bad, status("failed", `"7"`, "S1", "S2", "S1"), true},
		{"store missing", bad, status("failed", `"7"`, "S1"), true},
		{"completed although an image failed", bad, status("completed", `"7"`), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.job.check(tt.st); (err != nil) != tt.wantErr {
				t.Fatalf("check = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestPerJob_SpreadsStreamsEvenly(t *testing.T) {
	tests := []struct {
		n, jobs int
		want    []int
	}{
		{10, 3, []int{4, 3, 3}},
		{1000, 20, []int{50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50, 50}},
		{2, 4, []int{1, 1, 0, 0}},
		{0, 2, []int{0, 0}},
	}
	for _, tt := range tests {
		total := 0
		for j := range tt.jobs {
			k := perJob(tt.n, tt.jobs, j)
			total += k
			if k != tt.want[j] {
				t.Errorf("perJob(%d, %d, %d) = %d, want %d", tt.n, tt.jobs, j, k, tt.want[j])
			}
		}
		if total != tt.n {
			t.Errorf("%d streams over %d jobs: %d in all", tt.n, tt.jobs, total)
		}
	}
}
