// Package testutil holds the helpers tests of every package share: polling
// for a condition with a bound instead of sleeping, and a clock tests move by
// hand. It is imported by tests only.
package testutil
