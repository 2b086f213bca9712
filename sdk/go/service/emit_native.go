//go:build !wasip1

package service

import (
	"sync"

	"kata"
)

var emitted struct {
	sync.Mutex
	messages []kata.Message
}

func emit(msg kata.Message) error {
	emitted.Lock()
	defer emitted.Unlock()
	emitted.messages = append(emitted.messages, msg)
	return nil
}

// Emitted returns and forgets the messages Emit took in a native test
// (outside a kata host). It does not exist in plugins built for kata.
func Emitted() []kata.Message {
	emitted.Lock()
	defer emitted.Unlock()
	m := emitted.messages
	emitted.messages = nil
	return m
}
