package httpapi_test

import (
	"fmt"
	"strings"

	"github.com/retailpulse/retailpulse/httpapi"
)

func ExampleDecodeSubmit() {
	body := `{
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
	job, err := httpapi.DecodeSubmit(strings.NewReader(body), httpapi.Limits{}, nil)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Printf("count %d, %d images\n", job.Count, job.Images())
	for _, v := range job.Visits {
		fmt.Println(v.StoreID, v.ImageURLs)
	}

	// A count that does not match the visits is refused with a message
	// for the client.
	_, err = httpapi.DecodeSubmit(strings.NewReader(strings.Replace(body, `"count":2`, `"count":3`, 1)), httpapi.Limits{}, nil)
	fmt.Println("error:", err)
	// Output:
	// count 2, 3 images
	// S00339218 [https://www.gstatic.com/webp/gallery/2.jpg https://www.gstatic.com/webp/gallery/3.jpg]
	// S01408764 [https://www.gstatic.com/webp/gallery/3.jpg]
	// error: count (3) does not match number of visits (2)
}
