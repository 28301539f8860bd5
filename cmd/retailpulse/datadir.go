package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// toolDataHint ends the message of an operator tool that found no data.
const toolDataHint = "give the data dir of a stopped service, or --nats-url for a live cluster"

// checkToolDataDir returns nil when dir holds a service's data (its nats/
// directory), and otherwise an error saying what is missing. It creates
// nothing: an operator tool given a mistyped --data-dir must leave no
// trace, where serve creates its data dir.
func checkToolDataDir(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("--data-dir %s: no retailpulse data here (no such directory); %s", dir, toolDataHint)
	}
	fi, err := os.Stat(filepath.Join(dir, "nats"))
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil || errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("--data-dir %s: no retailpulse data here (no nats/ directory); %s", dir, toolDataHint)
	}
	return fmt.Errorf("--data-dir %s: %w", dir, err)
}

// errDataDirInUse: another process holds the data dir's lock.
var errDataDirInUse = errors.New("is in use by another retailpulse process")

// lockDataDir takes an exclusive lock on dir, so a service and an operator
// tool never open the same embedded store at once. The lock is released
// when the returned file is closed or the process exits.
func lockDataDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "retailpulse.lock"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s %w", dir, errDataDirInUse)
		}
		return nil, err
	}
	return f, nil
}
