//go:build wasip1

package service

import (
	"errors"

	"kata"
	"kata/wit/kata_plugin_emitter"
)

func emit(msg kata.Message) error {
	if r := kata_plugin_emitter.Emit(msg); r.IsErr() {
		return errors.New(r.Err())
	}
	return nil
}
