package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"log/slog"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ssegw/ssegw/config"
	"github.com/ssegw/ssegw/routing"
	"github.com/ssegw/ssegw/ssepb"
)

// maxQlikHeaders bounds the qlik-* headers of one call. Qlik sends at most
// two; a client sending many more is not Qlik.
const maxQlikHeaders = 8

// clientAllowed reports whether the call's client may call engine: the
// engine has no allow_clients, or the client's certificate names one of
// them.
func (c *call) clientAllowed(engine *config.Engine) bool {
	if len(engine.AllowClients) == 0 {
		return true
	}
	return slices.ContainsFunc(clientIdentities(c.ctx), func(identity string) bool { return slices.Contains(engine.AllowClients, identity) })
}

// admit applies the engine's rules to a call before anything reaches the
// plugin, and returns the status that refuses it, or nil to forward it.
// Every check runs on headers only, so a refused call never has a row
// read.
func (c *call) admit(checked *routing.Engine) *status.Status {
	engine := checked.Config

	// Headers the gateway cannot read are refused rather than guessed at.
	if c.info.malformed != "" {
		return status.Newf(codes.InvalidArgument, "malformed %s header: %s", c.info.malformed, c.info.malformedDetail)
	}
	if n := countQlikHeaders(c.incoming); n > maxQlikHeaders {
		return status.Newf(codes.InvalidArgument, "%d qlik-* headers in one call, more than the %d allowed", n, maxQlikHeaders)
	}

	// Who may call.
	if !c.clientAllowed(engine) {
		presented := "no certificate"
		if identities := clientIdentities(c.ctx); len(identities) > 0 {
			presented = strings.Join(identities, ", ")
		}
		return status.Newf(codes.PermissionDenied, "engine %s: client not in allow_clients; it presented %s", checked.Name, presented)
	}

	// Scripts run arbitrary code on the plugin's host.
	if c.info.kind == methodEvaluateScript {
		switch {
		case engine.Scripts == config.ScriptsDeny:
			return status.Newf(codes.PermissionDenied, "engine %s does not run scripts (scripts: deny)", checked.Name)
		case engine.MaxScriptBytes > 0 && int64(c.info.scriptLength) > int64(engine.MaxScriptBytes):
			return status.Newf(codes.ResourceExhausted, "engine %s: script of %d bytes is over max_script_bytes (%v)",
				checked.Name, c.info.scriptLength, engine.MaxScriptBytes)
		case engine.Scripts == config.ScriptsAudit && !scriptMemberAudits(checked) && !c.audited:
			// Once per call, though a call that moves to the engine a
			// reload put in place is admitted again there.
			c.auditScript(checked)
			c.audited = true
		}
	}

	// The common header announces the row count before any row.
	if engine.MaxCardinality > 0 && c.info.hasCommon && c.info.cardinality > engine.MaxCardinality {
		return status.Newf(codes.ResourceExhausted, "engine %s: call of %d rows is over max_cardinality (%d)",
			checked.Name, c.info.cardinality, engine.MaxCardinality)
	}
	return nil
}

// auditScript logs a script call: who ran which script, by its length and
// SHA-256, and its text only where audit_text allows.
func (c *call) auditScript(checked *routing.Engine) {
	g := c.gateway
	attributes := []slog.Attr{
		slog.String("engine", checked.Name),
		slog.String("function", c.info.function),
		slog.String("peer", peerAddress(c.ctx)),
		slog.String("client", clientIdentity(c.ctx)),
		slog.Int("script_length", c.info.scriptLength),
		slog.String("script_sha256", c.info.scriptSHA256),
	}
	attributes = c.appendIDs(attributes)
	// When the merged engine audits too, this engine, its script member,
	// writes the call's only audit record, so the merged engine's
	// audit_text applies as well.
	withText := checked.Config.AuditText
	if merged := c.merged; merged != nil && merged.Config.Scripts == config.ScriptsAudit && merged.Config.AuditText {
		withText = true
	}
	if withText {
		attributes = append(attributes, slog.String("script", c.info.scriptText))
	}
	g.logger.LogAttrs(context.Background(), slog.LevelInfo, "script call", attributes...)
}

// scriptMemberAudits reports whether engine is a merged engine whose
// merge_scripts member audits scripts too. The member's admission then
// writes the call's only audit record.
func scriptMemberAudits(engine *routing.Engine) bool {
	member := engine.ScriptMember()
	return member != nil && member.Config.Scripts == config.ScriptsAudit
}

// withoutScripts returns a GetCapabilities answer that offers no scripts,
// for an engine with scripts: deny, so that Qlik does not offer the script
// functions at all. It returns the frame unchanged when it cannot be read.
func withoutScripts(f *frame) {
	capabilities := &ssepb.Capabilities{}
	if proto.Unmarshal(f.data.Materialize(), capabilities) != nil || !capabilities.GetAllowScript() {
		return
	}
	capabilities.AllowScript = false
	encoded, err := proto.Marshal(capabilities)
	if err != nil {
		return
	}
	f.release()
	f.data = mem.BufferSlice{mem.SliceBuffer(encoded)}
}

// countQlikHeaders counts the values of qlik-* headers in md.
func countQlikHeaders(md map[string][]string) int {
	n := 0
	for key, values := range md {
		if strings.HasPrefix(key, "qlik-") {
			n += len(values)
		}
	}
	return n
}

// clientIdentities returns the names a TLS client's certificate gives it,
// as allow_clients lists them: its common name, DNS and URI
// subjectAltNames, and "sha256:" with the SHA-256 of its public key. A
// plaintext client has none.
func clientIdentities(ctx context.Context) []string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil
	}
	return certificateIdentities(info.State.PeerCertificates[0])
}

func certificateIdentities(cert *x509.Certificate) []string {
	var identities []string
	if cert.Subject.CommonName != "" {
		identities = append(identities, cert.Subject.CommonName)
	}
	identities = append(identities, cert.DNSNames...)
	for _, uri := range cert.URIs {
		identities = append(identities, uri.String())
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return append(identities, "sha256:"+hex.EncodeToString(sum[:]))
}
