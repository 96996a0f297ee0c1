// Package ssepb holds the Go code for the Qlik SSE protocol (package qlik.sse)
// and helpers for the qlik-*-bin headers that travel with its calls.
package ssepb

//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-grpc=$(go tool -n protoc-gen-go-grpc) --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative sse.proto"
