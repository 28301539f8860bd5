package storemaster_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/retailpulse/retailpulse/storemaster"
)

// MustLoad loads a store master from text or fails the test.
func MustLoad(tb testing.TB, text string) *storemaster.Master {
	tb.Helper()
	m, err := storemaster.Load(strings.NewReader(text), "stores.csv")
	if err != nil {
		tb.Fatalf("load: %v", err)
	}
	return m
}

// assertStore fails unless m holds want under want.ID.
func assertStore(tb testing.TB, m *storemaster.Master, want storemaster.Store) {
	tb.Helper()
	got, ok := m.Lookup(want.ID)
	if !ok {
		tb.Fatalf("Lookup(%q): not found", want.ID)
	}
	if got != want {
		tb.Fatalf("Lookup(%q) = %+v, want %+v", want.ID, got, want)
	}
}

// assertErrContains fails unless err is non-nil and contains every part.
func assertErrContains(tb testing.TB, err error, parts ...string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("err = nil, want an error containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			tb.Fatalf("err = %q, want it to contain %q", err, p)
		}
	}
}

func TestLoad_QuotedCommas(t *testing.T) {
	tests := []struct {
		name string
		text string
		want storemaster.Store
	}{
		{
			name: "comma inside name",
			text: "AreaCode,StoreName,StoreID\n700029,\"A.A ENTP,\",S1\n",
			want: storemaster.Store{ID: "S1", Name: "A.A ENTP,", AreaCode: "700029"},
		},
		{
			name: "several commas",
			text: "AreaCode,StoreName,StoreID\n1,\"Kumar, Sons, and Co\",S2\n",
			want: storemaster.Store{ID: "S2", Name: "Kumar, Sons, and Co", AreaCode: "1"},
		},
		{
			name: "escaped quote",
			text: "AreaCode,StoreName,StoreID\n1,\"The \"\"Best\"\", Store\",S3\n",
			want: storemaster.Store{ID: "S3", Name: `The "Best", Store`, AreaCode: "1"},
		},
		{
			name: "newline inside quotes",
			text: "AreaCode,StoreName,StoreID\n1,\"Two\nLines\",S4\n",
			want: storemaster.Store{ID: "S4", Name: "Two\nLines", AreaCode: "1"},
		},
		{
			name: "crlf line endings",
			text: "AreaCode,StoreName,StoreID\r\n1,\"A, B\",S5\r\n",
			want: storemaster.Store{ID: "S5", Name: "A, B", AreaCode: "1"},
		},
		{
			name: "spaces trimmed, inner spaces kept",
			text: "AreaCode,StoreName,StoreID\n 1 ,\"  ASHRAF  PROV. STORE,-1 \", S6 \n",
			want: storemaster.Store{ID: "S6", Name: "ASHRAF  PROV. STORE,-1", AreaCode: "1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := MustLoad(t, tt.text)
			if m.Len() != 1 {
				t.Fatalf("Len() = %d, want 1", m.Len())
			}
			assertStore(t, m, tt.want)
		})
	}
}

func TestLoad_Header(t *testing.T) {
	t.Run("accepted", func(t *testing.T) {
		want := storemaster.Store{ID: "S1", Name: "Shop, One", AreaCode: "560001"}
		tests := []struct {
			name string
			text string
		}{
			{"canonical", "AreaCode,StoreName,StoreID\n560001,\"Shop, One\",S1\n"},
			{"utf-8 bom", "\ufeffAreaCode,StoreName,StoreID\n560001,\"Shop, One\",S1\n"},
			{"bom before quoted header", "\ufeff\"AreaCode\",\"StoreName\",\"StoreID\"\n560001,\"Shop, One\",S1\n"},
			{"reordered", "StoreID,AreaCode,StoreName\nS1,560001,\"Shop, One\"\n"},
			{"case and spaces", " storeid , STORENAME,areacode \nS1,\"Shop, One\",560001\n"},
			{"extra columns", "Region,StoreID,Notes,StoreName,AreaCode\nSouth,S1,\"x, y\",\"Shop, One\",560001\n"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				assertStore(t, MustLoad(t, tt.text), want)
			})
		}
	})

	t.Run("rejected", func(t *testing.T) {
		tests := []struct {
			name string
			text string
			want []string
		}{
			{"missing StoreID", "AreaCode,StoreName\n1,A\n", []string{"stores.csv line 1", `missing column "StoreID"`}},
			{"missing AreaCode", "StoreName,StoreID\nA,S1\n", []string{`missing column "AreaCode"`}},
			{"missing two", "StoreID,Name\nS1,A\n", []string{`missing columns ["AreaCode" "StoreName"]`}},
			{"misspelled", "AreaCode,Store Name,StoreID\n1,A,S1\n", []string{`missing column "StoreName"`}},
			{"data row as header", "700029,A.A ENTP,S00839486\n", []string{"missing columns"}},
			{"duplicate column", "AreaCode,StoreName,StoreID,storeid\n1,A,S1,S2\n", []string{`duplicate column "storeid"`}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := storemaster.Load(strings.NewReader(tt.text), "stores.csv")
				assertErrContains(t, err, tt.want...)
			})
		}
	})
}

