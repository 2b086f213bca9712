#!/bin/sh
# A CLI agent that fails: complains on stderr and exits 1.
cat > /dev/null
echo "fail.sh: the model is not configured (test failure)" >&2
echo "fail.sh: second line of stderr" >&2
exit 1
