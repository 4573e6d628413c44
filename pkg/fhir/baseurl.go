package fhir

import (
	"errors"
	"net/url"

	"github.com/junction-fhir/junction/pkg/access"
)

// CheckBaseURL checks that s can be a FHIR server's base URL: absolute,
// http or https, with a host and without a query, a fragment or a user
// name and password (credentials are given by reference, never in a URL
// written in a config file).
func CheckBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("scheme must be http or https")
	}
	if u.Host == "" {
		return errors.New("host required")
	}
	if u.User != nil {
		return errors.New("must not hold a user name or password: give credentials by reference (env:NAME or file:PATH) in their own setting")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return errors.New("must not have a query or fragment")
	}
	return nil
}

// PlainBeyondLoopback reports whether the base URL s is plain http to a
// host other than localhost or a loopback address, so that what is sent
// to it crosses a network unencrypted.
func PlainBeyondLoopback(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Scheme == "http" && !access.LoopbackHost(u.Host)
}
