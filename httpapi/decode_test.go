package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/retailpulse/retailpulse/events"
)

// specPayload is the request payload of the assignment's example.
const specPayload = `{
   "count":2,
   "visits":[
      {
         "store_id":"S00339218",
         "image_url":[
            "https://www.gstatic.com/webp/gallery/2.jpg",
            "https://www.gstatic.com/webp/gallery/3.jpg"
         ],
         "visit_time": "time of store visit"
      },
      {
         "store_id":"S01408764",
         "image_url":[
            "https://www.gstatic.com/webp/gallery/3.jpg"
         ],
         "visit_time": "time of store visit"
      }
   ]
}`

var specJob = &events.JobSubmitted{
	Count: 2,
	Visits: []events.Visit{
		{
			StoreID: "S00339218",
			ImageURLs: []string{
				"https://www.gstatic.com/webp/gallery/2.jpg",
				"https://www.gstatic.com/webp/gallery/3.jpg",
			},
			VisitTime: "time of store visit",
		},
		{
			StoreID:   "S01408764",
			ImageURLs: []string{"https://www.gstatic.com/webp/gallery/3.jpg"},
			VisitTime: "time of store visit",
		},
	},
}

// visit returns one visit object as JSON.
func visit(store string, urls ...string) string {
	quoted := make([]string, len(urls))
	for i, u := range urls {
		quoted[i] = fmt.Sprintf("%q", u)
	}
	return fmt.Sprintf(`{"store_id":%q,"image_url":[%s],"visit_time":"t"}`, store, strings.Join(quoted, ","))
}

// body returns a submit body with count and the given visit objects.
func body(count int, visits ...string) string {
	return fmt.Sprintf(`{"count":%d,"visits":[%s]}`, count, strings.Join(visits, ","))
}

// manyImages returns a one-visit body with n images.
func manyImages(n int) string {
	urls := make([]string, n)
	for i := range urls {
		urls[i] = "u"
	}
	return body(1, visit("S1", urls...))
}

var errScheme = errors.New("scheme must be http or https")

func checkScheme(u string) error {
	if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return errScheme
	}
	return nil
}

func TestDecodeSubmit_Spec(t *testing.T) {
	got, err := DecodeSubmit(strings.NewReader(specPayload), Limits{}, checkScheme)
	if err != nil {
		t.Fatalf("DecodeSubmit: %v", err)
	}
	if !reflect.DeepEqual(got, specJob) {
		t.Fatalf("got %+v, want %+v", got, specJob)
	}
}

