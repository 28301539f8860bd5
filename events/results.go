package events

// ImageResult is one image's recorded result, for clients.
type ImageResult struct {
	Visit     int    `json:"visit"`
	Index     int    `json:"index"`
	StoreID   string `json:"store_id"`
	URL       string `json:"url"`
	State     string `json:"state"` // "processed", "failed" or "pending"
	Width     int    `json:"width,omitempty"`
	Height    int    `json:"height,omitempty"`
	Perimeter int    `json:"perimeter,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Image result states.
const (
	ImageProcessedState = "processed"
	ImageFailedState    = "failed"
	ImagePendingState   = "pending"
)

// ResultsOf folds a job's history into one result per image, in submission
// order. As in JobState, the first outcome of an image wins and nothing
// after job_completed counts.
func ResultsOf(h *History) []ImageResult {
	var out []ImageResult
	index := make([][]int, len(h.Submitted.Visits)) // [visit][image] -> position in out
	for v, visit := range h.Submitted.Visits {
		index[v] = make([]int, len(visit.ImageURLs))
		for i, url := range visit.ImageURLs {
			index[v][i] = len(out)
			out = append(out, ImageResult{Visit: v, Index: i, StoreID: visit.StoreID, URL: url, State: ImagePendingState})
		}
	}
	at := func(ref ImageRef) *ImageResult {
		if ref.Visit < 0 || ref.Visit >= len(index) || ref.Index < 0 || ref.Index >= len(index[ref.Visit]) {
			return nil
		}
		r := &out[index[ref.Visit][ref.Index]]
		if r.State != ImagePendingState {
			return nil
		}
		return r
	}
	for _, rec := range h.Records {
		for _, ev := range rec.Events {
			switch e := ev.(type) {
			case *JobCompleted:
				return out
			case *ImageProcessed:
				if r := at(e.ImageRef); r != nil {
					r.State, r.Width, r.Height, r.Perimeter = ImageProcessedState, e.Width, e.Height, e.Perimeter
				}
			case *ImageFailed:
				if r := at(e.ImageRef); r != nil {
					r.State, r.Error = ImageFailedState, e.Reason
				}
			}
		}
	}
	return out
}
