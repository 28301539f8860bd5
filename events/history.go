package events

// Record is one stored message of a job.
type Record struct {
	Seq     uint64
	Subject string
	MsgID   string
	Events  []Event
}

// History is a job's submission and every message on its subjects.
type History struct {
	ID        uint64
	Submitted *JobSubmitted
	Records   []Record
	LastSeq   uint64 // sequence of the job's last message on rp.job.<id>.>, 0 if none
}
