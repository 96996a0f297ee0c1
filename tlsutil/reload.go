package tlsutil

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ssegw/ssegw/internal/fswatch"
)

// Source keeps a TLS configuration built from certificate files current.
// Reload reads the files again and swaps the new configuration in; when
// they are bad, the old one stays. New connections use the configuration
// current when they start; connections already open keep theirs.
type Source struct {
	// Immutable after construction.
	name   string // for logs, such as "listeners[0]"
	files  []string
	caFile string // the CA file among files, for expiry checks
	build  func() (*tls.Config, error)

	current atomic.Pointer[loaded]

	// reloading makes reloads take turns: a file change, a SIGHUP and a
	// retry timer can start them at once, and each must find validFrom and
	// current as the one before left them.
	reloading sync.Mutex

	// validFrom is when the files that Reload last rejected as not valid
	// yet become valid, in Unix nanoseconds, or 0.
	validFrom atomic.Int64
}

// loaded is a configuration with the certificates of its CA file as
// they were read with it, swapped as one so that readers never see the
// CAs of one reload beside the configuration of another.
type loaded struct {
	cfg *tls.Config
	cas []*x509.Certificate
}

// NewServerSource loads a server's files. Its configurations negotiate
// HTTP/2 by ALPN themselves, since gRPC (as of grpc-go v1.85) adds "h2"
// only to the configuration it is given, not to the ones
// GetConfigForClient returns, and gRPC clients since v1.67 refuse a server
// that negotiates nothing.
func NewServerSource(name string, files ServerFiles) (*Source, error) {
	build := func() (*tls.Config, error) {
		cfg, err := files.ServerConfig()
		if err != nil {
			return nil, err
		}
		cfg.NextProtos = []string{"h2"}
		return cfg, nil
	}
	return newSource(name, files.ClientCAFile, []string{files.CertFile, files.KeyFile, files.ClientCAFile}, build)
}

// NewClientSource loads a client's files, verifying serverName.
func NewClientSource(name string, files ClientFiles, serverName string) (*Source, error) {
	build := func() (*tls.Config, error) {
		return files.ClientConfig(serverName)
	}
	return newSource(name, files.CAFile, []string{files.CAFile, files.CertFile, files.KeyFile}, build)
}

func newSource(name, caFile string, files []string, build func() (*tls.Config, error)) (*Source, error) {
	s := &Source{name: name, caFile: caFile, build: build}
	for _, file := range files {
		if file != "" {
			s.files = append(s.files, file)
		}
	}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Config returns the current configuration. The caller must not change it.
func (s *Source) Config() *tls.Config {
	return s.current.Load().cfg
}

// ServerConfig returns a configuration for a TLS server that hands each
// new connection the current configuration.
func (s *Source) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.current.Load().cfg, nil
		},
	}
}

// Reload reads the files again. On error the current configuration stays.
// Files that would make every handshake fail, with a certificate that has
// expired or is not valid yet, are an error too while the current
// configuration works: swapping them in would end every new connection.
func (s *Source) Reload() error {
	s.reloading.Lock()
	defer s.reloading.Unlock()
	// Files that fail to load are waited for by the next change of the
	// files, not by a retry at a time they no longer have.
	s.validFrom.Store(0)
	cfg, err := s.build()
	if err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	// The configuration has loaded the CA file already; reading it again
	// for its certificates cannot fail but for a race with a writer.
	cas, _ := readCertificates(s.caFile)
	if current := s.current.Load(); current != nil {
		now := time.Now()
		if bad := unusable(cfg, cas, now); len(bad) > 0 && len(unusable(current.cfg, current.cas, now)) == 0 {
			return s.rejectUnusable(bad, now)
		}
	}
	s.current.Store(&loaded{cfg: cfg, cas: cas})
	return nil
}

// rejectUnusable returns the error of Reload for new files whose
// certificates bad make every handshake fail, and notes when they become
// valid if none has expired, so that a Watcher loads them then.
func (s *Source) rejectUnusable(bad []*x509.Certificate, now time.Time) error {
	var problems []string
	var validFrom time.Time
	expired := false
	for _, cert := range bad {
		problems = append(problems, unusableWarning(s.name, cert, now))
		if now.Before(cert.NotBefore) {
			if cert.NotBefore.After(validFrom) {
				validFrom = cert.NotBefore
			}
		} else {
			expired = true
		}
	}
	detail := strings.Join(problems, "; ")
	if expired {
		return fmt.Errorf("%s: every handshake would fail with the new files, so the current certificates stay; renew the files", detail)
	}
	s.validFrom.Store(validFrom.UnixNano())
	return &notYetValidError{
		message:   fmt.Sprintf("%s: every handshake would fail with the new files until then, so the current certificates stay until %s", detail, validFrom.Format(time.RFC3339)),
		validFrom: validFrom,
	}
}

