package routing

import (
	"context"
	"errors"
	"net"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"

	"github.com/ssegw/ssegw/tlsutil"
)

// backendCredentials secures each connection to a plugin as that backend is
// configured: TLS with its own folder and server name, or plaintext. One
// gRPC client connection serves all replicas of an engine, and replicas
// may differ (a local plaintext plugin next to a remote TLS one), so the
// choice is made per address, from the address's attributes.
type backendCredentials struct {
	plaintext credentials.TransportCredentials
}

func newBackendCredentials() *backendCredentials {
	return &backendCredentials{plaintext: insecure.NewCredentials()}
}

// backendSecurityKey is the attribute key under which a resolver address
// carries its *backendSecurity.
type backendSecurityKey struct{}

// backendSecurity is the TLS configuration of one backend; nil TLS means
// plaintext.
type backendSecurity struct {
	tls credentials.TransportCredentials
}

// withSecurity returns addr carrying the credentials to use for it; a
// nil source means plaintext.
func withSecurity(addr resolver.Address, source *tlsutil.Source) resolver.Address {
	security := &backendSecurity{}
	if source != nil {
		security.tls = newTLSCredentials(source)
	}
	addr.Attributes = attributes.New(backendSecurityKey{}, security)
	return addr
}

func (c *backendCredentials) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	info := credentials.ClientHandshakeInfoFromContext(ctx)
	security, _ := info.Attributes.Value(backendSecurityKey{}).(*backendSecurity)
	if security == nil || security.tls == nil {
		return c.plaintext.ClientHandshake(ctx, authority, conn)
	}
	return security.tls.ClientHandshake(ctx, authority, conn)
}

func (c *backendCredentials) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("backend credentials are for clients only")
}

// Info describes the credentials as TLS: gRPC only consults it for
// per-call credentials, which the gateway does not use.
func (c *backendCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (c *backendCredentials) Clone() credentials.TransportCredentials {
	return &backendCredentials{plaintext: c.plaintext}
}

// OverrideServerName is deprecated in gRPC and unused: each backend's
// server name is part of its own TLS configuration.
func (c *backendCredentials) OverrideServerName(string) error {
	return nil
}

// sourceCredentials are gRPC's TLS credentials made for each new
// connection from the source's current configuration, so that renewed
// certificate files take effect without a restart. They verify the
// configuration's ServerName: gRPC's own credentials verify the name of
// the :authority instead (as of grpc-go v1.85), and the gateway keeps the
// plugin's address as :authority while it verifies server_name.
type sourceCredentials struct {
	source *tlsutil.Source
}

// newTLSCredentials returns credentials that follow source.
func newTLSCredentials(source *tlsutil.Source) credentials.TransportCredentials {
	return &sourceCredentials{source: source}
}

func (c *sourceCredentials) ClientHandshake(ctx context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	cfg := c.source.Config()
	return credentials.NewTLS(cfg).ClientHandshake(ctx, cfg.ServerName, conn)
}

func (c *sourceCredentials) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("backend credentials are for clients only")
}

func (c *sourceCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (c *sourceCredentials) Clone() credentials.TransportCredentials {
	return &sourceCredentials{source: c.source}
}

// OverrideServerName is deprecated in gRPC and unused.
func (c *sourceCredentials) OverrideServerName(string) error {
	return nil
}

var (
	_ credentials.TransportCredentials = (*backendCredentials)(nil)
	_ credentials.TransportCredentials = (*sourceCredentials)(nil)
)
