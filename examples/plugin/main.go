// Command plugin runs the example SSE plugin: Echo, SumOfRows, SumOfColumn
// and script evaluation that returns its first parameter.
//
//	go run ./examples/plugin --address 127.0.0.1:50055
//
// With --tls-dir it requires mutual TLS, with the folder in the layout of
// Qlik's plugin certificates (root_cert.pem, sse_server_cert.pem,
// sse_server_key.pem). It prints "listening on ADDRESS" once it accepts
// calls, which tests read to learn a port chosen with :0.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ssegw/ssegw/examples/plugin/example"
	"github.com/ssegw/ssegw/ssepb"
	"github.com/ssegw/ssegw/tlsutil"
)

func main() {
	address := flag.String("address", "127.0.0.1:50055", "host:port to listen on")
	name := flag.String("name", "example", "name reported in capabilities and the x-example-plugin header")
	tlsDir := flag.String("tls-dir", "", "folder with root_cert.pem, sse_server_cert.pem and sse_server_key.pem; empty for plaintext")
	maxMessage := flag.Int("max-message-size", 64<<20, "largest message accepted and sent, in bytes")
	functions := flag.String("functions", "", "comma-separated function names to offer, such as Echo,SumOfRows; empty offers all")
	delay := flag.Duration("delay", 0, "time added before each answer to a function or script call, to act as a slow plugin; capabilities come at once")
	flag.Parse()
	log.SetFlags(0)
	if *maxMessage < 1 {
		log.Fatalf("example plugin: invalid -max-message-size %d: give a size in bytes, such as 67108864 for 64 MiB", *maxMessage)
	}

	options := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(*maxMessage),
		grpc.MaxSendMsgSize(*maxMessage),
	}
	if *tlsDir != "" {
		tlsConfig, err := tlsutil.ServerFilesInDir(*tlsDir, "", "", "").ServerConfig()
		if err != nil {
			log.Fatalf("example plugin: %v", err)
		}
		options = append(options, grpc.Creds(credentials.NewTLS(tlsConfig)))
	}
	server := grpc.NewServer(options...)
	names, err := example.ParseFunctions(*functions)
	if err != nil {
		log.Fatalf("example plugin: -functions: %v", err)
	}
	behaviour := example.Options{Delay: *delay, Functions: names}
	ssepb.RegisterConnectorServer(server, example.NewServerWith(*name, behaviour))

	lis, err := net.Listen("tcp", *address)
	if err != nil {
		log.Fatalf("example plugin: %v", err)
	}
	fmt.Printf("listening on %s\n", lis.Addr())

	// Serve until SIGINT or SIGTERM.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := example.Serve(ctx, server, lis, os.Stderr); err != nil {
		log.Fatalf("example plugin: %v", err)
	}
}
