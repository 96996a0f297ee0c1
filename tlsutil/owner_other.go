//go:build !unix

package tlsutil

// keepOwner does nothing where files have no Unix owner: on Windows, a
// replaced file takes its folder's permissions.
func keepOwner(path, old string) error { return nil }