// notYetValidError is the error of Reload for new files that are not
// valid yet, which a Watcher loads at validFrom.
type notYetValidError struct {
	message   string
	validFrom time.Time
}

func (e *notYetValidError) Error() string { return e.message }

// pendingSoon is how far ahead a renewed certificate may start for a
// reload to take it as a clock a little behind, such as a CA's on another
// host, rather than as a mistake. Such a reload logs a warning instead of
// an error. The files load when they become valid either way.
const pendingSoon = 5 * time.Minute

// unusable returns the certificates of cfg that make every handshake fail
// at now, with cas the certificates of its CA file. Those are the ones it
// presents, its own or one of its chain, that are outside their validity,
// and the CAs when none of them is within its validity. A CA out of its validity beside a valid one
// is left out, since a CA file may keep an old root beside the current
// one.
func unusable(cfg *tls.Config, cas []*x509.Certificate, now time.Time) []*x509.Certificate {
	outside := func(cert *x509.Certificate) bool { return now.Before(cert.NotBefore) || !now.Before(cert.NotAfter) }
	var bad []*x509.Certificate
	for _, pair := range cfg.Certificates {
		for _, cert := range chainOf(pair) {
			if outside(cert) {
				bad = append(bad, cert)
			}
		}
	}
	if len(cas) > 0 && !slices.ContainsFunc(cas, func(ca *x509.Certificate) bool { return !outside(ca) }) {
		bad = append(bad, cas...)
	}
	return distinct(bad)
}

// Certificates returns the certificates of the current configuration: its
// own, with the intermediates its certificate file carries, and those of
// its CAs. An intermediate that expires ends the chain's validity as
// surely as the leaf does.
func (s *Source) Certificates() []*x509.Certificate {
	current := s.current.Load()
	var certificates []*x509.Certificate
	for _, pair := range current.cfg.Certificates {
		certificates = append(certificates, chainOf(pair)...)
	}
	certificates = append(certificates, current.cas...)
	return distinct(certificates)
}

// distinct returns certificates with each one once, in their order. A
// certificate file may carry a CA that the CA file holds too, and each
// certificate is to get one warning.
func distinct(certificates []*x509.Certificate) []*x509.Certificate {
	var unique []*x509.Certificate
	for _, cert := range certificates {
		if !slices.ContainsFunc(unique, cert.Equal) {
			unique = append(unique, cert)
		}
	}
	return unique
}

// VerifyHostname returns nil when a certificate that the source presents
// is valid for host, a DNS name or an IP address. A client connecting by
// that name makes the same check. Otherwise it returns the first
// certificate's error.
func (s *Source) VerifyHostname(host string) error {
	var first error
	for _, pair := range s.current.Load().cfg.Certificates {
		leaf := leafOf(pair)
		if leaf == nil {
			continue
		}
		err := leaf.VerifyHostname(host)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		return fmt.Errorf("%s presents no certificate to check %s against", s.name, host)
	}
	return first
}

// leafOf returns the certificate of a key pair, parsing it when the pair
// has it only as DER, as GODEBUG=x509keypairleaf=0 leaves it, or nil.
func leafOf(pair tls.Certificate) *x509.Certificate {
	if pair.Leaf != nil || len(pair.Certificate) == 0 {
		return pair.Leaf
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil
	}
	return leaf
}

// chainOf returns the certificates of pair, parsed: its leaf, then the
// intermediates that followed it in its file. It leaves out any that does
// not parse, since tls.X509KeyPair parses only the leaf.
func chainOf(pair tls.Certificate) []*x509.Certificate {
	var chain []*x509.Certificate
	for i, der := range pair.Certificate {
		if i == 0 && pair.Leaf != nil {
			chain = append(chain, pair.Leaf)
			continue
		}
		if cert, err := x509.ParseCertificate(der); err == nil {
			chain = append(chain, cert)
		}
	}
	return chain
}

// The phrases that set the warnings of Unusable apart from the other
// warnings of Expiring.
const (
	expiredWording     = " expired on "
	notYetValidWording = " is not valid before "
)

// Unusable returns a warning for each certificate that makes every
// handshake of the source fail, because it has expired or is not valid
// yet: see unusable.
func (s *Source) Unusable(now time.Time) []string {
	var warnings []string
	current := s.current.Load()
	for _, cert := range unusable(current.cfg, current.cas, now) {
		warnings = append(warnings, unusableWarning(s.name, cert, now))
	}
	return warnings
}

// unusableWarning names a certificate of source outside its validity at
// now, and the date it ended or begins.
func unusableWarning(source string, cert *x509.Certificate, now time.Time) string {
	if now.Before(cert.NotBefore) {
		return fmt.Sprintf("%s: certificate %q%s%s", source, cert.Subject.CommonName, notYetValidWording, cert.NotBefore.Format(time.RFC3339))
	}
	return fmt.Sprintf("%s: certificate %q%s%s", source, cert.Subject.CommonName, expiredWording, cert.NotAfter.Format(time.DateOnly))
}

