package main

import (
	"errors"
	"fmt"
	"io/fs"
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
	cmd.AddCommand(newCertsInitCommand())
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

--hosts lists the names and addresses Qlik uses to reach the gateway;
addresses become IP subjectAltNames, which Go and Qlik both match.
Existing files are never overwritten without --force.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" || len(hosts) == 0 {
				return errors.New("certs init needs --out and --hosts, for example --out certs --hosts gateway.example.com,10.0.0.5")
			}
			set, err := tlsutil.WriteSet(out, hosts, tlsutil.SetOptions{
				KeyType:      tlsutil.KeyType(keyType),
				RootValidity: rootValidity,
				LeafValidity: leafValidity,
				Overwrite:    force,
			})
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%w\nnothing was written; rerun with --force to replace the existing files", err)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Wrote certificates for %s:\n  gateway: %s\n  Qlik:    %s\n  CA:      %s (keep the key safe)\n",
				strings.Join(hosts, ", "), set.GatewayDir, set.QlikDir, set.CADir)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "folder to write the gateway/, qlik/ and ca/ folders into")
	cmd.Flags().StringSliceVar(&hosts, "hosts", nil, "comma-separated host names and IP addresses of the gateway")
	cmd.Flags().StringVar(&keyType, "key-type", string(tlsutil.KeyECDSAP256), "ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096")
	cmd.Flags().DurationVar(&rootValidity, "root-validity", 10*365*24*time.Hour, "how long the root CA is valid")
	cmd.Flags().DurationVar(&leafValidity, "validity", 365*24*time.Hour, "how long the server and client certificates are valid")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing files")
	return cmd
}
