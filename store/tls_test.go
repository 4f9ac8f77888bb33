package store_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"citywatch/internal/chtest"
	"citywatch/store"
)

// testCA writes a self-signed CA certificate to a PEM file and returns
// its path and the certificate.
func testCA(t *testing.T) (string, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "citywatch test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, cert
}

// TestTLSConfig checks the TLS options Open gives the driver. The local
// test server has no TLS port, so a TLS connection itself is not tested.
func TestTLSConfig(t *testing.T) {
	caFile, ca := testCA(t)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)

	var cfg store.Config
	cfg.SetDefaults()
	if tc, err := cfg.TLSConfig(); tc != nil || err != nil {
		t.Errorf("TLS off: %v, %v, want nil, nil", tc, err)
	}

	cfg.TLS = store.TLS{Enable: true, CAFile: caFile, ServerName: "clickhouse.example"}
	tc, err := cfg.TLSConfig()
	if err != nil || tc == nil {
		t.Fatalf("TLSConfig() = %v, %v", tc, err)
	}
	want := x509.NewCertPool()
	want.AddCert(ca)
	if tc.RootCAs == nil || !tc.RootCAs.Equal(want) || tc.ServerName != "clickhouse.example" || tc.InsecureSkipVerify {
		t.Errorf("TLS config: roots %v (want the CA), server name %q, skip verify %v", tc.RootCAs, tc.ServerName, tc.InsecureSkipVerify)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}

	cfg.TLS = store.TLS{Enable: true}
	if tc, err := cfg.TLSConfig(); err != nil || tc == nil || tc.RootCAs != nil {
		t.Errorf("TLS with the system's roots: %v, %v", tc, err)
	}

	for _, tt := range []struct {
		name    string
		tls     store.TLS
		wantErr string
	}{
		{"missing CA", store.TLS{Enable: true, CAFile: filepath.Join(t.TempDir(), "nope.pem")}, "tls.ca_file"},
		{"CA not PEM", store.TLS{Enable: true, CAFile: notPEM}, "holds no PEM certificate"},
		{"CA without TLS", store.TLS{CAFile: caFile}, "tls.enable"},
	} {
		cfg.TLS = tt.tls
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: Validate() = %v, want an error containing %q", tt.name, err, tt.wantErr)
		}
	}
}

// TestOpenUsesTLS checks that Open hands the TLS options to the driver:
// the test server's native port speaks plaintext, so a TLS client fails
// its handshake there.
func TestOpenUsesTLS(t *testing.T) {
	cfg := chtest.Config(t)
	cfg.TLS = store.TLS{Enable: true, InsecureSkipVerify: true}
	db, err := store.Open(t.Context(), cfg)
	if err == nil {
		db.Close()
		t.Fatal("Open with TLS to a plaintext port succeeded: the TLS options were not used")
	}
	if !strings.Contains(err.Error(), "tls: ") {
		t.Errorf("Open: %v, want a TLS handshake failure", err)
	}
}
