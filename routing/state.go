package routing

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/ssegw/ssegw/ssepb"
)

// capabilitiesFile returns where an engine's capabilities are kept.
func capabilitiesFile(dir, engine string) string {
	return filepath.Join(dir, "capabilities-"+engine+".json")
}

// storeCapabilities writes an engine's capabilities to the state folder,
// atomically: a crash never leaves half a file for the next start.
func storeCapabilities(dir, engine string, c *Capabilities) error {
	if dir == "" {
		return nil
	}
	data, err := protojson.MarshalOptions{Multiline: true}.Marshal(c.Message)
	if err != nil {
		return fmt.Errorf("encoding capabilities: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating state folder: %w", err)
	}
	temporary, err := os.CreateTemp(dir, ".capabilities-*")
	if err != nil {
		return fmt.Errorf("writing capabilities: %w", err)
	}
	defer os.Remove(temporary.Name()) // fails harmlessly after the rename
	if _, err := temporary.Write(data); err != nil {
		temporary.Close()
		return fmt.Errorf("writing capabilities: %w", err)
	}
	if err := temporary.Close(); err != nil {
		return fmt.Errorf("writing capabilities: %w", err)
	}
	path := capabilitiesFile(dir, engine)
	if err := os.Chtimes(temporary.Name(), c.Fetched, c.Fetched); err != nil {
		return fmt.Errorf("writing capabilities: %w", err)
	}
	if err := os.Rename(temporary.Name(), path); err != nil {
		return fmt.Errorf("writing capabilities: %w", err)
	}
	return nil
}

// loadCapabilities reads an engine's capabilities from the state folder;
// nil and no error when there are none. The file's modification time is
// when a replica sent them.
func loadCapabilities(dir, engine string) (*Capabilities, error) {
	if dir == "" {
		return nil, nil
	}
	path := capabilitiesFile(dir, engine)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading capabilities: %w", err)
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("reading capabilities: %w", err)
	}
	message := &ssepb.Capabilities{}
	if err := protojson.Unmarshal(data, message); err != nil {
		return nil, fmt.Errorf("reading capabilities %s: %w", path, err)
	}
	return NewCapabilities(message, info.ModTime()), nil
}