func TestLoad_DuplicateIDs(t *testing.T) {
	tests := []struct {
		name string
		text string
		want string
	}{
		{
			name: "adjacent",
			text: "AreaCode,StoreName,StoreID\n1,A,S1\n1,B,S1\n",
			want: `stores.csv line 3: duplicate store id "S1" (first on line 2)`,
		},
		{
			name: "far apart",
			text: "AreaCode,StoreName,StoreID\n1,A,S1\n1,B,S2\n1,C,S3\n1,D,S2\n",
			want: `stores.csv line 5: duplicate store id "S2" (first on line 3)`,
		},
		{
			name: "equal after trimming",
			text: "AreaCode,StoreName,StoreID\n1,A,S1\n1,B, S1 \n",
			want: `stores.csv line 3: duplicate store id "S1" (first on line 2)`,
		},
		{
			name: "line numbers count quoted newlines",
			text: "AreaCode,StoreName,StoreID\n1,\"A\nB\",S1\n1,C,S1\n",
			want: `stores.csv line 4: duplicate store id "S1" (first on line 2)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := storemaster.Load(strings.NewReader(tt.text), "stores.csv")
			if err == nil || err.Error() != tt.want {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestLoad_Invalid(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []string
	}{
		{"empty file", "", []string{"stores.csv: empty file"}},
		{"only a bom", "\ufeff", []string{"stores.csv: empty file"}},
		{"blank lines only", "\n\n", []string{"stores.csv: empty file"}},
		{"header only", "AreaCode,StoreName,StoreID\n", []string{"stores.csv: no stores"}},
		{"empty id", "AreaCode,StoreName,StoreID\n1,A,S1\n1,B,\n", []string{"stores.csv line 3: empty store id"}},
		{"blank id", "AreaCode,StoreName,StoreID\n1,A,   \n", []string{"stores.csv line 2: empty store id"}},
		{"ragged row, too few", "AreaCode,StoreName,StoreID\n1,A,S1\n1,B\n", []string{"stores.csv", "line 3", "wrong number of fields"}},
		{"ragged row, too many", "AreaCode,StoreName,StoreID\n1,A, B,S1\n", []string{"stores.csv", "line 2", "wrong number of fields"}},
		{"unterminated quote", "AreaCode,StoreName,StoreID\n1,\"A,S1\n", []string{"stores.csv", "line 2", "quote"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := storemaster.Load(strings.NewReader(tt.text), "stores.csv")
			if m != nil {
				t.Fatalf("Load returned a Master with an error: %v", err)
			}
			assertErrContains(t, err, tt.want...)
		})
	}
}

func TestLoad_Source(t *testing.T) {
	m := MustLoad(t, "AreaCode,StoreName,StoreID\n1,A,S1\n")
	if got := m.Source(); got != "stores.csv" {
		t.Fatalf("Source() = %q, want %q", got, "stores.csv")
	}
	if _, ok := m.Lookup("s1"); ok {
		t.Fatal(`Lookup("s1") found a store: ids are case-sensitive`)
	}
	if _, ok := m.Lookup(""); ok {
		t.Fatal(`Lookup("") found a store`)
	}
}

func TestLoadFile(t *testing.T) {
	t.Run("ok", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "stores.csv")
		if err := os.WriteFile(path, []byte("AreaCode,StoreName,StoreID\n1,\"A, B\",S1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		m, err := storemaster.LoadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if m.Source() != path {
			t.Fatalf("Source() = %q, want %q", m.Source(), path)
		}
		assertStore(t, m, storemaster.Store{ID: "S1", Name: "A, B", AreaCode: "1"})
	})
	t.Run("error names the file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "stores.csv")
		if err := os.WriteFile(path, []byte("AreaCode,StoreName\n1,A\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := storemaster.LoadFile(path)
		assertErrContains(t, err, path+" line 1", `missing column "StoreID"`)
	})
	t.Run("not found", func(t *testing.T) {
		_, err := storemaster.LoadFile(filepath.Join(t.TempDir(), "missing.csv"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("err = %v, want fs.ErrNotExist", err)
		}
	})
}

// TestLoadFile_CustomerStoreMaster loads the customer's store master when it
// is present beside the repository (it is not part of it).
func TestLoadFile_CustomerStoreMaster(t *testing.T) {
	path := filepath.Join("..", "..", "shared", "data", "StoreMasterAssignment.csv")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		t.Skipf("customer store master not present at %s", path)
	}
	m, err := storemaster.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Len(), 4944; got != want {
		t.Fatalf("Len() = %d, want %d", got, want)
	}
	for _, want := range []storemaster.Store{
		// The two stores in the assignment's example request.
		{ID: "S00339218", Name: "BHARAT STORE", AreaCode: "710006"},
		{ID: "S01408764", Name: "Asha Communication", AreaCode: "710006"},
		// First row.
		{ID: "S00339198", Name: "B P STORE", AreaCode: "710006"},
		// Quoted commas.
		{ID: "S00839486", Name: "A.A ENTP,", AreaCode: "700029"},
		{ID: "S00839613", Name: "ASHRAF  PROV. STORE,-1", AreaCode: "700029"},
		// Trailing space in the file.
		{ID: "S00339420", Name: "RENU COMMUNICATION", AreaCode: "710006"},
		// Last row.
		{ID: "S01400836", Name: "Nikita Store 2", AreaCode: "710006"},
	} {
		assertStore(t, m, want)
	}
}

func TestSample_ContainsSpecStores(t *testing.T) {
	m := storemaster.Sample()
	if m.Source() != "sample" {
		t.Fatalf("Source() = %q, want %q", m.Source(), "sample")
	}
	if m.Len() < 20 {
		t.Fatalf("Len() = %d, want at least 20", m.Len())
	}
	for _, id := range []string{"S00339218", "S01408764"} {
		if _, ok := m.Lookup(id); !ok {
			t.Errorf("Lookup(%q): not found", id)
		}
	}
	for i := 1; i <= 10; i++ {
		id := "S" + leftPad(strconv.Itoa(i), 8)
		if _, ok := m.Lookup(id); !ok {
			t.Errorf("Lookup(%q): not found", id)
		}
	}
	commas := 0
	for i := 1; i <= 18; i++ {
		if s, ok := m.Lookup("S" + leftPad(strconv.Itoa(i), 8)); ok && strings.Contains(s.Name, ",") {
			commas++
		}
	}
	if commas == 0 {
		t.Error("sample has no store name with a comma")
	}
	if storemaster.Sample() != m {
		t.Error("Sample() returned a different Master on the second call")
	}
}

func TestMaster_ConcurrentLookup(t *testing.T) {
	m := storemaster.Sample()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if _, ok := m.Lookup("S00339218"); !ok {
					t.Error("Lookup: not found")
					return
				}
			}
		})
	}
	wg.Wait()
}

func leftPad(s string, n int) string {
	return strings.Repeat("0", max(0, n-len(s))) + s
}

func BenchmarkLookup(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("AreaCode,StoreName,StoreID\n")
	const n = 5000
	ids := make([]string, n)
	for i := range n {
		ids[i] = "S" + leftPad(strconv.Itoa(i+1), 8)
		sb.WriteString("700029,\"Store, No. " + strconv.Itoa(i) + "\"," + ids[i] + "\n")
	}
	m := MustLoad(b, sb.String())
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if _, ok := m.Lookup(ids[i%n]); !ok {
			b.Fatal("not found")
		}
		i++
	}
}

// Stores lists every store once, ordered by id, in a slice the caller owns.
func TestMaster_StoresOrderedByID(t *testing.T) {
	m, err := storemaster.Load(strings.NewReader("AreaCode,StoreName,StoreID\nA2,Beta,S2\nA1,\"Alpha, Ltd\",S10\nA1,Gamma,S1\n"), "test")
	if err != nil {
		t.Fatal(err)
	}
	got := m.Stores()
	want := []storemaster.Store{{ID: "S1", Name: "Gamma", AreaCode: "A1"}, {ID: "S10", Name: "Alpha, Ltd", AreaCode: "A1"}, {ID: "S2", Name: "Beta", AreaCode: "A2"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Stores() = %v, want %v", got, want)
	}
	got[0].Name = "changed"
	if again := m.Stores(); again[0].Name != "Gamma" {
		t.Fatal("Stores() shares its slice's stores with the Master")
	}
}
