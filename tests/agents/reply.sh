#!/bin/sh
# A well-behaved CLI agent for tests/command.rs: reads the turn on stdin (or
# as its last argument) and answers with what it was given: the number of
# lines, the last line, and its arguments.
if [ "$#" -gt 0 ] && [ "$1" = "--arg" ]; then
  shift
  input="$*"
  mode=argument
else
  input=$(cat)
  mode=stdin
fi
lines=$(printf '%s\n' "$input" | wc -l | tr -d ' ')
last=$(printf '%s\n' "$input" | tail -n 1)
printf 'got %s lines on %s; last: %s\n' "$lines" "$mode" "$last"
