// Package tlsconf builds the client TLS configurations of citywatch's
// connections (Kafka, ClickHouse) from file names, in one place, so that
// every connection has the same floor (TLS 1.2) and the same errors.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// Files names what a client TLS configuration is built from; empty fields
// are not used (no CAFile: the system's roots; no CertFile: no client
// certificate).
type Files struct {
	CAFile, CertFile, KeyFile string
	ServerName                string
	// InsecureSkipVerify is for tests only.
	InsecureSkipVerify bool
}

// FileError is an error of Client: Field is "ca_file" or "cert_file",
// the configuration field to name in the caller's message.
type FileError struct {
	Field string
	Err   error
}

func (e *FileError) Error() string { return e.Field + ": " + e.Err.Error() }

func (e *FileError) Unwrap() error { return e.Err }

// Client returns the client TLS configuration of f. Its errors are
// *FileError.
func Client(f Files) (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         f.ServerName,
		InsecureSkipVerify: f.InsecureSkipVerify,
	}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, &FileError{"ca_file", fmt.Errorf("cannot read CA certificates: %w", err)}
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, &FileError{"ca_file", fmt.Errorf("%s holds no PEM certificate", f.CAFile)}
		}
	}
	if f.CertFile != "" || f.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, &FileError{"cert_file", fmt.Errorf("cannot load client certificate: %w", err)}
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
