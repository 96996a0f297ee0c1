package routing

import (
	"context"
	"crypto/tls"
	"errors"
	"net"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
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

// withSecurity returns addr carrying the credentials to use for it.
func withSecurity(addr resolver.Address, tlsConfig *tls.Config) resolver.Address {
	security := &backendSecurity{}
	if tlsConfig != nil {
		security.tls = newTLSCredentials(tlsConfig)
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

// verifiedNameCredentials are gRPC's TLS credentials verifying a fixed
// server name. gRPC's own verify the name of the :authority instead of the
// configuration's ServerName (as of grpc-go v1.85), and the gateway keeps
// the plugin's address as :authority while it verifies server_name.
type verifiedNameCredentials struct {
	credentials.TransportCredentials
	serverName string
}

// newTLSCredentials returns credentials that verify tlsConfig.ServerName.
func newTLSCredentials(tlsConfig *tls.Config) credentials.TransportCredentials {
	return &verifiedNameCredentials{TransportCredentials: credentials.NewTLS(tlsConfig), serverName: tlsConfig.ServerName}
}

func (c *verifiedNameCredentials) ClientHandshake(ctx context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.TransportCredentials.ClientHandshake(ctx, c.serverName, conn)
}

func (c *verifiedNameCredentials) Clone() credentials.TransportCredentials {
	return &verifiedNameCredentials{TransportCredentials: c.TransportCredentials.Clone(), serverName: c.serverName}
}

var (
	_ credentials.TransportCredentials = (*backendCredentials)(nil)
	_ credentials.TransportCredentials = (*verifiedNameCredentials)(nil)
)
