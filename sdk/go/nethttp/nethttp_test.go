//go:build !wasip1

package nethttp

import (
	"errors"
	"net/http"
	"testing"

	"kata"
)

func TestErrorsAreKataErrors(t *testing.T) {
	client := &http.Client{Transport: Transport{}}
	_, err := client.Get("http://127.0.0.1:1/x?token={{secret:token}}")
	var h *kata.HTTPError
	if !errors.As(err, &h) || h.URL != "http://127.0.0.1:1/x" {
		t.Fatalf("%v", err)
	}
}
