package config

import (
	"fmt"
	"io"
	"io/fs"
	"os"
)

// MaxFileSize is the max size of a configuration file that Load reads, 4 MiB.
// The example config.yaml has 5 kB, and 20,000 engines written one per line
// take 2.3 MB. Parsing takes far more memory than the file itself: ssegw
// validate peaked at 190 MB of resident memory for a 4 MiB file of one-line
// list items, and at 750 MB for 16 MiB (linux/amd64, measured with
// /usr/bin/time). So the bound also caps what a wrong path, such as a log
// file, can cost a running gateway on reload.
const MaxFileSize = 4 << 20

// readFile returns the content of the configuration file at path. It
// rejects anything but a regular file: a FIFO would block the read until
// a writer came, and a device such as /dev/zero never ends. It also
// rejects a file larger than MaxFileSize.
func readFile(path string) ([]byte, error) {
	// Stat before opening, because opening a FIFO blocks.
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := checkRegularFile(path, info); err != nil {
		return nil, err
	}
	// NOTE: a FIFO put at path between the Stat and the Open still blocks
	// the Open.
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	if info, err = file.Stat(); err != nil {
		return nil, err
	}
	if err := checkRegularFile(path, info); err != nil {
		return nil, err
	}
	if info.Size() > MaxFileSize {
		return nil, fileTooLarge(path, info.Size())
	}

	// The size can grow after the Stat, and files such as those in /proc
	// report 0, so the read has its own bound.
	data, err := io.ReadAll(io.LimitReader(file, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, fileTooLarge(path, int64(len(data)))
	}
	return data, nil
}

func checkRegularFile(path string, info fs.FileInfo) error {
	if info.Mode().IsRegular() {
		return nil
	}
	return fmt.Errorf("%s is %s, not a regular file; give the path of a YAML file", path, fileKind(info.Mode()))
}

// fileKind names the type of a file that is not a regular one.
func fileKind(mode fs.FileMode) string {
	switch {
	case mode.IsDir():
		return "a folder"
	case mode&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case mode&fs.ModeSocket != 0:
		return "a socket"
	case mode&fs.ModeDevice != 0, mode&fs.ModeCharDevice != 0:
		return "a device"
	}
	return "a special file"
}

// fileTooLarge returns the error for a file above MaxFileSize. size is its
// size in bytes, or a lower bound when the read stopped at the limit.
func fileTooLarge(path string, size int64) error {
	return fmt.Errorf("%s has at least %d bytes, more than the %s that a configuration file may have; check that it is the configuration file",
		path, size, ByteSize(MaxFileSize))
}