// IsNotYetValidWarning reports whether a warning of Expiring or Unusable
// is about a certificate that is not valid yet.
func IsNotYetValidWarning(warning string) bool {
	return strings.Contains(warning, notYetValidWording)
}

// IsUnusableWarning reports whether a warning of Expiring is about a
// certificate that has expired or is not valid yet, rather than one that
// soon expires.
func IsUnusableWarning(warning string) bool {
	return strings.Contains(warning, expiredWording) || strings.Contains(warning, notYetValidWording)
}

// Watcher reloads the sources registered with it when their files change
// or Reload is called, and reports certificates that will expire soon.
type Watcher struct {
	logger *slog.Logger
	// Reloaded, if set before Run, runs after each reload that a change
	// of the watched files started and that changed some certificates,
	// with the sources whose certificates changed.
	Reloaded func(changed []*Source)

	// reloading makes reloads take turns, so that each arms the retry
	// from the validFrom that its own reloads left. One that overlapped
	// another could read a validFrom cleared for the other's reload, and
	// stop the retry that the other had just armed.
	reloading sync.Mutex

	mu      sync.Mutex // guards the following
	sources []*Source
	folders *fswatch.Folders // set by Run, to watch the folders of sources added later
	retry   *time.Timer      // reloads once files rejected as not valid yet become valid
	stopped bool             // Run's context has ended: no more retries
	failing map[*Source]bool // sources whose files failed to load at the last reload
}

// NewWatcher returns a watcher that logs to logger.
func NewWatcher(logger *slog.Logger) *Watcher {
	return &Watcher{logger: logger}
}

// Add registers a source, and watches its folders once Run has begun, as
// for an engine that a reload adds.
func (w *Watcher) Add(s *Source) {
	w.mu.Lock()
	w.sources = append(w.sources, s)
	folders := w.folders
	w.mu.Unlock()
	if folders == nil {
		return
	}
	// Outside mu, because on Windows fsnotify's Add waits for its reader,
	// which may wait for a reload that needs mu.
	for _, folder := range sourceFolders([]*Source{s}) {
		if err := folders.Add(folder); err != nil {
			w.logger.Warn("certificate folder not watched; after renewing its files, reload with SIGHUP", "source", s.name, "error", err.Error())
		}
	}
}

// Remove forgets a source, as when its engine is replaced.
func (w *Watcher) Remove(s *Source) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sources = slices.DeleteFunc(w.sources, func(other *Source) bool { return other == s })
	delete(w.failing, s)
}

func (w *Watcher) snapshot() []*Source {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.sources)
}

// Reload reloads every source, logs what failed, and returns the number
// of sources whose certificates changed.
func (w *Watcher) Reload() int {
	changed, _ := w.reload()
	return len(changed)
}

// reload is Reload, returning the sources whose certificates changed and
// how many sources kept their current certificates because the new files
// failed.
func (w *Watcher) reload() (changed []*Source, failed int) {
	w.reloading.Lock()
	defer w.reloading.Unlock()
	sources := w.snapshot()
	defer w.retryLater(sources)
	now := time.Now()
	for _, s := range sources {
		before := s.Certificates()
		if err := s.Reload(); err != nil {
			level := slog.LevelError
			if pending, ok := errors.AsType[*notYetValidError](err); ok && pending.validFrom.Sub(now) < pendingSoon {
				level = slog.LevelWarn
			}
			w.logger.Log(context.Background(), level, "certificates not reloaded; the current ones stay", "error", err.Error())
			w.setFailing(s, true)
			failed++
			continue
		}
		if w.setFailing(s, false) {
			// Otherwise nothing would tell that the error logged before
			// is over when the files did not change since they last loaded.
			w.logger.Info("certificate files load again", "source", s.name)
		}
		if !slices.EqualFunc(before, s.Certificates(), func(a, b *x509.Certificate) bool { return a.Equal(b) }) {
			changed = append(changed, s)
			// Loaded because the ones they replace failed every handshake
			// too: still no handshake succeeds.
			for _, warning := range s.Unusable(now) {
				w.logger.Warn("certificates reloaded, but every handshake still fails with them; renew them", "warning", warning)
			}
		}
	}
	return changed, failed
}

// setFailing records whether the files of s failed to load, and returns
// whether they did at the reload before.
func (w *Watcher) setFailing(s *Source, failing bool) (before bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	before = w.failing[s]
	if failing {
		if w.failing == nil {
			w.failing = map[*Source]bool{}
		}
		w.failing[s] = true
	} else {
		delete(w.failing, s)
	}
	return before
}

