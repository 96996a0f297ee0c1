package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ssegw/ssegw/tlsutil"
)

func newCertsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make certificates in the folder layout Qlik uses",
	}
	cmd.AddCommand(newCertsInitCommand(), newCertsCheckCommand())
	return cmd
}

func newCertsCheckCommand() *cobra.Command {
	var warnWithin time.Duration
	cmd := &cobra.Command{
		Use:   "check DIR",
		Short: "Describe a certificate folder and warn about what breaks connections",
		Long: `Read a certificate folder in either of Qlik's layouts (a plugin's, with
sse_server_cert.pem and sse_server_key.pem, or an analytic connection's,
with sse_client_cert.pem and sse_client_key.pem, each with root_cert.pem)
and print, for each file, its subject, issuer, subjectAltNames, validity and
whether its key matches. Warnings name certificates that expire soon, IP
addresses written as DNS names and other DNS names that no client matches
(such as one with a port), certificates without any subjectAltName, and
keys other users can read. The exit status is 1 when a file has an
error, such as a key that does not match its certificate, or a server or
client certificate without the serverAuth or clientAuth usage.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("give one certificate folder, such as certs/gateway; got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if warnWithin < 0 {
				return fmt.Errorf("invalid --warn-within %v: give a duration of 0 or more, such as 720h for 30 days; 0 turns the expiry warnings off", warnWithin)
			}
			findings, err := tlsutil.CheckFolder(args[0], time.Now(), warnWithin)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			file := ""
			for _, finding := range findings {
				if finding.File != file {
					file = finding.File
					fmt.Fprintf(out, "%s\n", file)
				}
				prefix := "  "
				if finding.Severity != tlsutil.Info {
					prefix = "  " + strings.ToUpper(finding.Severity.String()) + ": "
				}
				fmt.Fprintf(out, "%s%s\n", prefix, finding.Message)
			}
			if tlsutil.HasErrors(findings) {
				return exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&warnWithin, "warn-within", 30*24*time.Hour, "warn about certificates that expire within this time")
	return cmd
}

func newCertsInitCommand() *cobra.Command {
	var (
		out          string
		hosts        []string
		keyType      string
		rootValidity time.Duration
		leafValidity time.Duration
		force        bool
		newCA        bool
		caDir        string
		clientName   string
	)
	cmd := &cobra.Command{
		Use:   "init --out DIR --hosts NAMES",
		Short: "Make a root CA, the gateway's server certificate and Qlik's client certificate",
		Long: `Make a certificate set for mutual TLS between Qlik and the gateway:

  DIR/gateway  root_cert.pem, sse_server_cert.pem, sse_server_key.pem
               (the gateway's listener: tls.dir)
  DIR/qlik     root_cert.pem, sse_client_cert.pem, sse_client_key.pem
               (copy to the Qlik server; name it as the analytic
               connection's certificate folder)
  DIR/ca       root_cert.pem, root_key.pem (keep apart, for issuing more)

--hosts lists the names and addresses Qlik uses to reach the gateway:
DNS names, such as gateway.example.com or *.example.com, and IP addresses,
which become IP subjectAltNames, which Go and Qlik both match. An entry
with a port or a scheme, such as gateway.example.com:50051, is rejected.
Existing files are never overwritten without --force. Should writing
fail, nothing is written, unless a rename fails with --force. Then the
files moved into place before it stay, and the error lists them.

With --force over a set that has its ca/ folder, the certificates are
renewed from that CA, which stays as it is, so that Qlik servers holding
the old qlik/ folder still connect until its client certificate expires.
Without ca/ (moved off the host), put it back first. --new-ca makes a
new CA instead: the gateway reloads it at once, and every Qlik server
needs the new qlik/ folder before it can connect again.

With --ca DIR, it makes only a client certificate for the gateway to use
towards a TLS plugin, signed by the CA in DIR (root_cert.pem and
root_key.pem, such as the ca/ folder above, or the CA that made the
plugin's certificates), and writes it in Qlik's client layout to --out, for
a backend's tls.dir. Its common name is --client-name, and it must expire
before the CA does. --hosts, --root-validity and --new-ca do not apply then.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if rootValidity <= 0 || leafValidity <= 0 {
				return fmt.Errorf("--validity (%v) and --root-validity (%v) must be positive, such as 8760h for a year", leafValidity, rootValidity)
			}
			if caDir != "" {
				for _, name := range []string{"hosts", "root-validity", "new-ca"} {
					if cmd.Flags().Changed(name) {
						return fmt.Errorf("--%s does not apply with --ca, which makes only a client certificate, signed by the CA in %s", name, caDir)
					}
				}
				if strings.TrimSpace(clientName) == "" {
					return errors.New("--client-name is empty; give the common name of the client certificate, such as ssegw")
				}
				if out == "" {
					return errors.New("certs init --ca needs --out, the folder to write the client certificate to")
				}
				dir, err := tlsutil.WriteClientFolder(out, caDir, clientName, tlsutil.SetOptions{
					KeyType: tlsutil.KeyType(keyType), LeafValidity: leafValidity, Overwrite: force,
				})
				if err != nil {
					return certsWriteError(err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Wrote a client certificate (CN %s) signed by %s to %s; use it as the backend's tls.dir.\n", clientName, caDir, dir)
				return nil
			}

			if cmd.Flags().Changed("client-name") {
				return errors.New("--client-name applies only with --ca; without --ca, certs init names the client certificate sse_client")
			}
			if newCA && !force {
				return errors.New("--new-ca replaces an existing CA, and applies only with --force")
			}
			// Trim spaces, so that "name, 10.0.0.5" gives the IP address
			// 10.0.0.5 rather than the invalid DNS name " 10.0.0.5".
			var names []string
			for _, host := range hosts {
				if host = strings.TrimSpace(host); host != "" {
					names = append(names, host)
				}
			}
			if out == "" || len(names) == 0 {
				return errors.New("certs init needs --out and --hosts, for example --out certs --hosts gateway.example.com,10.0.0.5")
			}
			hosts, err := tlsutil.ParseHosts(names)
			if err != nil {
				return fmt.Errorf("invalid --hosts: give DNS names and IP addresses, without ports or schemes:\n%w", err)
			}
			// A renewal keeps the set's CA, unless --new-ca is given.
			caFolder := filepath.Join(out, tlsutil.CAFolder)
			_, statErr := os.Stat(filepath.Join(caFolder, tlsutil.RootCertFile))
			existingCA := statErr == nil
			replacingSet := existingCA || existingSet(out)
			if force && !existingCA && !newCA && replacingSet {
				// The CA was moved off the host, as it should be: a new one
				// would cut off every Qlik server that holds the old folder.
				return fmt.Errorf("%s has certificates but no %s/%s, so they cannot be renewed from their CA: put the CA's %s and %s back into %s, or add --new-ca to make a new CA, after which every Qlik server needs the new %s folder",
					out, tlsutil.CAFolder, tlsutil.RootCertFile, tlsutil.RootCertFile, tlsutil.CAKeyFile, caFolder, tlsutil.QlikFolder)
			}
			var ca *tlsutil.Authority
			if existingCA && force && !newCA {
				if cmd.Flags().Changed("root-validity") {
					return fmt.Errorf("--root-validity applies to a new CA, and this renewal keeps the CA in %s; add --new-ca to replace it", caFolder)
				}
				if ca, err = tlsutil.LoadAuthority(filepath.Join(caFolder, tlsutil.RootCertFile), filepath.Join(caFolder, tlsutil.CAKeyFile)); err != nil {
					return fmt.Errorf("renewing from the CA in %s: %w; add --new-ca to replace it", caFolder, err)
				}
			}
			// A renewal compares --validity with the kept CA's expiry
			// instead, in WriteSet.
			if ca == nil && leafValidity > rootValidity {
				return fmt.Errorf("--validity (%v) is longer than --root-validity (%v): the certificates would outlive the root that signs them", leafValidity, rootValidity)
			}
			set, err := tlsutil.WriteSet(out, hosts, tlsutil.SetOptions{
				KeyType:      tlsutil.KeyType(keyType),
				RootValidity: rootValidity,
				LeafValidity: leafValidity,
				Overwrite:    force,
				CA:           ca,
			})
			if err != nil {
				// A new CA fixes only a CA that expires too soon. Other
				// errors, such as a folder where a file belongs, get no
				// such advice.
				if _, expiry := errors.AsType[*tlsutil.CAExpiryError](err); ca != nil && expiry {
					err = fmt.Errorf("%w with --new-ca, after which every Qlik server needs the new %s folder", err, tlsutil.QlikFolder)
				}
				return certsWriteError(err)
			}
			stdout := cmd.OutOrStdout()
			fmt.Fprintf(stdout, "Wrote certificates for %s:\n  gateway: %s\n  Qlik:    %s\n  CA:      %s (keep the key safe)\n",
				strings.Join(hosts, ", "), set.GatewayDir, set.QlikDir, set.CADir)
			switch {
			case ca != nil:
				fmt.Fprintf(stdout, "The CA is the one that was there, so Qlik servers holding the old %s folder still connect; copy the new one to them before its client certificate expires.\n", set.QlikDir)
			case replacingSet:
				// Qlik's client folder and the gateway's now name another
				// root, so a Qlik server still holding the old folder fails
				// every handshake.
				fmt.Fprintf(stdout, "The CA is new: copy %s to the Qlik servers again.\n", set.QlikDir)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "folder to write the gateway/, qlik/ and ca/ folders into")
	cmd.Flags().StringSliceVar(&hosts, "hosts", nil, "comma-separated host names and IP addresses of the gateway")
	cmd.Flags().StringVar(&keyType, "key-type", string(tlsutil.KeyECDSAP256), "ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096")
	cmd.Flags().DurationVar(&rootValidity, "root-validity", 10*365*24*time.Hour, "how long the root CA is valid")
	cmd.Flags().DurationVar(&leafValidity, "validity", 365*24*time.Hour, "how long the server and client certificates are valid")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing files; an existing CA signs the new certificates")
	cmd.Flags().BoolVar(&newCA, "new-ca", false, "with --force, replace the existing CA too")
	cmd.Flags().StringVar(&caDir, "ca", "", "folder with an existing CA (root_cert.pem, root_key.pem): make only a client certificate for the gateway")
	cmd.Flags().StringVar(&clientName, "client-name", "ssegw", "common name of the client certificate made with --ca")
	return cmd
}

// existingSet reports whether dir has the gateway's or Qlik's folder of a
// set that certs init wrote.
func existingSet(dir string) bool {
	for _, folder := range []string{tlsutil.GatewayFolder, tlsutil.QlikFolder} {
		if _, err := os.Stat(filepath.Join(dir, folder, tlsutil.RootCertFile)); err == nil {
			return true
		}
	}
	return false
}

// certsWriteError adds a hint to rerun with --force to an error of certs
// init about existing files. The error itself states what was written.
func certsWriteError(err error) error {
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w; rerun with --force to replace the existing files", err)
	}
	return err
}
