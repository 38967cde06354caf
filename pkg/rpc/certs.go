package rpc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority that issues tier certificates (`msync
// certs`, tests). Its key never leaves the process unless written out.
type CA struct {
	CertPEM, KeyPEM []byte
	cert            *x509.Certificate
	key             *ecdsa.PrivateKey
}

// CertSpec says what one tier certificate names.
type CertSpec struct {
	// Roles the holder may act as (RoleLogic, RoleComet, RoleJob).
	Roles []string
	// Comet is the comet id, required with RoleComet.
	Comet string
	// Hosts the holder serves on: IPs and DNS names (the server side is
	// checked against the host a peer dials).
	Hosts []string
	// Validity; zero means one year.
	Validity time.Duration
}

func newKey() (*ecdsa.PrivateKey, *big.Int, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("rpc: key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("rpc: serial: %w", err)
	}
	return key, serial, nil
}

func encode(der []byte, key *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("rpc: key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), nil
}

// NewCA makes a fresh ECDSA P-256 CA valid for validity (zero: ten years).
func NewCA(name string, validity time.Duration) (*CA, error) {
	if validity == 0 {
		validity = 10 * 365 * 24 * time.Hour
	}
	key, serial, err := newKey()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"msync"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("rpc: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("rpc: CA certificate: %w", err)
	}
	ca := &CA{cert: cert, key: key}
	if ca.CertPEM, ca.KeyPEM, err = encode(der, key); err != nil {
		return nil, err
	}
	return ca, nil
}

// Issue signs a tier certificate: its URI SANs name the roles (and comet
// id), its IP/DNS SANs the hosts; usable as server and as client.
func (ca *CA) Issue(spec CertSpec) (certPEM, keyPEM []byte, err error) {
	uris, err := IdentityURIs(spec.Roles, spec.Comet)
	if err != nil {
		return nil, nil, err
	}
	if spec.Validity == 0 {
		spec.Validity = 365 * 24 * time.Hour
	}
	key, serial, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	cn := spec.Roles[0]
	if spec.Comet != "" {
		cn = spec.Comet
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "msync " + cn, Organization: []string{"msync"}, OrganizationalUnit: spec.Roles},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(spec.Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         uris,
	}
	for _, h := range spec.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("rpc: certificate: %w", err)
	}
	return encode(der, key)
}

// TLS returns the material for a freshly issued certificate of spec.
func (ca *CA) TLS(spec CertSpec) (*TLS, error) {
	c, k, err := ca.Issue(spec)
	if err != nil {
		return nil, err
	}
	return NewTLS(ca.CertPEM, c, k)
}

// DefaultHosts are the hosts development certificates are valid for.
var DefaultHosts = []string{"127.0.0.1", "::1", "localhost"}

// DevCerts is what WriteDevCerts wrote.
type DevCerts struct {
	Dir   string
	Files []string
}

// WriteDevCerts writes a development CA and tier certificates into dir
// (created 0700; keys 0600): ca.crt (and ca.key, to issue more), logic.crt
// (roles logic and job: job runs embedded in the logic process of the
// mixed local cluster), job.crt, and comet-<id>.crt for each id, each with
// its .key. It refuses to overwrite an existing ca.crt, so a rerun never
// invalidates certificates in use.
func WriteDevCerts(dir string, comets, hosts []string) (*DevCerts, error) {
	if len(hosts) == 0 {
		hosts = DefaultHosts
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("rpc: certs: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ca.crt")); err == nil {
		return nil, fmt.Errorf("rpc: certs: %s already holds a CA (ca.crt): %w", dir, os.ErrExist)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("rpc: certs: %w", err)
	}
	ca, err := NewCA("msync development CA", 0)
	if err != nil {
		return nil, err
	}
	out := &DevCerts{Dir: dir}
	write := func(name string, data []byte, mode os.FileMode) error {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			return fmt.Errorf("rpc: certs: %w", err)
		}
		out.Files = append(out.Files, p)
		return nil
	}
	issue := func(name string, spec CertSpec) error {
		spec.Hosts = hosts
		c, k, err := ca.Issue(spec)
		if err != nil {
			return err
		}
		if err := write(name+".key", k, 0o600); err != nil {
			return err
		}
		return write(name+".crt", c, 0o644)
	}
	if err := write("ca.key", ca.KeyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := issue("logic", CertSpec{Roles: []string{RoleLogic, RoleJob}}); err != nil {
		return nil, err
	}
	if err := issue("job", CertSpec{Roles: []string{RoleJob}}); err != nil {
		return nil, err
	}
	for _, id := range comets {
		if err := issue(id, CertSpec{Roles: []string{RoleComet}, Comet: id}); err != nil {
			return nil, err
		}
	}
	// Last: its presence marks a complete folder.
	if err := write("ca.crt", ca.CertPEM, 0o644); err != nil {
		return nil, err
	}
	return out, nil
}