func TestDecodeSubmit_Accepts(t *testing.T) {
	one := func(store, url, visitTime string) *events.JobSubmitted {
		return &events.JobSubmitted{Count: 1, Visits: []events.Visit{{StoreID: store, ImageURLs: []string{url}, VisitTime: visitTime}}}
	}
	tests := []struct {
		name string
		body string
		want *events.JobSubmitted
	}{
		{
			name: "unknown fields are ignored",
			body: `{"client":"x","count":1,"meta":{"a":[1,2]},"visits":[{"store_id":"S1","image_url":["u"],"visit_time":"t","note":null}]}`,
			want: one("S1", "u", "t"),
		},
		{
			name: "trailing whitespace",
			body: body(1, visit("S1", "u")) + " \n\t\r\n",
			want: one("S1", "u", "t"),
		},
		{
			name: "values are stored as sent",
			body: `{"count":1,"visits":[{"store_id":"S 1","image_url":[" u "],"visit_time":" t "}]}`,
			want: one("S 1", " u ", " t "),
		},
		{
			name: "repeated keys inside ignored values are not checked",
			body: `{"count":1,"meta":{"a":1,"a":2},"visits":[{"store_id":"S1","image_url":["u"],"visit_time":"t","extra":[{"b":1,"b":1}]}]}`,
			want: one("S1", "u", "t"),
		},
		{
			name: "keys differing in case are distinct",
			body: `{"count":1,"Count":7,"visits":[{"store_id":"S1","Store_ID":"S2","image_url":["u"],"visit_time":"t"}]}`,
			want: one("S1", "u", "t"),
		},
		{
			name: "whitespace between tokens",
			body: " \n{ \"count\" :\t1 , \"visits\" : [ { \"store_id\" : \"S1\" ,\r\n \"image_url\" : [ \"u\" ] , \"visit_time\" : \"t\" } ] } ",
			want: one("S1", "u", "t"),
		},
		{
			name: "brackets, quotes and backslashes inside strings",
			body: `{"count":1,"x":"}]\\","visits":[{"note":"\"{[\\\"","store_id":"S\\1","image_url":["u]"],"visit_time":"t\""}]}`,
			want: one(`S\1`, "u]", `t"`),
		},
		{
			name: "escaped strings",
			body: `{"count":1,"visits":[{"store_id":"S\u00e9","image_url":["u\/1"],"visit_time":"t\n"}]}`,
			want: one("Sé", "u/1", "t\n"),
		},
		{
			name: "limits are inclusive",
			body: manyImages(DefaultMaxImages),
		},
		{
			name: "length limits are inclusive",
			body: body(1, `{"store_id":"`+strings.Repeat("s", DefaultMaxStoreIDLength)+`","image_url":["u"],"visit_time":"`+strings.Repeat("t", DefaultMaxVisitTimeLength)+`"}`),
			want: one(strings.Repeat("s", DefaultMaxStoreIDLength), "u", strings.Repeat("t", DefaultMaxVisitTimeLength)),
		},
		{
			name: "length limits count characters, not bytes",
			body: body(1, `{"store_id":"`+strings.Repeat("é", DefaultMaxStoreIDLength)+`","image_url":["u"],"visit_time":"`+strings.Repeat("\u00e9", DefaultMaxVisitTimeLength)+`"}`),
			want: one(strings.Repeat("é", DefaultMaxStoreIDLength), "u", strings.Repeat("é", DefaultMaxVisitTimeLength)),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeSubmit(strings.NewReader(tt.body), Limits{}, nil)
			if err != nil {
				t.Fatalf("DecodeSubmit: %v", err)
			}
			if tt.want != nil && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeSubmit_Errors(t *testing.T) {
	ok := visit("S1", "http://a/1.jpg")
	long := "http://a/" + strings.Repeat("x", DefaultMaxURLLength-len("http://a/")+1)
	small := Limits{MaxVisits: 2, MaxImages: 3, MaxURLLength: 20, MaxStoreIDLength: 4, MaxVisitTimeLength: 3}
	tests := []struct {
		name   string
		body   string
		limits Limits
		want   string // exact message; with prefix, the start of it
		prefix bool
	}{
		// The body as a whole.
		{name: "empty", body: "", want: "request body is empty"},
		{name: "only whitespace", body: " \n ", want: "request body is empty"},
		{name: "not json", body: "count=2", want: "request body is not valid JSON: ", prefix: true},
		{name: "truncated", body: `{"count":1,"visits":[`, want: "request body is not valid JSON: unexpected end of input"},
		{name: "array", body: `[1,2]`, want: "request body must be a JSON object"},
		{name: "null", body: `null`, want: "request body must be a JSON object"},
		{name: "string", body: `"count"`, want: "request body must be a JSON object"},
		{name: "number", body: `2`, want: "request body must be a JSON object"},
		{name: "second object", body: body(1, ok) + ` {"count":1}`, want: "request body has data after the JSON object"},
		{name: "second object no space", body: body(1, ok) + `{}`, want: "request body has data after the JSON object"},
		{name: "trailing garbage", body: body(1, ok) + `x`, want: "request body has data after the JSON object"},
		{name: "trailing bracket", body: body(1, ok) + `]`, want: "request body has data after the JSON object"},
		{name: "trailing garbage after newline", body: body(1, ok) + "\n\nnull", want: "request body has data after the JSON object"},

		// Repeated keys.
		{name: "duplicate count", body: `{"count":2,"count":1,"visits":[` + ok + `]}`, want: `request body has duplicate key "count"`},
		{name: "duplicate visits", body: `{"visits":[],"count":1,"visits":[` + ok + `]}`, want: `request body has duplicate key "visits"`},
		{name: "duplicate unknown top-level key", body: `{"x":1,"count":1,"x":1,"visits":[` + ok + `]}`, want: `request body has duplicate key "x"`},
		{name: "duplicate spelled with an escape", body: `{"count":1,"co\u0075nt":1,"visits":[` + ok + `]}`, want: `request body has duplicate key "count"`},
		{name: "duplicate after invalid UTF-8 is replaced", body: "{\"count\":1,\"\xff\":1,\"\xfe\":2,\"visits\":[" + ok + "]}", want: "request body has duplicate key \"\uFFFD\""},
		{name: "duplicate among many keys", body: `{"a":1,"b":1,"c":1,"d":1,"e":1,"f":1,"g":1,"h":1,"count":1,"i":1,"visits":[` + ok + `],"d":2}`, want: `request body has duplicate key "d"`},
		{name: "duplicate top-level key is found before count", body: `{"count":"x","visits":[],"visits":[]}`, want: `request body has duplicate key "visits"`},
		{name: "duplicate key with control characters is quoted", body: `{"a\nb":1,"a\nb":2,"count":1,"visits":[` + ok + `]}`, want: `request body has duplicate key "a\nb"`},
		{name: "duplicate long key is cut", body: `{"` + strings.Repeat("k", 100) + `":1,"` + strings.Repeat("k", 100) + `":2,"count":1,"visits":[` + ok + `]}`, want: `request body has duplicate key "` + strings.Repeat("k", 64) + `…"`},
		{name: "duplicate store_id", body: body(1, `{"store_id":"S1","store_id":"S2","image_url":["u"],"visit_time":"t"}`), want: `visits[0] has duplicate key "store_id"`},
		{name: "duplicate image_url", body: body(2, ok, `{"store_id":"S1","image_url":["u"],"visit_time":"t","image_url":["v"]}`), want: `visits[1] has duplicate key "image_url"`},
		{name: "duplicate visit_time", body: body(1, `{"visit_time":"t","store_id":"S1","image_url":["u"],"visit_time":"t"}`), want: `visits[0] has duplicate key "visit_time"`},
		{name: "duplicate unknown key in a visit", body: body(1, `{"note":1,"store_id":"S1","image_url":["u"],"visit_time":"t","note":1}`), want: `visits[0] has duplicate key "note"`},
		{name: "duplicate in a visit is found before its fields", body: body(1, `{"store_id":1,"store_id":2}`), want: `visits[0] has duplicate key "store_id"`},

		// count.
		{name: "count missing", body: `{"visits":[` + ok + `]}`, want: "count is required"},
		{name: "count key is case-sensitive", body: `{"Count":1,"visits":[` + ok + `]}`, want: "count is required"},
		{name: "count float", body: `{"count":2.5,"visits":[` + ok + `]}`, want: "count must be an integer"},
		{name: "count 1.0", body: `{"count":1.0,"visits":[` + ok + `]}`, want: "count must be an integer"},
		{name: "count exponent", body: `{"count":1e0,"visits":[` + ok + `]}`, want: "count must be an integer"},
		{name: "count string", body: `{"count":"1","visits":[` + ok + `]}`, want: "count must be an integer"},
		{name: "count null", body: `{"count":null,"visits":[` + ok + `]}`, want: "count must be an integer"},
		{name: "count bool", body: `{"count":true,"visits":[` + ok + `]}`, want: "count must be an integer"},
		{name: "count array", body: `{"count":[1],"visits":[` + ok + `]}`, want: "count must be an integer"},
		{name: "count overflow", body: `{"count":99999999999999999999,"visits":[` + ok + `]}`, want: "count is out of range"},
		{name: "count negative", body: `{"count":-1,"visits":[]}`, want: "count (-1) must not be negative"},
		{name: "count negative with visits", body: body(-1, ok), want: "count (-1) must not be negative"},
		{name: "count zero no visits", body: `{"count":0,"visits":[]}`, want: "count is 0 and there are no visits: nothing to process"},
		{name: "count above visits", body: body(3, ok, ok), want: "count (3) does not match number of visits (2)"},
		{name: "count below visits", body: body(1, ok, ok), want: "count (1) does not match number of visits (2)"},
		{name: "count zero with visits", body: body(0, ok), want: "count (0) does not match number of visits (1)"},
		{name: "count with no visits", body: `{"count":2,"visits":[]}`, want: "count (2) does not match number of visits (0)"},

		// visits.
		{name: "visits missing", body: `{"count":1}`, want: "visits is required"},
		{name: "visits null", body: `{"count":1,"visits":null}`, want: "visits must be an array"},
		{name: "visits object", body: `{"count":1,"visits":` + ok + `}`, want: "visits must be an array"},
		{name: "visits string", body: `{"count":1,"visits":"S1"}`, want: "visits must be an array"},
		{name: "visit null", body: body(2, ok, `null`), want: "visits[1] must be an object"},
		{name: "visit string", body: body(1, `"S1"`), want: "visits[0] must be an object"},
		{name: "visit array", body: body(1, `[]`), want: "visits[0] must be an object"},

		// store_id and visit_time.
		{name: "store_id missing", body: body(2, ok, `{"image_url":["u"],"visit_time":"t"}`), want: "visits[1].store_id is required"},
		{name: "store_id key is case-sensitive", body: body(1, `{"Store_ID":"S1","image_url":["u"],"visit_time":"t"}`), want: "visits[0].store_id is required"},
		{name: "store_id number", body: body(1, `{"store_id":339218,"image_url":["u"],"visit_time":"t"}`), want: "visits[0].store_id must be a string"},
		{name: "store_id null", body: body(1, `{"store_id":null,"image_url":["u"],"visit_time":"t"}`), want: "visits[0].store_id must be a string"},
		{name: "store_id empty", body: body(1, `{"store_id":"","image_url":["u"],"visit_time":"t"}`), want: "visits[0].store_id must not be empty"},
		{name: "store_id blank", body: body(1, `{"store_id":" \t","image_url":["u"],"visit_time":"t"}`), want: "visits[0].store_id must not be empty"},
		{name: "store_id leading space", body: body(1, `{"store_id":" S1","image_url":["u"],"visit_time":"t"}`), want: "visits[0].store_id has leading or trailing whitespace"},
		{name: "store_id trailing tab", body: body(3, ok, ok, `{"store_id":"S1\t","image_url":["u"],"visit_time":"t"}`), want: "visits[2].store_id has leading or trailing whitespace"},
		{name: "store_id trailing newline", body: body(1, `{"store_id":"S1\n","image_url":["u"],"visit_time":"t"}`), want: "visits[0].store_id has leading or trailing whitespace"},
		{name: "store_id leading no-break space", body: body(1, `{"store_id":"\u00a0S1","image_url":["u"],"visit_time":"t"}`), want: "visits[0].store_id has leading or trailing whitespace"},
		{name: "visit_time missing", body: body(1, `{"store_id":"S1","image_url":["u"]}`), want: "visits[0].visit_time is required"},
		{name: "visit_time number", body: body(1, `{"store_id":"S1","image_url":["u"],"visit_time":1700000000}`), want: "visits[0].visit_time must be a string"},
		{name: "visit_time object", body: body(1, `{"store_id":"S1","image_url":["u"],"visit_time":{}}`), want: "visits[0].visit_time must be a string"},
		{name: "visit_time empty", body: body(1, `{"store_id":"S1","image_url":["u"],"visit_time":""}`), want: "visits[0].visit_time must not be empty"},
		{name: "visit_time blank", body: body(2, ok, `{"store_id":"S1","image_url":["u"],"visit_time":"  "}`), want: "visits[1].visit_time must not be empty"},

		// image_url.
		{name: "image_url missing", body: body(1, `{"store_id":"S1","visit_time":"t"}`), want: "visits[0].image_url is required"},
		{name: "image_url string", body: body(1, `{"store_id":"S1","image_url":"u","visit_time":"t"}`), want: "visits[0].image_url must be an array of strings"},
		{name: "image_url null", body: body(1, `{"store_id":"S1","image_url":null,"visit_time":"t"}`), want: "visits[0].image_url must be an array of strings"},
		{name: "image_url empty", body: body(1, `{"store_id":"S1","image_url":[],"visit_time":"t"}`), want: "visits[0].image_url must not be empty"},
		{name: "image_url number element", body: body(1, `{"store_id":"S1","image_url":["a","b",3],"visit_time":"t"}`), want: "visits[0].image_url[2] must be a string"},
		{name: "image_url null element", body: body(1, `{"store_id":"S1","image_url":[null],"visit_time":"t"}`), want: "visits[0].image_url[0] must be a string"},
		{name: "image_url array element", body: body(1, `{"store_id":"S1","image_url":[["u"]],"visit_time":"t"}`), want: "visits[0].image_url[0] must be a string"},
		{name: "image_url empty element", body: body(2, ok, `{"store_id":"S1","image_url":["u",""],"visit_time":"t"}`), want: "visits[1].image_url[1] must not be empty"},
		{name: "image_url blank element", body: body(1, `{"store_id":"S1","image_url":[" "],"visit_time":"t"}`), want: "visits[0].image_url[0] must not be empty"},
		{name: "image_url too long", body: body(1, visit("S1", "http://a/1", long)), want: fmt.Sprintf("visits[0].image_url[1] is %d bytes long; the limit is %d", len(long), DefaultMaxURLLength)},
		{name: "checkURL refuses", body: body(1, visit("S1", "http://a/1", "ftp://a/2")), want: "visits[0].image_url[1]: scheme must be http or https"},
		{name: "checkURL runs after structure", body: body(2, visit("S1", "ftp://a"), `{}`), want: "visits[1].store_id is required"},

		// Limits.
		{name: "default image limit", body: manyImages(DefaultMaxImages + 1), want: "job has 100001 images; the limit is 100000"},
		{name: "visit limit", body: body(3, ok, ok, ok), limits: small, want: "job has 3 visits; the limit is 2"},
		{name: "image limit", body: body(2, visit("S1", "http://a", "http://b"), visit("S2", "http://c", "http://d")), limits: small, want: "job has 4 images; the limit is 3"},
		{name: "url limit", body: body(1, visit("S1", "http://a/"+strings.Repeat("x", 12))), limits: small, want: "visits[0].image_url[0] is 21 bytes long; the limit is 20"},
		{name: "default store_id limit", body: body(1, visit(strings.Repeat("s", DefaultMaxStoreIDLength+1), "http://a/1.jpg")), want: "visits[0].store_id is 129 characters long; the limit is 128"},
		{name: "default visit_time limit", body: body(1, `{"store_id":"S1","image_url":["http://a/1.jpg"],"visit_time":"`+strings.Repeat("t", DefaultMaxVisitTimeLength+1)+`"}`), want: "visits[0].visit_time is 65 characters long; the limit is 64"},
		{name: "store_id limit", body: body(2, ok, visit("S1234", "http://a")), limits: small, want: "visits[1].store_id is 5 characters long; the limit is 4"},
		{name: "store_id limit counts characters", body: body(1, visit("ééééé", "http://a")), limits: small, want: "visits[0].store_id is 5 characters long; the limit is 4"},
		{name: "visit_time limit", body: body(1, `{"store_id":"S1","image_url":["http://a"],"visit_time":"2024"}`), limits: small, want: "visits[0].visit_time is 4 characters long; the limit is 3"},
		{name: "store_id limit before image_url", body: body(1, `{"store_id":"S1234","image_url":[]}`), limits: small, want: "visits[0].store_id is 5 characters long; the limit is 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job, err := DecodeSubmit(strings.NewReader(tt.body), tt.limits, checkScheme)
			if err == nil {
				t.Fatalf("DecodeSubmit accepted %s as %+v", tt.body, job)
			}
			if job != nil {
				t.Errorf("job = %+v with error %v, want nil", job, err)
			}
			if got := err.Error(); tt.prefix && !strings.HasPrefix(got, tt.want) || !tt.prefix && got != tt.want {
				t.Errorf("error = %q, want %q", got, tt.want)
			}
		})
	}
}

// The scanners see only JSON the decoder has validated; given anything else
// they fail rather than panic.
func TestObjectFields_RefusesMalformedJSON(t *testing.T) {
	for _, raw := range []string{``, ` `, `{`, `{"a"`, `{"a":`, `{"a":1`, `{"a":1,`, `{"a" 1}`, `{a:1}`, `{"a":1 "b":2}`, `{"a":"x}`, `{"a":}`, `{"a":[1,2}`, `{"a":1]`, `[1]`, `"{}"`} {
		if fields, err := objectFields([]byte(raw), nil); err == nil {
			t.Errorf("objectFields(%q) = %q", raw, fields)
		}
	}
}

func TestArrayElems_RefusesMalformedJSON(t *testing.T) {
	for _, raw := range []string{``, `[`, `[1`, `[1,`, `[1 2]`, `["x]`, `[,]`, `[{]`, `{}`} {
		if elems, err := arrayElems([]byte(raw)); err == nil {
			t.Errorf("arrayElems(%q) = %q", raw, elems)
		}
	}
}

func TestDecodeSubmit_ReadError(t *testing.T) {
	rec := httptest.NewRecorder()
	r := http.MaxBytesReader(rec, io.NopCloser(strings.NewReader(body(1, visit("S1", "u"))+strings.Repeat(" ", 100))), 40)
	_, err := DecodeSubmit(r, Limits{}, nil)
	if _, ok := errors.AsType[*http.MaxBytesError](err); !ok {
		t.Fatalf("error = %v, want one wrapping *http.MaxBytesError", err)
	}

	// Trailing whitespace past the cap is still over the cap.
	rec = httptest.NewRecorder()
	b := body(1, visit("S1", "u"))
	r = http.MaxBytesReader(rec, io.NopCloser(strings.NewReader(b+strings.Repeat(" ", 100))), int64(len(b)+10))
	_, err = DecodeSubmit(r, Limits{}, nil)
	if _, ok := errors.AsType[*http.MaxBytesError](err); !ok {
		t.Fatalf("trailing: error = %v, want one wrapping *http.MaxBytesError", err)
	}
}

// BenchmarkDecodeSubmit decodes a body near the default size cap: 10,000
// visits of 10 images with 90-byte URLs (about 9.6 MB).
func BenchmarkDecodeSubmit(b *testing.B) {
	url := "https://images.example.com/" + strings.Repeat("p", 90-len("https://images.example.com/")-4) + ".jpg"
	urls := make([]string, 10)
	for i := range urls {
		urls[i] = url
	}
	visits := make([]string, DefaultMaxVisits)
	for i := range visits {
		visits[i] = visit(fmt.Sprintf("S%08d", i), urls...)
	}
	payload := []byte(body(len(visits), visits...))
	if len(payload) > DefaultMaxBodyBytes {
		b.Fatalf("payload is %d bytes, over the default cap", len(payload))
	}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeSubmit(bytes.NewReader(payload), Limits{}, checkScheme); err != nil {
			b.Fatal(err)
		}
	}
}
