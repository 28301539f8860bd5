package jsstore

// ScanResumes returns how many Scans of s were resumed after a stall.
func ScanResumes(s *EventLog) int64 { return s.scanResumes.Load() }