// Run watches the folders of the sources' files until ctx ends, and
// reloads every source once a change has settled. Folders rather than
// files are watched, since tools replace certificate files instead of
// writing them.
func (w *Watcher) Run(ctx context.Context) error {
	folders := sourceFolders(w.snapshot())
	// Only the sources' files count, and the ..data link that a Kubernetes
	// Secret swaps beside them: a log file written into a certificate
	// folder reloaded every source every 300 ms.
	relevant := func(name string) bool {
		if filepath.Base(name) == "..data" {
			return true
		}
		name = filepath.Clean(name)
		return slices.ContainsFunc(w.snapshot(), func(s *Source) bool {
			return slices.ContainsFunc(s.files, func(file string) bool { return filepath.Clean(file) == name })
		})
	}
	reload := func() { w.reloadAndReport("certificate files changed; reloading") }
	// Retries that a reload on SIGHUP arms end with ctx too, when the
	// folders cannot be watched.
	context.AfterFunc(ctx, w.stopRetry)
	watched, err := fswatch.Watch(ctx, folders, relevant, reload)
	if err != nil {
		return fmt.Errorf("watching certificates: %w", err)
	}
	w.mu.Lock()
	w.folders = watched
	sources := slices.Clone(w.sources)
	w.mu.Unlock()
	// Watch the sources added while the watch started, outside mu as in Add.
	for _, folder := range sourceFolders(sources) {
		if !slices.Contains(folders, folder) {
			if err := watched.Add(folder); err != nil {
				return fmt.Errorf("watching certificates: %w", err)
			}
		}
	}
	return nil
}

// reloadAndReport logs the reason, reloads every source, and passes the
// sources whose certificates changed to Reloaded.
func (w *Watcher) reloadAndReport(reason string) {
	w.logger.Info(reason)
	changed, failed := w.reload()
	w.logger.Info("certificates reloaded", "reloaded", len(changed), "failed", failed)
	if w.Reloaded != nil && len(changed) > 0 {
		w.Reloaded(changed)
	}
}

// retryLater arms a reload for the moment the earliest files that
// sources rejected as not valid yet become valid, since their files will
// not change again to start one. A second more allows for a peer's clock
// a little behind.
func (w *Watcher) retryLater(sources []*Source) {
	var at int64
	for _, s := range sources {
		if from := s.validFrom.Load(); from > 0 && (at == 0 || from < at) {
			at = from
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.retry != nil {
		w.retry.Stop()
		w.retry = nil
	}
	if at == 0 || w.stopped {
		return
	}
	// At least a second, so that no clock oddity can make a loop of it.
	w.retry = time.AfterFunc(max(time.Until(time.Unix(0, at)), 0)+time.Second, func() {
		w.reloadAndReport("certificate files have become valid; reloading")
	})
}

func (w *Watcher) stopRetry() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.retry != nil {
		w.retry.Stop()
	}
}

// sourceFolders returns the folders of the sources' files, each once.
func sourceFolders(sources []*Source) []string {
	var folders []string
	for _, s := range sources {
		for _, file := range s.files {
			if folder := filepath.Dir(file); !slices.Contains(folders, folder) {
				folders = append(folders, folder)
			}
		}
	}
	return folders
}

// TimeLeft formats the time until a certificate expires for a message.
// From two days on it counts days to the nearest day, because a check
// made moments after the certificate was issued would otherwise count one
// day less than its validity. Below that it counts hours, and below two
// hours minutes, rounded down, so that a warning never makes the time
// look longer than it is.
func TimeLeft(left time.Duration) string {
	switch {
	case left >= 48*time.Hour:
		return fmt.Sprintf("%d days", int((left+12*time.Hour)/(24*time.Hour)))
	case left >= 2*time.Hour:
		return fmt.Sprintf("%d hours", int(left/time.Hour))
	case left >= 2*time.Minute:
		return fmt.Sprintf("%d minutes", int(left/time.Minute))
	}
	return "less than 2 minutes"
}

// Expiring returns a warning for each certificate of the sources that
// expires within the given time, has expired, or is not valid yet.
func (w *Watcher) Expiring(within time.Duration, now time.Time) []string {
	var warnings []string
	for _, s := range w.snapshot() {
		for _, cert := range s.Certificates() {
			left := cert.NotAfter.Sub(now)
			switch {
			case left <= 0 || now.Before(cert.NotBefore):
				warnings = append(warnings, unusableWarning(s.name, cert, now))
			case left < within:
				warnings = append(warnings, fmt.Sprintf("%s: certificate %q expires on %s, in %s", s.name, cert.Subject.CommonName,
					cert.NotAfter.Format(time.DateOnly), TimeLeft(left)))
			}
		}
	}
	slices.Sort(warnings)
	return warnings
}
