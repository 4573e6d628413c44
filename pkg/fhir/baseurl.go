package fhir

import (
	"errors"
	"net/url"
)

// CheckBaseURL checks that s can be a FHIR server's base URL: absolute,
// http or https, with a host and without a query or fragment.
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
	if u.RawQuery != "" || u.Fragment != "" {
		return errors.New("must not have a query or fragment")
	}
	return nil
}
