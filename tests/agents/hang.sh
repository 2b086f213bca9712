#!/bin/sh
# A CLI agent that never answers, and leaves a child of its own behind: kata
# must kill the whole process group when [agent] request_timeout runs out.
# Writes both process ids to the file named by its first argument.
sleep 300 &
echo "$$ $!" > "$1"
sleep 300
