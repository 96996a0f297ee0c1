// Package e2e holds ssegw's end-to-end tests. They build the ssegw and
// example plugin programs, run them as processes on 127.0.0.1, and call
// them the way Qlik does: with a gRPC C-core client (Python's grpcio) over
// mutual TLS, with large request streams, and through `ssegw demo`.
//
// The package has no code of its own; everything is in its tests.
package e2e
