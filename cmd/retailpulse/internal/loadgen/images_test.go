package loadgen

import "testing"

func TestMakeJPEG_DecodesAtAnySize(t *testing.T) {
	for _, size := range []int{0, 20_000, 100_000} {
		b, err := makeJPEG(640, 480, size)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < size {
			t.Errorf("size %d: got %d bytes", size, len(b))
		}
	}
}
