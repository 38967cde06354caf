// Package lint holds tests that check rules of the code base that the
// compiler does not: which packages may import which (imports_test.go).
// It has no code of its own; `make lint` runs it with go vet and staticcheck.
package lint
